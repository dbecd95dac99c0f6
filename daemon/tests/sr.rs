//! The results that reach PACS: the TID 1500 SR and the burned-in image series.
//!
//! Findings here are either hand-made or the phantom's truth (`vcfd::truth_findings`, a test
//! stand-in for the analysis): these tests check the writers, not the analysis.
//!
//! `VCFD_SR_EXPORT_DIR=DIR` makes the fracture-phantom and real-CT tests also leave
//! `DIR/<case>/sr.dcm` and `DIR/<case>/report.json`, for the Python reader test
//! (scripts/python-tests.sh).

mod common;

use common::{data_dir, tool_available};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use vcfd::dicom_in::{load_series, LoadedSeries};
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd::overlay::{render_reformat, RED, YELLOW};
use vcfd::results::{write_results, ResultFiles};
use vcfd::sr::{conclusion, vertebra_code, ResultUids};
use vcfd::truth_findings::findings_from_truth;
use vcfd_model::findings::{Bmd, Findings, Quality, QualityFlag, Severity, VertebraFinding};
use vcfd_model::morphometry::Morphology;
use vcfd_model::phantom::{generate, FractureKind, FractureSpec, Level, PhantomOptions};
use vcfd_model::reformat::{curved_sagittal, Reformat, ReformatOptions};
use vcfd_model::spine::{locate, SpineOptions};
use vcfd_model::truth::{Heights, Keypoints, Truth};

const BOX: &str = "VCFD-TEST-0001";

/// A small, fast phantom (2 mm voxels) written as DICOM and loaded back like a real study.
fn phantom_study(
    seed: u64,
    fractures: Vec<FractureSpec>,
    cobb: f64,
    dir: &Path,
) -> (LoadedSeries, Truth) {
    let opts = PhantomOptions {
        from_level: Some(Level::T6),
        to_level: Some(Level::L3),
        rows: Some(200),
        pixel_spacing_mm: Some(2.0),
        slice_thickness_mm: Some(2.0),
        slice_spacing_mm: Some(2.0),
        fractures: Some(fractures),
        mimics: Some(vec![]),
        cobb_deg: Some(cobb),
        ..Default::default()
    };
    let ph = generate(seed, &opts).unwrap();
    let meta = CtSeriesMeta::synthetic(seed);
    write_ct_series(&ph.volume, &meta, dir).unwrap();
    let loaded = load_series(&[dir.to_path_buf()]).unwrap();
    (loaded, ph.truth)
}

fn reformat_of(s: &LoadedSeries) -> Reformat {
    let line = locate(&s.volume, &SpineOptions::default()).unwrap();
    curved_sagittal(&s.volume, &line, &ReformatOptions::default()).unwrap()
}

fn fracture(level: Level, kind: FractureKind, severity: f64) -> FractureSpec {
    FractureSpec {
        level,
        kind,
        severity,
    }
}

fn dciodvfy_errors(file: &Path) -> (usize, usize, String) {
    let out = Command::new("dciodvfy").arg(file).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let errors = text.lines().filter(|l| l.starts_with("Error")).count();
    let warnings = text.lines().filter(|l| l.starts_with("Warning")).count();
    (errors, warnings, text)
}

/// dciodvfy reports zero errors on the SR and every image.
fn assert_valid(files: &ResultFiles) {
    if !tool_available("dciodvfy") {
        return;
    }
    for f in std::iter::once(&files.sr).chain(files.images.iter()) {
        let (e, w, text) = dciodvfy_errors(f);
        eprintln!("dciodvfy {}: {e} errors, {w} warnings", f.display());
        assert_eq!(e, 0, "dciodvfy {}:\n{text}", f.display());
    }
}

fn dsrdump(sr: &Path) -> Option<String> {
    if !tool_available("dsrdump") {
        return None;
    }
    let out = Command::new("dsrdump")
        .args(["+Pl", "+Pc"])
        .arg(sr)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "dsrdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text)
}

fn items(o: &InMemDicomObject) -> Vec<InMemDicomObject> {
    o.element(tags::CONTENT_SEQUENCE)
        .ok()
        .and_then(|e| e.items().map(|i| i.to_vec()))
        .unwrap_or_default()
}

