//! Records shared by the phantom's `truth.json` and the analysis report.
//!
//! Both use the same field names on purpose: evaluation compares them field by field.

use crate::morphometry::Morphology;
use serde::{Deserialize, Serialize};

/// The six morphometry keypoints of one vertebral body, LPS mm.
///
/// "Upper"/"lower" are the cranial/caudal endplates; "anterior" is ventral, "posterior" dorsal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keypoints {
    pub upper_anterior: [f64; 3],
    pub upper_middle: [f64; 3],
    pub upper_posterior: [f64; 3],
    pub lower_anterior: [f64; 3],
    pub lower_middle: [f64; 3],
    pub lower_posterior: [f64; 3],
}

impl Keypoints {
    /// Anterior, middle and posterior heights: distances between paired endplate points.
    pub fn heights(&self) -> Heights {
        Heights {
            anterior: dist(self.upper_anterior, self.lower_anterior),
            middle: dist(self.upper_middle, self.lower_middle),
            posterior: dist(self.upper_posterior, self.lower_posterior),
        }
    }

    /// The points in a fixed order (upper a/m/p, lower a/m/p), for models and tables.
    pub fn as_array(&self) -> [[f64; 3]; 6] {
        [
            self.upper_anterior,
            self.upper_middle,
            self.upper_posterior,
            self.lower_anterior,
            self.lower_middle,
            self.lower_posterior,
        ]
    }
}

/// Vertebral body heights in mm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heights {
    pub anterior: f64,
    pub middle: f64,
    pub posterior: f64,
}

/// Ground truth for one vertebra of a phantom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VertebraTruth {
    /// "T1".."L5", or "S1" for the sacrum's top.
    pub level: String,
    /// Centre of the vertebral body (not of the whole vertebra), LPS mm.
    pub center_mm: [f64; 3],
    pub keypoints_mm: Keypoints,
    pub heights_mm: Heights,
    /// Heights before any fracture was applied: the "expected" reference for crush deformity.
    pub normal_heights_mm: Heights,
    /// Fractional height loss, 0..1.
    pub deformity: f64,
    pub genant_grade: u8,
    pub morphology: Morphology,
    /// Mean HU of the trabecular core (cortex and endplates excluded) as rendered.
    pub trabecular_hu: f64,
    /// Whether the body's centre lies inside the scanned volume.
    pub in_view: bool,
    /// Non-fracture findings that a reader must not call fractures.
    #[serde(default)]
    pub mimics: Vec<String>,
    /// The fracture the phantom rendered here (its grade follows from the heights above).
    #[serde(default)]
    pub fracture: Option<FractureTruth>,
}

/// A rendered fracture: type and the fractional height loss asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FractureTruth {
    /// "wedge", "biconcave" or "crush".
    pub kind: String,
    /// Intended fractional height loss (the measured `deformity` equals it unless the
    /// vertebra's normal shape already exceeds it).
    pub severity: f64,
    /// Share of the loss taken by the upper endplate.
    pub upper_share: f64,
}

/// Ring artifact description in truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingTruth {
    /// Ring radii about the reconstruction centre, mm.
    pub radii_mm: Vec<f64>,
    /// Peak contrast of each ring, HU.
    pub strength_hu: f64,
    /// Reconstruction centre (LPS mm, x and y).
    pub center_mm: [f64; 2],
}

/// Metal in the phantom (cement or screws) with the levels it is in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetalTruth {
    pub kind: String,
    pub levels: Vec<String>,
}

/// Study-level facts of a phantom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyTruth {
    /// Coronal Cobb angle of the scoliosis, degrees (0 when straight).
    pub cobb_angle_deg: f64,
    /// Sagittal thoracic kyphosis angle (T4 upper to T12 lower endplate), degrees.
    pub kyphosis_deg: f64,
    /// Sagittal lumbar lordosis angle (L1 upper to S1 upper endplate), degrees.
    pub lordosis_deg: f64,
    pub slice_thickness_mm: f64,
    pub pixel_spacing_mm: f64,
    pub slice_spacing_mm: f64,
    pub noise_hu: f64,
    pub rings: Option<RingTruth>,
    pub metal: Option<MetalTruth>,
    pub contrast: bool,
    /// Levels whose body centre is in view, cranial to caudal.
    pub levels_in_view: Vec<String>,
    /// Cobb angle measured only over the vertebrae in view (what an analysis can see).
    #[serde(default)]
    pub cobb_angle_in_view_deg: f64,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub kvp: f64,
    /// Reconstruction (= data collection) centre, LPS mm; rings are concentric about it.
    #[serde(default)]
    pub reconstruction_center_mm: [f64; 3],
    /// Per-patient trabecular bone density (HU) the bodies were rendered with.
    #[serde(default)]
    pub bone_density_hu: f64,
    #[serde(default)]
    pub habitus: String,
    /// "up" (out of the field) or "down" (beside the body).
    #[serde(default)]
    pub arms: String,
    /// Scoliosis description (apex and convex side) when the spine is curved laterally.
    #[serde(default)]
    pub scoliosis: Option<String>,
    /// Protocol that chose the coverage (chest, abdomen, chest-abdomen, spine, custom).
    #[serde(default)]
    pub protocol: String,
    /// The lowest rib-bearing vertebra (the anchor for counting levels).
    #[serde(default)]
    pub lowest_rib_level: String,
}

/// Everything `vcfd phantom` knows about the study it rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub seed: u64,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub vertebrae: Vec<VertebraTruth>,
    pub study: StudyTruth,
}

pub(crate) fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}
