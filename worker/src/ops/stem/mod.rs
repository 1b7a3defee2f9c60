//! The stem: EfficientNet-Lite0's first convolution (3x3, stride 2, 3 -> 32
//! channels on the 224x224 image), which tract 0.23 runs through a lazy
//! im2col and a narrow matmul kernel at a fraction of its usual speed.
//! Replaced by an explicit im2col into a reused buffer followed by
//! [`crate::ops::pointwise`]'s kernel: with the patches as input channels,
//! a k x k convolution is a 1x1 convolution over `cin * k * k` channels.
//! No per-instruction-set code of its own: the pointwise kernel picks it.

pub mod im2col;
pub mod kernel;
pub mod op;
pub mod patch;

pub use patch::use_fast_stem;