fn concept(o: &InMemDicomObject) -> String {
    o.element(tags::CONCEPT_NAME_CODE_SEQUENCE)
        .ok()
        .and_then(|e| e.items().and_then(|i| i.first().cloned()))
        .and_then(|c| {
            c.element(tags::CODE_VALUE)
                .ok()?
                .to_str()
                .ok()
                .map(|s| s.to_string())
        })
        .unwrap_or_default()
}

fn str_of(o: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    o.element(tag)
        .map(|e| e.to_str().unwrap().trim().to_string())
        .unwrap_or_default()
}

/// One measurement group read back: finding-site code, NUM values and CODE values by concept.
type Group = (String, BTreeMap<String, f64>, BTreeMap<String, String>);

/// The measurement groups of an SR, in order.
fn groups(sr: &InMemDicomObject) -> Vec<Group> {
    let meas = items(sr)
        .into_iter()
        .find(|i| concept(i) == "126010")
        .expect("Imaging Measurements container");
    items(&meas)
        .into_iter()
        .filter(|g| concept(g) == "125007")
        .map(|g| {
            let mut site = String::new();
            let mut nums = BTreeMap::new();
            let mut coded = BTreeMap::new();
            for it in items(&g) {
                let vt = str_of(&it, tags::VALUE_TYPE);
                let name = concept(&it);
                if vt == "CODE" {
                    let seq = it.element(tags::CONCEPT_CODE_SEQUENCE).unwrap();
                    let v = str_of(&seq.items().unwrap()[0], tags::CODE_VALUE);
                    if name == "363698007" {
                        site = v;
                    } else {
                        coded.insert(name, v);
                    }
                } else if vt == "NUM" {
                    let mv = it.element(tags::MEASURED_VALUE_SEQUENCE).unwrap();
                    let x: f64 = str_of(&mv.items().unwrap()[0], tags::NUMERIC_VALUE)
                        .parse()
                        .unwrap();
                    nums.insert(name, x);
                }
            }
            (site, nums, coded)
        })
        .collect()
}

fn count(img: &vcfd::overlay::RgbImage, c: [u8; 3]) -> usize {
    img.data.chunks(3).filter(|p| *p == c).count()
}

