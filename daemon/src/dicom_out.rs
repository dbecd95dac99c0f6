//! Writing CT Image Storage series (the phantom) as valid DICOM.
//!
//! The files must pass `dciodvfy` and load in any PACS or viewer, because the phantom stands in
//! for a real scanner in every end-to-end test. Stored pixel values equal HU (slope 1,
//! intercept 0, signed 16 bit), so a reader that ignores rescale still sees the right numbers.

use crate::{Error, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use vcfd_model::Volume;

/// Patient, study, series and equipment attributes of a written CT series.
#[derive(Clone, PartialEq)]
pub struct CtSeriesMeta {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_sex: String,
    pub patient_birth_date: String,
    /// YYYYMMDD
    pub study_date: String,
    /// HHMMSS
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub series_number: i32,
    pub series_description: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub station_name: String,
    pub device_serial_number: String,
    pub software_versions: String,
    pub slice_thickness_mm: f64,
    pub kvp: f64,
    pub convolution_kernel: String,
    /// Reconstruction Target Center (Patient) (0018,9318) / Data Collection Center (Patient) (0018,9313), LPS mm; ring-artifact checks use them.
    pub reconstruction_center_mm: Option<[f64; 3]>,
}

/// Patient identity stays out of logs even when someone prints the struct.
impl std::fmt::Debug for CtSeriesMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtSeriesMeta")
            .field("study_instance_uid", &self.study_instance_uid)
            .field("series_instance_uid", &self.series_instance_uid)
            .field("frame_of_reference_uid", &self.frame_of_reference_uid)
            .field("patient", &"<redacted>")
            .field("series_number", &self.series_number)
            .field("series_description", &self.series_description)
            .field("manufacturer", &self.manufacturer)
            .field("slice_thickness_mm", &self.slice_thickness_mm)
            .field("kvp", &self.kvp)
            .field("convolution_kernel", &self.convolution_kernel)
            .field("reconstruction_center_mm", &self.reconstruction_center_mm)
            .finish_non_exhaustive()
    }
}

impl CtSeriesMeta {
    /// Defaults for a phantom study: every UID and date follows from the seed, so the same seed
    /// writes byte-identical files.
    pub fn synthetic(seed: u64) -> Self {
        let key = |purpose: &str| uid_from_key(&format!("vcfd phantom seed {seed} {purpose}"));
        // Spread study dates over 2024 so a PACS shows phantoms as distinct studies.
        let day_of_year = (seed % 365) as u32;
        let (month, day) = month_day_2024(day_of_year);
        Self {
            study_instance_uid: key("study"),
            series_instance_uid: key("series"),
            frame_of_reference_uid: key("frame of reference"),
            patient_name: format!("PHANTOM^SEED{seed}"),
            patient_id: format!("PHANTOM-{seed}"),
            patient_sex: "O".into(),
            patient_birth_date: "19600101".into(),
            study_date: format!("2024{month:02}{day:02}"),
            study_time: "093000".into(),
            accession_number: format!("PH{}", seed % 10_000_000_000_000),
            study_id: format!("{}", seed % 100_000),
            study_description: "CT CHEST PHANTOM".into(),
            series_number: 2,
            series_description: "AXIAL SYNTHETIC".into(),
            manufacturer: "vcfd phantom".into(),
            manufacturer_model_name: crate::PRODUCT_NAME.into(),
            station_name: "VCFDPHANTOM".into(),
            device_serial_number: format!("SEED{seed}"),
            software_versions: crate::VERSION.into(),
            slice_thickness_mm: 1.0,
            kvp: 120.0,
            convolution_kernel: "STANDARD".into(),
            reconstruction_center_mm: None,
        }
    }
}

