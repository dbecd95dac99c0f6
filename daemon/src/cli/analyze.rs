//! `vcfd analyze PATH`: load, describe and (later) analyse a CT series.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
use vcfd::dicom_in::load_series;
use vcfd::report::Report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let loaded = load_series(&args.paths)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let report = Report::from_loaded(&loaded, load_seconds);
    print_summary(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
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
