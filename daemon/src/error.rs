//! The one error type of the vcfd library.

use std::path::PathBuf;
use thiserror::Error;

/// What can fail around the analysis: files, DICOM parsing and encoding.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] vcfd_model::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that is not DICOM or cannot be decoded; carries the file so the admin can find it.
    #[error("{}: {reason}", path.display())]
    Dicom { path: PathBuf, reason: String },
    /// Input that contains no analysable CT series.
    #[error("no CT series to analyse: {0}")]
    NoSeries(String),
    #[error("cannot write DICOM: {0}")]
    Write(String),
    #[error("cannot write image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// A config file that is not valid TOML or names an unknown option.
    #[error("config {}: {reason}", path.display())]
    ConfigParse { path: PathBuf, reason: String },
    /// A config file with semantic problems; lists all of them so one edit fixes everything.
    #[error("config {} has {} problem(s):\n  {}", path.display(), problems.len(), problems.join("\n  "))]
    ConfigInvalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// A PEM file (certificate, key, CA) that cannot be used.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// TLS settings of a PACS destination that rustls refuses.
    #[error("PACS {destination:?}: TLS: {reason}")]
    Tls { destination: String, reason: String },
    /// `vcfd provision` found an identity and was not told to replace it.
    #[error("an identity already exists ({}); nothing was changed. Use --force to replace it (the PACS must then trust the new certificate)", existing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    IdentityExists { existing: Vec<PathBuf> },
    /// Provisioning input or key generation failed.
    #[error("provisioning: {0}")]
    Provision(String),
    /// The job store (sled) failed; the daemon cannot promise durability without it.
    #[error("state database: {0}")]
    Store(String),
    /// A delivery to a PACS failed; `retry` says whether trying later can help.
    #[error("PACS {destination:?}: {reason}")]
    Delivery {
        destination: String,
        retry: crate::forward::Retry,
        reason: String,
    },
    /// The daemon's DICOM, HTTP or service plumbing failed (bind, privilege drop, runtime).
    #[error("service: {0}")]
    Service(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(e.to_string())
    }
}

/// An error and its causes in one line. dicom-rs and rustls errors print only their top level
/// ("could not connect to server"); the admin needs the cause ("Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Result alias for the vcfd library.
pub type Result<T> = std::result::Result<T, Error>;
