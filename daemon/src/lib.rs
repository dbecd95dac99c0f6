//! vcfd: the appliance around the pure analysis in `vcfd-model`.
//!
//! This crate owns everything that touches files, the network and persistent state:
//! reading and writing DICOM, and (in later stages) the SCP, the job store and forwarding.

pub mod config;
pub mod dicom_in;
pub mod dicom_out;
pub mod error;
pub mod preview;
pub mod provision;
pub mod report;

pub use error::{Error, Result};

/// Product name as it appears in DICOM (Manufacturer's model, SR device observer) and logs.
pub const PRODUCT_NAME: &str = "vcfd";
/// Product version, from the crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
