//! Scan-quality checks: scanner artifacts, anatomy and acquisition problems that make the
//! fracture findings unreliable, each reported as a flag with measured values.
//!
//! Why this exists: two commercial services reported ring artifacts of a failing detector as
//! fractures, one broke down on severe scoliosis and one missed fractures on a strong kyphosis.
//! vcfd says so itself instead of leaving it to experts reading the results.
//!
//! Severity policy (`reliable` = no Critical flag):
//! - Critical: the morphometry itself cannot be trusted. Rings crossing the spinal column or
//!   strong enough to draw a line through bone (they look like endplate steps on the sagittal
//!   reformat: exactly the false fractures seen in Moscow); fewer than `min_vertebrae` bodies;
//!   the column cut by the field of view; slices of 5 mm or more (endplate position uncertain
//!   by half a slice, the size of a grade-1 height loss); motion steps large enough to shift an
//!   endplate; severe scoliosis (rotated bodies: sagittal heights are not heights) and extreme
//!   kyphosis.
//! - Warning: results are usable but must be read with care (moderate scoliosis or
//!   hyperkyphosis, metal near the spine, slices between 3 and 5 mm, rings away from the spine,
//!   small motion steps).
//! - Info: worth recording (gantry tilt; the reformat corrects it).

pub mod coverage;
pub mod curvature;
pub mod metal;
pub mod motion;
pub mod rings;

use crate::analysis::ScanInfo;
use crate::findings::{Quality, QualityFlag, Severity, VertebraFinding};
use crate::spine::Centreline;
use crate::volume::Volume;
use serde_json::Value;
use std::collections::BTreeMap;

/// Thresholds of the checks; defaults are the documented clinical/technical limits.
#[derive(Clone, Debug)]
pub struct QualityOptions {
    /// Coronal Cobb angle at which scoliosis is flagged (Warning), degrees.
    pub scoliosis_flag_deg: f64,
    /// Cobb angle from which the flag is Critical (strong vertebral rotation), degrees.
    pub scoliosis_critical_deg: f64,
    /// Thoracic kyphosis above which hyperkyphosis is flagged (Warning), degrees.
    pub hyperkyphosis_flag_deg: f64,
    /// Kyphosis from which the flag is Critical, degrees.
    pub hyperkyphosis_critical_deg: f64,
    /// Slices thicker than this are flagged (3.0: a 3 mm reconstruction is not flagged).
    pub max_slice_thickness_mm: f64,
    /// Slices at least this thick make the result unreliable (Critical).
    pub critical_slice_thickness_mm: f64,
    /// Fewer vertebral bodies than this make a Critical coverage flag.
    pub min_vertebrae: usize,
    /// Ring statistic (robust z-score of the persistent radial residual) needed to flag.
    pub ring_min_score: f64,
    /// Ring contrast needed to flag, HU (fainter rings cannot draw a line through bone).
    pub ring_min_contrast_hu: f64,
    /// Ring contrast from which a ring anywhere is Critical, HU.
    pub ring_critical_contrast_hu: f64,
    /// HU above which a voxel near the spine counts as metal (cortical bone stays below).
    pub metal_hu: f64,
    /// Metal volume near the spine needed to flag, mm^3 (a few noisy voxels are not metal).
    pub metal_min_volume_mm3: f64,
    /// Motion step (jump of the body outline between neighbouring slices) flagged, mm.
    pub motion_step_mm: f64,
    /// Motion step from which the flag is Critical, mm.
    pub motion_critical_mm: f64,
    /// Gantry tilt above which an Info flag records it, degrees.
    pub gantry_tilt_flag_deg: f64,
    /// Vertebral body centres closer than this to the image border are cut off, mm.
    pub fov_margin_mm: f64,
}

impl Default for QualityOptions {
    fn default() -> Self {
        Self {
            scoliosis_flag_deg: 20.0,
            scoliosis_critical_deg: 45.0,
            hyperkyphosis_flag_deg: 60.0,
            hyperkyphosis_critical_deg: 80.0,
            max_slice_thickness_mm: 3.0,
            critical_slice_thickness_mm: 5.0,
            min_vertebrae: 4,
            ring_min_score: 14.0,
            ring_min_contrast_hu: 6.0,
            ring_critical_contrast_hu: 25.0,
            metal_hu: 2000.0,
            metal_min_volume_mm3: 150.0,
            motion_step_mm: 4.0,
            motion_critical_mm: 7.0,
            gantry_tilt_flag_deg: 1.0,
            fov_margin_mm: 20.0,
        }
    }
}

/// Builds one flag; `values` keeps the measured numbers behind it.
pub(crate) fn flag(
    kind: &str,
    severity: Severity,
    values: Vec<(&str, Value)>,
    text: String,
) -> QualityFlag {
    QualityFlag {
        kind: kind.to_string(),
        severity,
        values: values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        text,
    }
}

/// Rounds for reports: measured values are not more precise than 0.1.
pub(crate) fn r1(x: f64) -> Value {
    serde_json::json!((x * 10.0).round() / 10.0)
}

