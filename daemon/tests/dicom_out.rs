//! The CT writer produces files that dciodvfy accepts and that our loader reads back exactly.

use std::path::Path;
use std::process::Command;
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd_model::{Geometry, Volume};

/// A small volume with a non-trivial origin, anisotropic spacing and distinct voxel values.
fn sample_volume() -> Volume {
    let g = Geometry::axial([7, 5, 4], [-120.5, 33.25, -804.5], [0.9765625, 0.75, 2.5]);
    let hu = (0..g.len())
        .map(|n| ((n as i32 * 37) % 3000 - 1024) as i16)
        .collect();
    Volume::new(g, hu).unwrap()
}

/// Runs a tool that CI installs; `None` (with a printed reason) when missing outside CI.
fn tool_available(name: &str) -> bool {
    let ok = Command::new(name).arg("-help").output().is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed but CI=true (scripts/test.sh installs it)");
        }
        eprintln!("skipping: {name} not installed");
    }
    ok
}

fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy").arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    eprintln!("dciodvfy {}:\n{text}", file.display());
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(String::from)
        .collect()
}

#[test]
fn written_series_passes_dciodvfy() {
    if !tool_available("dciodvfy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut meta = CtSeriesMeta::synthetic(7);
    meta.reconstruction_center_mm = Some([1.5, -20.0, -800.0]);
    let files = write_ct_series(&sample_volume(), &meta, dir.path()).unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0].file_name().unwrap(), "0001.dcm");
    for f in [&files[0], &files[3]] {
        let errors = dciodvfy_errors(f);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
