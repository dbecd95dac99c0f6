//! Motion (step artifacts): the patient moved or breathed between slices, so the anatomy
//! jumps from one slice to the next. On a sagittal reformat such a jump crosses the vertebral
//! bodies as a step that looks like an endplate fracture.
//!
//! Signals per slice: the anterior body surface in three bands (midline and about 5 cm to
//! either side) and the AP position of the bone at the spine. A motion step moves all of them
//! together, in one slice, and they stay moved; anatomy does not: a notch of the anterior wall
//! (xiphoid, umbilicus) changes one band only, and the sternal end or a rib changes the bone
//! but not the skin. So a step counts only when the three surface bands jump alike, the spine
//! jumps the same way, and the surface keeps its new level over the next slices.

use super::{flag, median, r1, robust_sd, QualityOptions};
use crate::findings::{QualityFlag, Severity};
use crate::spine::Centreline;
use crate::volume::Volume;
use rayon::prelude::*;

/// HU above which a pixel is body (skin, fat, muscle) rather than air.
const BODY_HU: f32 = -400.0;
/// HU above which a pixel is bone (the spine signal).
const BONE_HU: f32 = 250.0;
/// Half width of each surface band, mm.
const BAND_MM: f64 = 10.0;
/// Offset of the two lateral bands from the midline, mm: inside the trunk of a slim patient.
const LATERAL_MM: f64 = 50.0;
/// Half width (x) and half height (y) of the box around the spine for the bone signal, mm.
const SPINE_BOX_MM: [f64; 2] = [25.0, 40.0];
/// Neighbouring jumps on each side that make the local trend.
const TREND: usize = 4;
/// Slices on each side whose median level must show the step (persistence).
const PERSIST: usize = 3;

/// The largest step found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MotionReport {
    /// Largest confirmed departure of a slice-to-slice jump of the body outline from its local
    /// trend, mm (0 when no jump is confirmed by all signals).
    pub max_step_mm: f64,
    /// z between the two slices of that step, mm.
    pub z_mm: f64,
    /// Robust spread of the outline departures over the scan, mm (the noise the step stands
    /// out of).
    pub noise_mm: f64,
    /// Slices where the surface was measured.
    pub slices_measured: usize,
}

/// Per-slice signals, mm along the AP axis (NaN where not measured): anterior surface at the
/// midline, left and right of it, and the bone at the spine.
pub fn signals_mm(volume: &Volume, centreline: Option<&Centreline>) -> Option<Vec<[f64; 4]>> {
    let g = &volume.geometry;
    let [nx, ny, nz] = g.dims;
    // Rows must run along the patient's AP axis for the column scan below.
    let down = g.axes[1][1];
    if down.abs() < 0.9 || g.axes[0][0].abs() < 0.9 {
        return None;
    }
    let cells = |mm: f64, a: usize| ((mm / g.spacing[a]).round() as usize).max(1);
    let half = cells(BAND_MM, 0);
    let lat = cells(LATERAL_MM, 0);
    let (bx, by) = (cells(SPINE_BOX_MM[0], 0), cells(SPINE_BOX_MM[1], 1));
    let mut pts: Vec<[f64; 3]> = centreline.map(|l| l.points_mm.clone()).unwrap_or_default();
    pts.sort_by(|a, b| a[2].total_cmp(&b[2]));
    let nan = [f64::NAN; 4];
    Some(
        (0..nz)
            .into_par_iter()
            .map(|k| {
                let plane = &volume.hu[k * nx * ny..(k + 1) * nx * ny];
                // Rows counted from the anterior edge of the image.
                let at = |i: usize, t: usize| {
                    let j = if down > 0.0 { t } else { ny - 1 - t };
                    f32::from(plane[j * nx + i])
                };
                let z = g.voxel_to_patient([0.0, 0.0, k as f64])[2];
                // Midline and spine: the centreline when known, else the body's centroid.
                let spine = nearest(&pts, z).map(|p| g.patient_to_voxel([p[0], p[1], z]));
                let mid = match spine {
                    Some(v) => v[0],
                    None => {
                        let (mut s, mut n) = (0.0, 0.0);
                        for (p, &h) in plane.iter().enumerate() {
                            if f32::from(h) > BODY_HU {
                                s += (p % nx) as f64;
                                n += 1.0;
                            }
                        }
                        if n == 0.0 {
                            return nan;
                        }
                        s / n
                    }
                };
                let mid = mid.round();
                if mid < 0.0 || mid >= nx as f64 {
                    return nan;
                }
                let mid = mid as usize;
                let surface = |c: Option<usize>| -> f64 {
                    let Some(c) = c.filter(|&c| c < nx) else {
                        return f64::NAN;
                    };
                    let mut edges = Vec::with_capacity(2 * half + 1);
                    for i in c.saturating_sub(half)..(c + half + 1).min(nx) {
                        let mut prev = at(i, 0);
                        if prev > BODY_HU {
                            continue;
                        }
                        for t in 1..ny {
                            let h = at(i, t);
                            if h > BODY_HU {
                                let f = f64::from((BODY_HU - prev) / (h - prev));
                                edges.push((t as f64 - 1.0 + f) * g.spacing[1]);
                                break;
                            }
                            prev = h;
                        }
                    }
                    if edges.len() * 2 < 2 * half + 1 {
                        return f64::NAN;
                    }
                    median(&mut edges)
                };
                // Bone near the spine: inside a box about the centreline point, else in a band
                // of columns at the midline.
                let (rows, cols) = match spine {
                    Some(v) if v[1] >= 0.0 && v[1] < ny as f64 => {
                        let t = if down > 0.0 {
                            v[1]
                        } else {
                            ny as f64 - 1.0 - v[1]
                        };
                        let t = t.round() as usize;
                        (
                            t.saturating_sub(by)..(t + by + 1).min(ny),
                            mid.saturating_sub(bx)..(mid + bx + 1).min(nx),
                        )
                    }
                    _ => (0..ny, mid.saturating_sub(bx)..(mid + bx + 1).min(nx)),
                };
                let (mut s, mut n) = (0.0, 0.0);
                for t in rows {
                    for i in cols.clone() {
                        if at(i, t) > BONE_HU {
                            s += t as f64;
                            n += 1.0;
                        }
                    }
                }
                let bone = if n >= 4.0 {
                    s / n * g.spacing[1]
                } else {
                    f64::NAN
                };
                [
                    surface(Some(mid)),
                    surface(mid.checked_sub(lat)),
                    surface(Some(mid + lat)),
                    bone,
                ]
            })
            .collect(),
    )
}

