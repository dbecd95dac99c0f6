//! Spinal curvature: coronal Cobb angle (scoliosis) and thoracic kyphosis (sagittal Cobb).
//!
//! Cobb's method takes the largest angle between two endplates. The coronal tilt of an
//! endplate is not visible in the sagittal keypoints, so the coronal angle comes from the
//! centreline: its tangent, fitted over two motion segments (+-30 mm), tilts with the vertebra
//! it passes through, and the largest difference between two tangents is the Cobb angle.
//! Kyphosis uses the endplate keypoints when the vertebrae have them (T4 upper to T12 lower
//! endplate when both are labelled, as the phantom and the clinical definition do), the
//! centreline otherwise.

use super::{flag, r1, QualityOptions};
use crate::findings::{QualityFlag, Severity, VertebraFinding};
use crate::spine::Centreline;
use serde_json::json;

/// Half length of the tangent fit, mm: about two motion segments, so the localiser's few-mm
/// wobble does not read as tilt while a scoliotic curve (5-10 levels) is still resolved.
const TANGENT_HALF_MM: f64 = 30.0;
/// Per-point localiser evidence below which a tangent is not trusted.
const MIN_SCORE: f32 = 0.1;

/// A measured curve angle and where it was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CurveAngle {
    pub angle_deg: f64,
    /// z of the cranial and caudal ends of the measurement, mm.
    pub upper_z_mm: f64,
    pub lower_z_mm: f64,
    /// "centreline", "endplates T4-T12", ...
    pub method: String,
}

/// Tangent tilts along the centreline: (z, coronal tilt, sagittal tilt) in radians, from a
/// local straight-line fit of x(z) and y(z). Points whose fit window is cut short by an end of
/// the line are skipped (their tangent is poorly determined).
pub fn tangent_tilts(line: &Centreline) -> Vec<(f64, f64, f64)> {
    let p = &line.points_mm;
    if p.len() < 3 {
        return Vec::new();
    }
    let (z0, z1) = (
        p[0][2].min(p[p.len() - 1][2]),
        p[0][2].max(p[p.len() - 1][2]),
    );
    let mut out = Vec::new();
    for (q, &score) in p.iter().zip(&line.score) {
        let zc = q[2];
        // Ends are where the localiser runs out of evidence: a full window and spine-like
        // evidence at the point are required.
        if zc - z0 < TANGENT_HALF_MM || z1 - zc < TANGENT_HALF_MM || score < MIN_SCORE {
            continue;
        }
        let (mut sw, mut sz, mut sx, mut sy, mut szz, mut szx, mut szy) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for r in p.iter().filter(|r| (r[2] - zc).abs() <= TANGENT_HALF_MM) {
            let dz = r[2] - zc;
            sw += 1.0;
            sz += dz;
            sx += r[0];
            sy += r[1];
            szz += dz * dz;
            szx += dz * r[0];
            szy += dz * r[1];
        }
        let den = sw * szz - sz * sz;
        if sw < 3.0 || den.abs() < 1e-9 {
            continue;
        }
        let bx = (sw * szx - sz * sx) / den;
        let by = (sw * szy - sz * sy) / den;
        out.push((zc, bx.atan(), by.atan()));
    }
    out
}

/// Coronal Cobb angle from the centreline alone: the largest difference of the tilts of its
/// fitted lateral course.
pub fn cobb_coronal_deg(line: &Centreline) -> Option<CurveAngle> {
    let t = fitted_coronal_tilts(line);
    if t.len() < 2 {
        return None;
    }
    widest_pair(&t).map(|(d, za, zb)| CurveAngle {
        angle_deg: d.to_degrees(),
        upper_z_mm: za.max(zb),
        lower_z_mm: za.min(zb),
        method: "centreline".into(),
    })
}

/// Vertebral bodies needed before their centres, not the centreline, give the Cobb angle.
pub const MIN_CENTRES: usize = 5;

/// Coronal Cobb angle from the vertebral body centres: the tilt of the line through two
/// neighbouring centres follows the tilt of the two bodies (the disc between them bends the
/// column, the bodies ride on it), so the largest difference between two such lines is the
/// angle between the most tilted bodies above and below the apex. Centres are what the
/// detector localises best, with no few-mm wobble of a slice-wise track.
pub fn cobb_from_centres(vertebrae: &[VertebraFinding]) -> Option<CurveAngle> {
    let mut c: Vec<[f64; 3]> = vertebrae
        .iter()
        .map(|v| v.center_mm)
        .filter(|p| p.iter().all(|x| x.is_finite()))
        .collect();
    if c.len() < MIN_CENTRES {
        return None;
    }
    c.sort_by(|a, b| b[2].total_cmp(&a[2]));
    // (z of the segment's middle, coronal tilt); a gap of a missed body still gives a line.
    let seg: Vec<(f64, f64)> = c
        .windows(2)
        .filter(|w| (w[0][2] - w[1][2]).abs() > 5.0)
        .map(|w| {
            (
                0.5 * (w[0][2] + w[1][2]),
                (w[0][0] - w[1][0]).atan2(w[0][2] - w[1][2]),
            )
        })
        .collect();
    widest_pair(&seg).map(|(d, za, zb)| CurveAngle {
        angle_deg: d.to_degrees(),
        upper_z_mm: za.max(zb),
        lower_z_mm: za.min(zb),
        method: "vertebral centres".into(),
    })
}

