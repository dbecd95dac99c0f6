//! `vcfd dataset`: exports CNN training samples rendered by the Rust preprocessing.
//!
//! Writes `OUT/images/SEED.f32` (little-endian f32, `height x width`, row-major), the thin-slab
//! image `OUT/images/SEED.thin.f32` (same layout) and one JSON line per sample in
//! `OUT/labels.jsonl`. Training seeds must stay below
//! [`vcfd_model::dataset::EVAL_SEED_MIN`] so evaluation never sees a training study.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use vcfd_model::dataset::{sample, EVAL_SEED_MIN};
use vcfd_model::phantom::{generate, Level, MimicKind, MimicSpec, PhantomOptions, Rng};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of studies.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// First seed; studies use seeds SEED..SEED+COUNT.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rows and columns of each rendered slice (smaller renders faster; the reformat is
    /// resampled to 1 mm either way).
    #[arg(long, default_value_t = 320)]
    pub rows: usize,
    /// Every Nth study is rendered coarse (1.5-3.2 mm pixels, as research datasets resampled
    /// to 3 mm are) so the network does not depend on fine in-plane detail; 0 disables.
    #[arg(long, default_value_t = 4)]
    pub coarse_every: u64,
    /// Fractures per study (random levels, kinds and severities); by default the phantom's
    /// clinical mix (half the studies have none). Fractures are ~3 % of all bodies in that
    /// mix: fracture-rich sets keep the network from learning only the normal shape.
    #[arg(long)]
    pub fractures: Option<usize>,
    /// Schmorl's nodes per study at distinct random levels T6-L4, and no fractures. The
    /// clinical mix has too few nodes over the middle keypoints (one in about five studies) for
    /// the networks to learn to bridge them, as morphometry does and real CT needs.
    #[arg(long, conflicts_with = "fractures")]
    pub schmorl: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let last = args.seed.saturating_add(args.count);
    if last > EVAL_SEED_MIN {
        bail!("training seeds must stay below {EVAL_SEED_MIN} (evaluation uses the seeds above)");
    }
    let images = args.out.join("images");
    std::fs::create_dir_all(&images)
        .with_context(|| format!("cannot create {}", images.display()))?;
    let labels_path = args.out.join("labels.jsonl");
    let mut labels = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&labels_path)
            .with_context(|| format!("cannot open {}", labels_path.display()))?,
    );
    let t0 = Instant::now();
    let (mut written, mut skipped) = (0u64, 0u64);
    for seed in args.seed..last {
        let coarse = args.coarse_every > 0 && seed % args.coarse_every == 0;
        let pixel = 1.5 + 1.7 * ((seed.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0);
        let opts = PhantomOptions {
            rows: Some(if coarse {
                (420.0 / pixel).ceil() as usize
            } else {
                args.rows
            }),
            pixel_spacing_mm: coarse.then_some(pixel),
            // Half the studies carry rings or metal so the network learns to ignore them.
            random_artifacts: seed % 2 == 0,
            fracture_count: args.fractures,
            fractures: args.schmorl.map(|_| Vec::new()),
            mimics: args.schmorl.map(|n| schmorl_nodes(seed, n)),
            ..Default::default()
        };
        let ph = generate(seed, &opts).with_context(|| format!("phantom seed {seed}"))?;
        let s = match sample(&ph) {
            Ok(s) => s,
            Err(e) => {
                // A study whose spine cannot be found teaches nothing; count it, say so.
                log::warn!("seed {seed}: skipped ({e})");
                skipped += 1;
                continue;
            }
        };
        let file = format!("{seed:06}.f32");
        let thin_file = format!("{seed:06}.thin.f32");
        for (name, px) in [(&file, &s.pixels), (&thin_file, &s.thin)] {
            let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(images.join(name), bytes).with_context(|| format!("writing {name}"))?;
        }
        let line = serde_json::json!({
            "seed": seed,
            "file": format!("images/{file}"),
            "thin_file": format!("images/{thin_file}"),
            "width": s.width,
            "height": s.height,
            "vertebrae": s.vertebrae,
        });
        writeln!(labels, "{line}")?;
        written += 1;
        if written % 10 == 0 {
            println!(
                "{written} samples, {:.1} s per study",
                t0.elapsed().as_secs_f64() / written as f64
            );
        }
    }
    labels.flush()?;
    println!(
        "dataset: {written} samples ({skipped} skipped: spine not found) in {:.0} s -> {}",
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// `n` Schmorl's nodes at distinct levels T6-L4 drawn from the study's seed.
fn schmorl_nodes(seed: u64, n: usize) -> Vec<MimicSpec> {
    let mut levels: Vec<usize> = (Level::T6.index()..=Level::L4.index()).collect();
    let mut r = Rng::stream(seed, "dataset-schmorl", 0);
    let mut out = Vec::new();
    while out.len() < n && !levels.is_empty() {
        let i = levels.swap_remove(r.index(levels.len()));
        if let Some(level) = Level::from_index(i) {
            out.push(MimicSpec {
                kind: MimicKind::Schmorl,
                level,
            });
        }
    }
    out
}