fn nearest(pts: &[[f64; 3]], z: f64) -> Option<[f64; 3]> {
    pts.iter()
        .min_by(|a, b| (a[2] - z).abs().total_cmp(&(b[2] - z).abs()))
        .copied()
}

/// Departure of each slice-to-slice jump from the median of its neighbouring jumps.
fn departures(y: &[f64]) -> Vec<f64> {
    let d: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
    (0..d.len())
        .map(|k| {
            if !d[k].is_finite() {
                return f64::NAN;
            }
            let mut nb: Vec<f64> = (k.saturating_sub(TREND)..(k + TREND + 1).min(d.len()))
                .filter(|&t| t != k)
                .map(|t| d[t])
                .collect();
            d[k] - median(&mut nb)
        })
        .collect()
}

/// Level change across the jump k (between slices k and k+1): median of the `PERSIST` slices
/// after minus median of the `PERSIST` slices before. A notch of one or two slices gives none.
fn persistent_change(y: &[f64], k: usize) -> f64 {
    if k + 1 < PERSIST || k + 1 + PERSIST > y.len() {
        return f64::NAN;
    }
    let mut before = y[k + 1 - PERSIST..=k].to_vec();
    let mut after = y[k + 1..k + 1 + PERSIST].to_vec();
    median(&mut after) - median(&mut before)
}