/// Largest difference of tilts over all pairs: (angle rad, z of one, z of the other).
fn widest_pair(t: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let hi = t.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let lo = t.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    Some((hi.1 - lo.1, hi.0, lo.0))
}

/// Polynomial degree of the centreline fit per this many mm of spine: one bend per 3-4
/// vertebrae is as much as a scoliotic curve has, the localiser's wobble is shorter.
const MM_PER_DEGREE: f64 = 70.0;

/// Length at each end of the fitted line whose slope is not used, mm: a polynomial swings at
/// its ends and the localiser's evidence thins out there.
const END_TRIM_MM: f64 = 15.0;

/// Coronal tilts (z, rad) of a score-weighted, outlier-resistant polynomial fit of the
/// centreline's lateral offset x(z), at the well-supported points. Replaces the local line fits
/// when no vertebrae are known: the fit spans the whole line, so the wobble of single points
/// averages out instead of reading as tilt.
pub fn fitted_coronal_tilts(line: &Centreline) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64, f64)> = line
        .points_mm
        .iter()
        .zip(&line.score)
        .filter(|(p, &s)| s >= MIN_SCORE && p[0].is_finite() && p[2].is_finite())
        .map(|(p, &s)| (p[2], p[0], f64::from(s)))
        .collect();
    if pts.len() < 8 {
        return Vec::new();
    }
    let z0 = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let z1 = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let span = z1 - z0;
    if span < 2.0 * TANGENT_HALF_MM {
        return Vec::new();
    }
    let deg = ((span / MM_PER_DEGREE).round() as usize).clamp(1, 6);
    let (zc, h) = (0.5 * (z0 + z1), 0.5 * span);
    let mut w: Vec<f64> = pts.iter().map(|p| p.2).collect();
    let mut coef = vec![0.0; deg + 1];
    // Iteratively reweighted least squares with Tukey's biweight (c = 4.685 robust sds).
    for _ in 0..6 {
        let Some(c) = poly_fit(&pts, &w, zc, h, deg) else {
            return Vec::new();
        };
        coef = c;
        let r: Vec<f64> = pts
            .iter()
            .map(|p| p.1 - poly_eval(&coef, (p.0 - zc) / h))
            .collect();
        let s = super::robust_sd(&r).max(0.5);
        for ((wi, ri), p) in w.iter_mut().zip(&r).zip(&pts) {
            let u = ri / (4.685 * s);
            *wi = if u.abs() < 1.0 {
                p.2 * (1.0 - u * u).powi(2)
            } else {
                0.0
            };
        }
    }
    pts.iter()
        .filter(|p| p.0 - z0 >= END_TRIM_MM && z1 - p.0 >= END_TRIM_MM)
        .map(|p| {
            let u = (p.0 - zc) / h;
            let dx = poly_deriv(&coef, u) / h;
            (p.0, dx.atan())
        })
        .collect()
}

fn poly_eval(c: &[f64], u: f64) -> f64 {
    c.iter().rev().fold(0.0, |a, &k| a * u + k)
}

fn poly_deriv(c: &[f64], u: f64) -> f64 {
    c.iter()
        .enumerate()
        .skip(1)
        .rev()
        .fold(0.0, |a, (i, &k)| a * u + i as f64 * k)
}

/// Weighted least squares of x on powers of u = (z - zc) / h (normal equations, Gaussian
/// elimination with partial pivoting; u in [-1, 1] keeps them well conditioned up to degree 6).
fn poly_fit(pts: &[(f64, f64, f64)], w: &[f64], zc: f64, h: f64, deg: usize) -> Option<Vec<f64>> {
    let m = deg + 1;
    let mut a = vec![vec![0.0; m + 1]; m];
    for (p, &wi) in pts.iter().zip(w) {
        if wi <= 0.0 {
            continue;
        }
        let u = (p.0 - zc) / h;
        let pw: Vec<f64> = (0..m).map(|i| u.powi(i as i32)).collect();
        for r in 0..m {
            for c in 0..m {
                a[r][c] += wi * pw[r] * pw[c];
            }
            a[r][m] += wi * pw[r] * p.1;
        }
    }
    for col in 0..m {
        let piv = (col..m).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot[col];
                for (x, p) in row[col..=m].iter_mut().zip(&pivot[col..=m]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..m).map(|r| a[r][m] / a[r][r]).collect())
}

