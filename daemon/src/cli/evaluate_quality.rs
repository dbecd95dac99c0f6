//! `vcfd evaluate-quality`: scores the scan-quality checks on held-out phantoms.
//!
//! Three kinds of study, in turn: ring artifacts over a strength sweep, clean studies and
//! scoliotic studies (Cobb 10-50 degrees). Prints the ring detection ROC AUC (score: the ring
//! z-statistic; positives the ringed studies, negatives every ring-free one), the share of
//! clean studies with any flag, and the median absolute error of the coronal Cobb angle
//! against the Cobb angle of the vertebrae in view. Every study goes through the whole analysis
//! (spine, keypoint CNN, quality checks) exactly as `vcfd analyze` runs it: the flags and the
//! Cobb angle are the product's, measured from the bodies it found; only the truth it is
//! compared with comes from the phantom.

use anyhow::{bail, Context};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use vcfd_model::analysis::{analyze, AnalysisOptions, ScanInfo};
use vcfd_model::dataset::EVAL_SEED_MIN;
use vcfd_model::findings::VertebraFinding;
use vcfd_model::keypoints::Precision;
use vcfd_model::phantom::{generate, Level, PhantomOptions, RingSpec, Rng};
use vcfd_model::quality::{curvature, rings};
use vcfd_model::truth::VertebraTruth;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of studies (a third ringed, a third clean, a third scoliotic).
    #[arg(long, default_value_t = 40)]
    pub cases: u64,
    /// First seed (held-out: at least 90000).
    #[arg(long, default_value_t = EVAL_SEED_MIN + 1)]
    pub seed: u64,
    /// Also write every case and the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Ring strengths of the sweep, HU: from barely visible to a dead channel.
const STRENGTHS: [f64; 7] = [10.0, 15.0, 20.0, 30.0, 50.0, 80.0, 120.0];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ring,
    Clean,
    Scoliosis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::Clean => "clean",
            Kind::Scoliosis => "scoliosis",
        }
    }
}

