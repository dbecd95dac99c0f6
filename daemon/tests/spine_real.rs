//! The spine localiser on real CT (../shared/data): the phantom is not the only judge.

use std::path::PathBuf;

#[test]
fn finds_the_lumbar_spine_of_the_real_abdomen_ct() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/totalseg-abdomen-3mm"
    ));
    let s = vcfd::dicom_in::load_series(&[dir]).expect("real CT loads");
    let line = vcfd_model::spine::locate(&s.volume, &Default::default()).expect("spine found");
    let zs: Vec<f64> = line.points_mm.iter().map(|p| p[2]).collect();
    let (lo, hi) = zs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &z| (a.min(z), b.max(z)));
    // T12-L5 span about z = 215..425 mm in this scan (read off the sagittal view).
    assert!(
        lo < 230.0 && hi > 400.0,
        "track covers z {lo:.0}..{hi:.0} mm"
    );
    // The L3 body centre, read off the axial slice at z = 262.3 mm: x -2, y -141 mm (LPS).
    let p = line
        .points_mm
        .iter()
        .min_by(|a, b| (a[2] - 262.3).abs().total_cmp(&(b[2] - 262.3).abs()))
        .expect("points");
    let miss = ((p[0] + 2.0).powi(2) + (p[1] + 141.0).powi(2)).sqrt();
    assert!(
        miss < 10.0,
        "track at z 262 is at ({:.1}, {:.1}), {miss:.1} mm from the body centre",
        p[0],
        p[1]
    );
}
