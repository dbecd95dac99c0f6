//! Ring artifacts of a failing detector channel: thin circles about the reconstruction centre,
//! at the same radius in every slice.
//!
//! Method: each sampled axial slice is averaged into radial bins (half a pixel wide) in 16
//! angular sectors about the centre. Bins are tissue or air (a ring outside the patient is the
//! same detector fault); bins straddling the skin and air near the rim of the reconstructed disc
//! are skipped. Anatomy is removed per sector by subtracting a running radial median over bins of
//! the same class (4 mm each side: keeps a 1-2 mm ring, removes organ edges and slow trends),
//! then the sector median rejects what is not circular (an organ edge sits at one radius in a
//! few sectors only) and the median over slices keeps what persists at a fixed radius (anatomy
//! moves from slice to slice; a detector channel does not). The statistic is the peak of that
//! persistent residual divided by its robust spread over radii: a z-score that needs no
//! calibration per scanner. Rings present in fewer than half of the slices are not found.

use super::{flag, median, r1, robust_sd, QualityOptions};
use crate::analysis::ScanInfo;
use crate::findings::{QualityFlag, Severity};
use crate::spine::Centreline;
use crate::volume::Volume;
use rayon::prelude::*;
use serde_json::json;

const SECTORS: usize = 16;
/// At most this many slices are examined (evenly spread): enough for a robust median, cheap.
const MAX_SLICES: usize = 40;
/// Sectors (of `SECTORS`) that must be measurable (in tissue or in clear air) at a radius for a
/// ring to be measured there: three quarters. A detector ring is a whole circle; with half, the
/// body wall of a wide abdomen (the lateral sectors only) passed as a faint persistent ring.
const MIN_SECTORS: usize = SECTORS * 3 / 4;
/// Half width of the radial median that removes anatomy, mm.
const DETREND_MM: f64 = 4.0;
/// Rings closer to the centre than this have too few pixels per sector to be measured.
const MIN_RADIUS_MM: f64 = 6.0;
/// HU above which a pixel counts as dense tissue for the sector statistics; denser values are
/// clipped so metal and contrast cannot dominate a bin.
const HU_CLIP: (f64, f64) = (-1024.0, 1600.0);
/// Pixels below this are air.
const AIR_HU: i16 = -950;
/// A bin with a fifth or more of air pixels is measured as air when its mean is below this (a
/// ring drawn in air is as much a detector fault as one drawn in tissue), else it straddles
/// the skin and is not measured.
const AIR_BIN_HU: f64 = -800.0;
/// Below this a pixel is padding outside the reconstructed disc, not air.
const PAD_HU: i16 = -1024;
/// Air closer than this to the edge of the inscribed circle is not measured, mm.
const AIR_EDGE_MARGIN_MM: f64 = 20.0;

/// One ring found.
#[derive(Clone, Debug, PartialEq)]
pub struct Ring {
    pub radius_mm: f64,
    /// Signed peak of the persistent residual, HU (rings can be bright or dark).
    pub contrast_hu: f64,
    /// Robust z-score of the ring.
    pub score: f64,
    /// z of the first and last examined slice where the ring is seen, mm.
    pub z_range_mm: [f64; 2],
    /// Share of examined slices where it is seen.
    pub slice_fraction: f64,
}

/// What the ring search measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RingReport {
    /// Centre searched about, LPS mm.
    pub centre_mm: [f64; 3],
    /// Continuous statistic (largest z-score of a ring persisting over `PERSIST_FRACTION` of the
    /// slices; 0 when none stands out).
    pub score: f64,
    /// Rings above the detection z-score, strongest first.
    pub rings: Vec<Ring>,
    pub slices_examined: usize,
}

/// Reconstruction centre from the DICOM geometry when stated, else the image centre.
pub fn centre_mm(volume: &Volume, scan: &ScanInfo) -> [f64; 3] {
    if let Some(c) = scan.recon_center_mm {
        if c.iter().all(|v| v.is_finite()) {
            return c;
        }
    }
    let d = volume.geometry.dims;
    volume.geometry.voxel_to_patient([
        (d[0] as f64 - 1.0) / 2.0,
        (d[1] as f64 - 1.0) / 2.0,
        (d[2] as f64 - 1.0) / 2.0,
    ])
}

/// z-score at which a radius is reported as a ring candidate.
const CANDIDATE_Z: f64 = 5.0;
/// Share of the examined slices a ring must show on: a failing detector channel draws its ring
/// on every slice, while anatomy that happens to lie at one radius (chest wall, ribs) does so
/// over part of the scan only.
pub const PERSIST_FRACTION: f64 = 0.8;

