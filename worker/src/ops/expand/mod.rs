//! An inverted-residual block's 1x1 expansion fused with the depthwise
//! convolution that reads it. Unfused, the expansion writes its whole
//! output (96 x 112 x 112 floats, 4.8 MB, in EfficientNet-Lite0) and the
//! depthwise convolution reads it back after it has left the core's 2 MB
//! L2 cache, a copy-in that showed up as a sizeable share of a loaded
//! worker's time (docs/performance.md). Fused, the expansion runs a few
//! channels at a time into a buffer that stays in L2, and the depthwise
//! convolution consumes each chunk at once. Both halves run the same
//! kernels as before, so the results are identical.
//!
//! On AVX-512 the expansion instead writes one row at a time with its
//! channels in the lanes (`ops::conv_rows`) and the depthwise convolution reads
//! those rows as they come (`ops::depthwise::kernel::row_stream`): no
//! transpose in, no plane-sized buffer, and the same sums in the same order.

pub mod op;
pub mod patch;

pub use patch::use_fast_expand_depthwise;
