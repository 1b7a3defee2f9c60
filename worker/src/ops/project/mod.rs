//! An inverted-residual block's projection fused with the streamed
//! expansion (or stem) and depthwise convolution before it. Unfused, the
//! depthwise convolution transposes every row into planes of up to 1.8 MB
//! that the projection reads back; fused, on AVX-512, the projection takes
//! each row as the depthwise kernel computes it, channels still in the
//! lanes (`ops::project_rows`), and only its own output, a sixth of the
//! channels, is written out. The sums keep the unfused order. Without
//! AVX-512 nothing is fused.

pub mod op;
pub mod patch;

pub use patch::use_fast_projected;
