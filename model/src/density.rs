//! Opportunistic bone density: trabecular HU of the vertebral bodies T11-L3 and an L1-based
//! screening verdict.
//!
//! Sources for the thresholds:
//! - Pickhardt PJ et al. Opportunistic screening for osteoporosis using abdominal computed
//!   tomography scans obtained for other indications. Ann Intern Med 2013;158:588-595
//!   (L1 trabecular HU; <= 160 HU ~90 % sensitive, <= 110 HU >90 % specific for DXA
//!   osteoporosis; ~100 HU is the commonly quoted threshold).
//! - Jang S et al. Opportunistic osteoporosis screening at routine abdominal and thoracic CT:
//!   normative L1 trabecular attenuation values in more than 20 000 adults. Radiology
//!   2019;291:360-367 (< 100 HU osteoporosis, 100-150 HU osteopenia, > 150 HU normal).
//! - ISCD 2023 Official Positions (adult), opportunistic CT: CT attenuation may flag patients
//!   for DXA but does not diagnose osteoporosis; it is not a T-score.

use crate::findings::{Bmd, VertebraFinding};
use crate::truth::Keypoints;
use crate::volume::Volume;

/// Below this L1 HU osteoporosis is suspected (Jang 2019; Pickhardt 2013).
pub const OSTEOPOROSIS_HU: f64 = 100.0;
/// Above this L1 HU bone density is considered normal (Jang 2019).
pub const NORMAL_HU: f64 = 150.0;

/// Fewest voxels whose mean we trust: below this a thick-slice or cut-off body gives a
/// number dominated by partial volume and noise.
const MIN_VOXELS: usize = 20;
/// Share of the ROI that must lie inside the scanned volume.
const MIN_INSIDE: f64 = 0.8;

const NOTE: &str = "Trabecular CT attenuation (HU) is not DXA bone mineral density and gives no \
T-score; the verdict is opportunistic screening that may prompt DXA, not a diagnosis \
(thresholds for L1: Pickhardt 2013, Jang 2019; ISCD 2023).";

/// Mean HU of the trabecular core of one body.
///
/// The ROI lies between the endplates (the middle half of the local height, interpolated
/// along AP between the anterior, middle and posterior keypoint pairs, so wedged bodies are
/// handled), inset at least 4 mm (and 15 % of the depth) from the anterior and posterior
/// walls, and laterally within an ellipse of half-width 0.3 x AP depth because the keypoints
/// say nothing about the body's width. Voxels farther than 3 robust SD from the median
/// (bone islands, basivertebral veins, contrast) are dropped before averaging.
/// `None` when the keypoints are degenerate, the ROI has too few voxels, or much of it falls
/// outside the volume.
pub fn trabecular_hu(volume: &Volume, kp: &Keypoints) -> Option<f64> {
    let roi = Roi::new(kp)?;
    let g = &volume.geometry;
    // Bounding box of the ROI in voxel indices (unclamped, so cut-off parts are counted).
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in kp.as_array() {
        let v = g.patient_to_voxel(p);
        for a in 0..3 {
            lo[a] = lo[a].min(v[a]);
            hi[a] = hi[a].max(v[a]);
        }
    }
    // Pad by the lateral reach, which the sagittal keypoints do not span.
    let reach = roi.half_width;
    for a in 0..3 {
        let pad = reach / g.spacing[a] + 1.0;
        lo[a] = (lo[a] - pad).floor();
        hi[a] = (hi[a] + pad).ceil();
    }
    let span: f64 = (0..3).map(|a| hi[a] - lo[a] + 1.0).product();
    if !span.is_finite() || span > 5e7 {
        return None;
    }
    let mut vals = Vec::new();
    let mut total = 0usize;
    let mut k = lo[2];
    while k <= hi[2] {
        let mut j = lo[1];
        while j <= hi[1] {
            let mut i = lo[0];
            while i <= hi[0] {
                if roi.contains(g.voxel_to_patient([i, j, k])) {
                    total += 1;
                    if i >= 0.0 && j >= 0.0 && k >= 0.0 {
                        if let Some(h) = volume.get(i as usize, j as usize, k as usize) {
                            vals.push(f64::from(h));
                        }
                    }
                }
                i += 1.0;
            }
            j += 1.0;
        }
        k += 1.0;
    }
    if vals.len() < MIN_VOXELS || (vals.len() as f64) < MIN_INSIDE * total as f64 {
        return None;
    }
    robust_mean(&mut vals)
}

/// Mean after dropping values beyond 3 robust SD (1.4826 MAD) of the median.
fn robust_mean(vals: &mut [f64]) -> Option<f64> {
    let med = median(vals)?;
    let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev)?;
    let lim = 3.0 * 1.4826 * mad.max(1.0);
    let (s, n) = vals
        .iter()
        .filter(|v| (*v - med).abs() <= lim)
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then_some(s / n.max(1) as f64)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// The ROI in the body's own frame: `up` along the body axis, `ap` anterior to posterior.
struct Roi {
    anterior: [f64; 3],
    up: [f64; 3],
    ap: [f64; 3],
    lat: [f64; 3],
    depth: f64,
    half_width: f64,
    /// (AP fraction, height along `up` from the anterior point) of the upper and lower
    /// endplate keypoints, anterior to posterior.
    upper: [(f64, f64); 3],
    lower: [(f64, f64); 3],
    s_min: f64,
    s_max: f64,
}

