//! Pure computation for vcfd: CT volume in, findings out.
//!
//! This crate never touches the network or persistent state; the daemon feeds it volumes
//! and stores what it returns. Each pipeline stage lives in a module named after it.

pub mod analysis;
pub mod dataset;
pub mod density;
pub mod endplates;
pub mod error;
pub mod evaluate;
pub mod findings;
pub mod keypoints;
pub mod levels;
pub mod metrics;
pub mod morphometry;
pub mod phantom;
pub mod quality;
pub mod reformat;
pub mod series;
pub mod spine;
pub mod truth;
pub mod volume;

pub use error::{Error, Result};
pub use volume::{Geometry, Volume};
