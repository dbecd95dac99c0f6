//! What the analysis of one CT series returns: the contract between the model and everything
//! that reports it (JSON report, DICOM SR, overlay images, status page).
//!
//! Field names follow the analysis report of the fracture-analysis issue and match
//! [`crate::truth`] where both describe the same thing, so evaluation compares them directly.

use crate::morphometry::Morphology;
use crate::truth::{Heights, Keypoints};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One vertebral body as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VertebraFinding {
    /// "T1".."L5"; `None` when no anchor was in view and only relative order is known.
    pub level: Option<String>,
    /// Centre of the vertebral body, LPS mm.
    pub center_mm: [f64; 3],
    pub keypoints_mm: Keypoints,
    pub heights_mm: Heights,
    /// Fractional height loss, 0..1.
    pub deformity: f64,
    pub genant_grade: u8,
    pub morphology: Morphology,
    /// Mean HU of the trabecular core; measured for T11-L3 only.
    pub trabecular_hu: Option<f64>,
    /// 0..1: how sure the detector is that this is a vertebral body with these keypoints.
    pub confidence: f64,
}

/// Opportunistic bone density screening from L1 trabecular HU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bmd {
    /// L1 trabecular HU, or the nearest measured level's when L1 is not in view.
    pub l1_hu: Option<f64>,
    /// Level actually used for `l1_hu`.
    pub level_used: Option<String>,
    /// "osteoporosis_suspected" | "osteopenia_possible" | "normal" | "not_assessed".
    pub verdict: String,
    /// Always says that CT HU is not DXA.
    pub note: String,
}

/// How bad a quality problem is for the reliability of the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; findings still reliable.
    Info,
    /// Findings may be affected; read with care.
    Warning,
    /// Findings are unreliable.
    Critical,
}

/// One problem with the scan itself (ring artifact, scoliosis, metal, coverage...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityFlag {
    /// `ring_artifact`, `scoliosis`, `hyperkyphosis`, `metal`, `coverage`, `thick_slices`, `motion`...
    pub kind: String,
    pub severity: Severity,
    /// Measured values behind the flag (e.g. `cobb_deg`, `radii_mm`), for the SR and the page.
    pub values: BTreeMap<String, serde_json::Value>,
    /// One sentence for the radiologist and the technician.
    pub text: String,
}

/// Scan quality verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// False when any flag is critical: the SR then says the result is unreliable and why.
    pub reliable: bool,
    pub flags: Vec<QualityFlag>,
}

/// Everything the analysis found in one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Cranial to caudal.
    pub vertebrae: Vec<VertebraFinding>,
    pub max_genant_grade: u8,
    /// Continuous patient-level score for ROC analysis (higher = more likely a fracture >= grade 2).
    pub fracture_score: f64,
    /// True when levels are counted from an anchor: T12 (the lowest rib-bearing vertebra)
    /// or, without one, the sacrum below L5.
    pub levels_anchored: bool,
    /// How the levels were counted, or why they are unknown (for the reader to check).
    #[serde(default)]
    pub levels_note: String,
    pub bmd: Bmd,
    pub quality: Quality,
    /// Model identity, e.g. "vcfd-keypoints 0.3.0 int8", for the SR and for reproducibility.
    pub model_version: String,
    /// Wall time per stage, ms.
    pub timing_ms: BTreeMap<String, f64>,
}

impl Findings {
    /// The most severe vertebra, for the conclusion line.
    pub fn worst(&self) -> Option<&VertebraFinding> {
        self.vertebrae
            .iter()
            .filter(|v| v.genant_grade > 0)
            .max_by(|a, b| a.deformity.total_cmp(&b.deformity))
    }
}
