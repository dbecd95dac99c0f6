//! The DICOM Structured Report: a TID 1500 Measurement Report in a Comprehensive SR.
//!
//! What reaches PACS is what the product is, so the SR carries everything a reader needs
//! without our JSON: who measured (device observer: product, version, box serial), on which
//! images (image library and the evidence sequence list every source instance), one
//! measurement group per vertebra (finding site coded in SNOMED CT, heights, deformity, Genant
//! grade and morphology, trabecular HU) and the human-readable parts (service name, method,
//! conclusion, reliability, short manual).
//!
//! Codes: standard codes only where DICOM PS3.16 defines them (DCM, SCT, UCUM, UMLS). Heights,
//! deformity, Genant grade and morphology have no standard codes, so they use the private
//! coding scheme [`PRIVATE_SCHEME`] ("99VCFD", PS3.16 8.2 style "99" prefix), declared in the
//! Coding Scheme Identification Sequence and documented in docs/SR.md.
//!
//! Vertebra codes (SCT, the meanings of DICOM's anatomic master list, as used for the
//! TotalSegmentator DICOM-SEG labels): T1 64864005, T2 53733008, T3 1626008, T4 73071006,
//! T5 56401006, T6 45296009, T7 62487009, T8 11068009, T9 82687006, T10 7610001,
//! T11 12989004, T12 23215003, L1 66794005, L2 14293000, L3 36470004, L4 11994002,
//! L5 49668003.
//!
//! UIDs follow from (source series UID, model version) only: a re-run of the same model on
//! the same series writes the same SOP Instance UID and replaces the earlier SR in PACS
//! instead of adding a second one.

use crate::dicom_in::{PatientStudy, SeriesMeta};
use crate::dicom_out::uid_from_key;
use crate::{Error, Result};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use vcfd_model::findings::{Findings, VertebraFinding};
use vcfd_model::morphometry::Morphology;

/// Designator of the private coding scheme for concepts DICOM has no code for.
pub const PRIVATE_SCHEME: &str = "99VCFD";
/// Version of [`PRIVATE_SCHEME`]; bump when a code's meaning changes.
pub const PRIVATE_SCHEME_VERSION: &str = "1";
/// Series number of the SR (fixed, so PACS sort our results after the scanner's series).
pub const SR_SERIES_NUMBER: i32 = 9901;

/// A coded concept (CodeValue, CodingSchemeDesignator, CodeMeaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

const fn code(value: &'static str, scheme: &'static str, meaning: &'static str) -> Code {
    Code {
        value,
        scheme,
        meaning,
    }
}

/// Codes used in the SR. Standard ones are DICOM PS3.16 (DCM), SNOMED CT (SCT), UCUM, UMLS;
/// `P_*` are ours under [`PRIVATE_SCHEME`].
pub mod codes {
    use super::{code, Code, PRIVATE_SCHEME as P};

    pub const IMAGING_MEASUREMENT_REPORT: Code =
        code("126000", "DCM", "Imaging Measurement Report");
    pub const LANGUAGE: Code = code("121049", "DCM", "Language of Content Item and Descendants");
    pub const ENGLISH_US: Code = code("en-US", "RFC5646", "English (United States)");
    pub const OBSERVER_TYPE: Code = code("121005", "DCM", "Observer Type");
    pub const DEVICE: Code = code("121007", "DCM", "Device");
    pub const DEVICE_OBSERVER_UID: Code = code("121012", "DCM", "Device Observer UID");
    pub const DEVICE_OBSERVER_NAME: Code = code("121013", "DCM", "Device Observer Name");
    pub const DEVICE_OBSERVER_MANUFACTURER: Code =
        code("121014", "DCM", "Device Observer Manufacturer");
    pub const DEVICE_OBSERVER_MODEL_NAME: Code =
        code("121015", "DCM", "Device Observer Model Name");
    pub const DEVICE_OBSERVER_SERIAL_NUMBER: Code =
        code("121016", "DCM", "Device Observer Serial Number");
    pub const PROCEDURE_REPORTED: Code = code("121058", "DCM", "Procedure reported");
    pub const CT: Code = code("77477000", "SCT", "Computerized tomography");
    pub const IMAGE_LIBRARY: Code = code("111028", "DCM", "Image Library");
    pub const IMAGE_LIBRARY_GROUP: Code = code("126200", "DCM", "Image Library Group");
    pub const IMAGING_MEASUREMENTS: Code = code("126010", "DCM", "Imaging Measurements");
    pub const MEASUREMENT_GROUP: Code = code("125007", "DCM", "Measurement Group");
    pub const TRACKING_IDENTIFIER: Code = code("112039", "DCM", "Tracking Identifier");
    pub const TRACKING_UID: Code = code("112040", "DCM", "Tracking Unique Identifier");
    pub const FINDING_SITE: Code = code("363698007", "SCT", "Finding Site");
    pub const ALGORITHM_NAME: Code = code("111001", "DCM", "Algorithm Name");
    pub const ALGORITHM_VERSION: Code = code("111003", "DCM", "Algorithm Version");
    pub const ATTENUATION_COEFFICIENT: Code = code("112031", "DCM", "Attenuation Coefficient");
    pub const DERIVATION: Code = code("121401", "DCM", "Derivation");
    pub const MEAN: Code = code("373098007", "SCT", "Mean");
    pub const QUALITATIVE_EVALUATIONS: Code = code("C0034375", "UMLS", "Qualitative Evaluations");
    pub const CONCLUSION: Code = code("121077", "DCM", "Conclusion");

