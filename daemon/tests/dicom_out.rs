//! The CT writer produces files that dciodvfy accepts and that our loader reads back exactly.

mod common;

use common::{assert_geometry_close, ct_volume, tool_available};
use std::path::Path;
use std::process::Command;
use vcfd::dicom_in::load_series;
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd_model::Geometry;

fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy").arg(file).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    eprintln!("dciodvfy {}:\n{text}", file.display());
    text.lines()
        .filter(|l| l.contains("Error"))
        .map(String::from)
        .collect()
}

/// In-plane rotated (oblique but axial) grid with non-trivial origin and anisotropic spacing.
fn rotated_geometry() -> Geometry {
    let a = 20f64.to_radians();
    Geometry {
        dims: [9, 7, 5],
        origin: [-120.5, 33.25, -804.5],
        spacing: [0.9765625, 0.75, 2.5],
        axes: [
            [a.cos(), a.sin(), 0.0],
            [-a.sin(), a.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ],
    }
}

#[test]
fn written_series_passes_dciodvfy() {
    if !tool_available("dciodvfy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut meta = CtSeriesMeta::synthetic(7);
    meta.reconstruction_center_mm = Some([1.5, -20.0, -800.0]);
    let vol = ct_volume(
        Geometry::axial([16, 12, 4], [-7.5, -5.5, 10.0], [1.0, 1.0, 2.0]),
        true,
    );
    let files = write_ct_series(&vol, &meta, dir.path()).unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0].file_name().unwrap(), "0001.dcm");
    for f in [&files[0], &files[3]] {
        let errors = dciodvfy_errors(f);
        assert!(errors.is_empty(), "{errors:?}");
    }
    // Non-ASCII names switch the character set; still valid.
    let mut meta = CtSeriesMeta::synthetic(8);
    meta.patient_name = "MÜLLER^JÖRG".into();
    let dir2 = tempfile::tempdir().unwrap();
    let files = write_ct_series(&vol, &meta, dir2.path()).unwrap();
    let errors = dciodvfy_errors(&files[1]);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn written_series_reloads_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let vol = ct_volume(rotated_geometry(), true);
    let mut meta = CtSeriesMeta::synthetic(3);
    meta.slice_thickness_mm = 2.5;
    meta.reconstruction_center_mm = Some([1.0, 2.0, 3.0]);
    write_ct_series(&vol, &meta, dir.path()).unwrap();
    let loaded = load_series(&[dir.path().to_path_buf()]).unwrap();
    assert_geometry_close(&loaded.volume.geometry, &vol.geometry);
    assert_eq!(loaded.volume.hu, vol.hu);
    let m = &loaded.meta;
    assert_eq!(m.study_instance_uid, meta.study_instance_uid);
    assert_eq!(m.series_instance_uid, meta.series_instance_uid);
    assert_eq!(m.frame_of_reference_uid, meta.frame_of_reference_uid);
    assert!(!m.uids_synthesised);
    assert_eq!(m.slice_thickness_mm, Some(2.5));
    assert_eq!(m.reconstruction_center_mm, Some([1.0, 2.0, 3.0]));
    assert_eq!(m.patient.patient_name, "PHANTOM^SEED3");
    assert_eq!(m.manufacturer, "vcfd phantom");
    assert_eq!(m.series_number, Some(2));
    assert_eq!(m.instances.len(), 5);
    assert!(m.instances.iter().all(|i| !i.synthesised));
    assert!(loaded.layout.notes.is_empty(), "{:?}", loaded.layout.notes);
}

#[test]
fn same_seed_writes_identical_files() {
    let vol = ct_volume(Geometry::axial([8, 8, 3], [0.0; 3], [1.0, 1.0, 1.0]), true);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fa = write_ct_series(&vol, &CtSeriesMeta::synthetic(5), a.path()).unwrap();
    let fb = write_ct_series(&vol, &CtSeriesMeta::synthetic(5), b.path()).unwrap();
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
}

#[test]
fn refuses_what_dicom_cannot_express() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Geometry::axial([4, 4, 2], [0.0; 3], [1.0; 3]);
    g.axes[2] = [0.0, 0.0, -1.0];
    let vol = ct_volume(g, false);
    let e = write_ct_series(&vol, &CtSeriesMeta::synthetic(1), dir.path()).unwrap_err();
    assert!(e.to_string().contains("normal"), "{e}");
    let vol = ct_volume(Geometry::axial([4, 4, 2], [0.0; 3], [1.0; 3]), false);
    let mut meta = CtSeriesMeta::synthetic(1);
    meta.study_date = "2024-01-01".into();
    assert!(write_ct_series(&vol, &meta, dir.path()).is_err());
    let mut meta = CtSeriesMeta::synthetic(1);
    meta.series_instance_uid = "1.2.03".into();
    assert!(write_ct_series(&vol, &meta, dir.path()).is_err());
}
