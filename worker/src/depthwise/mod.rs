//! Depthwise convolutions, which tract 0.23 runs 10-50x below its matmul
//! speed (60% of EfficientNet-Lite0's time), replaced by a kernel of our own.

pub mod kernel;
pub mod op;
pub mod patch;

pub use patch::use_fast_depthwise;
