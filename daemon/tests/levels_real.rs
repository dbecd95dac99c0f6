//! Level assignment on the real abdominal CT (../shared/data/totalseg-abdomen-3mm, T12-S1 in
//! view per its README): the rib anchor must be found on real anatomy, not only the phantom.
//!
//! The CT comes without keypoints, so bodies are found here by a simple classical procedure:
//! the spine localiser's centreline, then the mean HU of a 7 mm-radius disc around it on every
//! slice; intervertebral discs are the local minima of that profile, and a body is the span
//! between two consecutive discs (its centre is the midpoint). Approximate keypoints are built
//! around each centre (height from the disc spacing, 30 mm AP depth, +y posterior), which is
//! all the rib test needs (the body's height slab and its AP direction). T12 is cut by the top
//! of the field (its lower half is in view, README), so a body is also placed above the top
//! disc when at least half a body spacing of the volume lies there, as a detector reports a
//! partly visible body.

use std::path::PathBuf;
use vcfd_model::levels::{assign_levels, Body};
use vcfd_model::truth::Keypoints;
use vcfd_model::Volume;

fn load() -> Volume {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/totalseg-abdomen-3mm"
    ));
    vcfd::dicom_in::load_series(&[dir])
        .expect("real CT loads")
        .volume
}

/// Bodies between disc minima of the HU profile along the centreline, cranial first.
fn bodies(vol: &Volume) -> Vec<Body> {
    let line = vcfd_model::spine::locate(vol, &Default::default()).expect("spine found");
    let g = &vol.geometry;
    // One sample per volume slice: the centreline point nearest in z, disc mean around it.
    let mut prof: Vec<([f64; 3], f64)> = Vec::new();
    for k in 0..g.dims[2] {
        let z = g.voxel_to_patient([0.0, 0.0, k as f64])[2];
        let Some(c) = line
            .points_mm
            .iter()
            .min_by(|a, b| (a[2] - z).abs().total_cmp(&(b[2] - z).abs()))
        else {
            continue;
        };
        if (c[2] - z).abs() > 3.0 {
            continue;
        }
        let c = [c[0], c[1], z];
        let (mut s, mut n) = (0.0, 0.0);
        for dx in -7..=7 {
            for dy in -7..=7 {
                if dx * dx + dy * dy > 49 {
                    continue;
                }
                if let Some(v) = vol.sample_patient([c[0] + dx as f64, c[1] + dy as f64, z]) {
                    s += f64::from(v);
                    n += 1.0;
                }
            }
        }
        if n > 0.0 {
            prof.push((c, s / n));
        }
    }
    // Smooth lightly, then take local minima at least 15 mm apart as discs.
    let sm: Vec<f64> = (0..prof.len())
        .map(|i| {
            let lo = i.saturating_sub(1);
            let hi = (i + 2).min(prof.len());
            prof[lo..hi].iter().map(|p| p.1).sum::<f64>() / (hi - lo) as f64
        })
        .collect();
    // Candidate discs: minima over +-2 samples; then the deepest first, at least 22 mm
    // apart (adult bodies are 25-40 mm apart; the basivertebral veins make shallower minima
    // mid-body).
    let mut cand: Vec<usize> = (2..sm.len().saturating_sub(2))
        .filter(|&i| sm[i - 2..=i + 2].iter().all(|&v| v >= sm[i]))
        .collect();
    cand.sort_by(|&a, &b| sm[a].total_cmp(&sm[b]));
    let mut discs: Vec<usize> = Vec::new();
    for i in cand {
        if discs
            .iter()
            .all(|&d| (prof[i].0[2] - prof[d].0[2]).abs() >= 22.0)
        {
            discs.push(i);
        }
    }
    for (p, v) in prof.iter().zip(&sm) {
        println!("z {:6.1} hu {v:6.1}", p.0[2]);
    }
    // Disc positions, cranial first.
    let mut disc_pts: Vec<[f64; 3]> = discs.iter().map(|&i| prof[i].0).collect();
    disc_pts.sort_by(|a, b| b[2].total_cmp(&a[2]));
    let mut spans: Vec<f64> = disc_pts.windows(2).map(|w| w[0][2] - w[1][2]).collect();
    spans.sort_by(f64::total_cmp);
    let spacing = spans[spans.len() / 2];
    let top = g.voxel_to_patient([0.0, 0.0, 0.0])[2]
        .max(g.voxel_to_patient([0.0, 0.0, (g.dims[2] - 1) as f64])[2]);
    let mut pairs: Vec<([f64; 3], [f64; 3])> = disc_pts.windows(2).map(|w| (w[0], w[1])).collect();
    if let Some(&first) = disc_pts.first() {
        if top - first[2] >= 0.5 * spacing {
            pairs.insert(0, ([first[0], first[1], first[2] + spacing], first));
        }
    }
    let mut out: Vec<Body> = pairs
        .iter()
        .map(|&(a, b)| {
            let c = [
                (a[0] + b[0]) / 2.0,
                (a[1] + b[1]) / 2.0,
                (a[2] + b[2]) / 2.0,
            ];
            let h = 0.75 * (a[2] - b[2]).abs();
            let kp = |dy: f64, dz: f64| [c[0], c[1] + dy, c[2] + dz];
            Body {
                center_mm: c,
                keypoints_mm: Keypoints {
                    upper_anterior: kp(-15.0, h / 2.0),
                    upper_middle: kp(0.0, h / 2.0),
                    upper_posterior: kp(15.0, h / 2.0),
                    lower_anterior: kp(-15.0, -h / 2.0),
                    lower_middle: kp(0.0, -h / 2.0),
                    lower_posterior: kp(15.0, -h / 2.0),
                },
            }
        })
        .collect();
    // Cranial first.
    out.sort_by(|a, b| b.center_mm[2].total_cmp(&a.center_mm[2]));
    out
}

