//! The whole analysis of one CT series: spine -> reformat -> keypoints -> morphometry ->
//! levels -> density -> quality, each stage in the module named after it.

use crate::density::{bmd, trabecular_hu};
use crate::findings::{Findings, VertebraFinding};
use crate::keypoints::{DecodeOptions, Detection, KeypointModel, Precision};
use crate::levels::{assign_levels, Body};
use crate::morphometry::classify;
use crate::quality::{assess, QualityOptions};
use crate::reformat::{curved_sagittal, Reformat, ReformatOptions};
use crate::spine::{locate, Centreline, SpineOptions};
use crate::truth::{Heights, Keypoints};
use crate::{Error, Result, Volume};
use std::collections::BTreeMap;
use std::time::Instant;

/// What the analysis needs to know about the acquisition beyond the voxel grid.
#[derive(Clone, Debug, Default)]
pub struct ScanInfo {
    /// Nominal reconstructed slice thickness (mm), when the images state it.
    pub slice_thickness_mm: Option<f64>,
    /// Distance between slice centres (mm).
    pub slice_spacing_mm: f64,
    /// Gantry tilt found in the slice positions (degrees).
    pub gantry_tilt_deg: f64,
    /// Reconstruction (or data collection) centre, LPS mm, when the images state it: the
    /// centre that ring artifacts are concentric about.
    pub recon_center_mm: Option<[f64; 3]>,
}

/// The findings plus the images they were measured on (for the overlay series).
#[derive(Clone, Debug)]
pub struct Analysis {
    pub findings: Findings,
    /// `None` when no spine was found (the findings then say why in `quality`).
    pub reformat: Option<Reformat>,
    pub centreline: Option<Centreline>,
}

/// Knobs of the analysis.
#[derive(Clone, Debug)]
pub struct AnalysisOptions {
    pub decode: DecodeOptions,
    /// Run the endplate refinement on the keypoint network's points (off only to measure
    /// what it adds).
    pub refine_endplates: bool,
    pub quality: QualityOptions,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            decode: DecodeOptions::default(),
            refine_endplates: true,
            quality: QualityOptions::default(),
        }
    }
}

/// Version of the shipped networks (keypoint and endplate, model/MODEL_CARD.md), raised
/// whenever their weights change: a report must say which weights measured it, and the
/// result UIDs derive from it. The software's own version is written beside it.
pub const WEIGHTS_VERSION: &str = "0.3.0";

/// Version string of the analysis, written into every report and SR.
pub fn model_version(precision: Precision) -> String {
    format!("vcfd-keypoints {WEIGHTS_VERSION} {}", precision.as_str())
}

/// A vertebral body as measured, before levels and grading.
struct Measured {
    det: Detection,
    keypoints: Keypoints,
    center: [f64; 3],
    heights: Heights,
}

fn mean3(points: &[[f64; 3]]) -> [f64; 3] {
    let n = points.len().max(1) as f64;
    let mut c = [0.0; 3];
    for p in points {
        for a in 0..3 {
            c[a] += p[a] / n;
        }
    }
    c
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Height the neighbours predict for vertebra `i`: the mean of the larger of (Ha, Hp) of the
/// nearest adjacent bodies above and below (Genant's crush criterion). Only neighbours that
/// are not deformed themselves count, and only across normal spacing (a missed body between
/// them would make the comparison meaningless). `None` when no usable neighbour exists.
fn expected_height(m: &[Measured], i: usize, spacing: f64) -> Option<f64> {
    let reference = |h: &Heights| h.anterior.max(h.posterior);
    let undeformed = |h: &Heights| {
        let r = reference(h);
        r > 0.0 && h.anterior.min(h.posterior).min(h.middle) / r > 0.8
    };
    let mut refs = Vec::new();
    for j in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
        let Some(n) = m.get(j) else { continue };
        let d = crate::volume::norm(crate::volume::sub3(n.center, m[i].center));
        if d < 1.6 * spacing && undeformed(&n.heights) {
            refs.push(reference(&n.heights));
        }
    }
    if refs.is_empty() {
        None
    } else {
        Some(refs.iter().sum::<f64>() / refs.len() as f64)
    }
}