/// Coronal Cobb angle: from the vertebral centres when enough bodies are known, else from the
/// fitted centreline.
pub fn cobb_coronal(
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
) -> Option<CurveAngle> {
    cobb_from_centres(vertebrae).or_else(|| centreline.and_then(cobb_coronal_deg))
}

/// Sagittal tilt (rad) of an endplate normal from its anterior and posterior keypoints:
/// positive when the normal leans posteriorly (LPS: +y).
fn plate_tilt(anterior: [f64; 3], posterior: [f64; 3]) -> f64 {
    let (dy, dz) = (anterior[1] - posterior[1], anterior[2] - posterior[2]);
    dz.atan2(-dy)
}

fn thoracic(level: &Option<String>) -> bool {
    level
        .as_deref()
        .and_then(|l| l.strip_prefix('T'))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=12).contains(&n))
}

/// Thoracic kyphosis (degrees, positive kyphotic). Endplates T4 upper to T12 lower when both
/// are labelled; else the largest kyphotic angle between endplates of the thoracic (or, with no
/// labels, all) vertebrae when at least 5 are present; else from centreline tangents.
pub fn kyphosis_deg(
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
) -> Option<CurveAngle> {
    let find = |l: &str| vertebrae.iter().find(|v| v.level.as_deref() == Some(l));
    if let (Some(t4), Some(t12)) = (find("T4"), find("T12")) {
        let up = plate_tilt(
            t4.keypoints_mm.upper_anterior,
            t4.keypoints_mm.upper_posterior,
        );
        let low = plate_tilt(
            t12.keypoints_mm.lower_anterior,
            t12.keypoints_mm.lower_posterior,
        );
        return Some(CurveAngle {
            angle_deg: (low - up).to_degrees(),
            upper_z_mm: t4.keypoints_mm.upper_middle[2],
            lower_z_mm: t12.keypoints_mm.lower_middle[2],
            method: "endplates T4-T12".into(),
        });
    }
    let labelled = vertebrae.iter().any(|v| v.level.is_some());
    let mut set: Vec<&VertebraFinding> = vertebrae
        .iter()
        .filter(|v| !labelled || thoracic(&v.level))
        .collect();
    set.sort_by(|a, b| b.center_mm[2].total_cmp(&a.center_mm[2]));
    if set.len() >= 5 {
        let mut best: Option<(f64, usize, usize)> = None;
        for a in 0..set.len() {
            let up = plate_tilt(
                set[a].keypoints_mm.upper_anterior,
                set[a].keypoints_mm.upper_posterior,
            );
            for (b, v) in set.iter().enumerate().skip(a) {
                let low = plate_tilt(
                    v.keypoints_mm.lower_anterior,
                    v.keypoints_mm.lower_posterior,
                );
                let k = low - up;
                if best.is_none_or(|(x, _, _)| k > x) {
                    best = Some((k, a, b));
                }
            }
        }
        if let Some((k, a, b)) = best {
            let name = |v: &VertebraFinding| v.level.clone().unwrap_or_else(|| "?".into());
            return Some(CurveAngle {
                angle_deg: k.to_degrees(),
                upper_z_mm: set[a].keypoints_mm.upper_middle[2],
                lower_z_mm: set[b].keypoints_mm.lower_middle[2],
                method: format!("endplates {}-{}", name(set[a]), name(set[b])),
            });
        }
    }
    // Centreline: restricted to the thoracic stretch when labels say where it is.
    let line = centreline?;
    let thor: Vec<f64> = vertebrae
        .iter()
        .filter(|v| thoracic(&v.level))
        .map(|v| v.center_mm[2])
        .collect();
    let (zlo, zhi) = if thor.is_empty() || !labelled {
        (f64::NEG_INFINITY, f64::INFINITY)
    } else {
        (
            thor.iter().cloned().fold(f64::INFINITY, f64::min) - 15.0,
            thor.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 15.0,
        )
    };
    let t: Vec<(f64, f64, f64)> = tangent_tilts(line)
        .into_iter()
        .filter(|p| p.0 >= zlo && p.0 <= zhi)
        .collect();
    let mut best: Option<(f64, usize, usize)> = None;
    for a in 0..t.len() {
        for b in 0..t.len() {
            // a cranial of b: kyphosis = caudal tilt minus cranial tilt.
            if t[a].0 > t[b].0 {
                let k = t[b].2 - t[a].2;
                if best.is_none_or(|(x, _, _)| k > x) {
                    best = Some((k, a, b));
                }
            }
        }
    }
    best.map(|(k, a, b)| CurveAngle {
        angle_deg: k.to_degrees().max(0.0),
        upper_z_mm: t[a].0,
        lower_z_mm: t[b].0,
        method: "centreline".into(),
    })
}