#[test]
fn real_abdomen_ct_is_anchored_on_t12() {
    let vol = load();
    let bodies = bodies(&vol);
    let zs: Vec<String> = bodies
        .iter()
        .map(|b| format!("{:.0}", b.center_mm[2]))
        .collect();
    println!("body centres z: {}", zs.join(" "));
    // The body finder itself must be sane, or a pass would mean nothing: lumbar bodies are
    // 25-40 mm apart, and on a sagittal reformat of this CT the T12/L1 disc lies at
    // z ~ 410 mm and the L5/S1 disc at z ~ 232 mm.
    let mut gaps: Vec<f64> = bodies
        .windows(2)
        .map(|w| w[0].center_mm[2] - w[1].center_mm[2])
        .collect();
    gaps.sort_by(f64::total_cmp);
    let gap = gaps[gaps.len() / 2];
    assert!(
        (25.0..=40.0).contains(&gap),
        "median body spacing {gap:.1} mm"
    );
    let a = assign_levels(&vol, &bodies);
    println!("{a:?}");
    assert!(a.anchored, "{}", a.note);
    let named: Vec<&str> = a.levels.iter().flatten().map(String::as_str).collect();
    let t12 = named.iter().position(|&l| l == "T12").expect("T12 found");
    assert_eq!(
        &named[t12..(t12 + 6).min(named.len())],
        ["T12", "L1", "L2", "L3", "L4", "L5"]
    );
    let z_of = |l: &str| {
        let i = a
            .levels
            .iter()
            .position(|x| x.as_deref() == Some(l))
            .unwrap();
        bodies[i].center_mm[2]
    };
    assert!(z_of("T12") > 410.0, "T12 centre z {:.0}", z_of("T12"));
    assert!(
        (380.0..410.0).contains(&z_of("L1")),
        "L1 centre z {:.0}",
        z_of("L1")
    );
    assert!(
        (232.0..270.0).contains(&z_of("L5")),
        "L5 centre z {:.0}",
        z_of("L5")
    );
}

/// The product's detector does not find T12 here: the field starts about 10 mm above its
/// centre, too little of the body for its keypoints. The count must still anchor on T12's
/// ribs, seen above L1.
#[test]
fn real_abdomen_ct_is_anchored_when_t12_itself_is_not_detected() {
    let vol = load();
    let mut bodies = bodies(&vol);
    let top = bodies.remove(0);
    assert!(top.center_mm[2] > 410.0, "first body is T12");
    let a = assign_levels(&vol, &bodies);
    println!("{a:?}");
    assert!(a.anchored, "{}", a.note);
    assert_eq!(a.levels[0].as_deref(), Some("L1"), "{a:?}");
    assert!(a.note.contains("cut by the top of the field"), "{}", a.note);
    // Without T12's ribs in the volume the same bodies stay unanchored: the top slices
    // (z > 400 mm, the T12 half) are blanked to fat.
    let mut cut = vol.clone();
    let g = cut.geometry.clone();
    for k in 0..g.dims[2] {
        if g.voxel_to_patient([0.0, 0.0, k as f64])[2] > 400.0 {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    cut.hu[g.index(i, j, k)] = -100;
                }
            }
        }
    }
    let b = assign_levels(&cut, &bodies);
    assert!(!b.anchored, "{b:?}");
}