/// Finds the largest step of the body outline between neighbouring slices that the spine
/// follows and that persists.
pub fn detect(volume: &Volume, centreline: Option<&Centreline>) -> MotionReport {
    let Some(s) = signals_mm(volume, centreline) else {
        return MotionReport::default();
    };
    let n = s.len();
    if n < 2 * TREND + 2 {
        return MotionReport::default();
    }
    let series = |c: usize| -> Vec<f64> { s.iter().map(|v| v[c]).collect() };
    let ys: Vec<Vec<f64>> = (0..4).map(series).collect();
    let devs: Vec<Vec<f64>> = ys.iter().map(|y| departures(y)).collect();
    // The outline step is the median of the three bands' departures.
    let outline: Vec<f64> = (0..n - 1)
        .map(|k| median(&mut [devs[0][k], devs[1][k], devs[2][k]]))
        .collect();
    let noise = robust_sd(&outline);
    let mut best: Option<(usize, f64)> = None;
    for (k, &step) in outline.iter().enumerate() {
        if !step.is_finite() || best.is_some_and(|(_, b)| step.abs() <= b.abs()) {
            continue;
        }
        // Every band jumps the same way by at least half the step...
        let alike =
            (0..3).all(|c| devs[c][k].is_finite() && devs[c][k] * step >= 0.5 * step * step);
        // ...the spine follows...
        let spine = devs[3][k].is_finite() && devs[3][k] * step >= 0.5 * step * step;
        // ...and the midline surface keeps its new level.
        let kept = persistent_change(&ys[0], k) * step >= 0.6 * step * step;
        if alike && spine && kept {
            best = Some((k, step));
        }
    }
    let g = &volume.geometry;
    let measured = ys[0].iter().filter(|v| v.is_finite()).count();
    let noise = if noise.is_finite() { noise } else { 0.0 };
    match best {
        Some((k, v)) => MotionReport {
            max_step_mm: v.abs(),
            z_mm: g.voxel_to_patient([0.0, 0.0, k as f64 + 0.5])[2],
            noise_mm: noise,
            slices_measured: measured,
        },
        None => MotionReport {
            noise_mm: noise,
            slices_measured: measured,
            ..Default::default()
        },
    }
}

/// A step is flagged when it exceeds `motion_step_mm` and stands six robust spreads out of the
/// scan's own slice-to-slice variation (so a noisy outline does not make steps).
pub fn flag_for(report: &MotionReport, opts: &QualityOptions) -> Option<QualityFlag> {
    if report.max_step_mm < opts.motion_step_mm
        || report.max_step_mm < 6.0 * report.noise_mm.max(0.1)
    {
        return None;
    }
    let critical = report.max_step_mm >= opts.motion_critical_mm;
    Some(flag(
        "motion",
        if critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        vec![
            ("step_mm", r1(report.max_step_mm)),
            ("z_mm", r1(report.z_mm)),
            ("noise_mm", r1(report.noise_mm)),
        ],
        format!(
            "Patient motion: the body outline jumps {:.0} mm between slices at z {:.0} mm; \
             steps can mimic endplate fractures{}.",
            report.max_step_mm,
            report.z_mm,
            if critical {
                ", result unreliable"
            } else {
                ", read with care"
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn a_shift_between_slices_is_a_step_and_clean_scans_have_none() {
        let o = QualityOptions::default();
        let ph = small(501, |_| {});
        let clean = detect(&ph.volume, None);
        assert!(flag_for(&clean, &o).is_none(), "{clean:?}");
        // Move every slice above the middle 8 mm anteriorly (the patient breathed in).
        let mut v = ph.volume.clone();
        let [nx, ny, nz] = v.geometry.dims;
        let shift = (8.0 / v.geometry.spacing[1]).round() as usize;
        for k in nz / 2..nz {
            let plane = &mut v.hu[k * nx * ny..(k + 1) * nx * ny];
            for j in 0..ny {
                for i in 0..nx {
                    plane[j * nx + i] = if j + shift < ny {
                        plane[(j + shift) * nx + i]
                    } else {
                        -1000
                    };
                }
            }
        }
        let r = detect(&v, None);
        let f = flag_for(&r, &o).expect("step flagged");
        // A notch of the anterior wall at the midline (15 mm deep, from the middle on) is
        // anatomy: the flanks and the spine stay put.
        let mut notch = ph.volume.clone();
        let (half, deep) = (
            (12.0 / notch.geometry.spacing[0]).round() as usize,
            (15.0 / notch.geometry.spacing[1]).round() as usize,
        );
        for k in nz / 2..nz {
            let plane = &mut notch.hu[k * nx * ny..(k + 1) * nx * ny];
            for i in nx / 2 - half..nx / 2 + half {
                let Some(j0) = (0..ny).find(|&j| plane[j * nx + i] > -400) else {
                    continue;
                };
                for j in j0..(j0 + deep).min(ny) {
                    plane[j * nx + i] = -1000;
                }
            }
        }
        let n = detect(&notch, None);
        assert!(flag_for(&n, &o).is_none(), "notch flagged: {n:?}");
        let z_cut = v
            .geometry
            .voxel_to_patient([0.0, 0.0, (nz / 2) as f64 - 0.5])[2];
        assert!((r.z_mm - z_cut).abs() < 1.0, "{r:?} vs {z_cut}");
        assert!((r.max_step_mm - shift as f64 * v.geometry.spacing[1]).abs() < 1.5);
        assert_eq!(f.severity, Severity::Critical);
    }
}