    pub const UCUM_MM: Code = code("mm", "UCUM", "millimeter");
    pub const UCUM_PERCENT: Code = code("%", "UCUM", "percent");
    pub const UCUM_HU: Code = code("[hnsf'U]", "UCUM", "Hounsfield unit");

    pub const P_ANTERIOR_HEIGHT: Code = code("VCFD0001", P, "Anterior vertebral body height");
    pub const P_MIDDLE_HEIGHT: Code = code("VCFD0002", P, "Middle vertebral body height");
    pub const P_POSTERIOR_HEIGHT: Code = code("VCFD0003", P, "Posterior vertebral body height");
    pub const P_DEFORMITY: Code = code("VCFD0004", P, "Vertebral body height loss");
    pub const P_GENANT_GRADE: Code = code("VCFD0005", P, "Genant semiquantitative grade");
    pub const P_MORPHOLOGY: Code = code("VCFD0006", P, "Vertebral deformity morphology");
    pub const P_SERVICE_NAME: Code = code("VCFD0007", P, "Service name");
    pub const P_METHOD: Code = code("VCFD0008", P, "Method description");
    pub const P_USER_MANUAL: Code = code("VCFD0009", P, "User manual");
    pub const P_RELIABILITY: Code = code("VCFD0010", P, "Reliability of the result");
    pub const P_BONE_DENSITY: Code = code("VCFD0011", P, "Opportunistic bone density screening");
    pub const P_DETECTION_CONFIDENCE: Code = code("VCFD0012", P, "Detection confidence");

    pub const P_GRADE: [Code; 4] = [
        code("VCFD0100", P, "Genant grade 0 (normal)"),
        code("VCFD0101", P, "Genant grade 1 (mild)"),
        code("VCFD0102", P, "Genant grade 2 (moderate)"),
        code("VCFD0103", P, "Genant grade 3 (severe)"),
    ];
    pub const P_NORMAL: Code = code("VCFD0200", P, "Normal shape");
    pub const P_WEDGE: Code = code("VCFD0201", P, "Wedge deformity");
    pub const P_BICONCAVE: Code = code("VCFD0202", P, "Biconcave deformity");
    pub const P_CRUSH: Code = code("VCFD0203", P, "Crush deformity");

    pub const UCUM_NO_UNITS: Code = code("1", "UCUM", "no units");
}

