//! imagefleet's classifier: the model manifest, image decoding,
//! preprocessing, tract inference and top-k. No I/O beyond loading the model.

pub mod bench;
pub mod classifier;
pub mod decode;
pub mod depthwise;
pub mod error;
pub mod expand;
mod fusion;
pub mod jpeg_scaled;
pub mod manifest;
pub mod pointwise;
pub mod preprocess;
mod scratch;
pub mod stem;
#[cfg(test)]
mod test_support;

pub use classifier::{Classification, Classifier, Kernels, Prediction, StageTimings, TOP_K};
pub use error::{ClassifyError, ModelError};
pub use manifest::ModelManifest;