impl Roi {
    fn new(kp: &Keypoints) -> Option<Self> {
        let ant = mid(kp.upper_anterior, kp.lower_anterior);
        let post = mid(kp.upper_posterior, kp.lower_posterior);
        let upper_c = mean3([kp.upper_anterior, kp.upper_middle, kp.upper_posterior]);
        let lower_c = mean3([kp.lower_anterior, kp.lower_middle, kp.lower_posterior]);
        let up = unit(sub(upper_c, lower_c))?;
        let ap_raw = sub(post, ant);
        let ap = unit(sub(ap_raw, scale(up, dot(ap_raw, up))))?;
        let lat = cross(up, ap);
        let depth = dot(ap_raw, ap);
        if depth.is_nan() || depth <= 8.0 {
            return None;
        }
        let coords = |p: [f64; 3]| {
            let d = sub(p, ant);
            (dot(d, ap) / depth, dot(d, up))
        };
        let upper = [kp.upper_anterior, kp.upper_middle, kp.upper_posterior].map(coords);
        let lower = [kp.lower_anterior, kp.lower_middle, kp.lower_posterior].map(coords);
        let inset = (4.0 / depth).max(0.15);
        if inset >= 0.45 {
            return None;
        }
        Some(Self {
            anterior: ant,
            up,
            ap,
            lat,
            depth,
            half_width: 0.3 * depth,
            upper,
            lower,
            s_min: inset,
            s_max: 1.0 - inset,
        })
    }

    fn contains(&self, p: [f64; 3]) -> bool {
        let d = sub(p, self.anterior);
        let s = dot(d, self.ap) / self.depth;
        if s < self.s_min || s > self.s_max {
            return false;
        }
        // Lateral bound: an ellipse over the AP range, so the corners of a box do not reach
        // the rounded anterolateral cortex.
        let half = 0.5 * (self.s_max - self.s_min);
        let e = (s - 0.5 * (self.s_min + self.s_max)) / (half + 0.1);
        let w = self.half_width * (1.0 - e * e).max(0.0).sqrt();
        if dot(d, self.lat).abs() > w {
            return false;
        }
        let h = dot(d, self.up);
        let top = interp(&self.upper, s);
        let bottom = interp(&self.lower, s);
        let height = top - bottom;
        height > 0.0 && h >= bottom + 0.25 * height && h <= top - 0.25 * height
    }
}

/// Piecewise-linear profile through three (s, h) points, extended flat beyond the ends.
fn interp(pts: &[(f64, f64); 3], s: f64) -> f64 {
    let mut p = *pts;
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    if s <= p[0].0 {
        return p[0].1;
    }
    for w in p.windows(2) {
        if s <= w[1].0 {
            let t = if w[1].0 - w[0].0 > 1e-9 {
                (s - w[0].0) / (w[1].0 - w[0].0)
            } else {
                0.0
            };
            return w[0].1 + t * (w[1].1 - w[0].1);
        }
    }
    p[2].1
}

