//! Loading real and deliberately broken CT series: geometry, series choice, clear refusals.

mod common;

use common::{copy_dir, ct_volume, data_dir};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use std::path::{Path, PathBuf};
use vcfd::dicom_in::load_series;
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd_model::{Geometry, Volume};

fn edit(path: &Path, f: impl FnOnce(&mut DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(path).unwrap();
    f(&mut obj);
    obj.write_to_file(path).unwrap();
}

fn z_of(path: &Path) -> f64 {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap()[2]
}

/// Files of a folder sorted by slice position.
fn by_position(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut v: Vec<(f64, PathBuf)> = files.into_iter().map(|p| (z_of(&p), p)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v.into_iter().map(|(_, p)| p).collect()
}

fn load_err(dir: &Path) -> String {
    match load_series(&[dir.to_path_buf()]) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn small_axial() -> Volume {
    ct_volume(
        Geometry::axial([12, 10, 6], [-6.0, -5.0, 100.0], [1.0, 1.0, 2.0]),
        true,
    )
}

#[test]
fn real_jpeg2000_series_with_empty_uids() {
    let dir = data_dir("totalseg-j2k-20");
    let a = load_series(std::slice::from_ref(&dir)).unwrap();
    let g = &a.volume.geometry;
    assert_eq!(g.dims, [512, 512, 20]);
    assert_eq!(g.spacing, [0.9765625, 0.9765625, 2.0]);
    assert_eq!(g.origin, [-249.51171875, -437.51171875, -804.5]);
    assert_eq!(g.axes, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    assert_eq!(g.voxel_to_patient([0.0, 0.0, 19.0])[2], -766.5);
    assert_eq!(a.volume.hu_range(), (-1024, 1839));
    assert_eq!(a.layout.slice_thickness_mm, Some(3.0));
    assert_eq!(a.meta.transfer_syntax_uid, "1.2.840.10008.1.2.4.90");
    assert_eq!(a.meta.n_files, 20);
    assert_eq!(a.meta.series_number, None);
    assert_eq!(a.meta.manufacturer, "SIEMENS");
    assert_eq!(a.meta.series_description, "CT Body 3.0");
    // Empty UIDs: synthesised, flagged, stable across loads; the real frame UID is kept.
    assert!(a.meta.uids_synthesised);
    assert!(a.meta.study_instance_uid.starts_with("2.25."));
    assert!(a.meta.series_instance_uid.starts_with("2.25."));
    assert_eq!(
        a.meta.frame_of_reference_uid,
        "1.3.12.2.1107.5.1.4.60064.30000022120807274275100000041"
    );
    let b = load_series(&[dir]).unwrap();
    assert_eq!(a.meta.study_instance_uid, b.meta.study_instance_uid);
    assert_eq!(a.meta.series_instance_uid, b.meta.series_instance_uid);
    // SOP instance UIDs come from the file meta; slice 0 is InstanceNumber 286.
    assert!(a
        .meta
        .instances
        .iter()
        .all(|i| !i.synthesised && !i.sop_instance_uid.is_empty()));
    let notes = a.layout.notes.join("\n");
    assert!(
        notes.contains("slices overlap: 2 mm spacing, 3 mm thickness"),
        "{notes}"
    );
    assert!(
        notes.contains("instance numbers run against position"),
        "{notes}"
    );
    assert!(
        a.notes.iter().any(|n| n.contains("synthesised")),
        "{:?}",
        a.notes
    );
    assert!(
        a.choice.contains("the only axial CT series"),
        "{}",
        a.choice
    );
}

#[test]
fn real_abdomen_series() {
    let a = load_series(&[data_dir("totalseg-abdomen-3mm")]).unwrap();
    let g = &a.volume.geometry;
    assert_eq!(g.dims, [122, 101, 112]);
    assert_eq!(g.spacing, [3.0, 3.0, 3.0]);
    assert_eq!(g.origin, [-185.0436706543, -311.31900024414, 94.3017578125]);
    assert!((g.voxel_to_patient([0.0, 0.0, 111.0])[2] - 427.3017578125).abs() < 1e-9);
    assert_eq!(a.volume.hu_range(), (-1207, 3382));
    assert!(!a.meta.uids_synthesised);
    assert_eq!(
        a.meta.study_instance_uid,
        "2.25.3967742228465174174651644396919292788"
    );
    assert_eq!(
        a.meta.series_instance_uid,
        "2.25.151350457420881095417660741701375775446"
    );
    assert_eq!(
        a.meta.frame_of_reference_uid,
        "2.25.174923605213524688777630953419902589509"
    );
    assert_eq!(a.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert_eq!(a.meta.patient.study_description, "CT ABDOMEN PELVIS");
    assert_eq!(a.meta.instances.len(), 112);
    // Patient data never shows in debug output.
    let dbg = format!("{:?}", a.meta);
    assert!(!dbg.contains("CT ABDOMEN PELVIS") && dbg.contains("redacted"));
}

#[test]
fn several_series_choice_and_skipped_files() {
    let tmp = tempfile::tempdir().unwrap();
    // Two real series (one without UIDs) in one tree, plus files that are not CT images.
    copy_dir(&data_dir("totalseg-abdomen-3mm"), &tmp.path().join("a/abd"));
    copy_dir(&data_dir("totalseg-j2k-20"), &tmp.path().join("b"));
    std::fs::write(tmp.path().join("README"), "not dicom").unwrap();
    let mut dicomdir = InMemDicomObject::new_empty();
    dicomdir.put(DataElement::new(tags::FILE_SET_ID, VR::CS, "TEST"));
    dicomdir
        .with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.1.3.10")
                .media_storage_sop_instance_uid("1.2.3"),
        )
        .unwrap()
        .write_to_file(tmp.path().join("DICOMDIR"))
        .unwrap();
    let l = load_series(&[tmp.path().to_path_buf()]).unwrap();
    assert_eq!(l.volume.geometry.dims, [122, 101, 112]);
    assert!(
        l.choice.contains("best of 2 axial CT series"),
        "{}",
        l.choice
    );
    assert_eq!(l.other_series.len(), 1);
    let other = &l.other_series[0];
    assert_eq!(other.n_files, 20);
    assert!(other.uid_synthesised);
    assert_eq!(other.reason, "fewer slices (20 vs 112)");
    let notes = l.notes.join("\n");
    assert!(
        notes.contains("skipped 1 non-DICOM file(s)") && notes.contains("README"),
        "{notes}"
    );
    assert!(notes.contains("skipped 1 DICOMDIR file(s)"), "{notes}");
}

#[test]
fn prefers_thin_slices_then_soft_kernel_and_ignores_localizers() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = small_axial();
    let series = |seed: u64, kernel: &str, thickness: f64, dir: &str| {
        let mut m = CtSeriesMeta::synthetic(seed);
        m.convolution_kernel = kernel.into();
        m.slice_thickness_mm = thickness;
        m.series_number = seed as i32;
        write_ct_series(&vol, &m, &tmp.path().join(dir)).unwrap();
        m
    };
    series(1, "B70f", 2.0, "sharp");
    let soft = series(2, "B30f", 2.0, "soft");
    series(3, "B30f", 5.0, "thick");
    // A localizer that shares the soft series' UID.
    let loc_dir = tmp.path().join("loc");
    let loc = ct_volume(Geometry::axial([12, 10, 1], [0.0; 3], [1.0; 3]), false);
    let files = write_ct_series(&loc, &soft, &loc_dir).unwrap();
    edit(&files[0], |o| {
        o.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(
                ["ORIGINAL", "PRIMARY", "LOCALIZER"]
                    .map(String::from)
                    .into_iter()
                    .collect(),
            ),
        ));
    });
    let l = load_series(&[tmp.path().to_path_buf()]).unwrap();
    assert_eq!(l.meta.series_instance_uid, soft.series_instance_uid);
    assert_eq!(l.volume.hu, vol.hu);
    let reasons: Vec<(Option<i32>, String)> = l
        .other_series
        .iter()
        .map(|s| (s.series_number, s.reason.clone()))
        .collect();
    assert!(
        reasons.contains(&(Some(1), "sharper kernel (B70f vs B30f)".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(Some(3), "thicker slices (5 vs 2 mm)".into())),
        "{reasons:?}"
    );
    assert!(
        l.other_series
            .iter()
            .any(|s| s.orientation == "localizer" && !s.eligible),
        "{:?}",
        l.other_series
    );
}

#[test]
fn refuses_missing_slice() {
    let tmp = tempfile::tempdir().unwrap();
    let files = by_position(copy_dir(&data_dir("totalseg-abdomen-3mm"), tmp.path()));
    std::fs::remove_file(&files[50]).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("1 missing slice(s) between 241.30 and 247.30 mm"),
        "{e}"
    );
}

#[test]
fn refuses_duplicate_position() {
    let tmp = tempfile::tempdir().unwrap();
    let files = by_position(copy_dir(&data_dir("totalseg-abdomen-3mm"), tmp.path()));
    let ipp = dicom_object::open_file(&files[10])
        .unwrap()
        .element(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    edit(&files[11], |o| {
        o.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            ipp.as_str(),
        ));
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("duplicate slice position 124.30 mm with different images"),
        "{e}"
    );
    // An identical copy of a file (same position, same pixels) is tolerated and reported.
    let tmp2 = tempfile::tempdir().unwrap();
    let files = by_position(copy_dir(&data_dir("totalseg-abdomen-3mm"), tmp2.path()));
    std::fs::copy(&files[5], tmp2.path().join("copy.dcm")).unwrap();
    let l = load_series(&[tmp2.path().to_path_buf()]).unwrap();
    assert_eq!(l.volume.geometry.dims[2], 112);
    assert_eq!(l.meta.n_files, 113);
    assert!(l
        .layout
        .notes
        .iter()
        .any(|n| n.contains("identical duplicate")));
}

#[test]
fn refuses_mismatched_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = CtSeriesMeta::synthetic(21);
    write_ct_series(&small_axial(), &meta, &tmp.path().join("a")).unwrap();
    // One more slice of the same series with fewer rows, right after the others.
    let odd = ct_volume(
        Geometry::axial([12, 9, 1], [-6.0, -5.0, 112.0], [1.0, 1.0, 2.0]),
        true,
    );
    let files = write_ct_series(&odd, &meta, &tmp.path().join("b")).unwrap();
    // Its SOP Instance UID would repeat the first slice's; make it its own instance.
    edit(&files[0], |o| {
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "2.25.1234567",
        ));
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("slices differ in size") && e.contains("12x9") && e.contains("12x10"),
        "{e}"
    );
}

