//! `vcfd analyze PATH`: load a CT series, analyse it, print a table per vertebra and write the
//! report (and with `--out`, the SR and image series that would go to PACS).

use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
use vcfd::dicom_in::load_series;
use vcfd::pipeline::{analyze_series, write_outputs};
use vcfd::report::Report;
use vcfd_model::findings::Findings;
use vcfd_model::keypoints::{Precision, DEFAULT_PRECISION};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write report.json, sr.dcm and series/*.dcm into this folder (created).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Network precision: f32 or int8 (default: the one chosen by measurement, see MODEL_CARD).
    #[arg(long, default_value = DEFAULT_PRECISION.as_str())]
    pub precision: Precision,
    /// Box serial written into the SR's device observer.
    #[arg(long, default_value = "workstation")]
    pub serial: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let loaded = load_series(&args.paths)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let analysis = analyze_series(&loaded, args.precision)?;
    let mut findings = analysis.findings.clone();
    findings
        .timing_ms
        .insert("load".into(), load_seconds * 1000.0);
    let report = match &args.out {
        Some(dir) => {
            let w = write_outputs(&loaded, &analysis, load_seconds, &args.serial, dir)?;
            println!(
                "results:     {} , {} and {} image(s) in {}",
                w.report_path.display(),
                w.results.sr.display(),
                w.results.images.len(),
                dir.join("series").display()
            );
            w.report
        }
        None => Report::from_loaded(&loaded, load_seconds).with_findings(findings),
    };
    print_summary(&report);
    if let Some(f) = &report.findings {
        print_findings(f);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The per-vertebra table a radiologist can check against the images.
pub fn print_findings(f: &Findings) {
    println!();
    println!(
        "{:<6} {:>27} {:>6} {:>6} {:>6} {:>6} {:>5} {:<10} {:>7} {:>5}",
        "level", "centre LPS (mm)", "Ha", "Hm", "Hp", "def%", "grade", "type", "HU", "conf"
    );
    for v in &f.vertebrae {
        let c = v.center_mm;
        println!(
            "{:<6} {:>27} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>5} {:<10} {:>7} {:>5.2}",
            v.level.as_deref().unwrap_or("?"),
            format!("{:.1}, {:.1}, {:.1}", c[0], c[1], c[2]),
            v.heights_mm.anterior,
            v.heights_mm.middle,
            v.heights_mm.posterior,
            v.deformity * 100.0,
            v.genant_grade,
            v.morphology.as_str(),
            opt(v.trabecular_hu, 0),
            v.confidence
        );
    }
    if f.vertebrae.is_empty() {
        println!("(no vertebral body found)");
    }
    if !f.levels_note.is_empty() {
        println!("levels: {}", f.levels_note);
    }
    println!(
        "max Genant grade: {}   fracture score: {:.3}",
        f.max_genant_grade, f.fracture_score
    );
    // Name the level the figure comes from; the note says why it is not L1 when it is not.
    let measured = match (f.bmd.level_used.as_deref(), f.bmd.l1_hu) {
        (Some(level), Some(hu)) => format!("{level} {hu:.0} HU"),
        _ => "no level measured".to_string(),
    };
    println!(
        "bone density: {measured} ({}); {}",
        f.bmd.verdict, f.bmd.note
    );
    println!(
        "quality: {}",
        if f.quality.reliable {
            "reliable"
        } else {
            "UNRELIABLE"
        }
    );
    for q in &f.quality.flags {
        println!("  [{:?}] {}: {}", q.severity, q.kind, q.text);
    }
    let timing: Vec<String> = f
        .timing_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    println!("timing (ms): {}", timing.join(", "));
    println!("model: {}", f.model_version);
}

fn print_summary(r: &Report) {
    let s = &r.series;
    println!("series:      {}", s.choice);
    println!(
        "uids:        study {} series {}{}",
        r.study_instance_uid,
        r.series_instance_uid,
        if r.uids_synthesised {
            " (synthesised)"
        } else {
            ""
        }
    );
    println!(
        "dimensions:  {} x {} x {} voxels (columns x rows x slices) from {} files",
        s.dims[0], s.dims[1], s.dims[2], s.n_files
    );
    println!(
        "spacing:     {} x {} x {} mm; slice thickness {}",
        s.spacing_mm[0],
        s.spacing_mm[1],
        s.spacing_mm[2],
        s.slice_thickness_mm
            .map_or_else(|| "unknown".to_string(), |t| format!("{t} mm"))
    );
    println!("origin:      {:?} mm (LPS)", s.origin_mm);
    println!(
        "axes:        row {:?}, column {:?}, slice {:?}",
        s.axes[0], s.axes[1], s.axes[2]
    );
    if s.gantry_tilt_deg > 1e-3 {
        println!(
            "gantry tilt: {:.2} degrees{}",
            s.gantry_tilt_deg,
            if s.tilt_corrected { " (corrected)" } else { "" }
        );
    }
    println!("HU range:    {} .. {}", s.hu_min, s.hu_max);
    println!(
        "encoding:    {} ({})",
        s.transfer_syntax_name, s.transfer_syntax
    );
    println!(
        "scanner:     {} {}; kernel {}",
        s.manufacturer, s.manufacturer_model_name, s.convolution_kernel
    );
    for n in &s.notes {
        println!("note:        {n}");
    }
    for o in &r.other_series {
        println!(
            "other:       series {}{} '{}' ({} {} files): {}",
            o.series_number
                .map_or_else(String::new, |n| format!("#{n} ")),
            o.series_instance_uid,
            o.description,
            o.orientation,
            o.n_files,
            o.reason
        );
    }
    println!("load time:   {:.2} s", r.load_seconds);
}