/// SNOMED CT code of a vertebra, T1..L5 (DICOM anatomic master list meanings).
pub fn vertebra_code(level: &str) -> Option<Code> {
    const TABLE: [(&str, &str); 17] = [
        ("T1", "64864005"),
        ("T2", "53733008"),
        ("T3", "1626008"),
        ("T4", "73071006"),
        ("T5", "56401006"),
        ("T6", "45296009"),
        ("T7", "62487009"),
        ("T8", "11068009"),
        ("T9", "82687006"),
        ("T10", "7610001"),
        ("T11", "12989004"),
        ("T12", "23215003"),
        ("L1", "66794005"),
        ("L2", "14293000"),
        ("L3", "36470004"),
        ("L4", "11994002"),
        ("L5", "49668003"),
    ];
    const MEANINGS: [&str; 17] = [
        "T1 vertebra",
        "T2 vertebra",
        "T3 vertebra",
        "T4 vertebra",
        "T5 vertebra",
        "T6 vertebra",
        "T7 vertebra",
        "T8 vertebra",
        "T9 vertebra",
        "T10 vertebra",
        "T11 vertebra",
        "T12 vertebra",
        "L1 vertebra",
        "L2 vertebra",
        "L3 vertebra",
        "L4 vertebra",
        "L5 vertebra",
    ];
    TABLE
        .iter()
        .position(|(l, _)| *l == level)
        .map(|i| code(TABLE[i].1, "SCT", MEANINGS[i]))
}

fn morphology_code(m: Morphology) -> Code {
    match m {
        Morphology::Normal => codes::P_NORMAL,
        Morphology::Wedge => codes::P_WEDGE,
        Morphology::Biconcave => codes::P_BICONCAVE,
        Morphology::Crush => codes::P_CRUSH,
    }
}

/// Deterministic UIDs of the results of one (source series, model version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultUids {
    pub sr_series: String,
    pub sr_instance: String,
    pub image_series: String,
}

impl ResultUids {
    pub fn new(source_series_uid: &str, model_version: &str) -> Self {
        let key = |what: &str| {
            uid_from_key(&format!(
                "vcfd results {what} of {source_series_uid} by {model_version}"
            ))
        };
        Self {
            sr_series: key("sr series"),
            sr_instance: key("sr instance"),
            image_series: key("image series"),
        }
    }

    /// SOP Instance UID of the `index`-th image of the result image series.
    pub fn image_instance(&self, index: usize) -> String {
        uid_from_key(&format!("{}/image/{index}", self.image_series))
    }
}

/// Date (YYYYMMDD) and time (HHMMSS) the results were made, UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub date: String,
    pub time: String,
}

impl Stamp {
    pub fn now() -> Self {
        let t = time::OffsetDateTime::now_utc();
        Self {
            date: format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()),
            time: format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
        }
    }
}