#[test]
fn fracture_phantom_sr_and_images_are_valid_and_faithful() {
    let tmp = tempfile::tempdir().unwrap();
    let (loaded, truth) = phantom_study(
        4101,
        vec![
            fracture(Level::L1, FractureKind::Wedge, 0.42),
            fracture(Level::T8, FractureKind::Biconcave, 0.30),
        ],
        0.0,
        &tmp.path().join("ct"),
    );
    let findings = findings_from_truth(&truth);
    let l1 = findings
        .vertebrae
        .iter()
        .find(|v| v.level.as_deref() == Some("L1"))
        .unwrap();
    assert_eq!((l1.genant_grade, l1.morphology), (3, Morphology::Wedge));
    let reformat = reformat_of(&loaded);
    let out = tmp.path().join("out");
    let files = write_results(&loaded, &findings, Some(&reformat), BOX, &out).unwrap();
    assert_eq!(files.sr, out.join("sr.dcm"));
    assert_eq!(
        files.images.len(),
        4,
        "curved reformat + three sagittal slices"
    );
    assert_valid(&files);

    // The SR says what the findings say, value by value.
    let sr = open_file(&files.sr).unwrap();
    assert_eq!(str_of(&sr, tags::VERIFICATION_FLAG), "UNVERIFIED");
    assert_eq!(str_of(&sr, tags::COMPLETION_FLAG), "COMPLETE");
    assert_eq!(
        str_of(&sr, tags::STUDY_INSTANCE_UID),
        loaded.meta.study_instance_uid
    );
    assert_eq!(
        str_of(&sr, tags::SERIES_DESCRIPTION),
        format!("vcfd {} SR", vcfd::VERSION)
    );
    let evidence = sr
        .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .unwrap();
    let series = evidence.items().unwrap()[0]
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .clone();
    assert_eq!(
        series
            .element(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len(),
        loaded.meta.instances.len()
    );
    let g = groups(&sr);
    assert_eq!(g.len(), findings.vertebrae.len());
    for (v, (site, nums, coded)) in findings.vertebrae.iter().zip(&g) {
        let level = v.level.as_deref().unwrap();
        assert_eq!(site, vertebra_code(level).unwrap().value, "{level}");
        for (code, want) in [
            ("VCFD0001", v.heights_mm.anterior),
            ("VCFD0002", v.heights_mm.middle),
            ("VCFD0003", v.heights_mm.posterior),
            ("VCFD0004", v.deformity * 100.0),
        ] {
            assert!(
                (nums[code] - want).abs() < 1e-5,
                "{level} {code}: {} vs {want}",
                nums[code]
            );
        }
        assert_eq!(
            nums.get("112031").is_some(),
            v.trabecular_hu.is_some(),
            "{level}"
        );
        assert_eq!(coded["VCFD0005"], format!("VCFD010{}", v.genant_grade));
    }

    // dsrdump renders it, with the conclusion sentence.
    if let Some(text) = dsrdump(&files.sr) {
        assert!(text.contains("Imaging Measurement Report"), "{text}");
        let want = format!(
            "Compression deformity of L1 vertebral body, {:.0} % (Genant 3, wedge)",
            l1.deformity * 100.0
        );
        assert!(text.contains(&want), "{want} missing:\n{text}");
        assert!(text.contains("T8 vertebral body"), "{text}");
        assert!(text.contains("L1 vertebra"), "{text}");
    }

    // Images: readable size, same study, new series, burned-in marks in the grade colours.
    for p in &files.images {
        let o = open_file(p).unwrap();
        let rows: u16 = o.element(tags::ROWS).unwrap().to_int().unwrap();
        let cols: u16 = o.element(tags::COLUMNS).unwrap().to_int().unwrap();
        assert!(rows.min(cols) >= 512, "{rows}x{cols}");
        assert_eq!(str_of(&o, tags::BURNED_IN_ANNOTATION), "YES");
        assert_eq!(
            str_of(&o, tags::STUDY_INSTANCE_UID),
            loaded.meta.study_instance_uid
        );
        assert_ne!(
            str_of(&o, tags::SERIES_INSTANCE_UID),
            loaded.meta.series_instance_uid
        );
    }
    let header = ["test".to_string()];
    let img = render_reformat(&reformat, &findings, &header);
    let mut normal = findings.clone();
    for v in &mut normal.vertebrae {
        v.genant_grade = 0;
        v.deformity = 0.05;
        v.morphology = Morphology::Normal;
    }
    normal.max_genant_grade = 0;
    let base = render_reformat(&reformat, &normal, &header);
    // Legend squares are always there; the fractures add red (L1) and yellow (T8) lines.
    assert!(
        count(&img, RED) > count(&base, RED) + 300,
        "red marks missing"
    );
    assert!(
        count(&img, YELLOW) > count(&base, YELLOW) + 300,
        "yellow marks missing"
    );

    // A re-run replaces: same UIDs.
    let again = write_results(
        &loaded,
        &findings,
        Some(&reformat),
        BOX,
        &tmp.path().join("again"),
    )
    .unwrap();
    let sr2 = open_file(&again.sr).unwrap();
    assert_eq!(
        str_of(&sr2, tags::SOP_INSTANCE_UID),
        str_of(&sr, tags::SOP_INSTANCE_UID)
    );
    assert_eq!(
        str_of(&sr, tags::SOP_INSTANCE_UID),
        ResultUids::new(&loaded.meta.series_instance_uid, &findings.model_version).sr_instance
    );

    export("fracture-phantom", &files, &loaded, &findings);
}

/// With VCFD_SR_EXPORT_DIR set: the SR plus a report.json in the analysis report's shape
/// (UIDs + findings fields) in `$VCFD_SR_EXPORT_DIR/case`.
fn export(case: &str, files: &ResultFiles, loaded: &LoadedSeries, findings: &Findings) {
    let Ok(root) = std::env::var("VCFD_SR_EXPORT_DIR") else {
        return;
    };
    let dir = PathBuf::from(root).join(case);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&files.sr, dir.join("sr.dcm")).unwrap();
    let mut report = serde_json::to_value(findings).unwrap();
    let m = report.as_object_mut().unwrap();
    m.insert(
        "study_instance_uid".into(),
        loaded.meta.study_instance_uid.clone().into(),
    );
    m.insert(
        "series_instance_uid".into(),
        loaded.meta.series_instance_uid.clone().into(),
    );
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}

