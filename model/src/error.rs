//! The one error type of the model crate.

use thiserror::Error;

/// Everything that can go wrong in pure computation, phrased for the person who reads it.
#[derive(Debug, Error)]
pub enum Error {
    /// The voxel buffer does not match the declared grid.
    #[error("volume has {actual} voxels but its geometry {dims:?} needs {expected}")]
    VoxelCount {
        dims: [usize; 3],
        expected: usize,
        actual: usize,
    },
    /// Geometry that cannot describe a real acquisition (zero spacing, degenerate axes).
    #[error("invalid geometry: {0}")]
    Geometry(String),
    /// A set of slices that cannot be stacked into one trustworthy volume.
    #[error("series cannot be assembled: {0}")]
    Series(String),
    /// A reformat that cannot be built from the given centreline.
    #[error("reformat: {0}")]
    Reformat(String),
    /// No spine could be found where one must be (e.g. a scan that does not contain one).
    #[error("spine not found: {0}")]
    Spine(String),
    /// The keypoint network could not be loaded or run.
    #[error("keypoint model: {0}")]
    Model(String),
    /// A phantom option outside the range the generator can render truthfully.
    #[error("invalid phantom option: {0}")]
    PhantomOption(String),
}

/// Result alias for the model crate.
pub type Result<T> = std::result::Result<T, Error>;
