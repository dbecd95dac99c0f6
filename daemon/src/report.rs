//! The JSON analysis report (`vcfd analyze --json`). Later stages add their sections here;
//! field names are shared with the phantom's `truth.json` so results and truth compare directly.

use crate::dicom_in::{LoadedSeries, SeriesSummary};
use serde::{Deserialize, Serialize};
use vcfd_model::findings::Findings;

/// Everything `vcfd analyze` found, in one serialisable document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub vcfd_version: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// True when the files lacked these UIDs and the loader made them up from their content.
    pub uids_synthesised: bool,
    pub series: SeriesReport,
    /// Series found in the input but not analysed, with the reason.
    pub other_series: Vec<SeriesSummary>,
    /// Wall time to read, decode and stack the series, seconds.
    pub load_seconds: f64,
    /// The analysis (vertebrae, grades, density, quality, timings), flattened so its fields
    /// sit at the top level of report.json; absent when only the loader ran.
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub findings: Option<Findings>,
}

/// The analysed series: grid geometry (as in `vcfd_model::Geometry`) and acquisition facts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesReport {
    /// Voxel counts along columns, rows, slices.
    pub dims: [usize; 3],
    /// Voxel spacing along columns, rows, slices in mm.
    pub spacing_mm: [f64; 3],
    /// Centre of voxel (0, 0, 0), LPS mm.
    pub origin_mm: [f64; 3],
    /// Unit vectors of the column, row and slice axes in LPS.
    pub axes: [[f64; 3]; 3],
    pub slice_thickness_mm: Option<f64>,
    pub slice_spacing_mm: f64,
    pub gantry_tilt_deg: f64,
    pub tilt_corrected: bool,
    pub hu_min: i16,
    pub hu_max: i16,
    pub transfer_syntax: String,
    pub transfer_syntax_name: String,
    pub n_files: usize,
    pub modality: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub series_number: Option<i32>,
    pub series_description: String,
    pub convolution_kernel: String,
    pub reconstruction_center_mm: Option<[f64; 3]>,
    /// Why this series was chosen.
    pub choice: String,
    /// Loader and stacking observations.
    pub notes: Vec<String>,
}

impl Report {
    /// The report for a freshly loaded series (no analysis results yet).
    pub fn from_loaded(s: &LoadedSeries, load_seconds: f64) -> Self {
        let g = &s.volume.geometry;
        let (hu_min, hu_max) = s.volume.hu_range();
        let m = &s.meta;
        let mut notes = s.notes.clone();
        notes.extend(s.layout.notes.iter().cloned());
        Report {
            vcfd_version: crate::VERSION.into(),
            study_instance_uid: m.study_instance_uid.clone(),
            series_instance_uid: m.series_instance_uid.clone(),
            frame_of_reference_uid: m.frame_of_reference_uid.clone(),
            uids_synthesised: m.uids_synthesised,
            series: SeriesReport {
                dims: g.dims,
                spacing_mm: g.spacing,
                origin_mm: g.origin,
                axes: g.axes,
                slice_thickness_mm: s.layout.slice_thickness_mm,
                slice_spacing_mm: s.layout.slice_spacing_mm,
                gantry_tilt_deg: s.layout.gantry_tilt_deg,
                tilt_corrected: s.layout.tilt_corrected,
                hu_min,
                hu_max,
                transfer_syntax: m.transfer_syntax_uid.clone(),
                transfer_syntax_name: m.transfer_syntax_name.clone(),
                n_files: m.n_files,
                modality: m.modality.clone(),
                manufacturer: m.manufacturer.clone(),
                manufacturer_model_name: m.manufacturer_model_name.clone(),
                series_number: m.series_number,
                series_description: m.series_description.clone(),
                convolution_kernel: m.convolution_kernel.clone(),
                reconstruction_center_mm: m
                    .reconstruction_center_mm
                    .or(m.data_collection_center_mm),
                choice: s.choice.clone(),
                notes,
            },
            other_series: s.other_series.clone(),
            load_seconds,
            findings: None,
        }
    }

    /// The report with the analysis' findings attached.
    pub fn with_findings(mut self, f: Findings) -> Self {
        self.findings = Some(f);
        self
    }
}
