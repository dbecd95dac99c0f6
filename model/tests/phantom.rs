//! Phantom truth and determinism: the phantom's truth must match what it rendered, because
//! every accuracy figure of the product is measured against it.

use vcfd_model::morphometry::{classify, Morphology};
use vcfd_model::phantom::{generate, FractureKind, FractureSpec, Kernel, Level, PhantomOptions};
use vcfd_model::truth::VertebraTruth;
use vcfd_model::Volume;

fn frac(level: Level, kind: FractureKind, severity: f64) -> FractureSpec {
    FractureSpec {
        level,
        kind,
        severity,
    }
}

/// A noise-free 0.5 mm render of T11..L2 with a fracture of each type.
fn geometry_phantom(seed: u64, cobb: f64) -> vcfd_model::phantom::Phantom {
    let opts = PhantomOptions {
        ideal: true,
        pixel_spacing_mm: Some(0.5),
        slice_thickness_mm: Some(0.5),
        slice_spacing_mm: Some(0.5),
        rows: Some(176),
        from_level: Some(Level::T11),
        to_level: Some(Level::L2),
        center_on_spine: true,
        bone_density_hu: Some(140.0),
        cobb_deg: Some(cobb),
        fractures: Some(vec![
            frac(Level::T12, FractureKind::Wedge, 0.35),
            frac(Level::L1, FractureKind::Biconcave, 0.3),
            frac(Level::L2, FractureKind::Crush, 0.28),
        ]),
        mimics: Some(vec![]),
        ..Default::default()
    };
    generate(seed, &opts).expect("phantom")
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

/// Distance from `kp` (a truth keypoint) to the rendered endplate surface along `dir`
/// (pointing out of the body, into the disc): march inwards from 1.5 mm out in the disc until
/// the profile reaches half-way between the disc and the cortex plateau.
fn surface_offset(vol: &Volume, kp: [f64; 3], dir: [f64; 3]) -> f64 {
    let at = |t: f64| {
        vol.sample_patient([kp[0] + dir[0] * t, kp[1] + dir[1] * t, kp[2] + dir[2] * t])
            .map(f64::from)
            .expect("inside the volume")
    };
    let start = 1.5;
    let disc = at(start);
    assert!(
        disc < 400.0,
        "1.5 mm outside the keypoint is bone ({disc} HU): keypoint off the surface"
    );
    let step = 0.02;
    let march = |thr: f64| {
        let mut t = start;
        let mut prev = at(t);
        while t > -2.0 {
            let v = at(t - step);
            if v >= thr {
                return t - step * (thr - prev) / (v - prev);
            }
            prev = v;
            t -= step;
        }
        panic!("no endplate within 2 mm inside the keypoint");
    };
    let t0 = march(600.0);
    let peak = (0..=30)
        .map(|k| at(t0 - 0.05 * k as f64))
        .fold(f64::MIN, f64::max);
    march(0.5 * (peak + disc))
}

fn measured_heights(vol: &Volume, v: &VertebraTruth) -> [f64; 3] {
    let k = &v.keypoints_mm;
    let pairs = [
        (k.upper_anterior, k.lower_anterior),
        (k.upper_middle, k.lower_middle),
        (k.upper_posterior, k.lower_posterior),
    ];
    pairs.map(|(u, l)| {
        let d = sub(u, l);
        let h = norm(d);
        let dir = [d[0] / h, d[1] / h, d[2] / h];
        let up = surface_offset(vol, u, dir);
        let down = surface_offset(vol, l, [-dir[0], -dir[1], -dir[2]]);
        h + up + down
    })
}

#[test]
fn truth_heights_match_the_rendered_bone_within_half_a_voxel() {
    let ph = geometry_phantom(21, 12.0);
    let vox = ph.volume.geometry.spacing[0];
    let mut checked = 0;
    for v in ph
        .truth
        .vertebrae
        .iter()
        .filter(|v| ["T12", "L1", "L2"].contains(&v.level.as_str()))
    {
        assert!(v.in_view, "{} should be in view", v.level);
        let m = measured_heights(&ph.volume, v);
        let t = [
            v.heights_mm.anterior,
            v.heights_mm.middle,
            v.heights_mm.posterior,
        ];
        for (k, name) in ["anterior", "middle", "posterior"].iter().enumerate() {
            eprintln!(
                "{} {name}: truth {:.3} measured {:.3} err {:+.3}",
                v.level,
                t[k],
                m[k],
                m[k] - t[k]
            );
            assert!(
                (m[k] - t[k]).abs() <= 0.5 * vox,
                "{} {name}: truth {:.3} mm, measured {:.3} mm",
                v.level,
                t[k],
                m[k]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

#[test]
fn fractures_reduce_the_right_height_and_grades_follow_classify() {
    let ph = geometry_phantom(22, 0.0);
    let get = |l: &str| {
        ph.truth
            .vertebrae
            .iter()
            .find(|v| v.level == l)
            .expect("level")
    };
    for v in &ph.truth.vertebrae {
        let d = classify(v.heights_mm, Some(v.normal_heights_mm.posterior));
        assert!((d.value - v.deformity).abs() < 1e-12, "{}", v.level);
        assert_eq!(
            (d.grade, d.morphology),
            (v.genant_grade, v.morphology),
            "{}",
            v.level
        );
        let k = &v.keypoints_mm;
        // Upper points above lower points along the body axis; anterior in front of posterior.
        for (u, l) in [
            (k.upper_anterior, k.lower_anterior),
            (k.upper_middle, k.lower_middle),
            (k.upper_posterior, k.lower_posterior),
        ] {
            assert!(u[2] > l[2], "{}: upper keypoint below lower", v.level);
        }
        assert!(
            k.upper_anterior[1] < k.upper_middle[1] && k.upper_middle[1] < k.upper_posterior[1],
            "{}",
            v.level
        );
        assert!(
            k.lower_anterior[1] < k.lower_middle[1] && k.lower_middle[1] < k.lower_posterior[1],
            "{}",
            v.level
        );
    }
    let (t12, l1, l2) = (get("T12"), get("L1"), get("L2"));
    let loss = |v: &VertebraTruth, h: fn(&vcfd_model::truth::Heights) -> f64| {
        1.0 - h(&v.heights_mm) / h(&v.normal_heights_mm)
    };
    // Wedge: the anterior height drops; the posterior wall is intact.
    assert!(loss(t12, |h| h.anterior) > 0.25 && loss(t12, |h| h.posterior).abs() < 1e-9);
    assert_eq!((t12.morphology, t12.genant_grade), (Morphology::Wedge, 2));
    assert!((t12.deformity - 0.35).abs() < 1e-9);
    // Biconcave: the middle drops; the anterior and posterior heights stay.
    assert!(
        loss(l1, |h| h.middle) > 0.2
            && loss(l1, |h| h.anterior).abs() < 1e-9
            && loss(l1, |h| h.posterior).abs() < 1e-9
    );
    assert_eq!((l1.morphology, l1.genant_grade), (Morphology::Biconcave, 2));
    // Crush: every height drops, the ratios stay near normal, only neighbours reveal it.
    assert!(loss(l2, |h| h.posterior) > 0.2 && loss(l2, |h| h.anterior) > 0.2);
    assert_eq!(l2.morphology, Morphology::Crush);
    assert!((l2.deformity - 0.28).abs() < 1e-9);
    // The centre of each body in view lies in trabecular bone.
    for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
        let hu = ph
            .volume
            .sample_patient(v.center_mm)
            .expect("centre inside the volume");
        assert!(
            (f64::from(hu) - 140.0).abs() < 60.0,
            "{} centre HU {hu}",
            v.level
        );
    }
}

#[test]
fn same_seed_same_study_different_seed_different_study() {
    let opts = PhantomOptions {
        rows: Some(96),
        pixel_spacing_mm: Some(3.0),
        slice_thickness_mm: Some(3.0),
        slice_spacing_mm: Some(3.0),
        ..Default::default()
    };
    let a = generate(5, &opts).unwrap();
    // Rendering on one thread must give the same bits as rayon's default pool.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = one.install(|| generate(5, &opts)).unwrap();
    let c = generate(6, &opts).unwrap();
    assert_eq!(a.volume.geometry, b.volume.geometry);
    assert!(
        a.volume.hu == b.volume.hu,
        "same seed gave different voxels"
    );
    assert_eq!(a.truth, b.truth);
    assert!(a.truth != c.truth);
    assert!(a.volume.hu != c.volume.hu || a.volume.geometry != c.volume.geometry);
}

#[test]
fn options_are_honoured() {
    let opts = PhantomOptions {
        rows: Some(96),
        pixel_spacing_mm: Some(3.2),
        slice_thickness_mm: Some(2.5),
        slice_spacing_mm: Some(2.0),
        from_level: Some(Level::T3),
        to_level: Some(Level::L2),
        cobb_deg: Some(32.0),
        kyphosis_deg: Some(64.0),
        kernel: Some(Kernel::Bone),
        noise_hu: Some(25.0),
        contrast: Some(false),
        ..Default::default()
    };
    let ph = generate(9, &opts).unwrap();
    let s = &ph.truth.study;
    assert!(
        (s.cobb_angle_deg - 32.0).abs() < 1e-4,
        "Cobb {}",
        s.cobb_angle_deg
    );
    assert!(
        (s.kyphosis_deg - 64.0).abs() < 1e-4,
        "kyphosis {}",
        s.kyphosis_deg
    );
    assert_eq!(
        (s.slice_thickness_mm, s.slice_spacing_mm, s.pixel_spacing_mm),
        (2.5, 2.0, 3.2)
    );
    assert_eq!(ph.volume.geometry.spacing, [3.2, 3.2, 2.0]);
    assert_eq!(ph.acquisition.kernel, "BONE");
    assert!(!s.contrast);
    let want: Vec<String> = (Level::T3.index()..=Level::L2.index())
        .filter_map(Level::from_index)
        .map(|l| l.name().to_string())
        .collect();
    for l in &want {
        assert!(
            s.levels_in_view.contains(l),
            "{l} not in view: {:?}",
            s.levels_in_view
        );
    }
    // Coverage ends near the requested levels (a strong kyphosis packs upper levels in z).
    assert!(
        s.levels_in_view.len() <= want.len() + 4,
        "{:?}",
        s.levels_in_view
    );
    assert!(
        !s.levels_in_view.contains(&"L5".to_string()),
        "{:?}",
        s.levels_in_view
    );
    // The whole of T3 and L2 is inside the scanned range.
    let g = &ph.volume.geometry;
    let z_lo = g.origin[2];
    let z_hi = z_lo + (g.dims[2] - 1) as f64 * g.spacing[2];
    for v in ph
        .truth
        .vertebrae
        .iter()
        .filter(|v| v.level == "T3" || v.level == "L2")
    {
        for p in v.keypoints_mm.as_array() {
            assert!(
                p[2] > z_lo && p[2] < z_hi,
                "{} keypoint outside the coverage",
                v.level
            );
        }
    }
}

#[test]
fn tissue_hu_ranges_are_plausible() {
    let opts = PhantomOptions {
        rows: Some(160),
        pixel_spacing_mm: Some(2.6),
        slice_thickness_mm: Some(5.0),
        slice_spacing_mm: Some(5.0),
        from_level: Some(Level::T4),
        to_level: Some(Level::L3),
        bone_density_hu: Some(180.0),
        contrast: Some(true),
        fractures: Some(vec![]),
        ..Default::default()
    };
    let ph = generate(11, &opts).unwrap();
    let n = ph.volume.hu.len() as f64;
    let frac =
        |lo: i16, hi: i16| ph.volume.hu.iter().filter(|&&v| v >= lo && v < hi).count() as f64 / n;
    let lung = frac(-950, -700);
    let fat = frac(-150, -50);
    let soft = frac(0, 100);
    let bone = frac(150, 1500);
    assert!(lung > 0.05, "lung fraction {lung}");
    assert!(fat > 0.05, "fat fraction {fat}");
    assert!(soft > 0.10, "soft tissue fraction {soft}");
    assert!(bone > 0.005 && bone < 0.15, "bone fraction {bone}");
    let (lo, hi) = ph.volume.hu_range();
    assert!(lo >= -1024 && hi <= 3071, "range {lo}..{hi}");
    // Trabecular bone as measured in the rendered cores follows the requested density.
    for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
        assert!(
            (v.trabecular_hu - 180.0).abs() < 40.0,
            "{} trabecular {}",
            v.level,
            v.trabecular_hu
        );
    }
}
