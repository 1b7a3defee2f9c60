//! imagefleet's classifier: the model manifest, image decoding,
//! preprocessing, tract inference and top-k. No I/O beyond loading the model.

pub mod bench;
pub mod classifier;
pub mod decode;
pub mod error;
pub mod gif_frames;
pub mod integrity;
pub mod jpeg_dc_scans;
pub mod jpeg_reduced;
pub mod jpeg_scaled;
pub mod jpeg_segments;
pub mod lzw;
pub mod manifest;
pub mod ops;
pub mod png_rows;
pub mod preprocess;
#[cfg(test)]
mod test_support;
pub mod tiff_strips;
pub mod webp_scaled;

pub use classifier::{Classification, Classifier, Kernels, Prediction, StageTimings, TOP_K};
pub use error::{ClassifyError, ModelError};
pub use manifest::ModelManifest;
