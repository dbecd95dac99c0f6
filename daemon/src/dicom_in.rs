//! Reading CT series from DICOM files: grouping, choosing the series, decoding pixels.
//!
//! Two passes keep memory and time proportional to the series analysed, not to the folder:
//! headers of every file are read first (without pixel data) to group and choose; only the
//! chosen series is then read fully and decoded, in parallel. Stacking and all geometric checks
//! are [`vcfd_model::series::assemble`]'s job.
//!
//! Grouping: by SeriesInstanceUID. Anonymisers sometimes empty the UIDs; such files are grouped
//! by FrameOfReferenceUID, orientation, image size, pixel spacing, kernel, slice thickness and
//! series number/description (so two reconstructions of one acquisition stay apart), and get
//! UIDs synthesised from their content (same files, same UIDs), flagged in
//! [`SeriesMeta::uids_synthesised`].

use crate::dicom_out::uid_from_key;
use crate::error::error_chain;
use crate::{Error, Result};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use vcfd_model::series::{assemble, SeriesLayout, SliceInput, MAX_AXIAL_OBLIQUITY_DEG};
use vcfd_model::Volume;

type DicomFile = FileDicomObject<InMemDicomObject>;

/// A CT series ready for analysis, with where it came from and why it was chosen.
pub struct LoadedSeries {
    pub volume: Volume,
    pub layout: SeriesLayout,
    pub meta: SeriesMeta,
    /// Why this series was analysed, in words for the report.
    pub choice: String,
    /// The other series found in the input, with why they were not chosen.
    pub other_series: Vec<SeriesSummary>,
    /// What the loader noticed (skipped files, synthesised UIDs, pixel quirks).
    pub notes: Vec<String>,
}

/// Shows the grid, not the millions of voxels.
impl std::fmt::Debug for LoadedSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedSeries")
            .field("geometry", &self.volume.geometry)
            .field("layout", &self.layout)
            .field("meta", &self.meta)
            .field("choice", &self.choice)
            .field("other_series", &self.other_series)
            .field("notes", &self.notes)
            .finish()
    }
}

/// Identity and acquisition attributes of the analysed series.
#[derive(Clone, Debug)]
pub struct SeriesMeta {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// True when any of the three UIDs above was missing in the files and made up here.
    pub uids_synthesised: bool,
    pub sop_class_uid: String,
    /// One per volume slice, in slice order (k = 0 first).
    pub instances: Vec<InstanceRef>,
    pub modality: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub station_name: String,
    pub device_serial_number: String,
    pub series_number: Option<i32>,
    pub series_description: String,
    pub slice_thickness_mm: Option<f64>,
    /// ConvolutionKernel, multiple values joined with `\`.
    pub convolution_kernel: String,
    pub patient_position: String,
    pub transfer_syntax_uid: String,
    /// Human-readable name of the transfer syntax.
    pub transfer_syntax_name: String,
    pub reconstruction_center_mm: Option<[f64; 3]>,
    pub data_collection_center_mm: Option<[f64; 3]>,
    /// Files that make up the series (including dropped duplicates).
    pub n_files: usize,
    /// Patient and study attributes for writing results into the same study; never logged.
    pub patient: PatientStudy,
}

/// Patient/General Study attributes copied from the images so derived objects join the study.
#[derive(Clone, Default, PartialEq)]
pub struct PatientStudy {
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub referring_physician_name: String,
    pub study_description: String,
}

/// Patient data must not reach logs, even through `{:?}`.
impl std::fmt::Debug for PatientStudy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientStudy(<redacted>)")
    }
}

/// One source image of the volume.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceRef {
    pub sop_instance_uid: String,
    /// True when the file carried no SOPInstanceUID and this one was made up.
    pub synthesised: bool,
    pub path: PathBuf,
}

/// A series found in the input, described from its headers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub uid_synthesised: bool,
    pub series_number: Option<i32>,
    pub modality: String,
    pub description: String,
    pub n_files: usize,
    pub rows: usize,
    pub cols: usize,
    /// "axial", "coronal", "sagittal", "oblique", "localizer" or "unknown".
    pub orientation: String,
    pub slice_thickness_mm: Option<f64>,
    pub kernel: String,
    /// Could this series be analysed at all?
    pub eligible: bool,
    /// Why it was not chosen (or is not eligible).
    pub reason: String,
}