/// Opportunistic screening verdict from the trabecular HU of L1, or of the nearest
/// unfractured level in T11-L3 when L1 is missing, fractured or unmeasured.
///
/// Fractured bodies (Genant grade >= 1) are skipped because compression packs trabeculae and
/// raises HU. Levels `None` (no anchor in view) give "not_assessed": without a level there is
/// no L1 and the thresholds do not apply.
pub fn bmd(vertebrae: &[VertebraFinding]) -> Bmd {
    // Distance from L1 in levels; ties go caudal (lumbar thresholds are the better studied).
    let rank = |level: &str| -> Option<(u8, u8)> {
        match level {
            "L1" => Some((0, 0)),
            "L2" => Some((1, 0)),
            "T12" => Some((1, 1)),
            "L3" => Some((2, 0)),
            "T11" => Some((2, 1)),
            _ => None,
        }
    };
    let best = vertebrae
        .iter()
        .filter(|v| v.genant_grade == 0)
        .filter_map(|v| {
            let level = v.level.as_deref()?;
            let hu = v.trabecular_hu.filter(|h| h.is_finite())?;
            Some((rank(level)?, level, hu))
        })
        .min_by_key(|(r, _, _)| *r);
    match best {
        None => Bmd {
            l1_hu: None,
            level_used: None,
            verdict: "not_assessed".into(),
            note: format!(
                "Not assessed: no unfractured T11-L3 body with a known level and a measurable \
                 trabecular core. {NOTE}"
            ),
        },
        Some((_, level, hu)) => {
            let verdict = if hu < OSTEOPOROSIS_HU {
                "osteoporosis_suspected"
            } else if hu <= NORMAL_HU {
                "osteopenia_possible"
            } else {
                "normal"
            };
            let substitute = if level == "L1" {
                String::new()
            } else {
                format!(
                    " Measured at {level} because L1 was not measurable or fractured; the L1 \
                     thresholds are applied approximately."
                )
            };
            Bmd {
                l1_hu: Some(hu),
                level_used: Some(level.to_string()),
                verdict: verdict.into(),
                note: format!("{NOTE}{substitute}"),
            }
        }
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn unit(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n.is_finite() && n > 1e-9).then(|| scale(a, 1.0 / n))
}
fn mid(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    scale([a[0] + b[0], a[1] + b[1], a[2] + b[2]], 0.5)
}
fn mean3(p: [[f64; 3]; 3]) -> [f64; 3] {
    scale(
        [
            p[0][0] + p[1][0] + p[2][0],
            p[0][1] + p[1][1] + p[2][1],
            p[0][2] + p[1][2] + p[2][2],
        ],
        1.0 / 3.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::morphometry::Morphology;
    use crate::phantom::{generate, PhantomOptions};
    use crate::truth::Heights;

    #[test]
    fn trabecular_hu_matches_phantom_truth() {
        let mut errs = Vec::new();
        for seed in [21u64, 22, 23, 24] {
            let opts = PhantomOptions {
                rows: Some(192),
                pixel_spacing_mm: Some(1.4),
                slice_thickness_mm: Some(2.0),
                slice_spacing_mm: Some(2.0),
                from_level: Some("T10".parse().unwrap()),
                to_level: Some("L4".parse().unwrap()),
                ..Default::default()
            };
            let ph = generate(seed, &opts).unwrap();
            for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
                if let Some(hu) = trabecular_hu(&ph.volume, &v.keypoints_mm) {
                    errs.push((hu - v.trabecular_hu).abs());
                    println!(
                        "seed {seed} {} truth {:.1} measured {hu:.1} grade {}",
                        v.level, v.trabecular_hu, v.genant_grade
                    );
                }
            }
        }
        assert!(errs.len() >= 16, "only {} bodies measured", errs.len());
        let med = median(&mut errs).unwrap();
        println!("median |error| {med:.2} HU over {} bodies", errs.len());
        assert!(med <= 10.0, "median error {med:.1} HU");
    }

    #[test]
    fn trabecular_hu_refuses_a_body_outside_the_volume() {
        let ph = generate(
            31,
            &PhantomOptions {
                rows: Some(192),
                pixel_spacing_mm: Some(1.4),
                slice_thickness_mm: Some(2.0),
                slice_spacing_mm: Some(2.0),
                from_level: Some("L1".parse().unwrap()),
                to_level: Some("L3".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        let far = ph.truth.vertebrae.iter().find(|v| v.level == "T6").unwrap();
        assert!(trabecular_hu(&ph.volume, &far.keypoints_mm).is_none());
    }

    fn finding(level: Option<&str>, hu: Option<f64>, grade: u8) -> VertebraFinding {
        let z = [0.0; 3];
        let h = Heights {
            anterior: 25.0,
            middle: 25.0,
            posterior: 25.0,
        };
        VertebraFinding {
            level: level.map(str::to_string),
            center_mm: z,
            keypoints_mm: Keypoints {
                upper_anterior: z,
                upper_middle: z,
                upper_posterior: z,
                lower_anterior: z,
                lower_middle: z,
                lower_posterior: z,
            },
            heights_mm: h,
            deformity: 0.0,
            genant_grade: grade,
            morphology: Morphology::Normal,
            trabecular_hu: hu,
            confidence: 1.0,
        }
    }

    #[test]
    fn bmd_uses_l1_and_thresholds() {
        let b = bmd(&[
            finding(Some("T12"), Some(200.0), 0),
            finding(Some("L1"), Some(95.0), 0),
        ]);
        assert_eq!(b.verdict, "osteoporosis_suspected");
        assert_eq!(b.level_used.as_deref(), Some("L1"));
        assert!(b.note.contains("not DXA"));
        assert_eq!(
            bmd(&[finding(Some("L1"), Some(120.0), 0)]).verdict,
            "osteopenia_possible"
        );
        assert_eq!(
            bmd(&[finding(Some("L1"), Some(150.0), 0)]).verdict,
            "osteopenia_possible"
        );
        assert_eq!(
            bmd(&[finding(Some("L1"), Some(151.0), 0)]).verdict,
            "normal"
        );
    }

    #[test]
    fn bmd_skips_fractured_l1_and_unknown_levels() {
        let b = bmd(&[
            finding(Some("T11"), Some(90.0), 0),
            finding(Some("L1"), Some(180.0), 2),
            finding(Some("L2"), Some(130.0), 0),
            finding(Some("L4"), Some(60.0), 0),
        ]);
        assert_eq!(b.level_used.as_deref(), Some("L2"));
        assert_eq!(b.verdict, "osteopenia_possible");
        assert!(b.note.contains("L2"));
        let none = bmd(&[finding(None, Some(80.0), 0), finding(None, Some(90.0), 0)]);
        assert_eq!(none.verdict, "not_assessed");
        assert!(none.l1_hu.is_none() && none.note.contains("not DXA"));
    }
}
