//! The scan-quality checks on real CT (../shared/data): no artifact flag where the images are
//! clean. Only the coverage flag is expected where the documented threshold says so.

use std::path::PathBuf;
use vcfd_model::analysis::ScanInfo;
use vcfd_model::quality::{assess, curvature, metal, motion, rings, QualityOptions};

fn load(name: &str) -> vcfd::dicom_in::LoadedSeries {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")).join(name);
    vcfd::dicom_in::load_series(&[dir]).expect("real CT loads")
}

fn scan_of(s: &vcfd::dicom_in::LoadedSeries) -> ScanInfo {
    ScanInfo {
        slice_thickness_mm: s.meta.slice_thickness_mm,
        slice_spacing_mm: s.volume.geometry.spacing[2],
        gantry_tilt_deg: s.volume.geometry.tilt_deg(),
        recon_center_mm: s
            .meta
            .reconstruction_center_mm
            .or(s.meta.data_collection_center_mm),
    }
}

#[test]
fn real_abdomen_ct_has_no_artifact_flag() {
    let s = load("totalseg-abdomen-3mm");
    let scan = scan_of(&s);
    let line = vcfd_model::spine::locate(&s.volume, &Default::default()).expect("spine found");
    let o = QualityOptions::default();
    let ring = rings::detect(&s.volume, rings::centre_mm(&s.volume, &scan));
    eprintln!("rings: score {:.2} {:?}", ring.score, ring.rings.first());
    assert!(rings::flag_for(&ring, &s.volume, Some(&line), &o).is_none());
    let m = metal::detect(&s.volume, Some(&line), &[], o.metal_hu);
    eprintln!("metal: {m:?}");
    assert!(metal::flag_for(&m, &o).is_none());
    let mo = motion::detect(&s.volume, Some(&line));
    eprintln!("motion: {mo:?}");
    assert!(motion::flag_for(&mo, &o).is_none());
    let cobb = curvature::cobb_coronal_deg(&line).expect("cobb measured");
    let kyph = curvature::kyphosis_deg(Some(&line), &[]);
    eprintln!("cobb {cobb:?} kyphosis {kyph:?}");
    // Without the detector's vertebrae the only flag is coverage (3 mm slices are not thick).
    let q = assess(&s.volume, &scan, Some(&line), &[], &o);
    let kinds: Vec<&str> = q.flags.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["coverage"], "{:?}", q.flags);
}

#[test]
fn twenty_slices_of_real_ct_are_only_too_short() {
    let s = load("totalseg-j2k-20");
    let scan = scan_of(&s);
    let o = QualityOptions::default();
    let ring = rings::detect(&s.volume, rings::centre_mm(&s.volume, &scan));
    eprintln!("rings: score {:.2} {:?}", ring.score, ring.rings.first());
    let line = vcfd_model::spine::locate(&s.volume, &Default::default()).ok();
    let t = std::time::Instant::now();
    let q = assess(&s.volume, &scan, line.as_ref(), &[], &o);
    eprintln!("assess took {:?}", t.elapsed());
    // 40 mm of z hold fewer than 4 bodies: the coverage flag is correct and the only one.
    let kinds: Vec<&str> = q.flags.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["coverage"], "{:?}", q.flags);
}