#[test]
fn normal_phantom_reports_target_pathology_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let (loaded, truth) = phantom_study(4102, vec![], 0.0, &tmp.path().join("ct"));
    let findings = findings_from_truth(&truth);
    assert!(findings.vertebrae.iter().all(|v| v.genant_grade < 2));
    // Copied patient data that needs UTF-8, and a malformed date that must not be copied.
    let mut loaded = loaded;
    loaded.meta.patient.patient_name = "Müller^Jörg".into();
    loaded.meta.patient.patient_birth_date = "1960-01-01".into();
    let files = write_results(&loaded, &findings, None, BOX, &tmp.path().join("out")).unwrap();
    assert_eq!(
        files.images.len(),
        3,
        "no reformat: only the sagittal slices"
    );
    assert_valid(&files);
    let sr = open_file(&files.sr).unwrap();
    assert_eq!(str_of(&sr, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    assert_eq!(str_of(&sr, tags::PATIENT_NAME), "Müller^Jörg");
    assert_eq!(str_of(&sr, tags::PATIENT_BIRTH_DATE), "");
    let img = open_file(&files.images[0]).unwrap();
    assert_eq!(str_of(&img, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    if let Some(text) = dsrdump(&files.sr) {
        assert!(text.contains("Target pathology not found"), "{text}");
        assert!(!text.contains("Compression deformity"), "{text}");
    }
}

/// Hand-made findings along the real CT's located spine: L1-L5, 26 mm tall bodies.
fn real_ct_findings(reformat: &Reformat) -> Findings {
    let mid = reformat.height as f64 / 2.0;
    let c0 = reformat.center_col();
    let vertebrae = ["L1", "L2", "L3", "L4", "L5"]
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let row = mid + (i as f64 - 2.0) * 34.0;
            let p = |dc: f64, dr: f64| reformat.to_patient(c0 + dc, row + dr, 0.0);
            let keypoints = Keypoints {
                upper_anterior: p(-15.0, -13.0),
                upper_middle: p(0.0, -13.0),
                upper_posterior: p(15.0, -13.0),
                lower_anterior: p(-15.0, 13.0),
                lower_middle: p(0.0, 13.0),
                lower_posterior: p(15.0, 13.0),
            };
            let heights_mm = keypoints.heights();
            VertebraFinding {
                level: Some(level.to_string()),
                center_mm: p(0.0, 0.0),
                keypoints_mm: keypoints,
                heights_mm,
                deformity: 0.03,
                genant_grade: 0,
                morphology: Morphology::Normal,
                trabecular_hu: (i < 3).then_some(160.0 - 10.0 * i as f64),
                confidence: 0.9,
            }
        })
        .collect();
    Findings {
        vertebrae,
        max_genant_grade: 0,
        fracture_score: 0.03,
        levels_anchored: true,
        levels_note: String::new(),
        bmd: Bmd {
            l1_hu: Some(160.0),
            level_used: Some("L1".into()),
            verdict: "normal".into(),
            note: "CT attenuation is not DXA bone mineral density.".into(),
        },
        quality: Quality {
            reliable: true,
            flags: vec![],
        },
        model_version: "hand-made test findings".into(),
        timing_ms: BTreeMap::new(),
    }
}

#[test]
fn real_ct_results_pass_dciodvfy() {
    let loaded = load_series(&[data_dir("totalseg-abdomen-3mm")]).unwrap();
    let reformat = reformat_of(&loaded);
    let findings = real_ct_findings(&reformat);
    let tmp = tempfile::tempdir().unwrap();
    let files = write_results(&loaded, &findings, Some(&reformat), BOX, tmp.path()).unwrap();
    assert_eq!(files.images.len(), 4);
    assert_valid(&files);
    let sr = open_file(&files.sr).unwrap();
    let g = groups(&sr);
    assert_eq!(g.len(), 5);
    assert_eq!(g[0].0, "66794005");
    for (v, (_, nums, _)) in findings.vertebrae.iter().zip(&g) {
        assert!(
            (nums["VCFD0001"] - v.heights_mm.anterior).abs() < 1e-5,
            "{nums:?}"
        );
        assert!(
            (nums["VCFD0003"] - v.heights_mm.posterior).abs() < 1e-5,
            "{nums:?}"
        );
    }
    assert_eq!(
        str_of(&sr, tags::PATIENT_ID),
        loaded.meta.patient.patient_id
    );
    export("real-ct", &files, &loaded, &findings);
}

#[test]
fn unreliable_study_says_why_in_the_conclusion() {
    let v = |level: &str, deformity: f64, grade: u8, morphology| VertebraFinding {
        level: Some(level.into()),
        center_mm: [0.0; 3],
        keypoints_mm: Keypoints {
            upper_anterior: [0.0; 3],
            upper_middle: [0.0; 3],
            upper_posterior: [0.0; 3],
            lower_anterior: [0.0; 3],
            lower_middle: [0.0; 3],
            lower_posterior: [0.0; 3],
        },
        heights_mm: Heights {
            anterior: 15.0,
            middle: 20.0,
            posterior: 25.0,
        },
        deformity,
        genant_grade: grade,
        morphology,
        trabecular_hu: None,
        confidence: 0.9,
    };
    let mut f = Findings {
        vertebrae: vec![
            v("T8", 0.30, 2, Morphology::Biconcave),
            v("L1", 0.42, 3, Morphology::Wedge),
        ],
        max_genant_grade: 3,
        fracture_score: 0.42,
        levels_anchored: true,
        levels_note: String::new(),
        bmd: Bmd {
            l1_hu: None,
            level_used: None,
            verdict: "not_assessed".into(),
            note: String::new(),
        },
        quality: Quality {
            reliable: true,
            flags: vec![],
        },
        model_version: "t".into(),
        timing_ms: BTreeMap::new(),
    };
    assert_eq!(
        conclusion(&f),
        "Compression deformity of L1 vertebral body, 42 % (Genant 3, wedge); \
         Compression deformity of T8 vertebral body, 30 % (Genant 2, biconcave)"
    );
    f.quality = Quality {
        reliable: false,
        flags: vec![QualityFlag {
            kind: "metal".into(),
            severity: Severity::Critical,
            values: BTreeMap::new(),
            text: "Metal streaks across T12-L2.".into(),
        }],
    };
    let c = conclusion(&f);
    assert!(
        c.ends_with("RESULT UNRELIABLE: Metal streaks across T12-L2."),
        "{c}"
    );
    f.vertebrae.clear();
    f.quality.reliable = true;
    assert_eq!(conclusion(&f), "Target pathology not found");
}

/// Renders docs/reformat-{fractures,normal,scoliosis}.png from phantom truth (not analysis).
/// Run on purpose: `cargo test --release -p vcfd --test sr -- --ignored render_docs`.
#[test]
#[ignore]
fn render_docs_pngs() {
    let docs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs"));
    let cases: [(&str, u64, Vec<FractureSpec>, f64); 3] = [
        (
            "fractures",
            4101,
            vec![
                fracture(Level::L1, FractureKind::Wedge, 0.42),
                fracture(Level::T8, FractureKind::Biconcave, 0.30),
            ],
            0.0,
        ),
        ("normal", 4102, vec![], 0.0),
        ("scoliosis", 4103, vec![], 30.0),
    ];
    for (name, seed, fx, cobb) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (loaded, truth) = phantom_study(seed, fx, cobb, &tmp.path().join("ct"));
        let findings = findings_from_truth(&truth);
        let reformat = reformat_of(&loaded);
        let header = vec![format!(
            "{} {} - findings from phantom truth (docs)",
            vcfd::PRODUCT_NAME,
            vcfd::VERSION
        )];
        let images =
            vcfd::overlay::render_series(&loaded.volume, Some(&reformat), &findings, &header);
        // The curved reformat; for scoliosis also the midline sagittal slice, which the
        // curve leaves (PNGs are large: keep the docs to what shows the point).
        for (i, img) in images.iter().enumerate() {
            let file = match (i, name) {
                (0, _) => format!("reformat-{name}.png"),
                (2, "scoliosis") => format!("sagittal-{name}.png"),
                _ => continue,
            };
            vcfd::overlay::write_png(&docs.join(file), &img.image).unwrap();
        }
    }
}