/// The conclusion sentence: every vertebra of Genant grade >= 2, worst first, or
/// "Target pathology not found"; the unreliability reason is appended when flagged.
pub fn conclusion(findings: &Findings) -> String {
    let mut fx: Vec<&VertebraFinding> = findings
        .vertebrae
        .iter()
        .filter(|v| v.genant_grade >= 2)
        .collect();
    fx.sort_by(|a, b| b.deformity.total_cmp(&a.deformity));
    let mut text = if fx.is_empty() {
        "Target pathology not found".to_string()
    } else {
        fx.iter()
            .map(|v| {
                format!(
                    "Compression deformity of {} vertebral body, {:.0} % (Genant {}, {})",
                    v.level.as_deref().unwrap_or("an unlabelled"),
                    v.deformity * 100.0,
                    v.genant_grade,
                    v.morphology.as_str()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !findings.levels_anchored && !findings.vertebrae.is_empty() {
        text.push_str(
            ". Levels are relative: no anchor vertebra (lowest rib-bearing, or the sacrum) in \
             view, or the rib count and the sacrum disagree",
        );
    }
    if !findings.quality.reliable {
        text.push_str(&format!(
            ". RESULT UNRELIABLE: {}",
            unreliability_reasons(findings)
        ));
    }
    text
}

fn unreliability_reasons(findings: &Findings) -> String {
    use vcfd_model::findings::Severity;
    let reasons: Vec<&str> = findings
        .quality
        .flags
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .map(|f| f.text.as_str())
        .collect();
    if reasons.is_empty() {
        "the scan quality checks failed".into()
    } else {
        reasons.join(" ")
    }
}

const SERVICE_NAME: &str =
    "vcfd - opportunistic detection of vertebral compression fractures on CT";

const METHOD: &str = "The vertebral body column is located in the CT volume and a curved \
sagittal reformat (1 cm slab) is computed along it. For each vertebral body six keypoints \
(upper and lower endplate at the anterior, middle and posterior edge) are found and mapped \
back to patient coordinates, where the anterior (Ha), middle (Hm) and posterior (Hp) heights \
are measured in mm. Deformity follows Genant's semiquantitative method: wedge (Ha vs Hp), \
biconcave (Hm vs Hp) and crush (Hp vs the height expected from neighbouring vertebrae); grade \
0 < 20 %, 1: 20-25 %, 2: 25-40 %, 3: >= 40 % height loss. Levels are counted from the lowest \
rib-bearing vertebra (T12). Trabecular HU is the mean of the cancellous core of T11-L3 \
(opportunistic screening only; CT HU is not DXA).";

const USER_MANUAL: &str = "This report is generated automatically and is UNVERIFIED: it \
supports, and does not replace, the radiologist's reading. Each vertebra has a measurement \
group with its level, heights in mm, height loss in %, Genant grade and shape. The image \
series of the same study shows the curved sagittal reformat and three sagittal slices with \
the height lines burned in (green: grade 0-1, yellow: grade 2, red: grade 3). Check every \
reported deformity on the source images; levels may be off by one when the rib count is \
atypical. Questions: the administrator of the vcfd box named in the device observer.";

/// Builds the SR for `meta`'s series. `stamp` dates the content.
pub fn build_sr(
    meta: &SeriesMeta,
    findings: &Findings,
    box_serial: &str,
    stamp: &Stamp,
) -> Result<FileDicomObject<InMemDicomObject>> {
    if meta.instances.is_empty() {
        return Err(Error::Write(
            "the analysed series lists no source instances to reference".into(),
        ));
    }
    let uids = ResultUids::new(&meta.series_instance_uid, &findings.model_version);
    let mut o = InMemDicomObject::new_empty();
    let mut texts: Vec<String> = vec![box_serial.to_string(), findings.model_version.clone()];
    put_patient_study(&mut o, &meta.patient, &meta.study_instance_uid, &mut texts);
    let s = |o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str| {
        o.put(DataElement::new(tag, vr, v));
    };
    // SOP Common
    s(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::COMPREHENSIVE_SR_STORAGE,
    );
    s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &uids.sr_instance);
    s(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &stamp.date);
    s(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &stamp.time);
    s(&mut o, tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
    o.put(seq(
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![coding_scheme_item()],
    ));
    // SR Document Series
    s(&mut o, tags::MODALITY, VR::CS, "SR");
    s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &uids.sr_series);
    s(
        &mut o,
        tags::SERIES_NUMBER,
        VR::IS,
        &SR_SERIES_NUMBER.to_string(),
    );
    s(&mut o, tags::SERIES_DATE, VR::DA, &stamp.date);
    s(&mut o, tags::SERIES_TIME, VR::TM, &stamp.time);
    s(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &series_description("SR"),
    );
    o.put(seq(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    ));
    // General Equipment (also satisfies Enhanced General Equipment)
    put_equipment(&mut o, box_serial);
    // SR Document General
    s(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    s(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    s(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    s(&mut o, tags::CONTENT_DATE, VR::DA, &stamp.date);
    s(&mut o, tags::CONTENT_TIME, VR::TM, &stamp.time);
    o.put(seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]));
    o.put(seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence_item(meta)],
    ));
    // SR Document Content: the root container of TID 1500.
    s(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    o.put(seq(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item(&codes::IMAGING_MEASUREMENT_REPORT)],
    ));
    s(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut tmpl = InMemDicomObject::new_empty();
    tmpl.put(DataElement::new(tags::MAPPING_RESOURCE, VR::CS, "DCMR"));
    tmpl.put(DataElement::new(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"));
    o.put(seq(tags::CONTENT_TEMPLATE_SEQUENCE, vec![tmpl]));
    o.put(seq(
        tags::CONTENT_SEQUENCE,
        content(meta, findings, box_serial, &uids),
    ));
    if texts
        .iter()
        .chain(findings.vertebrae.iter().filter_map(|v| v.level.as_ref()))
        .any(|t| !t.is_ascii())
        || findings.quality.flags.iter().any(|f| !f.text.is_ascii())
    {
        s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    o.with_meta(file_meta())
        .map_err(|e| Error::Write(format!("SR file meta: {e}")))
}

/// "vcfd 0.1.0 SR": names the product and version, as the seed evaluation asked.
pub fn series_description(kind: &str) -> String {
    format!("{} {} {kind}", crate::PRODUCT_NAME, crate::VERSION)
}

fn content(
    meta: &SeriesMeta,
    findings: &Findings,
    box_serial: &str,
    uids: &ResultUids,
) -> Vec<InMemDicomObject> {
    let mut items = vec![
        code_value("HAS CONCEPT MOD", &codes::LANGUAGE, &codes::ENGLISH_US),
        // TID 1001/1004: the device observer.
        code_value("HAS OBS CONTEXT", &codes::OBSERVER_TYPE, &codes::DEVICE),
        uidref(
            "HAS OBS CONTEXT",
            &codes::DEVICE_OBSERVER_UID,
            &uid_from_key(&format!("vcfd device {box_serial}")),
        ),
        text(
            "HAS OBS CONTEXT",
            &codes::DEVICE_OBSERVER_NAME,
            &format!("{} {}", crate::PRODUCT_NAME, crate::VERSION),
        ),
        text(
            "HAS OBS CONTEXT",
            &codes::DEVICE_OBSERVER_MANUFACTURER,
            crate::PRODUCT_NAME,
        ),
        text(
            "HAS OBS CONTEXT",
            &codes::DEVICE_OBSERVER_MODEL_NAME,
            &format!("{} {}", crate::PRODUCT_NAME, crate::VERSION),
        ),
        text(
            "HAS OBS CONTEXT",
            &codes::DEVICE_OBSERVER_SERIAL_NUMBER,
            nonempty(box_serial),
        ),
        code_value("HAS CONCEPT MOD", &codes::PROCEDURE_REPORTED, &codes::CT),
    ];
    // TID 1600 Image Library: every source image.
    let images = meta
        .instances
        .iter()
        .map(|i| image_item(&meta.sop_class_uid, &i.sop_instance_uid))
        .collect();
    let group = container("CONTAINS", &codes::IMAGE_LIBRARY_GROUP, images);
    items.push(container("CONTAINS", &codes::IMAGE_LIBRARY, vec![group]));
    // Imaging Measurements: one TID 1501 group per vertebra.
    let groups = findings
        .vertebrae
        .iter()
        .enumerate()
        .map(|(i, v)| measurement_group(i, v, findings, meta, uids))
        .collect();
    items.push(container("CONTAINS", &codes::IMAGING_MEASUREMENTS, groups));
    // Qualitative Evaluations: the human-readable parts.
    let mut qual = vec![
        text("CONTAINS", &codes::P_SERVICE_NAME, SERVICE_NAME),
        text("CONTAINS", &codes::P_METHOD, METHOD),
        text("CONTAINS", &codes::CONCLUSION, &conclusion(findings)),
        text("CONTAINS", &codes::P_RELIABILITY, &reliability(findings)),
    ];
    if findings.bmd.verdict != "not_assessed" {
        qual.push(text(
            "CONTAINS",
            &codes::P_BONE_DENSITY,
            &bmd_text(findings),
        ));
    }
    qual.push(text("CONTAINS", &codes::P_USER_MANUAL, USER_MANUAL));
    items.push(container("CONTAINS", &codes::QUALITATIVE_EVALUATIONS, qual));
    items
}

/// The reliability statement: reliable, or why not, with every quality flag listed.
pub fn reliability(findings: &Findings) -> String {
    let mut t = if findings.quality.reliable {
        "Reliable: scan quality checks passed.".to_string()
    } else {
        format!(
            "UNRELIABLE: {} Read the source images without relying on this report.",
            unreliability_reasons(findings)
        )
    };
    for f in &findings.quality.flags {
        t.push_str(&format!(
            " [{} {}] {}",
            format!("{:?}", f.severity).to_lowercase(),
            f.kind,
            f.text
        ));
    }
    t
}

fn bmd_text(findings: &Findings) -> String {
    let b = &findings.bmd;
    let hu = b
        .l1_hu
        .map_or_else(|| "not measured".to_string(), |h| format!("{h:.0} HU"));
    format!(
        "Trabecular attenuation {} ({}): {}. {}",
        b.level_used.as_deref().unwrap_or("L1"),
        hu,
        b.verdict.replace('_', " "),
        b.note
    )
}

fn measurement_group(
    index: usize,
    v: &VertebraFinding,
    findings: &Findings,
    meta: &SeriesMeta,
    uids: &ResultUids,
) -> InMemDicomObject {
    let level = v.level.clone();
    let tracking = match &level {
        Some(l) => format!("vertebra {l}"),
        None => format!("vertebra #{}", index + 1),
    };
    let mut items = vec![
        text("HAS OBS CONTEXT", &codes::TRACKING_IDENTIFIER, &tracking),
        uidref(
            "HAS OBS CONTEXT",
            &codes::TRACKING_UID,
            &uid_from_key(&format!(
                "{}/tracking/{}/{}/{}",
                uids.sr_instance, meta.series_instance_uid, index, tracking
            )),
        ),
    ];
    if let Some(c) = level.as_deref().and_then(vertebra_code) {
        items.push(code_value("HAS CONCEPT MOD", &codes::FINDING_SITE, &c));
    }
    // TID 4019 Algorithm Identification.
    items.push(text(
        "HAS CONCEPT MOD",
        &codes::ALGORITHM_NAME,
        crate::PRODUCT_NAME,
    ));
    items.push(text(
        "HAS CONCEPT MOD",
        &codes::ALGORITHM_VERSION,
        nonempty(&findings.model_version),
    ));
    let h = v.heights_mm;
    for (name, value) in [
        (&codes::P_ANTERIOR_HEIGHT, h.anterior),
        (&codes::P_MIDDLE_HEIGHT, h.middle),
        (&codes::P_POSTERIOR_HEIGHT, h.posterior),
    ] {
        items.push(num("CONTAINS", name, value, &codes::UCUM_MM, vec![]));
    }
    items.push(num(
        "CONTAINS",
        &codes::P_DEFORMITY,
        v.deformity * 100.0,
        &codes::UCUM_PERCENT,
        vec![],
    ));
    if let Some(hu) = v.trabecular_hu {
        items.push(num(
            "CONTAINS",
            &codes::ATTENUATION_COEFFICIENT,
            hu,
            &codes::UCUM_HU,
            vec![code_value(
                "HAS CONCEPT MOD",
                &codes::DERIVATION,
                &codes::MEAN,
            )],
        ));
    }
    items.push(num(
        "CONTAINS",
        &codes::P_DETECTION_CONFIDENCE,
        v.confidence,
        &codes::UCUM_NO_UNITS,
        vec![],
    ));
    let grade = codes::P_GRADE[usize::from(v.genant_grade.min(3))];
    items.push(code_value("CONTAINS", &codes::P_GENANT_GRADE, &grade));
    items.push(code_value(
        "CONTAINS",
        &codes::P_MORPHOLOGY,
        &morphology_code(v.morphology),
    ));
    container("CONTAINS", &codes::MEASUREMENT_GROUP, items)
}

fn nonempty(s: &str) -> &str {
    if s.trim().is_empty() {
        "unknown"
    } else {
        s
    }
}

// ---- content item builders (PS3.3 C.17.3) ----

pub(crate) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code_item(c: &Code) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(tags::CODE_VALUE, VR::SH, c.value));
    o.put(DataElement::new(
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        c.scheme,
    ));
    o.put(DataElement::new(tags::CODE_MEANING, VR::LO, c.meaning));
    o
}

fn item(rel: &str, value_type: &str, name: Option<&Code>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(tags::RELATIONSHIP_TYPE, VR::CS, rel));
    o.put(DataElement::new(tags::VALUE_TYPE, VR::CS, value_type));
    if let Some(n) = name {
        o.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(n)]));
    }
    o
}

