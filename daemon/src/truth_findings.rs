//! TEST SUPPORT ONLY: findings made from a phantom's ground truth.
//!
//! Stands in for the analysis in tests of the result writers (SR, image series) and for
//! rendering the documentation images, so those can be built and checked before, and
//! independently of, the keypoint CNN. Never used on the product's analysis path: the
//! findings it returns are exactly the phantom's truth, not a measurement.

use std::collections::BTreeMap;
use vcfd_model::findings::{Bmd, Findings, Quality, VertebraFinding};
use vcfd_model::truth::Truth;

/// Levels the product reports (T1..L5); truth also has C7/S1 entries.
fn reported(level: &str) -> bool {
    let n = |p: &str| level.strip_prefix(p).and_then(|s| s.parse::<u32>().ok());
    matches!(n("T"), Some(1..=12)) || matches!(n("L"), Some(1..=5))
}

/// Trabecular HU is measured for T11-L3 only (as the analysis does).
fn hu_level(level: &str) -> bool {
    matches!(level, "T11" | "T12" | "L1" | "L2" | "L3")
}

/// The truth as if an analysis had measured it perfectly (model version "phantom-truth").
pub fn findings_from_truth(truth: &Truth) -> Findings {
    let vertebrae: Vec<VertebraFinding> = truth
        .vertebrae
        .iter()
        .filter(|v| v.in_view && reported(&v.level))
        .map(|v| VertebraFinding {
            level: Some(v.level.clone()),
            center_mm: v.center_mm,
            keypoints_mm: v.keypoints_mm.clone(),
            heights_mm: v.heights_mm,
            deformity: v.deformity,
            genant_grade: v.genant_grade,
            morphology: v.morphology,
            trabecular_hu: hu_level(&v.level).then_some(v.trabecular_hu),
            confidence: 1.0,
        })
        .collect();
    let max_genant_grade = vertebrae.iter().map(|v| v.genant_grade).max().unwrap_or(0);
    let fracture_score = vertebrae.iter().map(|v| v.deformity).fold(0.0, f64::max);
    let l1 = vertebrae
        .iter()
        .find(|v| v.level.as_deref() == Some("L1"))
        .and_then(|v| v.trabecular_hu);
    // Pickhardt et al., Ann Intern Med 2013;158:588-95: L1 < 100 HU suggests osteoporosis,
    // > 150 HU is normal.
    let verdict = match l1 {
        None => "not_assessed",
        Some(h) if h < 100.0 => "osteoporosis_suspected",
        Some(h) if h <= 150.0 => "osteopenia_possible",
        Some(_) => "normal",
    };
    Findings {
        vertebrae,
        max_genant_grade,
        fracture_score,
        levels_anchored: true,
        levels_note: "Levels from the phantom's truth.".into(),
        bmd: Bmd {
            l1_hu: l1,
            level_used: l1.map(|_| "L1".to_string()),
            verdict: verdict.into(),
            note: "CT attenuation is not DXA bone mineral density.".into(),
        },
        quality: Quality {
            reliable: true,
            flags: Vec::new(),
        },
        model_version: "phantom-truth".into(),
        timing_ms: BTreeMap::new(),
    }
}
