//! The one error type of the crate: every public function validates its
//! arguments and reports the offending value here instead of panicking.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by vlkernels. Each message names the bad value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of its valid domain (names the argument and value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Two sizes that must agree do not.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// A size product does not fit in `usize`.
    #[error("size overflow: {0}")]
    Overflow(String),
    /// A data type that the operation does not handle.
    #[error("unsupported dtype: {0}")]
    UnsupportedDType(String),
    /// A requested kernel family or feature is not available on this machine.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A malformed file (npy, safetensors, json, ...).
    #[error("bad file format: {0}")]
    Format(String),
    /// I/O failure with the path that failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// CUDA driver, NVRTC or cuBLAS failure.
    #[error("CUDA error: {0}")]
    Cuda(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`] built from any displayable message.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidArgument(msg.to_string())
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
