//! Pointwise (1x1) convolutions, the largest share of EfficientNet-Lite0's
//! time on tract 0.23, which runs them as general matrix products and
//! repacks the activations before each one; replaced by a kernel that reads
//! them in place. (Shares and timings: docs/performance.md.)

pub mod kernel;
pub mod op;
pub mod patch;

pub use patch::use_fast_pointwise;
