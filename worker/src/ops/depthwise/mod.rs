//! Depthwise convolutions, which tract 0.23 runs far below its matmul speed
//! although they are a large share of EfficientNet-Lite0's time; replaced
//! by a kernel of our own. (Figures: docs/performance.md.)

pub mod kernel;
pub mod op;
pub mod patch;

pub use patch::use_fast_depthwise;