/// Searches the volume for rings about `centre` (LPS mm; only its in-plane position matters).
pub fn detect(volume: &Volume, centre: [f64; 3]) -> RingReport {
    let g = &volume.geometry;
    let [nx, ny, nz] = g.dims;
    let c = g.patient_to_voxel(centre);
    let (psx, psy) = (g.spacing[0], g.spacing[1]);
    let dr = 0.5 * psx.min(psy);
    // Farthest image corner from the centre bounds the radii.
    let corners = [
        (0.0, 0.0),
        (nx as f64, 0.0),
        (0.0, ny as f64),
        (nx as f64, ny as f64),
    ];
    let rmax = corners
        .iter()
        .map(|&(i, j)| (((i - c[0]) * psx).powi(2) + ((j - c[1]) * psy).powi(2)).sqrt())
        .fold(0.0, f64::max);
    let nb = (rmax / dr).ceil() as usize + 1;
    let empty = RingReport {
        centre_mm: centre,
        score: 0.0,
        rings: Vec::new(),
        slices_examined: 0,
    };
    if nx < 16 || ny < 16 || nb < 16 {
        return empty;
    }
    // Bin of every pixel (shared by all slices: rings stay at one pixel position).
    let bins: Vec<u32> = (0..nx * ny)
        .map(|p| {
            let (i, j) = ((p % nx) as f64, (p / nx) as f64);
            let (x, y) = ((i - c[0]) * psx, (j - c[1]) * psy);
            let r = (x * x + y * y).sqrt();
            let a = y.atan2(x) + std::f64::consts::PI;
            let s = ((a / std::f64::consts::TAU * SECTORS as f64) as usize).min(SECTORS - 1);
            ((r / dr) as usize * SECTORS + s) as u32
        })
        .collect();
    let n_s = nz.min(MAX_SLICES);
    let ks: Vec<usize> = (0..n_s)
        .map(|t| ((t as f64 + 0.5) * nz as f64 / n_s as f64) as usize)
        .map(|k| k.min(nz - 1))
        .collect();
    let w = (DETREND_MM / dr).round().max(2.0) as usize;
    let b_min = (MIN_RADIUS_MM / dr).ceil() as usize;
    // Air is measured only well inside the circle inscribed in the image: scanners reconstruct
    // a disc and its rim is itself a circle about the same centre.
    let inscribed = [
        c[0] * psx,
        (nx as f64 - 1.0 - c[0]) * psx,
        c[1] * psy,
        (ny as f64 - 1.0 - c[1]) * psy,
    ]
    .into_iter()
    .fold(f64::INFINITY, f64::min);
    let b_air_max = ((inscribed - AIR_EDGE_MARGIN_MM).max(0.0) / dr) as usize;
    // Per slice: the sector-median residual at each radial bin (NaN where not measurable).
    let per_slice: Vec<Vec<f64>> = ks
        .par_iter()
        .map(|&k| {
            let plane = &volume.hu[k * nx * ny..(k + 1) * nx * ny];
            let mut sum = vec![0f64; nb * SECTORS];
            let mut cnt = vec![0u32; nb * SECTORS];
            let mut air = vec![0u32; nb * SECTORS];
            for (&b, &v) in bins.iter().zip(plane) {
                // Padding outside the reconstructed field of view is not image.
                if v < PAD_HU {
                    continue;
                }
                let b = b as usize;
                sum[b] += f64::from(v).clamp(HU_CLIP.0, HU_CLIP.1);
                cnt[b] += 1;
                air[b] += u32::from(v < AIR_HU);
            }
            // Sector profiles and their class (tissue or air); NaN where empty, at the skin
            // (part air, part tissue) or in air near the edge of the reconstructed circle.
            let mut prof = vec![f64::NAN; nb * SECTORS];
            let mut in_air = vec![false; nb * SECTORS];
            for b in 0..nb * SECTORS {
                if cnt[b] == 0 {
                    continue;
                }
                let (mean, n) = (sum[b] / f64::from(cnt[b]), f64::from(cnt[b]));
                if f64::from(air[b]) < 0.2 * n {
                    prof[b] = mean;
                } else if mean < AIR_BIN_HU && b / SECTORS < b_air_max {
                    prof[b] = mean;
                    in_air[b] = true;
                }
            }
            let mut resid = vec![f64::NAN; nb];
            let mut win = Vec::with_capacity(2 * w + 1);
            let mut across = Vec::with_capacity(SECTORS);
            for (b, out) in resid.iter_mut().enumerate().skip(b_min) {
                across.clear();
                for s in 0..SECTORS {
                    let v = prof[b * SECTORS + s];
                    if !v.is_finite() {
                        continue;
                    }
                    // Compared with neighbours of its own class only, so the skin leaves no
                    // residual.
                    let class = in_air[b * SECTORS + s];
                    win.clear();
                    for bb in b.saturating_sub(w)..(b + w + 1).min(nb) {
                        if in_air[bb * SECTORS + s] == class {
                            win.push(prof[bb * SECTORS + s]);
                        }
                    }
                    let m = median(&mut win);
                    across.push(v - m);
                }
                // A detector ring is a whole circle; with less of it measurable it cannot be told
                // from the body wall, which at large radii shows in the lateral sectors only.
                if across.len() >= MIN_SECTORS {
                    *out = median(&mut across);
                }
            }
            resid
        })
        .collect();
    // Persistence: median over slices at each radius.
    let mut m = vec![f64::NAN; nb];
    let mut col = Vec::with_capacity(n_s);
    for (b, mb) in m.iter_mut().enumerate() {
        col.clear();
        col.extend(per_slice.iter().map(|r| r[b]).filter(|v| v.is_finite()));
        if col.len() * 2 >= n_s && !col.is_empty() {
            *mb = median(&mut col);
        }
    }
    // Light smoothing matched to a ring about 1.5 pixels wide.
    let ms: Vec<f64> = (0..nb)
        .map(|b| {
            if b == 0 || b + 1 >= nb {
                return f64::NAN;
            }
            0.25 * m[b - 1] + 0.5 * m[b] + 0.25 * m[b + 1]
        })
        .collect();
    // Noise floor: bins of a very uniform image would otherwise give huge z-scores.
    let sd = robust_sd(&ms).max(0.3);
    if !sd.is_finite() {
        return RingReport {
            slices_examined: n_s,
            ..empty
        };
    }
    let z: Vec<f64> = ms.iter().map(|v| v.abs() / sd).collect();
    // Where along z a residual of sign and size `contrast` shows at bin `b`: same sign and
    // above half its contrast.
    let seen_on = |b: usize, contrast: f64| -> Vec<usize> {
        ks.iter()
            .zip(&per_slice)
            .filter(|(_, r)| {
                let v = (b.saturating_sub(1)..(b + 2).min(nb))
                    .map(|bb| r[bb])
                    .filter(|v| v.is_finite())
                    .fold(0.0, |acc: f64, v| if v.abs() > acc.abs() { v } else { acc });
                v * contrast > 0.0 && v.abs() >= 0.5 * contrast.abs()
            })
            .map(|(&k, _)| k)
            .collect()
    };
    // Peaks: local maxima above the candidate level, at least 3 mm apart.
    let sep = (3.0 / dr).ceil() as usize;
    let mut order: Vec<usize> = (0..nb)
        .filter(|&b| z[b].is_finite() && z[b] >= CANDIDATE_Z)
        .collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    let mut taken: Vec<usize> = Vec::new();
    let mut rings = Vec::new();
    for b in order {
        if taken.iter().any(|&t| t.abs_diff(b) <= sep) {
            continue;
        }
        taken.push(b);
        // Peak residual of the unsmoothed profile near the bin.
        let contrast = (b.saturating_sub(1)..(b + 2).min(nb))
            .map(|bb| m[bb])
            .filter(|v| v.is_finite())
            .max_by(|a, c| a.abs().total_cmp(&c.abs()))
            .unwrap_or(0.0);
        let seen = seen_on(b, contrast);
        let zmm = |k: usize| g.voxel_to_patient([c[0], c[1], k as f64])[2];
        let z_range_mm = match (seen.first(), seen.last()) {
            (Some(&a), Some(&b)) => [zmm(a), zmm(b)],
            _ => [f64::NAN, f64::NAN],
        };
        rings.push(Ring {
            radius_mm: (b as f64 + 0.5) * dr,
            contrast_hu: contrast,
            score: z[b],
            z_range_mm,
            slice_fraction: seen.len() as f64 / n_s as f64,
        });
    }
    // The study's ring statistic: the largest z-score at any radius whose residual persists
    // over the slices, candidate or not, so that faint rings still rank above noise (whose
    // sign changes from slice to slice) in an ROC analysis.
    let score = (0..nb)
        .filter(|&b| z[b].is_finite())
        .filter(|&b| {
            let seen = seen_on(b, m[b]);
            seen.len() as f64 >= PERSIST_FRACTION * n_s as f64
        })
        .map(|b| z[b])
        .fold(0.0, f64::max);
    RingReport {
        centre_mm: centre,
        score,
        rings,
        slices_examined: n_s,
    }
}