fn container(rel: &str, name: &Code, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut o = item(rel, "CONTAINER", Some(name));
    o.put(DataElement::new(
        tags::CONTINUITY_OF_CONTENT,
        VR::CS,
        "SEPARATE",
    ));
    if !children.is_empty() {
        o.put(seq(tags::CONTENT_SEQUENCE, children));
    }
    o
}

fn text(rel: &str, name: &Code, value: &str) -> InMemDicomObject {
    let mut o = item(rel, "TEXT", Some(name));
    o.put(DataElement::new(tags::TEXT_VALUE, VR::UT, value));
    o
}

fn code_value(rel: &str, name: &Code, value: &Code) -> InMemDicomObject {
    let mut o = item(rel, "CODE", Some(name));
    o.put(seq(tags::CONCEPT_CODE_SEQUENCE, vec![code_item(value)]));
    o
}

fn uidref(rel: &str, name: &Code, uid: &str) -> InMemDicomObject {
    let mut o = item(rel, "UIDREF", Some(name));
    o.put(DataElement::new(tags::UID, VR::UI, uid));
    o
}

fn num(
    rel: &str,
    name: &Code,
    value: f64,
    unit: &Code,
    modifiers: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut o = item(rel, "NUM", Some(name));
    let mut mv = InMemDicomObject::new_empty();
    mv.put(DataElement::new(tags::NUMERIC_VALUE, VR::DS, ds(value)));
    mv.put(seq(
        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
        vec![code_item(unit)],
    ));
    o.put(seq(tags::MEASURED_VALUE_SEQUENCE, vec![mv]));
    if !modifiers.is_empty() {
        o.put(seq(tags::CONTENT_SEQUENCE, modifiers));
    }
    o
}

