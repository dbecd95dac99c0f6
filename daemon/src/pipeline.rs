//! What happens to one complete series, in the daemon and in `vcfd analyze` alike: load,
//! analyse, write report.json, the SR and the image series. One code path, so what a user
//! runs by hand is exactly what the appliance does.

use crate::dicom_in::{self, LoadedSeries};
use crate::report::Report;
use crate::results::{write_results, ResultFiles};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use vcfd_model::analysis::{analyze, Analysis, AnalysisOptions, ScanInfo};
use vcfd_model::keypoints::{KeypointModel, Precision, DEFAULT_PRECISION};

/// What processing one series produced.
#[derive(Debug, Clone)]
pub struct SeriesOutcome {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// The JSON report (always written).
    pub report: PathBuf,
    /// DICOM result files (SR, images) to forward to every PACS.
    pub forward: Vec<PathBuf>,
    /// One line for the status API.
    pub verdict: String,
}

/// The shipped network of each precision, loaded once per process (its optimised plans are
/// cached inside, so only the first study pays for compilation).
pub fn shipped_model(precision: Precision) -> Result<&'static KeypointModel> {
    static F32: OnceLock<std::result::Result<KeypointModel, String>> = OnceLock::new();
    static INT8: OnceLock<std::result::Result<KeypointModel, String>> = OnceLock::new();
    let cell = match precision {
        Precision::F32 => &F32,
        Precision::Int8 => &INT8,
    };
    cell.get_or_init(|| KeypointModel::shipped(precision).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Model(vcfd_model::Error::Model(e.clone())))
}

/// The acquisition facts the analysis uses, from the loaded series' header and layout.
pub fn scan_info(s: &LoadedSeries) -> ScanInfo {
    ScanInfo {
        slice_thickness_mm: s.layout.slice_thickness_mm,
        slice_spacing_mm: s.layout.slice_spacing_mm,
        gantry_tilt_deg: s.layout.gantry_tilt_deg,
        recon_center_mm: s
            .meta
            .reconstruction_center_mm
            .or(s.meta.data_collection_center_mm),
    }
}

/// Analyses a loaded series with the shipped network.
pub fn analyze_series(s: &LoadedSeries, precision: Precision) -> Result<Analysis> {
    let model = shipped_model(precision)?;
    Ok(analyze(
        &s.volume,
        &scan_info(s),
        model,
        &AnalysisOptions::default(),
    )?)
}

/// Everything written for one analysed series.
#[derive(Debug, Clone)]
pub struct Written {
    pub report: Report,
    pub report_path: PathBuf,
    pub results: ResultFiles,
}

/// Writes `out_dir/report.json`, `out_dir/sr.dcm` and `out_dir/series/*.dcm`.
pub fn write_outputs(
    s: &LoadedSeries,
    analysis: &Analysis,
    load_seconds: f64,
    box_serial: &str,
    out_dir: &Path,
) -> Result<Written> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let t = Instant::now();
    let results = write_results(
        s,
        &analysis.findings,
        analysis.reformat.as_ref(),
        box_serial,
        out_dir,
    )?;
    let mut findings = analysis.findings.clone();
    findings
        .timing_ms
        .insert("results".into(), t.elapsed().as_secs_f64() * 1000.0);
    findings
        .timing_ms
        .insert("load".into(), load_seconds * 1000.0);
    let report = Report::from_loaded(s, load_seconds).with_findings(findings);
    let path = out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Write(e.to_string()))?;
    let tmp = out_dir.join(".report.json.part");
    crate::spool::write_durably(&tmp, &path, &[&json])?;
    Ok(Written {
        report,
        report_path: path,
        results,
    })
}

/// One line for the status page: the worst finding or that none was found, and reliability.
pub fn verdict(a: &Analysis) -> String {
    let f = &a.findings;
    let main = match f.worst().filter(|v| v.genant_grade >= 2) {
        Some(v) => format!(
            "fracture: {} Genant {} ({:.0} %, {})",
            v.level.as_deref().unwrap_or("level unknown"),
            v.genant_grade,
            v.deformity * 100.0,
            v.morphology.as_str()
        ),
        None => "no fracture >= grade 2".to_string(),
    };
    if f.quality.reliable {
        main
    } else {
        let kinds: Vec<&str> = f.quality.flags.iter().map(|q| q.kind.as_str()).collect();
        format!("{main}; UNRELIABLE ({})", kinds.join(", "))
    }
}

/// Loads the series from `files`, analyses it and writes its results under `out_dir`.
pub fn process_series(
    files: &[PathBuf],
    out_dir: &Path,
    box_serial: &str,
) -> Result<SeriesOutcome> {
    let start = Instant::now();
    let loaded = dicom_in::load_series(files)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let analysis = analyze_series(&loaded, DEFAULT_PRECISION)?;
    let w = write_outputs(&loaded, &analysis, load_seconds, box_serial, out_dir)?;
    let mut forward = vec![w.results.sr.clone()];
    forward.extend(w.results.images.iter().cloned());
    Ok(SeriesOutcome {
        study_instance_uid: w.report.study_instance_uid.clone(),
        series_instance_uid: w.report.series_instance_uid.clone(),
        report: w.report_path,
        forward,
        verdict: verdict(&analysis),
    })
}