/// Writes one CT Image Storage file per slice (Explicit VR Little Endian, signed 16-bit, RescaleIntercept/Slope so stored = HU), named NNNN.dcm, returns the paths.
pub fn write_ct_series(volume: &Volume, meta: &CtSeriesMeta, dir: &Path) -> Result<Vec<PathBuf>> {
    let g = &volume.geometry;
    g.validate()?;
    if volume.hu.len() != g.len() {
        return Err(Error::Write(format!(
            "volume has {} voxels, geometry {:?} needs {}",
            volume.hu.len(),
            g.dims,
            g.len()
        )));
    }
    let [row_dir, col_dir, slice_dir] = g.axes;
    // DICOM can only express an orthonormal in-plane pair; a skewed plane would be written wrong.
    if dot(row_dir, col_dir).abs() > 1e-6 {
        return Err(Error::Write(format!(
            "in-plane axes {row_dir:?} and {col_dir:?} are not orthogonal"
        )));
    }
    let normal = cross(row_dir, col_dir);
    if dot(normal, slice_dir) <= 0.0 {
        return Err(Error::Write(
            "slices must advance along the normal of the image plane (row x column)".into(),
        ));
    }
    let (cols, rows) = (g.dims[0], g.dims[1]);
    if rows > u16::MAX as usize || cols > u16::MAX as usize {
        return Err(Error::Write(format!(
            "slice {cols}x{rows} exceeds DICOM's 65535 limit"
        )));
    }
    for (name, v) in [
        ("study_date", &meta.study_date),
        ("patient_birth_date", &meta.patient_birth_date),
    ] {
        if !v.is_empty() && !is_date(v) {
            return Err(Error::Write(format!("{name} must be YYYYMMDD, got {v:?}")));
        }
    }
    if !meta.study_time.is_empty() && !is_time(&meta.study_time) {
        return Err(Error::Write(format!(
            "study_time must be HHMMSS, got {:?}",
            meta.study_time
        )));
    }
    for (name, uid) in [
        ("study_instance_uid", &meta.study_instance_uid),
        ("series_instance_uid", &meta.series_instance_uid),
        ("frame_of_reference_uid", &meta.frame_of_reference_uid),
    ] {
        if !is_valid_uid(uid) {
            return Err(Error::Write(format!("{name} {uid:?} is not a valid UID")));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    // Gantry tilt: angle of the slice direction away from the plane normal, signed towards the
    // column direction (posterior for a supine axial), as scanners report it.
    let tilt_deg = dot(slice_dir, col_dir)
        .atan2(dot(slice_dir, normal) / norm(normal))
        .to_degrees();
    let plane = rows * cols;
    let width = (g.dims[2]).to_string().len().max(4);
    let common = common_attributes(volume, meta, tilt_deg);

    (0..g.dims[2])
        .into_par_iter()
        .map(|k| {
            let path = dir.join(format!("{:0width$}.dcm", k + 1));
            let mut obj = common.clone();
            let sop_uid = uid_from_key(&format!("{}/instance/{}", meta.series_instance_uid, k));
            let ipp = g.voxel_to_patient([0.0, 0.0, k as f64]);
            let location = dot(ipp, normal) / norm(normal);
            obj.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                sop_uid.as_str(),
            ));
            obj.put(DataElement::new(
                tags::INSTANCE_NUMBER,
                VR::IS,
                (k + 1).to_string(),
            ));
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                ds_multi(&ipp),
            ));
            obj.put(DataElement::new(tags::SLICE_LOCATION, VR::DS, ds(location)));
            let slice = &volume.hu[k * plane..(k + 1) * plane];
            let (lo, hi) = slice
                .iter()
                .fold((i16::MAX, i16::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            obj.put(DataElement::new(
                tags::SMALLEST_IMAGE_PIXEL_VALUE,
                VR::SS,
                PrimitiveValue::from(lo),
            ));
            obj.put(DataElement::new(
                tags::LARGEST_IMAGE_PIXEL_VALUE,
                VR::SS,
                PrimitiveValue::from(hi),
            ));
            let mut bytes = Vec::with_capacity(plane * 2);
            for v in slice {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U8(bytes.into()),
            ));
            let file = obj
                .with_meta(
                    FileMetaTableBuilder::new()
                        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                        .implementation_class_uid(implementation_class_uid())
                        .implementation_version_name(implementation_version_name()),
                )
                .map_err(|e| Error::Write(format!("file meta for slice {}: {e}", k + 1)))?;
            file.write_to_file(&path)
                .map_err(|e| Error::Write(format!("{}: {e}", path.display())))?;
            Ok(path)
        })
        .collect()
}

