//! An inverted-residual block on a small plane (EfficientNet's 7x7) as one
//! op, computed with sixteen channels to a register from the expansion to
//! the projection. Apart, the expansion scatters its output into NCHW
//! planes, the depthwise convolution transposes them into lanes and back
//! out, and the projection reads the planes; fused, the expansion writes
//! the lanes layout ([`crate::ops::lanes`]), the depthwise convolution
//! reads and writes it, and the projection reads it. The whole plane goes
//! through each step at once, unlike the row-streamed blocks of the larger
//! planes: on 7x7 every row would stream all of the layer's weights (up to
//! 0.9 MB) again. Same kernels, same order of sums: the output is
//! bit-identical. AVX-512F only; elsewhere nothing is fused.

pub mod op;
pub mod patch;

pub use patch::use_fast_lanes_block;