/// Scoliosis and hyperkyphosis flags.
pub fn check(
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
    opts: &QualityOptions,
) -> Vec<QualityFlag> {
    let mut out = Vec::new();
    if let Some(c) = cobb_coronal(centreline, vertebrae) {
        if c.angle_deg >= opts.scoliosis_flag_deg {
            let critical = c.angle_deg >= opts.scoliosis_critical_deg;
            out.push(flag(
                "scoliosis",
                if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                vec![
                    ("cobb_deg", r1(c.angle_deg)),
                    ("z_range_mm", json!([r1(c.lower_z_mm), r1(c.upper_z_mm)])),
                    ("method", json!(c.method)),
                ],
                format!(
                    "Scoliosis, coronal Cobb angle about {:.0} degrees: {}.",
                    c.angle_deg,
                    if critical {
                        "rotated vertebrae make height measurements unreliable"
                    } else {
                        "read vertebral heights with care"
                    }
                ),
            ));
        }
    }
    if let Some(k) = kyphosis_deg(centreline, vertebrae) {
        if k.angle_deg > opts.hyperkyphosis_flag_deg {
            let critical = k.angle_deg >= opts.hyperkyphosis_critical_deg;
            out.push(flag(
                "hyperkyphosis",
                if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                vec![
                    ("kyphosis_deg", r1(k.angle_deg)),
                    ("z_range_mm", json!([r1(k.lower_z_mm), r1(k.upper_z_mm)])),
                    ("method", json!(k.method)),
                ],
                format!(
                    "Thoracic hyperkyphosis about {:.0} degrees ({}): wedge fractures may be \
                     missed or overcalled, read with care.",
                    k.angle_deg, k.method
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::phantom::Level;

    #[test]
    fn cobb_from_the_centreline_matches_truth() {
        let mut errs = Vec::new();
        for (seed, cobb) in [
            (301u64, 0.0),
            (302, 25.0),
            (303, 40.0),
            (304, 15.0),
            (305, 32.0),
        ] {
            let ph = small(seed, |o| {
                o.cobb_deg = Some(cobb);
                o.from_level = Some(Level::T3);
                o.to_level = Some(Level::L4);
                o.rows = Some(200);
                o.pixel_spacing_mm = Some(1.8);
                o.slice_thickness_mm = Some(3.0);
                o.slice_spacing_mm = Some(3.0);
            });
            let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
            let got = cobb_coronal_deg(&line).unwrap().angle_deg;
            let want = ph.truth.study.cobb_angle_in_view_deg;
            let v = vertebrae_of(&ph);
            let cen = cobb_from_centres(&v).unwrap().angle_deg;
            eprintln!(
                "seed {seed}: centres {cen:.1} truth {want:.1} n {}",
                v.len()
            );
            errs.push((got - want).abs());
            eprintln!("seed {seed}: cobb {got:.1} truth {want:.1}");
        }
        errs.sort_by(f64::total_cmp);
        assert!(errs[errs.len() / 2] <= 5.0, "errors {errs:?}");
    }

    #[test]
    fn kyphosis_from_endplates_and_centreline() {
        for (seed, kyph) in [(311u64, 30.0), (312, 68.0)] {
            let ph = small(seed, |o| {
                o.kyphosis_deg = Some(kyph);
                o.from_level = Some(Level::T3);
                o.to_level = Some(Level::L1);
                o.rows = Some(200);
                o.pixel_spacing_mm = Some(1.8);
            });
            let truth = ph.truth.study.kyphosis_deg;
            let v = vertebrae_of(&ph);
            let k = kyphosis_deg(None, &v).unwrap();
            assert_eq!(k.method, "endplates T4-T12");
            assert!(
                (k.angle_deg - truth).abs() < 1.0,
                "{} vs {truth}",
                k.angle_deg
            );
            let line = crate::spine::locate(&ph.volume, &Default::default()).unwrap();
            let unlabelled: Vec<VertebraFinding> = Vec::new();
            let c = kyphosis_deg(Some(&line), &unlabelled).unwrap();
            eprintln!(
                "seed {seed}: centreline kyphosis {:.1} truth {truth:.1}",
                c.angle_deg
            );
            assert!(
                (c.angle_deg - truth).abs() < 12.0,
                "{} vs {truth}",
                c.angle_deg
            );
            let flagged = check(Some(&line), &v, &QualityOptions::default())
                .iter()
                .any(|f| f.kind == "hyperkyphosis");
            assert_eq!(flagged, truth > 60.0);
        }
    }
}