#[test]
fn refuses_non_axial() {
    let tmp = tempfile::tempdir().unwrap();
    let coronal = Geometry {
        dims: [12, 10, 6],
        origin: [-6.0, -20.0, 100.0],
        spacing: [1.0, 1.0, 2.0],
        axes: [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
    };
    write_ct_series(
        &ct_volume(coronal, false),
        &CtSeriesMeta::synthetic(4),
        tmp.path(),
    )
    .unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("no CT series to analyse") && e.contains("coronal slices, not axial"),
        "{e}"
    );
}

/// Tilted gantry (image plane tilted 12 degrees, slices advancing along the table): corrected
/// onto an orthogonal grid whose voxels carry the HU of the same patient position.
#[test]
fn corrects_gantry_tilt() {
    let tmp = tempfile::tempdir().unwrap();
    let t = 12f64.to_radians();
    let tilted = Geometry {
        dims: [16, 40, 8],
        origin: [-8.0, -20.0, 100.0],
        spacing: [1.0, 0.5, 2.0],
        axes: [[1.0, 0.0, 0.0], [0.0, t.cos(), t.sin()], [0.0, 0.0, 1.0]],
    };
    // HU = 5 * y_mm: a field fixed in the patient, so positions can be checked after the shift.
    let mut vol = Volume::filled(tilted.clone(), 0).unwrap();
    for k in 0..8 {
        for j in 0..40 {
            for i in 0..16 {
                let p = tilted.voxel_to_patient([i as f64, j as f64, k as f64]);
                vol.hu[tilted.index(i, j, k)] = (5.0 * p[1]).round() as i16;
            }
        }
    }
    write_ct_series(&vol, &CtSeriesMeta::synthetic(9), tmp.path()).unwrap();
    let l = load_series(&[tmp.path().to_path_buf()]).unwrap();
    assert!(
        (l.layout.gantry_tilt_deg - 12.0).abs() < 1e-6,
        "{}",
        l.layout.gantry_tilt_deg
    );
    assert!(l.layout.tilt_corrected);
    let g = &l.volume.geometry;
    assert!(g.tilt_deg() < 1e-6);
    assert!((g.spacing[2] - 2.0 * t.cos()).abs() < 1e-9);
    let mut checked = 0;
    for k in 0..8 {
        for j in 0..40 {
            let v = l.volume.get(5, j, k).unwrap();
            if v == vcfd_model::series::OUTSIDE_FOV_HU {
                continue;
            }
            let p = g.voxel_to_patient([5.0, j as f64, k as f64]);
            assert!(
                (f64::from(v) - 5.0 * p[1]).abs() <= 1.5,
                "k{k} j{j}: {v} vs {}",
                5.0 * p[1]
            );
            checked += 1;
        }
    }
    assert!(checked > 250, "{checked}");
}

