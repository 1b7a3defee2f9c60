//! Two streamed blocks ([`FastProjected`](crate::ops::project::op::FastProjected))
//! in a row as one op ([`FastChain`]): each output row of the first goes
//! straight into the second's expansion, so the activation between them
//! never exists whole.
//!
//! On EfficientNet-Lite0 that is the first two blocks: the 16 x 112 x 112
//! planes between them (803 KB) were written out by the first and read back
//! by the second, from beyond the L2 cache; run node by node with their
//! data in cache, each block took 0.11 ms less. Now one row of them
//! (7 KB) lives in L1. A block with a residual does not chain onto the
//! block before it (it would need that block's whole output as its
//! residual); it may chain onto the block after it. AVX-512F only.

pub mod op;
pub mod patch;

pub use patch::use_fast_chain;
