//! The analysis seam: what a worker does with one complete series.
//!
//! Today it loads the series and writes the loader's report; the analysis and the DICOM
//! results (SR, images) plug in here, returning the files to forward.

use crate::{dicom_in, report::Report, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// Loads the series from `files` and writes its results under `out_dir`.
pub fn process_series(files: &[PathBuf], out_dir: &Path) -> Result<SeriesOutcome> {
    let start = Instant::now();
    let loaded = dicom_in::load_series(files)?;
    let report = Report::from_loaded(&loaded, start.elapsed().as_secs_f64());
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let path = out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Write(e.to_string()))?;
    let tmp = out_dir.join(".report.json.part");
    crate::spool::write_durably(&tmp, &path, &[&json])?;
    Ok(SeriesOutcome {
        study_instance_uid: report.study_instance_uid.clone(),
        series_instance_uid: report.series_instance_uid.clone(),
        report: path,
        forward: Vec::new(),
        verdict: format!(
            "loaded {}x{}x{} (analysis not yet wired)",
            report.series.dims[0], report.series.dims[1], report.series.dims[2]
        ),
    })
}