/// Everything that is the same in every slice of the series.
fn common_attributes(volume: &Volume, meta: &CtSeriesMeta, tilt_deg: f64) -> InMemDicomObject {
    let g = &volume.geometry;
    let mut o = InMemDicomObject::new_empty();
    let mut s = |tag: Tag, vr: VR, v: &str| {
        o.put(DataElement::new(tag, vr, v));
    };
    let all_text = [
        &meta.patient_name,
        &meta.patient_id,
        &meta.study_description,
        &meta.series_description,
        &meta.manufacturer,
        &meta.manufacturer_model_name,
        &meta.station_name,
        &meta.device_serial_number,
        &meta.software_versions,
        &meta.convolution_kernel,
        &meta.study_id,
        &meta.accession_number,
    ];
    // UTF-8 is declared only when needed: the default repertoire keeps older PACS happy.
    if all_text.iter().any(|t| !t.is_ascii()) {
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    // SOP Common
    s(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    s(tags::INSTANCE_CREATION_DATE, VR::DA, &meta.study_date);
    s(tags::INSTANCE_CREATION_TIME, VR::TM, &meta.study_time);
    // Patient
    s(tags::PATIENT_NAME, VR::PN, &meta.patient_name);
    s(tags::PATIENT_ID, VR::LO, &meta.patient_id);
    s(tags::PATIENT_BIRTH_DATE, VR::DA, &meta.patient_birth_date);
    s(tags::PATIENT_SEX, VR::CS, &meta.patient_sex);
    // General Study
    s(tags::STUDY_INSTANCE_UID, VR::UI, &meta.study_instance_uid);
    s(tags::STUDY_DATE, VR::DA, &meta.study_date);
    s(tags::STUDY_TIME, VR::TM, &meta.study_time);
    s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    s(tags::STUDY_ID, VR::SH, &meta.study_id);
    s(tags::ACCESSION_NUMBER, VR::SH, &meta.accession_number);
    if !meta.study_description.is_empty() {
        s(tags::STUDY_DESCRIPTION, VR::LO, &meta.study_description);
    }
    // General Series
    s(tags::MODALITY, VR::CS, "CT");
    s(tags::SERIES_INSTANCE_UID, VR::UI, &meta.series_instance_uid);
    s(tags::SERIES_NUMBER, VR::IS, &meta.series_number.to_string());
    s(tags::SERIES_DATE, VR::DA, &meta.study_date);
    s(tags::SERIES_TIME, VR::TM, &meta.study_time);
    if !meta.series_description.is_empty() {
        s(tags::SERIES_DESCRIPTION, VR::LO, &meta.series_description);
    }
    s(tags::PATIENT_POSITION, VR::CS, "HFS");
    // Unpaired body part: dciodvfy then does not ask for Laterality (2C).
    s(tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
    // Frame of Reference
    s(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &meta.frame_of_reference_uid,
    );
    s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    // General Equipment
    s(tags::MANUFACTURER, VR::LO, &meta.manufacturer);
    for (tag, vr, v) in [
        (tags::STATION_NAME, VR::SH, &meta.station_name),
        (
            tags::MANUFACTURER_MODEL_NAME,
            VR::LO,
            &meta.manufacturer_model_name,
        ),
        (
            tags::DEVICE_SERIAL_NUMBER,
            VR::LO,
            &meta.device_serial_number,
        ),
        (tags::SOFTWARE_VERSIONS, VR::LO, &meta.software_versions),
    ] {
        if !v.is_empty() {
            s(tag, vr, v);
        }
    }
    // General Image / General Acquisition: one acquisition, content time = study time.
    s(tags::CONTENT_DATE, VR::DA, &meta.study_date);
    s(tags::CONTENT_TIME, VR::TM, &meta.study_time);
    s(tags::ACQUISITION_NUMBER, VR::IS, "1");
    s(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    // CT Image
    o.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(
            ["ORIGINAL", "PRIMARY", "AXIAL"]
                .map(String::from)
                .into_iter()
                .collect(),
        ),
    ));
    let mut s = |tag: Tag, vr: VR, v: &str| {
        o.put(DataElement::new(tag, vr, v));
    };
    s(tags::KVP, VR::DS, &ds(meta.kvp));
    s(tags::SLICE_THICKNESS, VR::DS, &ds(meta.slice_thickness_mm));
    s(tags::RESCALE_INTERCEPT, VR::DS, "0");
    s(tags::RESCALE_SLOPE, VR::DS, "1");
    s(tags::RESCALE_TYPE, VR::LO, "HU");
    s(tags::GANTRY_DETECTOR_TILT, VR::DS, &ds(tilt_deg));
    if !meta.convolution_kernel.is_empty() {
        s(tags::CONVOLUTION_KERNEL, VR::SH, &meta.convolution_kernel);
    }
    let fov = (g.dims[0] as f64 * g.spacing[0]).max(g.dims[1] as f64 * g.spacing[1]);
    s(tags::RECONSTRUCTION_DIAMETER, VR::DS, &ds(fov));
    if let Some(c) = meta.reconstruction_center_mm {
        for tag in [
            tags::DATA_COLLECTION_CENTER_PATIENT,
            tags::RECONSTRUCTION_TARGET_CENTER_PATIENT,
        ] {
            o.put(DataElement::new(tag, VR::FD, PrimitiveValue::from(c)));
        }
    }
    // Image Plane
    let [r, c, _] = g.axes;
    o.put(DataElement::new(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        ds_multi(&[r[0], r[1], r[2], c[0], c[1], c[2]]),
    ));
    // DICOM order: row spacing (between rows, i.e. along j) first.
    o.put(DataElement::new(
        tags::PIXEL_SPACING,
        VR::DS,
        ds_multi(&[g.spacing[1], g.spacing[0]]),
    ));
    // Image Pixel
    let us = |v: u16| PrimitiveValue::from(v);
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, g.dims[1] as u16),
        (tags::COLUMNS, g.dims[0] as u16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 1),
    ] {
        o.put(DataElement::new(tag, VR::US, us(v)));
    }
    o.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    // VOI LUT: open in a soft-tissue window, offer the bone window second.
    o.put(DataElement::new(
        tags::WINDOW_CENTER,
        VR::DS,
        ds_multi(&[40.0, 400.0]),
    ));
    o.put(DataElement::new(
        tags::WINDOW_WIDTH,
        VR::DS,
        ds_multi(&[400.0, 1800.0]),
    ));
    o.put(DataElement::new(
        tags::WINDOW_CENTER_WIDTH_EXPLANATION,
        VR::LO,
        PrimitiveValue::Strs(
            ["SOFT TISSUE", "BONE"]
                .map(String::from)
                .into_iter()
                .collect(),
        ),
    ));
    o
}

