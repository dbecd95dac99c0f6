//! `vcfd evaluate`: held-out accuracy on phantoms, with 95 % confidence intervals.
//!
//! Every case is rendered from a seed at or above the evaluation range (training never sees
//! them), analysed by exactly the code the appliance runs, and matched to its truth. The last
//! line is machine-readable and stable; the lines above it carry the intervals.

use anyhow::{bail, Context};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use vcfd::pipeline::shipped_model;
use vcfd_model::analysis::{analyze, AnalysisOptions};
use vcfd_model::dataset::EVAL_SEED_MIN;
use vcfd_model::evaluate::{case, scan_info, score_case, CaseScore, OPERATING_THRESHOLD};
use vcfd_model::keypoints::{Precision, DEFAULT_PRECISION};
use vcfd_model::metrics::{mean_ci, proportion, roc_auc, sens_spec_at, Estimate};
use vcfd_model::phantom::generate;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of studies (half with a fracture of Genant grade >= 2).
    #[arg(long, default_value_t = 200)]
    pub cases: usize,
    /// First seed (at least 90000: seeds below are training data).
    #[arg(long, default_value_t = 90_001)]
    pub seed: u64,
    #[arg(long, default_value = DEFAULT_PRECISION.as_str())]
    pub precision: Precision,
    /// Write per-case scores and the metrics as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Centre probability a detection needs (default: the product's); for choosing it on a
    /// validation range of seeds, never on the test cases.
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// Centre probability a detection needs where a gap in the column says a body was missed
    /// (default: the product's; at or above --min-confidence the gap rule is off).
    #[arg(long)]
    pub gap_confidence: Option<f32>,
}

fn fmt(e: Option<Estimate>) -> String {
    e.map_or_else(
        || "n/a".into(),
        |e| format!("{:.3} (95% CI {:.3}-{:.3})", e.value, e.lo, e.hi),
    )
}

