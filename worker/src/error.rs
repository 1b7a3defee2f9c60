use std::path::PathBuf;

/// Why an image could not be classified. Each variant maps to one stable
/// `kind()` string that travels in result messages and HTTP errors.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("the upload is empty")]
    Empty,
    #[error("not a supported image format (JPEG, PNG, WebP, GIF, BMP or TIFF)")]
    UnsupportedFormat,
    #[error("image is {width}x{height} pixels, more than the limit of {max_pixels} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// Within the pixel budget, but its layout (bit depth, channels,
    /// format) would take more memory to decode than the worker allows.
    /// The same kind as `TooManyPixels` for clients: 413.
    #[error(
        "image is {width}x{height} pixels ({layout}): decoding it needs about {} MiB, \
         more than the limit of {} MiB",
        needed.div_ceil(1024 * 1024),
        max_bytes / (1024 * 1024)
    )]
    TooMuchMemory {
        width: u32,
        height: u32,
        layout: String,
        needed: u64,
        max_bytes: u64,
    },
    #[error("image could not be decoded: {0}")]
    Undecodable(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

impl ClassifyError {
    /// A short machine-readable name, stable across versions.
    pub fn kind(&self) -> &'static str {
        match self {
            ClassifyError::Empty => "empty",
            ClassifyError::UnsupportedFormat => "unsupported_format",
            ClassifyError::TooManyPixels { .. } | ClassifyError::TooMuchMemory { .. } => {
                "too_many_pixels"
            }
            ClassifyError::Undecodable(_) => "undecodable",
            ClassifyError::Inference(_) => "inference",
        }
    }
}

/// Why the model could not be loaded: these stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // Not named `source`: the message already holds the I/O error, and as
    // a source too it was printed twice in error chains.
    #[error("cannot read {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("invalid model manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("labels file {path}: {message}")]
    Labels { path: PathBuf, message: String },
    #[error("cannot load ONNX model {path}: {message}")]
    Onnx { path: PathBuf, message: String },
}