fn implementation_class_uid() -> String {
    uid_from_key("vcfd implementation class")
}

fn implementation_version_name() -> String {
    // SH, at most 16 characters.
    let mut v = format!("VCFD_{}", crate::VERSION);
    v.truncate(16);
    v
}

/// Deterministic DICOM UID under the 2.25 root from a string key (e.g. a hash of seed+purpose), <= 64 chars, valid syntax.
///
/// The key is hashed to 128 bits (FNV-1a 128 followed by a bijective mixer, so similar keys
/// give unrelated numbers), then the UUID version 8 / RFC 4122 variant bits are set, as the
/// 2.25 root requires a UUID. Not cryptographic: keys are ours, not an attacker's.
pub fn uid_from_key(key: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in key.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h = mix128(h);
    // Version 8 (custom) in bits 76..80, variant 0b10 in bits 62..64.
    h = (h & !(0xF << 76)) | (0x8 << 76);
    h = (h & !(0x3 << 62)) | (0x2 << 62);
    format!("2.25.{h}")
}

/// Avalanche mixer: xorshift-multiply rounds on both halves, invertible.
fn mix128(mut h: u128) -> u128 {
    for _ in 0..2 {
        h ^= h >> 67;
        h = h.wrapping_mul(0x9E3779B97F4A7C15_F39CC0605CEDC835);
        h ^= h >> 59;
        h = h.wrapping_mul(0xD6E8FEB86659FD93_2545F4914F6CDD1D);
        h ^= h >> 71;
    }
    h
}

