//! `vcfd demo`: the main job on an embedded default, end to end on one machine.
//!
//! Renders a phantom chest CT with two known fractures, writes it as DICOM, and runs it through
//! the same `analyze` path a real study takes, then sets what was measured against the truth.
//! It drives the `phantom` and `analyze` subcommands through their own flag parsers so the demo
//! can never drift from what a user runs by hand.

use anyhow::{ensure, Context};
use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to put the study and the results (created; replaced if it holds an earlier demo).
    #[arg(long, default_value = "vcfd-demo")]
    pub out: PathBuf,
    /// Phantom seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Parser)]
struct PhantomCli {
    #[command(flatten)]
    args: super::phantom::Args,
}

#[derive(Parser)]
struct AnalyzeCli {
    #[command(flatten)]
    args: super::analyze::Args,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let study = args.out.join("study");
    let results = args.out.join("results");
    let report = results.join("report.json");
    let study_s = study.to_string_lossy().to_string();
    let seed = args.seed.to_string();
    println!("== 1/2 phantom: a chest CT with a grade 3 wedge at L1 and a grade 2 biconcave at T8");
    let ph = PhantomCli::try_parse_from([
        "phantom",
        "--out",
        &study_s,
        "--seed",
        &seed,
        "--fracture",
        "L1:wedge:0.42",
        "--fracture",
        "T8:biconcave:0.30",
        "--from-level",
        "T4",
        "--to-level",
        "L3",
        "--force",
    ])
    .context("demo phantom flags")?;
    super::phantom::run(ph.args)?;

    println!("\n== 2/2 analyze: the study read back through the appliance's DICOM loader");
    let an = AnalyzeCli::try_parse_from([
        "analyze",
        &study_s,
        "--out",
        &results.to_string_lossy(),
        "--serial",
        "demo",
    ])
    .context("demo analyze flags")?;
    super::analyze::run(an.args)?;

    // The loader must reproduce the geometry the phantom rendered, or nothing downstream holds.
    let truth: vcfd_model::truth::Truth = serde_json::from_str(
        &std::fs::read_to_string(study.join("truth.json")).context("reading truth.json")?,
    )?;
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).context("reading report.json")?)?;
    ensure!(
        rep["series_instance_uid"] == truth.series_instance_uid.as_str(),
        "the analysed series is not the phantom's"
    );
    // Measured against truth, level by level, for the reader to judge.
    println!("\n== truth vs measured (graded levels in view)");
    println!(
        "{:<6} {:>22} {:>22}",
        "level", "truth Ha/Hm/Hp grade", "measured Ha/Hm/Hp grade"
    );
    let found: Vec<vcfd_model::findings::VertebraFinding> =
        serde_json::from_value(rep["vertebrae"].clone()).context("report vertebrae")?;
    for t in truth
        .vertebrae
        .iter()
        .filter(|v| v.in_view && v.level != "S1")
    {
        let m = found
            .iter()
            .find(|f| f.level.as_deref() == Some(t.level.as_str()));
        let h = &t.heights_mm;
        println!(
            "{:<6} {:>16} {:>5} {:>16} {:>5}",
            t.level,
            format!("{:.1}/{:.1}/{:.1}", h.anterior, h.middle, h.posterior),
            t.genant_grade,
            m.map_or_else(
                || "not found".to_string(),
                |m| format!(
                    "{:.1}/{:.1}/{:.1}",
                    m.heights_mm.anterior, m.heights_mm.middle, m.heights_mm.posterior
                )
            ),
            m.map_or_else(String::new, |m| m.genant_grade.to_string())
        );
    }
    println!(
        "\nwrote the study to {} and the results (report.json, sr.dcm, series/) to {}",
        study.display(),
        results.display()
    );
    Ok(())
}
