//! vcfd: the appliance around the pure analysis in `vcfd-model`.
//!
//! This crate owns everything that touches files, the network and persistent state:
//! reading and writing DICOM, and (in later stages) the SCP, the job store and forwarding.

pub mod alerts;
pub mod completion;
pub mod config;
pub mod dicom_in;
pub mod dicom_out;
pub mod error;
pub mod font;
pub mod forward;
pub mod http;
pub mod overlay;
pub mod pipeline;
pub mod preview;
pub mod provision;
pub mod report;
pub mod results;
pub mod retention;
pub mod scp;
pub mod service;
pub mod spool;
pub mod sr;
pub mod status_page;
pub mod store;
/// Test support: findings from phantom truth (never on the product path).
pub mod truth_findings;
pub mod worker;

pub use error::{Error, Result};

/// Product name as it appears in DICOM (Manufacturer's model, SR device observer) and logs.
pub const PRODUCT_NAME: &str = "vcfd";
/// Product version, from the crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