/// ROC AUC by the Mann-Whitney statistic (ties count half).
fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut s = 0.0;
    for p in pos {
        for n in neg {
            s += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (pos.len() * neg.len()) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Left-right distance (mm) from each body found to the true body nearest along z, for those
/// within Z_MATCH_MM: the lateral position the coronal Cobb angle is measured from. Matched
/// along z only, not by `evaluate::score_case`'s 3D distance, which would drop exactly the
/// centres furthest off sideways.
fn lateral_errors(found: &[VertebraFinding], truth: &[VertebraTruth]) -> Vec<f64> {
    const Z_MATCH_MM: f64 = 10.0;
    found
        .iter()
        .filter_map(|f| {
            let t = truth.iter().filter(|t| t.in_view).min_by(|a, b| {
                (a.center_mm[2] - f.center_mm[2])
                    .abs()
                    .total_cmp(&(b.center_mm[2] - f.center_mm[2]).abs())
            })?;
            ((t.center_mm[2] - f.center_mm[2]).abs() <= Z_MATCH_MM)
                .then(|| (f.center_mm[0] - t.center_mm[0]).abs())
        })
        .collect()
}

/// Mean, 90th percentile (nearest rank) and maximum of a sample (NaN when empty).
struct Spread {
    mean: f64,
    p90: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                p90: f64::NAN,
                max: f64::NAN,
                n,
            };
        }
        Self {
            mean: v.iter().sum::<f64>() / n as f64,
            p90: v[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1],
            max: v[n - 1],
            n,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seed < EVAL_SEED_MIN {
        bail!("evaluation seeds must be at least {EVAL_SEED_MIN} (lower seeds are for training)");
    }
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let model = vcfd::pipeline::shipped_model(Precision::F32)?;
    let opts = AnalysisOptions::default();
    let t0 = Instant::now();
    let mut records = Vec::new();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut clean_n, mut clean_flagged) = (0usize, 0usize);
    let mut cobb_err = Vec::new();
    let mut cobb_line_err = Vec::new();
    let mut lateral_err = Vec::new();
    let (mut ring_n, mut ring_found) = (0usize, 0usize);
    for t in 0..args.cases {
        let seed = args.seed + t;
        let kind = match t % 3 {
            0 => Kind::Ring,
            1 => Kind::Clean,
            _ => Kind::Scoliosis,
        };
        let mut r = Rng::stream(seed, "evaluate-quality", 0);
        let mut o = PhantomOptions {
            rows: Some(256),
            pixel_spacing_mm: Some(1.4),
            slice_thickness_mm: Some(3.0),
            slice_spacing_mm: Some(r.pick(&[2.0, 3.0])),
            from_level: Some(Level::T10),
            to_level: Some(Level::L3),
            cobb_deg: Some(0.0),
            // Below the hyperkyphosis threshold: a clean study must not be kyphotic.
            kyphosis_deg: Some(r.range(25.0, 52.0)),
            ..Default::default()
        };
        let strength = match kind {
            Kind::Ring => {
                let s = STRENGTHS[(t / 3) as usize % STRENGTHS.len()];
                o.rings = Some(RingSpec {
                    strength_hu: s,
                    radii_mm: None,
                });
                s
            }
            Kind::Scoliosis => {
                // The curve spans most of the thoracolumbar spine: cover it, coarser grid.
                o.cobb_deg = Some(r.range(10.0, 50.0));
                o.from_level = Some(Level::T3);
                o.to_level = Some(Level::L4);
                o.rows = Some(224);
                o.pixel_spacing_mm = Some(1.7);
                o.slice_spacing_mm = Some(3.0);
                0.0
            }
            Kind::Clean => 0.0,
        };
        let ph = generate(seed, &o).with_context(|| format!("phantom seed {seed}"))?;
        let scan = ScanInfo {
            slice_thickness_mm: Some(ph.acquisition.slice_thickness_mm),
            slice_spacing_mm: ph.acquisition.slice_spacing_mm,
            gantry_tilt_deg: 0.0,
            recon_center_mm: Some(ph.acquisition.reconstruction_center_mm),
        };
        let a = analyze(&ph.volume, &scan, model, &opts)
            .with_context(|| format!("analysis of seed {seed}"))?;
        let (q, vertebrae, line) = (&a.findings.quality, &a.findings.vertebrae, &a.centreline);
        let ring = rings::detect(&ph.volume, rings::centre_mm(&ph.volume, &scan));
        // What the checks use (the centres of the bodies found), and the centreline alone
        // (what is left when the detector finds fewer than five bodies).
        let cobb = curvature::cobb_coronal(line.as_ref(), vertebrae).map(|c| c.angle_deg);
        let cobb_line = line
            .as_ref()
            .and_then(curvature::cobb_coronal_deg)
            .map(|c| c.angle_deg);
        let cobb_truth = ph.truth.study.cobb_angle_in_view_deg;
        let kinds: Vec<String> = q.flags.iter().map(|f| f.kind.clone()).collect();
        let ring_flagged = kinds.iter().any(|k| k == "ring_artifact");
        match kind {
            Kind::Ring => {
                pos.push(ring.score);
                ring_n += 1;
                ring_found += usize::from(ring_flagged);
            }
            _ => neg.push(ring.score),
        }
        if kind == Kind::Clean {
            clean_n += 1;
            clean_flagged += usize::from(!q.flags.is_empty());
        }
        if kind == Kind::Scoliosis {
            // No centreline: the Cobb angle could not be measured at all, count it as 0.
            cobb_err.push((cobb.unwrap_or(0.0) - cobb_truth).abs());
            cobb_line_err.push((cobb_line.unwrap_or(0.0) - cobb_truth).abs());
            lateral_err.extend(lateral_errors(vertebrae, &ph.truth.vertebrae));
        }
        let radii = ph
            .truth
            .study
            .rings
            .as_ref()
            .map(|x| x.radii_mm.clone())
            .unwrap_or_default();
        println!(
            "seed {seed} {:<9} ring {:>5.0} HU radii {:<24} score {:>6.1} | cobb {:>5.1} (line {:>5.1}) truth {:>5.1} | flags [{}]",
            kind.name(),
            strength,
            format!("{radii:?}"),
            ring.score,
            cobb.unwrap_or(f64::NAN),
            cobb_line.unwrap_or(f64::NAN),
            cobb_truth,
            kinds.join(", ")
        );
        records.push(json!({
            "seed": seed,
            "kind": kind.name(),
            "ring_strength_hu": strength,
            "ring_radii_mm": radii,
            "ring_score": ring.score,
            "cobb_deg": cobb,
            "cobb_centreline_deg": cobb_line,
            "cobb_truth_deg": cobb_truth,
            "kyphosis_truth_deg": ph.truth.study.kyphosis_deg,
            "quality": q,
        }));
    }
    let ring_auc = auc(&pos, &neg);
    let clean_rate = if clean_n > 0 {
        clean_flagged as f64 / clean_n as f64
    } else {
        f64::NAN
    };
    let cobb_med = median(cobb_err.clone());
    println!(
        "{} studies in {:.0} s: {ring_found}/{ring_n} ringed studies flagged, \
         {clean_flagged}/{clean_n} clean studies flagged, {} scoliosis studies",
        args.cases,
        t0.elapsed().as_secs_f64(),
        cobb_err.len()
    );
    println!(
        "Cobb median abs error: {:.1} deg from the centres of the bodies found, {:.1} deg \
         from the centreline alone",
        cobb_med,
        median(cobb_line_err.clone())
    );
    let lateral = Spread::of(lateral_err);
    println!(
        "Body centres in the scoliosis studies, left-right error: mean {:.1} mm, 90th percentile \
         {:.1} mm, max {:.1} mm over {} bodies (the Cobb angle is taken from these centres)",
        lateral.mean, lateral.p90, lateral.max, lateral.n
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "cases": records,
            "summary": {
                "ring_auc": ring_auc,
                "clean_false_flag_rate": clean_rate,
                "cobb_median_err_deg": cobb_med,
                "ring_flagged": ring_found,
                "ring_studies": ring_n,
                "scoliosis_body_lateral_err_mm": {
                    "mean": lateral.mean, "p90": lateral.p90, "max": lateral.max, "n": lateral.n,
                },
            },
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "quality: ring_auc={ring_auc:.3} clean_false_flag_rate={clean_rate:.3} cobb_median_err_deg={cobb_med:.3}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_takes_the_nearest_rank_percentile() {
        let s = Spread::of((1..=10).rev().map(f64::from).collect());
        assert_eq!((s.mean, s.p90, s.max, s.n), (5.5, 9.0, 10.0, 10));
        let one = Spread::of(vec![2.0]);
        assert_eq!((one.p90, one.max), (2.0, 2.0));
        assert!(Spread::of(Vec::new()).mean.is_nan());
    }
}