/// UID syntax of PS3.5 9.1: digits and dots, no empty or zero-led components, <= 64 chars.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Decimal String value (at most 16 characters), as precise as fits.
fn ds(x: f64) -> String {
    let x = if x == 0.0 { 0.0 } else { x }; // no "-0"
    let s = format!("{x}");
    if s.len() <= 16 {
        return s;
    }
    let int_len = format!("{:.0}", x).len();
    if int_len < 15 {
        let mut s = format!("{:.*}", 15 - int_len, x);
        while s.contains('.') && (s.ends_with('0') || s.ends_with('.')) {
            s.pop();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    // Huge or tiny magnitudes: scientific notation with as many digits as fit.
    (0..=10)
        .rev()
        .map(|p| format!("{:.*e}", p, x))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| "0".into())
}

fn ds_multi(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|&v| ds(v)).collect())
}

fn is_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_time(s: &str) -> bool {
    (s.len() == 6 || s.len() == 4 || s.len() == 2) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Month and day of a zero-based day of year in the leap year 2024.
fn month_day_2024(day_of_year: u32) -> (u32, u32) {
    const DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = day_of_year % 366;
    for (m, &n) in DAYS.iter().enumerate() {
        if d < n {
            return (m as u32 + 1, d + 1);
        }
        d -= n;
    }
    (12, 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_deterministic_and_distinct() {
        let a = uid_from_key("seed 7 study");
        assert_eq!(a, uid_from_key("seed 7 study"));
        assert_ne!(a, uid_from_key("seed 7 series"));
        assert_ne!(a, uid_from_key("seed 8 study"));
        for k in [
            "",
            "x",
            "a much longer key with spaces / and slashes 123456789",
        ] {
            let u = uid_from_key(k);
            assert!(is_valid_uid(&u), "{u}");
            assert!(u.starts_with("2.25."));
        }
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid("1..3"));
        assert!(!is_valid_uid(""));
    }

    #[test]
    fn decimal_strings_fit_and_round_trip_common_values() {
        for x in [
            0.9765625,
            -804.5,
            0.0,
            -0.0,
            120.0,
            1.0 / 3.0,
            -1234.56789012345,
            1e-20,
            3e20,
        ] {
            let s = ds(x);
            assert!(s.len() <= 16, "{x} -> {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - x).abs() <= 1e-12 * x.abs().max(1.0), "{x} -> {s}");
        }
        assert_eq!(ds(0.9765625), "0.9765625");
        assert_eq!(ds(-0.0), "0");
    }

    #[test]
    fn synthetic_meta_is_deterministic() {
        let a = CtSeriesMeta::synthetic(7);
        assert_eq!(a, CtSeriesMeta::synthetic(7));
        assert_ne!(
            a.study_instance_uid,
            CtSeriesMeta::synthetic(8).study_instance_uid
        );
        assert_eq!(a.patient_name, "PHANTOM^SEED7");
        assert!(is_date(&a.study_date));
        assert!(!format!("{a:?}").contains("PHANTOM^SEED7"));
    }
}