/// The flag for a ring report, or none. Critical when a ring crosses the vertebral column
/// (it draws a line through the bodies that reads as an endplate step) or is strong anywhere.
pub fn flag_for(
    report: &RingReport,
    volume: &Volume,
    centreline: Option<&Centreline>,
    opts: &QualityOptions,
) -> Option<QualityFlag> {
    let found: Vec<&Ring> = report
        .rings
        .iter()
        .filter(|r| {
            r.score >= opts.ring_min_score
                && r.contrast_hu.abs() >= opts.ring_min_contrast_hu
                && r.slice_fraction >= PERSIST_FRACTION
        })
        .collect();
    if found.is_empty() {
        return None;
    }
    // Distances from the centre to the body centres along the column (in-plane).
    let g = &volume.geometry;
    let c = g.patient_to_voxel(report.centre_mm);
    let spine_r: Vec<f64> = centreline
        .map(|l| {
            l.points_mm
                .iter()
                .map(|p| {
                    let v = g.patient_to_voxel(*p);
                    (((v[0] - c[0]) * g.spacing[0]).powi(2)
                        + ((v[1] - c[1]) * g.spacing[1]).powi(2))
                    .sqrt()
                })
                .collect()
        })
        .unwrap_or_default();
    // A body is ~40 mm across; 25 mm either side of its centre covers it and its endplates.
    let crosses = |r: &Ring| spine_r.iter().any(|&s| (s - r.radius_mm).abs() <= 25.0);
    let critical = found
        .iter()
        .any(|r| crosses(r) || r.contrast_hu.abs() >= opts.ring_critical_contrast_hu)
        // Without a centreline we cannot rule out that the ring crosses the spine.
        || spine_r.is_empty();
    let z_lo = found
        .iter()
        .map(|r| r.z_range_mm[0])
        .fold(f64::INFINITY, f64::min);
    let z_hi = found
        .iter()
        .map(|r| r.z_range_mm[1])
        .fold(f64::NEG_INFINITY, f64::max);
    let radii: Vec<String> = found
        .iter()
        .map(|r| format!("{:.0}", r.radius_mm))
        .collect();
    let text = format!(
        "Ring artifact at radius {} mm ({:.0} HU) about the reconstruction centre: suspect a \
         detector fault; {}.",
        radii.join(", "),
        found[0].contrast_hu.abs(),
        if critical {
            "rings crossing bone can mimic endplate fractures, result unreliable"
        } else {
            "away from the spine, findings still usable"
        }
    );
    Some(flag(
        "ring_artifact",
        if critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        vec![
            (
                "radii_mm",
                json!(found
                    .iter()
                    .map(|r| (r.radius_mm * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()),
            ),
            (
                "contrast_hu",
                json!(found
                    .iter()
                    .map(|r| r.contrast_hu.round())
                    .collect::<Vec<_>>()),
            ),
            ("score", r1(report.score)),
            ("slice_extent_mm", json!([r1(z_lo), r1(z_hi)])),
            (
                "slice_fraction",
                json!(found
                    .iter()
                    .map(|r| (r.slice_fraction * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()),
            ),
            ("crosses_spine", json!(found.iter().any(|r| crosses(r)))),
        ],
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::phantom::RingSpec;

    #[test]
    fn finds_rings_of_a_strength_sweep_and_none_on_clean_phantoms() {
        let mut clean = Vec::new();
        for seed in [201u64, 202] {
            let ph = small(seed, |_| {});
            let r = detect(&ph.volume, centre_mm(&ph.volume, &scan_of(&ph)));
            clean.push(r.score);
        }
        let mut ringed = Vec::new();
        for (seed, hu, radius) in [(203u64, 15.0, 40.0), (204, 30.0, 75.0), (205, 80.0, 110.0)] {
            let ph = small(seed, |o| {
                o.rings = Some(RingSpec {
                    strength_hu: hu,
                    radii_mm: Some(vec![radius]),
                })
            });
            let r = detect(&ph.volume, centre_mm(&ph.volume, &scan_of(&ph)));
            let best = r.rings.first().expect("a ring is found");
            assert!(
                (best.radius_mm - radius).abs() < 1.5,
                "{hu} HU at {radius} mm found at {:.1} mm",
                best.radius_mm
            );
            assert!(
                (best.contrast_hu.abs() - hu).abs() < 0.4 * hu,
                "{hu} HU measured {:.1}",
                best.contrast_hu
            );
            assert!(best.slice_fraction > 0.8);
            ringed.push(r.score);
        }
        let worst_ring = ringed.iter().cloned().fold(f64::INFINITY, f64::min);
        let worst_clean = clean.iter().cloned().fold(0.0, f64::max);
        let o = QualityOptions::default();
        assert!(
            worst_clean < o.ring_min_score && worst_ring > o.ring_min_score,
            "clean {clean:?} rings {ringed:?}"
        );
    }
}