fn image_item(sop_class: &str, sop_instance: &str) -> InMemDicomObject {
    let mut o = item("CONTAINS", "IMAGE", None);
    o.put(seq(
        tags::REFERENCED_SOP_SEQUENCE,
        vec![sop_ref(sop_class, sop_instance)],
    ));
    o
}

fn sop_ref(sop_class: &str, sop_instance: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    r.put(DataElement::new(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        sop_class,
    ));
    r.put(DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        sop_instance,
    ));
    r
}

fn evidence_item(meta: &SeriesMeta) -> InMemDicomObject {
    let refs = meta
        .instances
        .iter()
        .map(|i| sop_ref(&meta.sop_class_uid, &i.sop_instance_uid))
        .collect();
    let mut series = InMemDicomObject::new_empty();
    series.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        meta.series_instance_uid.as_str(),
    ));
    series.put(seq(tags::REFERENCED_SOP_SEQUENCE, refs));
    let mut study = InMemDicomObject::new_empty();
    study.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        meta.study_instance_uid.as_str(),
    ));
    study.put(seq(tags::REFERENCED_SERIES_SEQUENCE, vec![series]));
    study
}

fn coding_scheme_item() -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PRIVATE_SCHEME,
    ));
    o.put(DataElement::new(
        tags::CODING_SCHEME_NAME,
        VR::ST,
        "vcfd vertebral morphometry codes",
    ));
    o.put(DataElement::new(
        tags::CODING_SCHEME_VERSION,
        VR::SH,
        PRIVATE_SCHEME_VERSION,
    ));
    o.put(DataElement::new(
        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
        VR::ST,
        "vcfd project (see docs/SR.md)",
    ));
    o
}

