//! `vcfd bench-model`: how long the keypoint network and the endplate refinement take in
//! tract, per precision, on the shipped weights and realistic input sizes. The onnxruntime
//! side of the comparison is scripts/bench-inference.sh, which runs this and the same models
//! in onnxruntime.

use anyhow::ensure;
use std::time::Instant;
use vcfd_model::endplates::{EndplateModel, PATCH_CHANNELS, PATCH_COLS, PATCH_ROWS};
use vcfd_model::keypoints::{KeypointModel, Precision, INPUT_WIDTH};

/// Patches per endplate run in the benchmark: the size the analysis runs them in.
const PATCHES: usize = 64;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input rows (a whole thoracolumbar spine at 1 mm is about 450).
    #[arg(long, default_value_t = 448)]
    pub rows: usize,
    /// Timed runs per precision (after one warm-up run that compiles the plan).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.iters > 0 && args.rows >= 16,
        "need --iters >= 1 and --rows >= 16"
    );
    // A smooth pattern in the network's input range: the cost does not depend on content.
    let input: Vec<f32> = (0..args.rows * INPUT_WIDTH)
        .map(|i| ((i % 97) as f32 / 97.0 - 0.5) * 2.0)
        .collect();
    let patches: Vec<f32> = (0..PATCHES * PATCH_CHANNELS * PATCH_ROWS * PATCH_COLS)
        .map(|i| ((i % 89) as f32 / 89.0 - 0.5) * 2.0)
        .collect();
    let mut med = Vec::new();
    for p in [Precision::F32, Precision::Int8] {
        let m = KeypointModel::shipped(p)?;
        med.push(time(
            &format!("{:<4} keypoints {}x{}", p.as_str(), args.rows, INPUT_WIDTH),
            args.iters,
            || m.run_raw(&input, INPUT_WIDTH, args.rows).map(|_| ()),
        )?);
    }
    for p in [Precision::F32, Precision::Int8] {
        let m = EndplateModel::shipped(p)?;
        med.push(time(
            &format!("{:<4} endplates {PATCHES} patches", p.as_str()),
            args.iters,
            || m.run_patches(&patches).map(|_| ()),
        )?);
    }
    println!(
        "bench-model: tract_f32_ms={:.1} tract_int8_ms={:.1} int8_over_f32={:.2} \
         tract_endplates_f32_ms={:.1} tract_endplates_int8_ms={:.1} endplates_int8_over_f32={:.2}",
        med[0],
        med[1],
        med[1] / med[0],
        med[2],
        med[3],
        med[3] / med[2]
    );
    Ok(())
}

/// Runs `f` once (plan compilation) and then `iters` times; prints and returns the median ms.
fn time(
    what: &str,
    iters: usize,
    mut f: impl FnMut() -> vcfd_model::Result<()>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let md = median(times.clone());
    println!(
        "tract {what}: compile+first run {first:.0} ms; median {md:.1} ms (min {:.1}, max {:.1}) over {iters} runs",
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
    );
    Ok(md)
}