/// Loads the CT series to analyse from files and folders (searched recursively).
pub fn load_series(paths: &[PathBuf]) -> Result<LoadedSeries> {
    let mut notes = Vec::new();
    let files = collect_files(paths)?;
    if files.is_empty() {
        return Err(Error::NoSeries(format!(
            "no files found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let scanned: Vec<Scan> = files.par_iter().map(|p| scan_header(p)).collect();
    let mut headers = Vec::new();
    let mut skipped: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for s in scanned {
        match s {
            Scan::Image(h) => headers.push(*h),
            Scan::Skip(kind, path, detail) => skipped.entry(kind).or_default().push(match detail {
                Some(d) => format!("{} ({d})", path.display()),
                None => path.display().to_string(),
            }),
        }
    }
    for (kind, list) in &skipped {
        let shown: Vec<&str> = list.iter().take(3).map(String::as_str).collect();
        notes.push(format!(
            "skipped {} {kind}: {}{}",
            list.len(),
            shown.join(", "),
            if list.len() > 3 { ", ..." } else { "" }
        ));
    }
    if headers.is_empty() {
        return Err(Error::NoSeries(format!(
            "none of the {} files is a DICOM image ({})",
            files.len(),
            notes.join("; ")
        )));
    }

    let groups = group(headers);
    let mut summaries: Vec<SeriesSummary> = groups.iter().map(summarise).collect();
    let ranked = rank(&groups, &mut summaries);
    if ranked.is_empty() {
        let found = summaries
            .iter()
            .map(|s| format!("{} ({})", describe(s), s.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::NoSeries(format!("found only: {found}")));
    }

    // Try the best series first; fall back (saying so) only when it cannot be assembled.
    let mut refused: Vec<String> = Vec::new();
    let mut first_err = None;
    for (pos, &gi) in ranked.iter().enumerate() {
        match load_group(&groups[gi]) {
            Ok((volume, layout, meta, load_notes)) => {
                let mut choice = choice_text(gi, &ranked, &summaries);
                if !refused.is_empty() {
                    choice.push_str(&format!(
                        "; preferred series could not be assembled: {}",
                        refused.join("; ")
                    ));
                }
                notes.extend(load_notes);
                if meta.uids_synthesised {
                    notes.push(
                        "Study/Series/FrameOfReference UID missing in the files: synthesised \
                         from their content (stable for the same files)"
                            .into(),
                    );
                }
                let other_series = summaries
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != gi)
                    .map(|(i, s)| {
                        let mut s = s.clone();
                        if ranked[..pos].contains(&i) {
                            s.reason = "could not be assembled (see choice)".into();
                        }
                        s
                    })
                    .collect();
                return Ok(LoadedSeries {
                    volume,
                    layout,
                    meta,
                    choice,
                    other_series,
                    notes,
                });
            }
            Err(e) => {
                refused.push(format!("{}: {e}", describe(&summaries[gi])));
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| Error::NoSeries("no series could be loaded".into())))
}

/// Everything read from one file's header.
#[derive(Clone, Debug)]
struct Header {
    path: PathBuf,
    transfer_syntax: String,
    sop_class_uid: String,
    sop_instance_uid: String,
    /// From the file meta group, when the data set has none.
    media_sop_instance_uid: String,
    study_uid: String,
    series_uid: String,
    frame_uid: String,
    modality: String,
    series_number: Option<i32>,
    series_description: String,
    image_type: String,
    kernel: String,
    rows: usize,
    cols: usize,
    samples_per_pixel: u16,
    photometric: String,
    frames: u32,
    position: Option<[f64; 3]>,
    orientation: Option<[f64; 6]>,
    pixel_spacing: Option<[f64; 2]>,
    slice_thickness: Option<f64>,
    instance_number: Option<i32>,
    manufacturer: String,
    model: String,
    station: String,
    serial: String,
    patient_position: String,
    recon_center: Option<[f64; 3]>,
    collection_center: Option<[f64; 3]>,
    patient: PatientStudy,
}

enum Scan {
    Image(Box<Header>),
    Skip(&'static str, PathBuf, Option<String>),
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen_dirs = HashSet::new();
    for p in paths {
        let md = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if md.is_dir() {
            walk(p, &mut out, &mut seen_dirs)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    // Symlinked folders could loop; each real folder is read once.
    let real = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let md = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if md.is_dir() {
            walk(&path, out, seen)?;
        } else if md.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn has_dicm_magic(path: &Path) -> bool {
    let mut buf = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|_| &buf[128..] == b"DICM")
        .unwrap_or(false)
}

fn scan_header(path: &Path) -> Scan {
    let obj = match OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    {
        Ok(o) => o,
        Err(e) => {
            return if has_dicm_magic(path) {
                Scan::Skip("unreadable DICOM file(s)", path.into(), Some(e.to_string()))
            } else {
                Scan::Skip("non-DICOM file(s)", path.into(), None)
            }
        }
    };
    let meta = obj.meta();
    let media_class = trim(meta.media_storage_sop_class_uid());
    if media_class == uids::MEDIA_STORAGE_DIRECTORY_STORAGE {
        return Scan::Skip("DICOMDIR file(s)", path.into(), None);
    }
    let rows = uint(&obj, tags::ROWS);
    let cols = uint(&obj, tags::COLUMNS);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        let modality = text(&obj, tags::MODALITY);
        return Scan::Skip(
            "non-image DICOM file(s)",
            path.into(),
            (!modality.is_empty()).then_some(modality),
        );
    };
    let sop_class = match text(&obj, tags::SOP_CLASS_UID) {
        s if s.is_empty() => media_class.to_string(),
        s => s,
    };
    let header = Header {
        path: path.into(),
        transfer_syntax: trim(meta.transfer_syntax()).to_string(),
        sop_class_uid: sop_class,
        sop_instance_uid: text(&obj, tags::SOP_INSTANCE_UID),
        media_sop_instance_uid: trim(meta.media_storage_sop_instance_uid()).to_string(),
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        frame_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        modality: text(&obj, tags::MODALITY).to_ascii_uppercase(),
        series_number: int(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        image_type: text(&obj, tags::IMAGE_TYPE).to_ascii_uppercase(),
        kernel: text(&obj, tags::CONVOLUTION_KERNEL),
        rows: rows as usize,
        cols: cols as usize,
        samples_per_pixel: uint(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        photometric: text(&obj, tags::PHOTOMETRIC_INTERPRETATION).to_ascii_uppercase(),
        frames: int(&obj, tags::NUMBER_OF_FRAMES).map_or(1, |n| n.max(1) as u32),
        position: floats::<3>(&obj, tags::IMAGE_POSITION_PATIENT),
        orientation: floats::<6>(&obj, tags::IMAGE_ORIENTATION_PATIENT),
        pixel_spacing: floats::<2>(&obj, tags::PIXEL_SPACING),
        slice_thickness: float(&obj, tags::SLICE_THICKNESS),
        instance_number: int(&obj, tags::INSTANCE_NUMBER),
        manufacturer: text(&obj, tags::MANUFACTURER),
        model: text(&obj, tags::MANUFACTURER_MODEL_NAME),
        station: text(&obj, tags::STATION_NAME),
        serial: text(&obj, tags::DEVICE_SERIAL_NUMBER),
        patient_position: text(&obj, tags::PATIENT_POSITION),
        recon_center: floats::<3>(&obj, tags::RECONSTRUCTION_TARGET_CENTER_PATIENT),
        collection_center: floats::<3>(&obj, tags::DATA_COLLECTION_CENTER_PATIENT),
        patient: PatientStudy {
            patient_name: text(&obj, tags::PATIENT_NAME),
            patient_id: text(&obj, tags::PATIENT_ID),
            patient_birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(&obj, tags::PATIENT_SEX),
            study_date: text(&obj, tags::STUDY_DATE),
            study_time: text(&obj, tags::STUDY_TIME),
            accession_number: text(&obj, tags::ACCESSION_NUMBER),
            study_id: text(&obj, tags::STUDY_ID),
            referring_physician_name: text(&obj, tags::REFERRING_PHYSICIAN_NAME),
            study_description: text(&obj, tags::STUDY_DESCRIPTION),
        },
    };
    Scan::Image(Box::new(header))
}

fn trim(s: &str) -> &str {
    s.trim_end_matches(['\0', ' ']).trim_start()
}

fn text(obj: &DicomFile, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| trim(&s).to_string())
        .unwrap_or_default()
}

fn float(obj: &DicomFile, tag: dicom_core::Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_float64().ok())
        .filter(|v| v.is_finite())
}

fn floats<const N: usize>(obj: &DicomFile, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let arr: [f64; N] = v.get(..N)?.try_into().ok()?;
    arr.iter().all(|x| x.is_finite()).then_some(arr)
}

fn int(obj: &DicomFile, tag: dicom_core::Tag) -> Option<i32> {
    obj.get(tag).and_then(|e| e.to_int::<i32>().ok())
}

fn uint(obj: &DicomFile, tag: dicom_core::Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

/// Instances of one series, with its (possibly synthesised) UIDs.
struct Group {
    headers: Vec<Header>,
    series_uid: String,
    study_uid: String,
    frame_uid: String,
    synthesised: bool,
}

/// Groups by SeriesInstanceUID, or by geometry and reconstruction when the UID is empty.
fn group(headers: Vec<Header>) -> Vec<Group> {
    let mut by_key: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    for h in headers {
        // Localizers sometimes share the axial series' UID; they never belong in the volume.
        let localizer = if is_localizer(&h) { "|localizer" } else { "" };
        let key = if h.series_uid.is_empty() {
            format!("~content|{}{localizer}", content_key(&h))
        } else {
            format!("uid|{}{localizer}", h.series_uid)
        };
        by_key.entry(key).or_default().push(h);
    }
    by_key
        .into_iter()
        .map(|(key, mut headers)| {
            headers.sort_by(|a, b| a.path.cmp(&b.path));
            let h0 = &headers[0];
            let mut synthesised = false;
            let series_uid = if h0.series_uid.is_empty() {
                synthesised = true;
                // Content: grouping key plus what identifies each instance (file-meta UID or
                // position), so the same files always give the same UID.
                let mut ids: Vec<String> = headers
                    .iter()
                    .map(|h| {
                        if h.media_sop_instance_uid.is_empty() {
                            format!("{:?}", h.position)
                        } else {
                            h.media_sop_instance_uid.clone()
                        }
                    })
                    .collect();
                ids.sort();
                uid_from_key(&format!("vcfd synthesised series|{key}|{}", ids.join(",")))
            } else {
                // A localizer split keeps the UID; its summary says "localizer".
                h0.series_uid.clone()
            };
            let frame_uid = match headers.iter().find(|h| !h.frame_uid.is_empty()) {
                Some(h) => h.frame_uid.clone(),
                None => {
                    synthesised = true;
                    uid_from_key(&format!("vcfd synthesised frame|{series_uid}"))
                }
            };
            let study_uid = match headers.iter().find(|h| !h.study_uid.is_empty()) {
                Some(h) => h.study_uid.clone(),
                None => {
                    synthesised = true;
                    // No patient identifiers in the key: a UID must not encode them.
                    uid_from_key(&format!(
                        "vcfd synthesised study|{frame_uid}|{}|{}|{}",
                        h0.patient.study_date, h0.patient.study_time, h0.serial
                    ))
                }
            };
            Group {
                headers,
                series_uid,
                study_uid,
                frame_uid,
                synthesised,
            }
        })
        .collect()
}

fn content_key(h: &Header) -> String {
    let o = h
        .orientation
        .map(|o| o.map(|v| (v * 1000.0).round() as i64));
    let s = h
        .pixel_spacing
        .map(|s| s.map(|v| (v * 10000.0).round() as i64));
    format!(
        "{}|{}|{:?}|{}x{}|{:?}|{}|{:?}|{:?}|{}|{}",
        h.study_uid,
        h.frame_uid,
        o,
        h.cols,
        h.rows,
        s,
        h.kernel,
        h.slice_thickness.map(|t| (t * 1000.0).round() as i64),
        h.series_number,
        h.series_description,
        h.modality
    )
}

fn is_localizer(h: &Header) -> bool {
    h.image_type.split('\\').any(|v| v.trim() == "LOCALIZER")
}

fn orientation_name(o: Option<[f64; 6]>) -> &'static str {
    let Some(o) = o else { return "unknown" };
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if len < 0.5 {
        return "unknown";
    }
    let a = n.map(|v| v.abs() / len);
    if a[2] >= MAX_AXIAL_OBLIQUITY_DEG.to_radians().cos() {
        "axial"
    } else if a[1] > 0.97 {
        "coronal"
    } else if a[0] > 0.97 {
        "sagittal"
    } else {
        "oblique"
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn summarise(g: &Group) -> SeriesSummary {
    let h0 = &g.headers[0];
    let n = g.headers.len();
    let localizer = g.headers.iter().all(is_localizer);
    let orientation = if localizer {
        "localizer"
    } else {
        orientation_name(h0.orientation)
    };
    let mut why_not = Vec::new();
    if h0.modality != "CT" {
        why_not.push(format!(
            "modality {}",
            if h0.modality.is_empty() {
                "missing"
            } else {
                &h0.modality
            }
        ));
    }
    if localizer {
        why_not.push("localizer (scout) images".into());
    } else if orientation != "axial" {
        why_not.push(format!("{orientation} slices, not axial"));
    }
    if g.headers.iter().any(|h| h.frames > 1) || h0.sop_class_uid == uids::ENHANCED_CT_IMAGE_STORAGE
    {
        why_not.push("multi-frame (Enhanced CT) images are not supported".into());
    }
    if g.headers.iter().any(|h| {
        h.samples_per_pixel != 1
            || !(h.photometric.is_empty() || h.photometric.starts_with("MONOCHROME"))
    }) {
        why_not.push("colour images".into());
    }
    let missing = g
        .headers
        .iter()
        .filter(|h| h.position.is_none() || h.orientation.is_none() || h.pixel_spacing.is_none())
        .count();
    if missing > 0 {
        why_not.push(format!(
            "{missing} file(s) lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
        ));
    }
    if n < 2 {
        why_not.push("a single image".into());
    }
    SeriesSummary {
        series_instance_uid: g.series_uid.clone(),
        uid_synthesised: g.synthesised,
        series_number: h0.series_number,
        modality: h0.modality.clone(),
        description: h0.series_description.clone(),
        n_files: n,
        rows: h0.rows,
        cols: h0.cols,
        orientation: orientation.into(),
        slice_thickness_mm: median(g.headers.iter().filter_map(|h| h.slice_thickness).collect()),
        kernel: h0.kernel.clone(),
        eligible: why_not.is_empty(),
        reason: why_not.join(", "),
    }
}

/// Sharp (bone/lung) kernels exaggerate edges and noise; soft/body ones keep HU as calibrated.
/// 0 = soft/body, 1 = unknown, 2 = sharp.
fn kernel_rank(kernel: &str) -> u8 {
    let k = kernel
        .split('\\')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    if k.is_empty() {
        return 1;
    }
    const SHARP: [&str; 8] = [
        "LUNG", "BONE", "SHARP", "EDGE", "DETAIL", "HIGH", "YC", "YD",
    ];
    const SOFT: [&str; 5] = ["STANDARD", "SOFT", "BODY", "SMOOTH", "ABDOMEN"];
    if SHARP.iter().any(|s| k.contains(s)) {
        return 2;
    }
    if SOFT.iter().any(|s| k.contains(s)) {
        return 0;
    }
    // Siemens (B30f, Br38f, I70f, Bl57), Canon (FC08, FC52): the number is the sharpness.
    let digits: String = k
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    match digits.parse::<u32>() {
        Ok(n) if k.starts_with("FC") => {
            if n < 30 {
                0
            } else {
                2
            }
        }
        Ok(n) if digits.len() == 2 => {
            if n < 50 {
                0
            } else {
                2
            }
        }
        _ => 1,
    }
}

/// Eligible groups, best first: most slices (within 5 % counts as equal), then thinnest
/// slices, then soft kernel, then lowest series number. Fills each summary's reason.
fn rank(groups: &[Group], summaries: &mut [SeriesSummary]) -> Vec<usize> {
    let eligible: Vec<usize> = (0..groups.len())
        .filter(|&i| summaries[i].eligible)
        .collect();
    let Some(max_n) = eligible.iter().map(|&i| summaries[i].n_files).max() else {
        return Vec::new();
    };
    let tied = |n: usize| n as f64 >= 0.95 * max_n as f64;
    let mut order = eligible.clone();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (&summaries[a], &summaries[b]);
        tied(sb.n_files)
            .cmp(&tied(sa.n_files))
            .then_with(|| {
                let t = |s: &SeriesSummary| s.slice_thickness_mm.unwrap_or(f64::MAX);
                t(sa).total_cmp(&t(sb))
            })
            .then_with(|| kernel_rank(&sa.kernel).cmp(&kernel_rank(&sb.kernel)))
            .then_with(|| sb.n_files.cmp(&sa.n_files))
            .then_with(|| {
                sa.series_number
                    .unwrap_or(i32::MAX)
                    .cmp(&sb.series_number.unwrap_or(i32::MAX))
            })
            .then_with(|| a.cmp(&b))
    });
    let best = order[0];
    for &i in &order[1..] {
        let (s, b) = (&summaries[i], &summaries[best]);
        summaries[i].reason = if !tied(s.n_files) {
            format!("fewer slices ({} vs {})", s.n_files, b.n_files)
        } else if s.slice_thickness_mm != b.slice_thickness_mm {
            format!(
                "thicker slices ({} vs {} mm)",
                fmt_mm(s.slice_thickness_mm),
                fmt_mm(b.slice_thickness_mm)
            )
        } else if kernel_rank(&s.kernel) != kernel_rank(&b.kernel) {
            format!("sharper kernel ({} vs {})", s.kernel, b.kernel)
        } else {
            "equivalent series; the lower series number or earlier one was taken".into()
        };
    }
    summaries[best].reason = "chosen".into();
    order
}

fn fmt_mm(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |t| format!("{t}"))
}

fn describe(s: &SeriesSummary) -> String {
    let num = s
        .series_number
        .map_or_else(String::new, |n| format!("#{n} "));
    let desc = if s.description.is_empty() {
        String::new()
    } else {
        format!("'{}' ", s.description)
    };
    format!(
        "series {num}{desc}({} {}, {} files, {}x{}, {} mm{})",
        if s.modality.is_empty() {
            "?"
        } else {
            &s.modality
        },
        s.orientation,
        s.n_files,
        s.cols,
        s.rows,
        fmt_mm(s.slice_thickness_mm),
        if s.kernel.is_empty() {
            String::new()
        } else {
            format!(", kernel {}", s.kernel)
        }
    )
}

fn choice_text(chosen: usize, ranked: &[usize], summaries: &[SeriesSummary]) -> String {
    let s = &summaries[chosen];
    let n_ineligible = summaries.len() - ranked.len();
    let mut text = describe(s);
    if ranked.len() == 1 {
        text.push_str(": the only axial CT series");
    } else {
        text.push_str(&format!(
            ": best of {} axial CT series (most slices, then thinnest, then soft/body kernel)",
            ranked.len()
        ));
    }
    if n_ineligible > 0 {
        text.push_str(&format!(
            "; {n_ineligible} other series not analysable (see other_series)"
        ));
    }
    text
}

/// Reads, decodes and stacks one series.
fn load_group(g: &Group) -> Result<(Volume, SeriesLayout, SeriesMeta, Vec<String>)> {
    let decoded: Vec<Result<(SliceInput, Vec<String>)>> =
        g.headers.par_iter().map(decode_slice).collect();
    let mut slices = Vec::with_capacity(decoded.len());
    let mut pixel_notes: BTreeMap<String, usize> = BTreeMap::new();
    for d in decoded {
        let (s, slice_notes) = d?;
        for n in slice_notes {
            *pixel_notes.entry(n).or_default() += 1;
        }
        slices.push(s);
    }
    let (volume, layout) = assemble(slices)?;
    let mut notes: Vec<String> = pixel_notes
        .into_iter()
        .map(|(n, c)| format!("{n} ({c} file(s))"))
        .collect();

    let h0 = &g.headers[0];
    let mut ts: Vec<&str> = g
        .headers
        .iter()
        .map(|h| h.transfer_syntax.as_str())
        .collect();
    ts.sort();
    ts.dedup();
    if ts.len() > 1 {
        notes.push(format!(
            "files use {} transfer syntaxes: {}",
            ts.len(),
            ts.join(", ")
        ));
    }
    let mut sop_synth = 0;
    let instances: Vec<InstanceRef> = layout
        .input_index
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let h = &g.headers[i];
            let (uid, synthesised) = if !h.sop_instance_uid.is_empty() {
                (h.sop_instance_uid.clone(), false)
            } else if !h.media_sop_instance_uid.is_empty() {
                (h.media_sop_instance_uid.clone(), false)
            } else {
                sop_synth += 1;
                (
                    uid_from_key(&format!("vcfd synthesised instance|{}|{k}", g.series_uid)),
                    true,
                )
            };
            InstanceRef {
                sop_instance_uid: uid,
                synthesised,
                path: h.path.clone(),
            }
        })
        .collect();
    let from_meta = layout
        .input_index
        .iter()
        .filter(|&&i| {
            g.headers[i].sop_instance_uid.is_empty()
                && !g.headers[i].media_sop_instance_uid.is_empty()
        })
        .count();
    if from_meta > 0 {
        notes.push(format!(
            "{from_meta} file(s) have an empty SOPInstanceUID; the file meta's \
             MediaStorageSOPInstanceUID is used instead"
        ));
    }
    if sop_synth > 0 {
        notes.push(format!("{sop_synth} SOPInstanceUID(s) synthesised"));
    }
    if h0.series_number.is_none() {
        notes.push("SeriesNumber missing".into());
    }
    let mid = &g.headers[layout.input_index[layout.input_index.len() / 2]];
    let ts_uid = h0.transfer_syntax.clone();
    let ts_name = TransferSyntaxRegistry.get(&ts_uid).map_or_else(
        || "unknown transfer syntax".to_string(),
        |t| t.name().to_string(),
    );
    let meta = SeriesMeta {
        study_instance_uid: g.study_uid.clone(),
        series_instance_uid: g.series_uid.clone(),
        frame_of_reference_uid: g.frame_uid.clone(),
        uids_synthesised: g.synthesised,
        sop_class_uid: if h0.sop_class_uid.is_empty() {
            uids::CT_IMAGE_STORAGE.into()
        } else {
            h0.sop_class_uid.clone()
        },
        instances,
        modality: h0.modality.clone(),
        manufacturer: h0.manufacturer.clone(),
        manufacturer_model_name: h0.model.clone(),
        station_name: h0.station.clone(),
        device_serial_number: h0.serial.clone(),
        series_number: h0.series_number,
        series_description: h0.series_description.clone(),
        slice_thickness_mm: layout.slice_thickness_mm,
        convolution_kernel: h0.kernel.clone(),
        patient_position: h0.patient_position.clone(),
        transfer_syntax_uid: ts_uid,
        transfer_syntax_name: ts_name,
        // Some scanners move the centre's z with each slice; the middle slice is representative.
        reconstruction_center_mm: mid.recon_center,
        data_collection_center_mm: mid.collection_center,
        n_files: g.headers.len(),
        patient: h0.patient.clone(),
    };
    Ok((volume, layout, meta, notes))
}

/// Reads one file fully and converts its stored values to HU; the note flags pixel quirks.
fn decode_slice(h: &Header) -> Result<(SliceInput, Vec<String>)> {
    let err = |reason: String| Error::Dicom {
        path: h.path.clone(),
        reason,
    };
    let obj = OpenFileOptions::new()
        .open_file(&h.path)
        .map_err(|e| err(error_chain(&e)))?;
    let px = obj.decode_pixel_data().map_err(|e| {
        err(format!(
            "cannot decode pixel data ({}): {}",
            TransferSyntaxRegistry
                .get(&h.transfer_syntax)
                .map_or(h.transfer_syntax.as_str(), |t| t.name()),
            error_chain(&e)
        ))
    })?;
    let (rows, cols) = (px.rows() as usize, px.columns() as usize);
    if (rows, cols) != (h.rows, h.cols) {
        return Err(err(format!(
            "decoded {cols}x{rows} pixels, header says {}x{}",
            h.cols, h.rows
        )));
    }
    if px.samples_per_pixel() != 1 {
        return Err(err("colour image; CT must be greyscale".into()));
    }
    let bits_allocated = px.bits_allocated();
    let bits_stored = px.bits_stored();
    let high_bit = px.high_bit();
    if bits_stored == 0 || bits_stored > bits_allocated || high_bit + 1 < bits_stored {
        return Err(err(format!(
            "inconsistent BitsAllocated {bits_allocated} / BitsStored {bits_stored} / HighBit {high_bit}"
        )));
    }
    let signed = matches!(
        px.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let mut notes = Vec::new();
    let slope = float(&obj, tags::RESCALE_SLOPE);
    let intercept = float(&obj, tags::RESCALE_INTERCEPT);
    if slope.is_none() || intercept.is_none() {
        // Required in CT; without them the stored values are taken as HU, and the report says so.
        notes.push("RescaleSlope/RescaleIntercept missing: stored values taken as HU".to_string());
    }
    let (slope, intercept) = (slope.unwrap_or(1.0), intercept.unwrap_or(0.0));
    if slope == 0.0 {
        return Err(err("RescaleSlope is 0".into()));
    }
    let n = rows * cols;
    let data = px.data();
    let bytes = usize::from(bits_allocated).div_ceil(8);
    if bytes != 1 && bytes != 2 {
        return Err(err(format!(
            "BitsAllocated {bits_allocated} is not supported for CT"
        )));
    }
    if data.len() < n * bytes {
        return Err(err(format!(
            "pixel data holds {} bytes, {cols}x{rows} at {bits_allocated} bits needs {}",
            data.len(),
            n * bytes
        )));
    }
    let shift = u32::from(high_bit + 1 - bits_stored);
    let mask: u32 = if bits_stored >= 32 {
        u32::MAX
    } else {
        (1u32 << bits_stored) - 1
    };
    let sign_bit = 1u32 << (bits_stored - 1);
    let stored = |raw: u32| -> i32 {
        let v = (raw >> shift) & mask;
        if signed && v & sign_bit != 0 {
            v as i32 - (1i32 << bits_stored)
        } else {
            v as i32
        }
    };
    let raw_at = |p: usize| -> u32 {
        if bytes == 1 {
            u32::from(data[p])
        } else {
            u32::from(u16::from_le_bytes([data[2 * p], data[2 * p + 1]]))
        }
    };
    let mut clipped = 0usize;
    let integer_rescale = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 1e6;
    let icpt = intercept as i32;
    let hu: Vec<i16> = (0..n)
        .map(|p| {
            let v = stored(raw_at(p));
            let hu = if integer_rescale {
                f64::from(v + icpt)
            } else {
                (f64::from(v) * slope + intercept).round()
            };
            if hu < f64::from(i16::MIN) || hu > f64::from(i16::MAX) {
                clipped += 1;
            }
            hu.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect();
    if clipped > 0 {
        notes.push("some HU outside -32768..32767 were clipped".to_string());
    }
    let (Some(position), Some(orientation), Some(pixel_spacing)) =
        (h.position, h.orientation, h.pixel_spacing)
    else {
        return Err(err(
            "ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing".into(),
        ));
    };
    Ok((
        SliceInput {
            position,
            orientation,
            pixel_spacing,
            rows,
            cols,
            hu,
            instance_number: h.instance_number,
            slice_thickness: h.slice_thickness,
            source: h.path.display().to_string(),
        },
        notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ranking() {
        for soft in [
            "B30f",
            "Br38f\\3",
            "STANDARD",
            "SOFT",
            "FC08",
            "I31f",
            "BODY FILTER",
        ] {
            assert_eq!(kernel_rank(soft), 0, "{soft}");
        }
        for sharp in ["B70f", "Bl57d\\3", "BONE", "LUNG", "FC52", "BONEPLUS", "YC"] {
            assert_eq!(kernel_rank(sharp), 2, "{sharp}");
        }
        assert_eq!(kernel_rank(""), 1);
        assert_eq!(kernel_rank("XYZ"), 1);
    }

    #[test]
    fn orientation_names() {
        assert_eq!(
            orientation_name(Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])),
            "axial"
        );
        assert_eq!(
            orientation_name(Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0])),
            "coronal"
        );
        assert_eq!(
            orientation_name(Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])),
            "sagittal"
        );
        assert_eq!(orientation_name(None), "unknown");
        let t = 20f64.to_radians();
        assert_eq!(
            orientation_name(Some([1.0, 0.0, 0.0, 0.0, t.cos(), t.sin()])),
            "axial"
        );
    }

    #[test]
    fn patient_data_is_redacted_in_debug() {
        let p = PatientStudy {
            patient_name: "DOE^JANE".into(),
            patient_id: "12345".into(),
            ..Default::default()
        };
        let s = format!("{p:?}");
        assert!(!s.contains("DOE") && !s.contains("12345"));
    }
}