// ---- modules shared with the image series ----

/// Patient and General Study modules copied from the source so results join its study.
/// Values that break their VR (a malformed date) are left empty rather than copied.
pub(crate) fn put_patient_study(
    o: &mut InMemDicomObject,
    p: &PatientStudy,
    study_uid: &str,
    texts: &mut Vec<String>,
) {
    let date = |d: &str| {
        if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
            d.to_string()
        } else {
            String::new()
        }
    };
    let tm = |t: &str| {
        let t = t.trim();
        let ok = !t.is_empty()
            && t.len() <= 16
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && t.split('.')
                .next()
                .is_some_and(|h| h.len() >= 2 && h.len() % 2 == 0);
        if ok {
            t.to_string()
        } else {
            String::new()
        }
    };
    let fit = |v: &str, max: usize| v.chars().take(max).collect::<String>();
    let sex = match p.patient_sex.trim() {
        s @ ("M" | "F" | "O") => s.to_string(),
        _ => String::new(),
    };
    let values = [
        (tags::PATIENT_NAME, VR::PN, fit(&p.patient_name, 320)),
        (tags::PATIENT_ID, VR::LO, fit(&p.patient_id, 64)),
        (
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            date(&p.patient_birth_date),
        ),
        (tags::PATIENT_SEX, VR::CS, sex),
        (tags::STUDY_INSTANCE_UID, VR::UI, study_uid.to_string()),
        (tags::STUDY_DATE, VR::DA, date(&p.study_date)),
        (tags::STUDY_TIME, VR::TM, tm(&p.study_time)),
        (
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            fit(&p.referring_physician_name, 320),
        ),
        (tags::STUDY_ID, VR::SH, fit(&p.study_id, 16)),
        (tags::ACCESSION_NUMBER, VR::SH, fit(&p.accession_number, 16)),
    ];
    for (tag, vr, v) in values {
        texts.push(v.clone());
        o.put(DataElement::new(tag, vr, v));
    }
    if !p.study_description.is_empty() {
        texts.push(p.study_description.clone());
        o.put(DataElement::new(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            fit(&p.study_description, 64),
        ));
    }
}

