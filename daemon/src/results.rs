//! Writes everything that goes to PACS for one analysed series: the SR and the image series.
//!
//! Both join the source study (patient and study modules copied) as new series whose UIDs
//! follow from (source series, model version), so re-running replaces earlier results.

use crate::dicom_in::LoadedSeries;
use crate::overlay::{render_series, OverlayImage};
use crate::sr::{
    build_sr, file_meta, put_equipment, put_patient_study, series_description, ResultUids, Stamp,
};
use crate::{Error, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::path::{Path, PathBuf};
use vcfd_model::findings::Findings;
use vcfd_model::reformat::Reformat;

/// Series number of the image series (right after the SR's).
pub const IMAGE_SERIES_NUMBER: i32 = crate::sr::SR_SERIES_NUMBER + 1;

/// What [`write_results`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultFiles {
    /// `out_dir/sr.dcm`
    pub sr: PathBuf,
    /// `out_dir/series/NN.dcm`: the curved reformat first (when given), then the sagittal slices.
    pub images: Vec<PathBuf>,
}

/// Writes `out_dir/sr.dcm` and `out_dir/series/*.dcm` for `findings` on `series`.
/// `reformat` is the curved sagittal reformat the findings were measured on (its image leads
/// the series); `box_serial` identifies this appliance in the SR's device observer.
pub fn write_results(
    series: &LoadedSeries,
    findings: &Findings,
    reformat: Option<&Reformat>,
    box_serial: &str,
    out_dir: &Path,
) -> Result<ResultFiles> {
    let stamp = Stamp::now();
    let series_dir = out_dir.join("series");
    std::fs::create_dir_all(&series_dir).map_err(|e| Error::io(&series_dir, e))?;
    // Stale images of an earlier run (e.g. with a reformat) must not linger beside new ones.
    if let Ok(entries) = std::fs::read_dir(&series_dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "dcm") {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    let sr = build_sr(&series.meta, findings, box_serial, &stamp)?;
    let sr_path = out_dir.join("sr.dcm");
    sr.write_to_file(&sr_path)
        .map_err(|e| Error::Write(format!("{}: {e}", sr_path.display())))?;

    let header = vec![format!(
        "{} {} ({}) - UNVERIFIED, reading support only",
        crate::PRODUCT_NAME,
        crate::VERSION,
        findings.model_version
    )];
    let images = render_series(&series.volume, reformat, findings, &header);
    let uids = ResultUids::new(&series.meta.series_instance_uid, &findings.model_version);
    let mut paths = Vec::with_capacity(images.len());
    for (i, img) in images.iter().enumerate() {
        let obj = sc_image(series, img, i, box_serial, &uids, &stamp)?;
        let path = series_dir.join(format!("{:02}.dcm", i + 1));
        obj.write_to_file(&path)
            .map_err(|e| Error::Write(format!("{}: {e}", path.display())))?;
        paths.push(path);
    }
    Ok(ResultFiles {
        sr: sr_path,
        images: paths,
    })
}

/// One RGB Secondary Capture image of the result series.
fn sc_image(
    series: &LoadedSeries,
    img: &OverlayImage,
    index: usize,
    box_serial: &str,
    uids: &ResultUids,
    stamp: &Stamp,
) -> Result<dicom_object::FileDicomObject<InMemDicomObject>> {
    let (w, h) = (img.image.width, img.image.height);
    if w > usize::from(u16::MAX) || h > usize::from(u16::MAX) {
        return Err(Error::Write(format!(
            "image {w}x{h} exceeds DICOM's 65535 limit"
        )));
    }
    let meta = &series.meta;
    let mut o = InMemDicomObject::new_empty();
    let mut texts = Vec::new();
    put_patient_study(&mut o, &meta.patient, &meta.study_instance_uid, &mut texts);
    if texts.iter().any(|t| !t.is_ascii()) {
        o.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            "ISO_IR 192",
        ));
    }
    let mut s = |tag, vr, v: &str| {
        o.put(DataElement::new(tag, vr, v));
    };
    // SOP Common
    s(
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    );
    s(tags::SOP_INSTANCE_UID, VR::UI, &uids.image_instance(index));
    s(tags::INSTANCE_CREATION_DATE, VR::DA, &stamp.date);
    s(tags::INSTANCE_CREATION_TIME, VR::TM, &stamp.time);
    s(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
    // General Series
    s(tags::MODALITY, VR::CS, "OT");
    s(tags::SERIES_INSTANCE_UID, VR::UI, &uids.image_series);
    s(
        tags::SERIES_NUMBER,
        VR::IS,
        &IMAGE_SERIES_NUMBER.to_string(),
    );
    s(tags::SERIES_DATE, VR::DA, &stamp.date);
    s(tags::SERIES_TIME, VR::TM, &stamp.time);
    s(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &series_description("spine reformat"),
    );
    // Unpaired body part: Laterality (2C) is then not required.
    s(tags::BODY_PART_EXAMINED, VR::CS, "SPINE");
    // SC Equipment
    s(tags::CONVERSION_TYPE, VR::CS, "WSD");
    s(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        crate::PRODUCT_NAME,
    );
    s(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
        VR::LO,
        crate::PRODUCT_NAME,
    );
    s(
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        crate::VERSION,
    );
    // General Image
    s(tags::INSTANCE_NUMBER, VR::IS, &(index + 1).to_string());
    s(tags::CONTENT_DATE, VR::DA, &stamp.date);
    s(tags::CONTENT_TIME, VR::TM, &stamp.time);
    s(tags::DERIVATION_DESCRIPTION, VR::ST, &img.derivation);
    s(tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    s(tags::IMAGE_COMMENTS, VR::LT, &img.title);
    s(tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &stamp.date);
    s(tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &stamp.time);
    s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put_equipment(&mut o, box_serial);
    o.put(DataElement::new(
        tags::PATIENT_ORIENTATION,
        VR::CS,
        PrimitiveValue::Strs(
            [img.orientation.0.clone(), img.orientation.1.clone()]
                .into_iter()
                .collect(),
        ),
    ));
    o.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(
            ["DERIVED", "SECONDARY"]
                .map(String::from)
                .into_iter()
                .collect(),
        ),
    ));
    // Image Pixel
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 3u16),
        (tags::ROWS, h as u16),
        (tags::COLUMNS, w as u16),
        (tags::BITS_ALLOCATED, 8),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
        (tags::PIXEL_REPRESENTATION, 0),
        (tags::PLANAR_CONFIGURATION, 0),
    ] {
        o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    let mut bytes = img.image.data.clone();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(bytes.into()),
    ));
    o.with_meta(file_meta())
        .map_err(|e| Error::Write(format!("image file meta: {e}")))
}
