//! The stem convolution fused with the depthwise convolution that reads it.
//! Unfused, the stem writes 32 planes of 112x112 (1.6 MB, through an
//! im2col matrix of 1.35 MB) and the depthwise convolution reads them back
//! on its flat kernel, the slowest it has. Fused, on AVX-512, the stem
//! writes one row at a time with its channels in the lanes
//! (`ops::conv_rows`) and the depthwise convolution reads those rows as
//! they come (`ops::depthwise::kernel::row_stream`), summing in the same
//! order as the unfused pair. Without AVX-512 nothing is fused.

pub mod op;
pub mod patch;

pub use patch::use_fast_stem_depthwise;
