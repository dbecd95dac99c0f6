//! Helpers shared by the DICOM integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd_model::{Geometry, Volume};

/// Folder of the shared real CT data (never copied into the repo).
pub fn data_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")).join(name);
    assert!(p.is_dir(), "test data {} is missing", p.display());
    p
}

/// True when an external tool can run. Missing tools skip a test with a printed reason, except
/// under CI (CI=true), where scripts/test.sh installs them and a missing one is a failure.
pub fn tool_available(name: &str) -> bool {
    let ok = Command::new(name).arg("--version").output().is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed but CI=true (scripts/test.sh installs it)");
        }
        eprintln!("SKIPPED: {name} is not installed (install dcmtk / dicom3tools)");
    }
    ok
}

/// Runs a command and panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// A CT-like test volume: air around a body of soft tissue with a bone disk and a smooth
/// gradient, plus deterministic noise when `noise` is set (lossless codecs must keep it).
pub fn ct_volume(geometry: Geometry, noise: bool) -> Volume {
    let [nx, ny, nz] = geometry.dims;
    let mut hu = vec![0i16; geometry.len()];
    let mut state: u64 = 0x2545F4914F6CDD1D;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = (i as f64 + 0.5) / nx as f64 - 0.5;
                let y = (j as f64 + 0.5) / ny as f64 - 0.5;
                let r = (x * x + y * y).sqrt();
                let mut v = if r > 0.45 {
                    -1000.0
                } else if r < 0.12 {
                    700.0 + 300.0 * (k as f64 / nz.max(1) as f64)
                } else {
                    40.0 + 200.0 * x
                };
                if noise {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    v += (state % 61) as f64 - 30.0;
                }
                hu[geometry.index(i, j, k)] = v.round() as i16;
            }
        }
    }
    Volume::new(geometry, hu).unwrap()
}

/// Writes a volume with a seeded synthetic header into `dir`.
pub fn write(volume: &Volume, seed: u64, dir: &Path) -> Vec<PathBuf> {
    write_ct_series(volume, &CtSeriesMeta::synthetic(seed), dir).unwrap()
}

/// Copies every file of a folder (flat) into `dst`.
pub fn copy_dir(src: &Path, dst: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dst).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let to = dst.join(p.file_name().unwrap());
            std::fs::copy(&p, &to).unwrap();
            out.push(to);
        }
    }
    out.sort();
    out
}

/// Asserts two geometries agree to header precision (DS strings carry up to 16 characters).
pub fn assert_geometry_close(a: &Geometry, b: &Geometry) {
    assert_eq!(a.dims, b.dims);
    for x in 0..3 {
        assert!(
            (a.origin[x] - b.origin[x]).abs() < 1e-6,
            "origin {:?} vs {:?}",
            a.origin,
            b.origin
        );
        assert!(
            (a.spacing[x] - b.spacing[x]).abs() < 1e-6,
            "spacing {:?} vs {:?}",
            a.spacing,
            b.spacing
        );
        for y in 0..3 {
            assert!(
                (a.axes[x][y] - b.axes[x][y]).abs() < 1e-6,
                "axes {:?} vs {:?}",
                a.axes,
                b.axes
            );
        }
    }
}