/// Runs every check and returns the verdict. `vertebrae` may be empty (no spine found): that
/// alone is a Critical coverage flag.
pub fn assess(
    volume: &Volume,
    scan: &ScanInfo,
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
    opts: &QualityOptions,
) -> Quality {
    let centre = rings::centre_mm(volume, scan);
    // The ring search is the only costly check: run it beside the rest.
    let (ring, (mut flags, metal, motion)) = rayon::join(
        || rings::detect(volume, centre),
        || {
            let mut f = coverage::check(volume, scan, centreline, vertebrae, opts);
            f.extend(curvature::check(centreline, vertebrae, opts));
            let m = metal::detect(volume, centreline, vertebrae, opts.metal_hu);
            let mo = motion::detect(volume, centreline);
            (f, m, mo)
        },
    );
    flags.extend(rings::flag_for(&ring, volume, centreline, opts));
    flags.extend(metal::flag_for(&metal, opts));
    flags.extend(motion::flag_for(&motion, opts));
    flags.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    Quality {
        reliable: !flags.iter().any(|f| f.severity == Severity::Critical),
        flags,
    }
}

/// Median of finite values (NaN when none); reorders the slice.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    let mut n = 0;
    for i in 0..v.len() {
        if v[i].is_finite() {
            v.swap(n, i);
            n += 1;
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    let v = &mut v[..n];
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lo = v[..mid].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lo + m)
    }
}

/// Robust standard deviation (1.4826 x median absolute deviation) of finite values.
pub(crate) fn robust_sd(v: &[f64]) -> f64 {
    let mut a: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    let m = median(&mut a);
    let mut d: Vec<f64> = a.iter().map(|x| (x - m).abs()).collect();
    1.4826 * median(&mut d)
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::analysis::ScanInfo;
    use crate::findings::VertebraFinding;
    use crate::phantom::{generate, Level, Phantom, PhantomOptions};

    /// Small, fast render of T10-L3 (about 20 s of CPU at most).
    pub fn small(seed: u64, f: impl FnOnce(&mut PhantomOptions)) -> Phantom {
        let mut o = PhantomOptions {
            rows: Some(224),
            pixel_spacing_mm: Some(1.5),
            slice_thickness_mm: Some(3.0),
            slice_spacing_mm: Some(3.0),
            from_level: Some(Level::T10),
            to_level: Some(Level::L3),
            cobb_deg: Some(0.0),
            kyphosis_deg: Some(35.0),
            ..Default::default()
        };
        f(&mut o);
        generate(seed, &o).expect("phantom renders")
    }

    pub fn scan_of(ph: &Phantom) -> ScanInfo {
        ScanInfo {
            slice_thickness_mm: Some(ph.acquisition.slice_thickness_mm),
            slice_spacing_mm: ph.acquisition.slice_spacing_mm,
            gantry_tilt_deg: 0.0,
            recon_center_mm: Some(ph.acquisition.reconstruction_center_mm),
        }
    }

    /// The in-view vertebrae as a perfect detector would report them.
    pub fn vertebrae_of(ph: &Phantom) -> Vec<VertebraFinding> {
        ph.truth
            .vertebrae
            .iter()
            .filter(|v| v.in_view && (v.level.starts_with('T') || v.level.starts_with('L')))
            .map(|v| VertebraFinding {
                level: Some(v.level.clone()),
                center_mm: v.center_mm,
                keypoints_mm: v.keypoints_mm.clone(),
                heights_mm: v.heights_mm,
                deformity: v.deformity,
                genant_grade: v.genant_grade,
                morphology: v.morphology,
                trabecular_hu: None,
                confidence: 1.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn clean_phantoms_raise_no_flag_and_thick_slices_do() {
        for seed in [101u64, 102] {
            let ph = small(seed, |_| {});
            let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
            let q = assess(
                &ph.volume,
                &scan_of(&ph),
                Some(&line),
                &vertebrae_of(&ph),
                &QualityOptions::default(),
            );
            assert!(
                q.reliable && q.flags.is_empty(),
                "seed {seed}: {:?}",
                q.flags
            );
        }
        let ph = small(103, |o| {
            o.slice_thickness_mm = Some(5.0);
            o.slice_spacing_mm = Some(5.0);
        });
        let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
        let q = assess(
            &ph.volume,
            &scan_of(&ph),
            Some(&line),
            &vertebrae_of(&ph),
            &QualityOptions::default(),
        );
        let kinds: Vec<&str> = q.flags.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(kinds, vec!["thick_slices"], "{:?}", q.flags);
        assert!(!q.reliable);
        // No spine found: coverage is Critical.
        let q = assess(
            &ph.volume,
            &scan_of(&ph),
            None,
            &[],
            &QualityOptions::default(),
        );
        assert!(q
            .flags
            .iter()
            .any(|f| f.kind == "coverage" && f.severity == Severity::Critical));
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&mut [3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut [f64::NAN]).is_nan());
        let sd = robust_sd(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert!((sd - 1.4826).abs() < 1e-9);
    }
}