fn val(e: Option<Estimate>) -> String {
    e.map_or_else(|| "nan".into(), |e| format!("{:.3}", e.value))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seed < EVAL_SEED_MIN {
        bail!("evaluation seeds start at {EVAL_SEED_MIN}; lower seeds are training data");
    }
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let model = shipped_model(args.precision)?;
    let mut opts = AnalysisOptions::default();
    if let Some(c) = args.min_confidence {
        if !(0.0..1.0).contains(&c) {
            bail!("--min-confidence must lie in [0, 1)");
        }
        opts.decode.min_confidence = c;
    }
    if let Some(c) = args.gap_confidence {
        if !(0.0..1.0).contains(&c) {
            bail!("--gap-confidence must lie in [0, 1)");
        }
        opts.decode.gap_confidence = c;
    }
    let mut scores: Vec<CaseScore> = Vec::with_capacity(args.cases);
    for i in 0..args.cases {
        let c = case(args.seed, i);
        let ph = generate(c.seed, &c.options).with_context(|| format!("phantom {}", c.seed))?;
        let t = Instant::now();
        let a = analyze(&ph.volume, &scan_info(&ph), model, &opts)
            .with_context(|| format!("analysis of phantom {}", c.seed))?;
        let secs = t.elapsed().as_secs_f64();
        let mut s = score_case(&ph.volume, &ph.truth, &a.findings, secs);
        s.condition = c.condition.as_str().to_string();
        println!(
            "case {:>3} seed {} {:<17} truth {} score {:.3} bodies {}/{} false {} levels {} {:.2} s",
            i + 1,
            c.seed,
            s.condition,
            if s.label { "FRACTURE" } else { "normal  " },
            s.score,
            s.matched,
            s.truth_bodies,
            s.false_detections,
            match (s.anchored, s.level_shift) {
                (false, _) => "unanchored".to_string(),
                (true, Some(0)) => "ok".to_string(),
                (true, Some(k)) => format!("shift {k:+}"),
                (true, None) => "none".to_string(),
            },
            secs
        );
        for f in &s.fractures {
            let h = |h: &[f64; 3]| format!("{:.1}/{:.1}/{:.1}", h[0], h[1], h[2]);
            println!(
                "           fracture {}: truth {:.0} % (Ha/Hm/Hp {}) measured {}",
                f.level,
                f.truth_deformity * 100.0,
                h(&f.truth_heights_mm),
                f.measured
                    .as_ref()
                    .map_or("missed".into(), |(d, mh)| format!(
                        "{:.0} % ({})",
                        d * 100.0,
                        h(mh)
                    ))
            );
        }
        scores.push(s);
    }
    let labels: Vec<bool> = scores.iter().map(|s| s.label).collect();
    let patient: Vec<f64> = scores.iter().map(|s| s.score).collect();
    let auc = roc_auc(&patient, &labels);
    let (sens, spec) = sens_spec_at(&patient, &labels, OPERATING_THRESHOLD);
    let (vl, vs): (Vec<bool>, Vec<f64>) = scores.iter().flat_map(|s| s.vertebrae.clone()).unzip();
    let vert_auc = roc_auc(&vs, &vl);
    let sum = |f: fn(&CaseScore) -> usize| scores.iter().map(f).sum::<usize>();
    let (matched, truth_n, false_n) = (
        sum(|s| s.matched),
        sum(|s| s.truth_bodies),
        sum(|s| s.false_detections),
    );
    let recall = proportion(matched, truth_n);
    let precision = proportion(matched, matched + false_n);
    // A body is levelled right when it gets its true level, or no level where the field holds
    // no anchor: the issue asks for "relative" levels there, so "unknown" is the right answer
    // and a guessed name would be the error. The strict figure counts every unknown as wrong.
    let level_acc = proportion(
        sum(|s| s.level_correct + s.level_unknown_unanchorable),
        matched,
    );
    let level_acc_strict = proportion(sum(|s| s.level_correct), matched);
    let anchorable = |f: fn(&CaseScore) -> usize| {
        scores
            .iter()
            .filter(|s| s.anchor_in_view)
            .map(f)
            .sum::<usize>()
    };
    let level_acc_anchor = proportion(anchorable(|s| s.level_correct), anchorable(|s| s.matched));
    let genant = proportion(sum(|s| s.grade_agree), matched);
    let heights: Vec<f64> = scores
        .iter()
        .flat_map(|s| s.height_errors.clone())
        .collect();
    let mae = mean_ci(&heights);
    let secs: Vec<f64> = scores.iter().map(|s| s.seconds).collect();
    let sec = mean_ci(&secs).or_else(|| {
        secs.first().map(|&v| Estimate {
            value: v,
            lo: v,
            hi: v,
        })
    });
    let positives = labels.iter().filter(|&&l| l).count();
    println!();
    println!(
        "{} cases ({} with Genant >= 2, {} without), seeds {}..{}, precision {}",
        scores.len(),
        positives,
        scores.len() - positives,
        args.seed,
        args.seed + args.cases as u64 - 1,
        args.precision.as_str()
    );
    println!("patient ROC AUC:        {}", fmt(auc));
    println!(
        "sensitivity @ {:.2}:     {}",
        OPERATING_THRESHOLD,
        fmt(sens)
    );
    println!(
        "specificity @ {:.2}:     {}",
        OPERATING_THRESHOLD,
        fmt(spec)
    );
    println!("vertebra ROC AUC:       {}", fmt(vert_auc));
    println!(
        "detection recall:       {}  ({matched}/{truth_n} bodies within 10 mm)",
        fmt(recall)
    );
    println!(
        "detection precision:    {}  ({false_n} detections on no vertebra)",
        fmt(precision)
    );
    println!(
        "level accuracy:         {}  (true level, or unknown where T12-L1 is not in view)",
        fmt(level_acc)
    );
    println!(
        "  every unknown wrong:  {}  ({} bodies unknown without an anchor in view)",
        fmt(level_acc_strict),
        sum(|s| s.level_unknown_unanchorable)
    );
    println!("  where T12-L1 is in view: {}", fmt(level_acc_anchor));
    println!("height MAE (mm):        {}", fmt(mae));
    println!("Genant exact agreement: {}", fmt(genant));
    println!(
        "seconds per study:      {}  (analysis only, phantom rendering excluded)",
        fmt(sec)
    );
    println!();
    println!("by hard condition, at {OPERATING_THRESHOLD:.2}: fractures found / positives, negatives called negative / negatives");
    let mut conditions: Vec<&str> = scores.iter().map(|s| s.condition.as_str()).collect();
    conditions.sort_unstable();
    conditions.dedup();
    for c in conditions {
        let of = |label: bool| {
            scores
                .iter()
                .filter(move |s| s.condition == c && s.label == label)
        };
        let found = of(true).filter(|s| s.score >= OPERATING_THRESHOLD).count();
        let cleared = of(false).filter(|s| s.score < OPERATING_THRESHOLD).count();
        println!(
            "  {c:<18} sensitivity {found}/{}  specificity {cleared}/{}",
            of(true).count(),
            of(false).count()
        );
    }
    if let Some(path) = &args.json {
        let est = |e: Option<Estimate>| json!(e);
        let doc = json!({
            "cases": scores.len(),
            "seed": args.seed,
            "precision": args.precision.as_str(),
            "patient_auc": est(auc), "sensitivity": est(sens), "specificity": est(spec),
            "vertebra_auc": est(vert_auc), "recall": est(recall), "precision_det": est(precision),
            "level_accuracy": est(level_acc),
            "level_accuracy_strict": est(level_acc_strict),
            "level_accuracy_anchor_in_view": est(level_acc_anchor), "height_mae_mm": est(mae),
            "genant_agreement": est(genant), "seconds_per_study": est(sec),
            "per_case": scores.iter().map(|s| json!({
                "seed": s.seed, "condition": s.condition, "label": s.label, "score": s.score,
                "matched": s.matched, "truth_bodies": s.truth_bodies,
                "false_detections": s.false_detections, "reliable": s.reliable,
                "anchored": s.anchored, "level_correct": s.level_correct,
                "level_unknown_unanchorable": s.level_unknown_unanchorable,
                "anchor_in_view": s.anchor_in_view,
                "level_shift": s.level_shift,
                "seconds": s.seconds,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "evaluate: patient_auc={} sens={} spec={} vert_auc={} recall={} precision={} level_acc={} height_mae_mm={} sec_per_study={}",
        val(auc),
        val(sens),
        val(spec),
        val(vert_auc),
        val(recall),
        val(precision),
        val(level_acc),
        val(mae),
        val(sec)
    );
    Ok(())
}
