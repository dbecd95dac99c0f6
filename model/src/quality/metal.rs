//! Metal near the spine: vertebroplasty cement, pedicle screws and rods.
//!
//! Cortical bone stays below ~1600 HU even with edge-enhancing kernels; cement and titanium
//! exceed 2000 HU. Only voxels within 60 mm of the body centreline count (screw heads sit about
//! 50 mm behind the body centre), so contrast in the bowel or a hip prosthesis is not reported
//! as a post-operative spine.

use super::{flag, r1, QualityOptions};
use crate::findings::{QualityFlag, Severity, VertebraFinding};
use crate::spine::Centreline;
use crate::volume::Volume;
use rayon::prelude::*;
use serde_json::json;

/// In-plane reach of the spinal region around the body centreline, mm.
const REACH_MM: f64 = 60.0;

/// What the metal search found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetalReport {
    /// Volume of voxels above the metal threshold in the spinal region, mm^3.
    pub volume_mm3: f64,
    pub max_hu: f64,
    /// z extent of the metal, mm (empty when none).
    pub z_range_mm: Option<[f64; 2]>,
    /// Levels (or "unlabelled") of the vertebrae next to the metal.
    pub levels: Vec<String>,
}

/// In-plane spine position at slice height `z`: interpolated centreline, else vertebra centres.
fn spine_xy(points: &[[f64; 3]], z: f64) -> Option<[f64; 2]> {
    let first = points.first()?;
    let last = points.last()?;
    if z <= first[2] {
        return Some([first[0], first[1]]);
    }
    if z >= last[2] {
        return Some([last[0], last[1]]);
    }
    let k = points
        .windows(2)
        .position(|w| z >= w[0][2] && z <= w[1][2])?;
    let (a, b) = (points[k], points[k + 1]);
    let t = if (b[2] - a[2]).abs() < 1e-9 {
        0.0
    } else {
        (z - a[2]) / (b[2] - a[2])
    };
    Some([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])])
}

/// Counts metal voxels around the spine. Without a centreline or vertebrae there is no spinal
/// region and nothing is reported.
pub fn detect(
    volume: &Volume,
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
    metal_hu: f64,
) -> MetalReport {
    let mut points: Vec<[f64; 3]> = match centreline {
        Some(l) if !l.points_mm.is_empty() => l.points_mm.clone(),
        _ => vertebrae.iter().map(|v| v.center_mm).collect(),
    };
    points.sort_by(|a, b| a[2].total_cmp(&b[2]));
    if points.is_empty() {
        return MetalReport::default();
    }
    let g = &volume.geometry;
    let [nx, ny, nz] = g.dims;
    let (hx, hy) = (
        (REACH_MM / g.spacing[0]).ceil() as isize,
        (REACH_MM / g.spacing[1]).ceil() as isize,
    );
    let thr = metal_hu.clamp(-32768.0, 32767.0) as i16;
    let per_slice: Vec<(usize, usize, i16)> = (0..nz)
        .into_par_iter()
        .filter_map(|k| {
            let z = g.voxel_to_patient([0.0, 0.0, k as f64])[2];
            let xy = spine_xy(&points, z)?;
            let v = g.patient_to_voxel([xy[0], xy[1], z]);
            let (ci, cj) = (v[0].round() as isize, v[1].round() as isize);
            let (mut n, mut max) = (0usize, i16::MIN);
            for j in (cj - hy).max(0)..(cj + hy + 1).min(ny as isize) {
                let row = g.index(0, j as usize, k);
                for i in (ci - hx).max(0)..(ci + hx + 1).min(nx as isize) {
                    let dx = (i - ci) as f64 * g.spacing[0];
                    let dy = (j - cj) as f64 * g.spacing[1];
                    if dx * dx + dy * dy > REACH_MM * REACH_MM {
                        continue;
                    }
                    let h = volume.hu[row + i as usize];
                    if h >= thr {
                        n += 1;
                        max = max.max(h);
                    }
                }
            }
            (n > 0).then_some((k, n, max))
        })
        .collect();
    let voxel = g.spacing[0] * g.spacing[1] * g.spacing[2];
    let count: usize = per_slice.iter().map(|s| s.1).sum();
    if count == 0 {
        return MetalReport::default();
    }
    let zs: Vec<f64> = per_slice
        .iter()
        .map(|s| g.voxel_to_patient([0.0, 0.0, s.0 as f64])[2])
        .collect();
    let (zlo, zhi) = (
        zs.iter().cloned().fold(f64::INFINITY, f64::min),
        zs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    // A body is ~25 mm tall: metal within 15 mm of its centre height belongs to it.
    let mut levels: Vec<String> = vertebrae
        .iter()
        .filter(|v| zs.iter().any(|&z| (z - v.center_mm[2]).abs() <= 15.0))
        .map(|v| v.level.clone().unwrap_or_else(|| "unlabelled".into()))
        .collect();
    levels.dedup();
    MetalReport {
        volume_mm3: count as f64 * voxel,
        max_hu: f64::from(per_slice.iter().map(|s| s.2).max().unwrap_or(0)),
        z_range_mm: Some([zlo, zhi]),
        levels,
    }
}

/// Metal makes streaks and a treated (cemented or fused) vertebra is not a fracture
/// measurement: read with care (Warning), the other levels remain valid.
pub fn flag_for(report: &MetalReport, opts: &QualityOptions) -> Option<QualityFlag> {
    if report.volume_mm3 < opts.metal_min_volume_mm3 {
        return None;
    }
    let where_ = if report.levels.is_empty() {
        String::new()
    } else {
        format!(" at {}", report.levels.join(", "))
    };
    let z = report.z_range_mm.unwrap_or([f64::NAN; 2]);
    Some(flag(
        "metal",
        Severity::Warning,
        vec![
            ("volume_mm3", json!(report.volume_mm3.round())),
            ("max_hu", json!(report.max_hu)),
            ("levels", json!(report.levels)),
            ("z_range_mm", json!([r1(z[0]), r1(z[1])])),
        ],
        format!(
            "Metal in the spine{where_} ({:.1} ml, cement or screws: post-operative spine): \
             treated levels and streaks nearby are not fracture measurements.",
            report.volume_mm3 / 1000.0
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn finds_cement_and_screws_at_their_levels_and_nothing_on_clean() {
        let o = QualityOptions::default();
        let ph = small(401, |_| {});
        let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
        let r = detect(&ph.volume, Some(&line), &vertebrae_of(&ph), o.metal_hu);
        assert!(flag_for(&r, &o).is_none(), "{r:?}");
        for (seed, spec, level) in [(402u64, "cement:L1", "L1"), (403, "screws:T12-L1", "T12")] {
            let ph = small(seed, |p| p.metal = Some(spec.parse().unwrap()));
            let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
            let r = detect(&ph.volume, Some(&line), &vertebrae_of(&ph), o.metal_hu);
            let f = flag_for(&r, &o).expect("metal flagged");
            assert!(r.levels.iter().any(|l| l == level), "{spec}: {r:?}");
            assert_eq!(f.severity, Severity::Warning);
            eprintln!("{spec}: {r:?}");
        }
    }
}