/// Runs the whole analysis on one volume.
pub fn analyze(
    volume: &Volume,
    scan: &ScanInfo,
    model: &KeypointModel,
    opts: &AnalysisOptions,
) -> Result<Analysis> {
    let mut timing = BTreeMap::new();
    let t = Instant::now();
    let centreline = locate(volume, &SpineOptions::default());
    timing.insert("spine".to_string(), ms(t));
    let mut bodies = Vec::new();
    let (reformat, centreline) = match centreline {
        Ok(line) => {
            let t = Instant::now();
            let r = curved_sagittal(volume, &line, &ReformatOptions::default())?;
            timing.insert("reformat".to_string(), ms(t));
            let t = Instant::now();
            let mut dets = model.detect(&r, &opts.decode)?;
            timing.insert("keypoints".to_string(), ms(t));
            if opts.refine_endplates {
                let t = Instant::now();
                model.endplates().refine(&r, &mut dets)?;
                timing.insert("endplates".to_string(), ms(t));
            }
            bodies = measure(volume, &r, dets);
            (Some(r), Some(line))
        }
        // No spine is a finding about the scan (coverage), not a failure of the analysis.
        Err(Error::Spine(_)) => (None, None),
        Err(e) => return Err(e),
    };

    let t = Instant::now();
    let body_refs: Vec<Body> = bodies
        .iter()
        .map(|b| Body {
            center_mm: b.center,
            keypoints_mm: b.keypoints.clone(),
        })
        .collect();
    let levels = assign_levels(volume, &body_refs);
    timing.insert("levels".to_string(), ms(t));

    let spacing = median_spacing(&bodies);
    let t = Instant::now();
    let mut vertebrae: Vec<VertebraFinding> = Vec::with_capacity(bodies.len());
    for (i, b) in bodies.iter().enumerate() {
        // Above T1 is outside what this analysis grades (one over C7 was graded 2 on a
        // validation seed); such a body still serves as a neighbour for the expected heights.
        // One counted below L5 is kept: the network is trained not to see S1, so that is more
        // likely a count one off.
        if i < levels.above_t1 {
            continue;
        }
        let level = levels.levels.get(i).cloned().flatten();
        let d = classify(b.heights, expected_height(&bodies, i, spacing));
        let trabecular_hu = match level.as_deref() {
            Some("T11" | "T12" | "L1" | "L2" | "L3") => trabecular_hu(volume, &b.keypoints),
            _ => None,
        };
        vertebrae.push(VertebraFinding {
            level,
            center_mm: b.center,
            keypoints_mm: b.keypoints.clone(),
            heights_mm: b.heights,
            deformity: d.value,
            genant_grade: d.grade,
            morphology: d.morphology,
            trabecular_hu,
            confidence: b.det.confidence,
        });
    }
    let bmd = bmd(&vertebrae);
    timing.insert("morphometry".to_string(), ms(t));

    let t = Instant::now();
    let quality = assess(volume, scan, centreline.as_ref(), &vertebrae, &opts.quality);
    timing.insert("quality".to_string(), ms(t));

    let max_genant_grade = vertebrae.iter().map(|v| v.genant_grade).max().unwrap_or(0);
    // The patient score is the worst deformity: continuous, so ROC analysis can sweep it;
    // grade 2 (0.25) is the operating point.
    let fracture_score = vertebrae
        .iter()
        .map(|v| v.deformity)
        .fold(0.0_f64, f64::max);
    Ok(Analysis {
        findings: Findings {
            vertebrae,
            max_genant_grade,
            fracture_score,
            levels_anchored: levels.anchored,
            levels_note: match levels.above_t1 {
                0 => levels.note,
                n => format!(
                    "{} {n} body(ies) counted above T1 (cervical) not graded.",
                    levels.note
                ),
            },
            bmd,
            quality,
            model_version: model_version(model.precision()),
            timing_ms: timing,
        },
        reformat,
        centreline,
    })
}

/// Median distance between neighbouring body centres (mm): the local vertebral spacing.
fn median_spacing(m: &[Measured]) -> f64 {
    let mut d: Vec<f64> = m
        .windows(2)
        .map(|w| crate::volume::norm(crate::volume::sub3(w[1].center, w[0].center)))
        .collect();
    if d.is_empty() {
        return 30.0;
    }
    d.sort_by(f64::total_cmp);
    d[d.len() / 2]
}

/// How close (mm) to the first or last slice a keypoint may lie. Beyond the last slice the
/// reformat reads air, so a body cut by the field of view shows a sharp false "endplate" at
/// the cut; and an endplate within a couple of millimetres of the edge has no disc beyond it
/// to be measured against.
const EDGE_MARGIN_MM: f64 = 2.0;

/// Maps detections to patient space and keeps those whose body lies wholly inside the scan
/// (a body cut by the first or last slice has heights that measure the field of view, not
/// the bone) and whose endplates are in anatomical order.
fn measure(volume: &Volume, r: &Reformat, dets: Vec<Detection>) -> Vec<Measured> {
    let g = &volume.geometry;
    let k_max = g.dims[2] as f64 - 1.0;
    let margin = (EDGE_MARGIN_MM / g.spacing[2]).max(0.5);
    let inside = |p: [f64; 3]| {
        let v = g.patient_to_voxel(p);
        v[2] >= margin && v[2] <= k_max - margin
    };
    let mut out = Vec::new();
    for det in dets {
        // Each upper point must lie cranial of its lower partner (rows grow caudally): an
        // inverted "body" is a spurious peak whose points landed on a neighbour's endplates
        // (seen at a field's top edge, 3 mm "tall", graded 3), not bone to measure.
        if (0..3).any(|i| det.keypoints[i][1] >= det.keypoints[i + 3][1]) {
            continue;
        }
        let pts: Vec<[f64; 3]> = det
            .keypoints
            .iter()
            .map(|k| r.to_patient(k[0], k[1], 0.0))
            .collect();
        if !pts.iter().all(|&p| inside(p)) {
            continue;
        }
        let keypoints = Keypoints {
            upper_anterior: pts[0],
            upper_middle: pts[1],
            upper_posterior: pts[2],
            lower_anterior: pts[3],
            lower_middle: pts[4],
            lower_posterior: pts[5],
        };
        let heights = keypoints.heights();
        out.push(Measured {
            center: mean3(&pts),
            keypoints,
            heights,
            det,
        });
    }
    out
}