/// General Equipment: the vcfd box that made the object.
pub(crate) fn put_equipment(o: &mut InMemDicomObject, box_serial: &str) {
    o.put(DataElement::new(
        tags::MANUFACTURER,
        VR::LO,
        crate::PRODUCT_NAME,
    ));
    o.put(DataElement::new(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        crate::PRODUCT_NAME,
    ));
    o.put(DataElement::new(
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        nonempty(box_serial).chars().take(64).collect::<String>(),
    ));
    o.put(DataElement::new(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        crate::VERSION,
    ));
}

/// File meta for Explicit VR Little Endian; SOP class and instance come from the data set.
pub(crate) fn file_meta() -> FileMetaTableBuilder {
    let mut version = format!("VCFD_{}", crate::VERSION);
    version.truncate(16);
    FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(uid_from_key("vcfd implementation class"))
        .implementation_version_name(version)
}

/// Decimal String (<= 16 chars) keeping six decimals where they fit.
pub(crate) fn ds(x: f64) -> String {
    let x = if x == 0.0 || !x.is_finite() { 0.0 } else { x };
    for decimals in (0..=6).rev() {
        let mut s = format!("{x:.decimals$}");
        if s.contains('.') {
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.pop();
            }
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.3e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_t1_to_l5_has_a_distinct_sct_code() {
        let levels: Vec<String> = (1..=12)
            .map(|i| format!("T{i}"))
            .chain((1..=5).map(|i| format!("L{i}")))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for l in &levels {
            let c = vertebra_code(l).unwrap();
            assert_eq!(c.scheme, "SCT");
            assert_eq!(c.meaning, format!("{l} vertebra"));
            assert!(seen.insert(c.value), "{l}");
        }
        assert_eq!(vertebra_code("L1").unwrap().value, "66794005");
        assert!(vertebra_code("S1").is_none());
        assert!(vertebra_code("C7").is_none());
    }

    #[test]
    fn private_codes_fit_short_string_and_are_unique() {
        let all = [
            codes::P_ANTERIOR_HEIGHT,
            codes::P_MIDDLE_HEIGHT,
            codes::P_POSTERIOR_HEIGHT,
            codes::P_DEFORMITY,
            codes::P_GENANT_GRADE,
            codes::P_MORPHOLOGY,
            codes::P_SERVICE_NAME,
            codes::P_METHOD,
            codes::P_USER_MANUAL,
            codes::P_RELIABILITY,
            codes::P_BONE_DENSITY,
            codes::P_DETECTION_CONFIDENCE,
            codes::P_NORMAL,
            codes::P_WEDGE,
            codes::P_BICONCAVE,
            codes::P_CRUSH,
        ];
        let mut seen = std::collections::HashSet::new();
        for c in all.iter().chain(codes::P_GRADE.iter()) {
            assert_eq!(c.scheme, PRIVATE_SCHEME);
            assert!(c.value.len() <= 16 && c.meaning.len() <= 64);
            assert!(seen.insert(c.value));
        }
    }

    #[test]
    fn uids_depend_on_series_and_model_only() {
        let a = ResultUids::new("1.2.3", "m 1");
        assert_eq!(a, ResultUids::new("1.2.3", "m 1"));
        assert_ne!(a.sr_instance, ResultUids::new("1.2.3", "m 2").sr_instance);
        assert_ne!(a.sr_instance, ResultUids::new("1.2.4", "m 1").sr_instance);
        assert_ne!(a.image_instance(0), a.image_instance(1));
        assert_ne!(a.sr_series, a.image_series);
    }

    #[test]
    fn decimal_strings_fit() {
        assert_eq!(ds(23.25), "23.25");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(41.999999999), "42");
        assert_eq!(ds(1.0 / 3.0), "0.333333");
        assert!(ds(123456789012.123).len() <= 16);
    }
}