#[test]
fn empty_uids_are_synthesised_stably() {
    let tmp = tempfile::tempdir().unwrap();
    let files = copy_dir(&data_dir("totalseg-abdomen-3mm"), tmp.path());
    for f in &files {
        edit(f, |o| {
            for tag in [
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID,
                tags::SOP_INSTANCE_UID,
            ] {
                o.put(DataElement::new(tag, VR::UI, ""));
            }
            o.remove_element(tags::SERIES_NUMBER);
        });
    }
    let a = load_series(&[tmp.path().to_path_buf()]).unwrap();
    let b = load_series(&[tmp.path().to_path_buf()]).unwrap();
    assert!(a.meta.uids_synthesised);
    assert_eq!(a.volume.geometry.dims, [122, 101, 112]);
    assert_eq!(a.meta.series_instance_uid, b.meta.series_instance_uid);
    assert_eq!(a.meta.study_instance_uid, b.meta.study_instance_uid);
    assert_ne!(
        a.meta.series_instance_uid,
        "2.25.151350457420881095417660741701375775446"
    );
    assert!(vcfd::dicom_out::is_valid_uid(&a.meta.series_instance_uid));
    assert_eq!(a.meta.series_number, None);
    assert!(a.notes.iter().any(|n| n.contains("SeriesNumber missing")));
}

#[test]
fn refuses_input_without_images() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "hello").unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("none of the 1 files is a DICOM image"), "{e}");
    let e = load_series(&[tmp.path().join("missing")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}
