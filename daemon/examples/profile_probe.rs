//! Developer probe: the shape of each endplate as the refinement network sees it. At fractions
//! of the way from the ventral to the dorsal point it asks the network
//! (`EndplateModel::refine_points` with the middle point's channel) where the endplate is, and
//! prints its depth below the ventral-dorsal chord in mm (positive: into the body). A
//! biconcave endplate is a broad bowl; a Schmorl's node or a dense focus taken for the
//! endplate is a narrow dip.
//! `cargo run --release -p vcfd --example profile_probe -- real DIR`
//! `cargo run --release -p vcfd --example profile_probe -- case SEED INDEX`
use vcfd_model::keypoints::{DecodeOptions, KeypointModel, Precision};
use vcfd_model::reformat::{curved_sagittal, ReformatOptions};
use vcfd_model::spine::{locate, SpineOptions};

const FRACTIONS: [f64; 7] = [0.15, 0.25, 0.35, 0.5, 0.65, 0.75, 0.85];

fn lerp(a: [f64; 2], b: [f64; 2], t: f64) -> [f64; 2] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let volume = match args.first().map(String::as_str) {
        Some("real") => {
            vcfd::dicom_in::load_series(&[std::path::PathBuf::from(&args[1])])
                .expect("load")
                .volume
        }
        Some("case") => {
            let seed: u64 = args[1].parse().expect("seed");
            let i: usize = args[2].parse().expect("index");
            let c = vcfd_model::evaluate::case(seed, i);
            let ph = vcfd_model::phantom::generate(c.seed, &c.options).expect("phantom");
            for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
                println!(
                    "truth {} grade {} deformity {:.2}",
                    v.level, v.genant_grade, v.deformity
                );
            }
            ph.volume
        }
        _ => panic!("usage: profile_probe real DIR | case SEED INDEX"),
    };
    let line = locate(&volume, &SpineOptions::default()).expect("spine");
    let r = curved_sagittal(&volume, &line, &ReformatOptions::default()).expect("reformat");
    let model = KeypointModel::shipped(Precision::F32).expect("model");
    let mut dets = model.detect(&r, &DecodeOptions::default()).expect("detect");
    let net = model.endplates();
    net.refine(&r, &mut dets).expect("refine");
    for d in &dets {
        let kp = &d.keypoints;
        for plate in 0..2 {
            let (v, m, dd) = (kp[3 * plate], kp[3 * plate + 1], kp[3 * plate + 2]);
            // Start on the polyline through the plate's three points; ask as the middle point.
            let mut pts: Vec<(usize, [f64; 2])> = FRACTIONS
                .iter()
                .map(|&t| {
                    let p = if t <= 0.5 {
                        lerp(v, m, 2.0 * t)
                    } else {
                        lerp(m, dd, 2.0 * t - 1.0)
                    };
                    (3 * plate + 1, p)
                })
                .collect();
            net.refine_points(&r, &mut pts).expect("network");
            // Depth along the chord's normal, pointing towards the other plate.
            let chord = [dd[0] - v[0], dd[1] - v[1]];
            let len = chord[0].hypot(chord[1]).max(1e-9);
            let mut n = [-chord[1] / len, chord[0] / len];
            let other = lerp(kp[3 * (1 - plate)], kp[3 * (1 - plate) + 2], 0.5);
            if (other[0] - v[0]) * n[0] + (other[1] - v[1]) * n[1] < 0.0 {
                n = [-n[0], -n[1]];
            }
            let row: Vec<String> = pts
                .iter()
                .map(|(_, p)| {
                    let q = [p[0] - v[0], p[1] - v[1]];
                    let s = (q[0] * chord[0] + q[1] * chord[1]) / (len * len);
                    format!("{s:.2}:{:+.1}", q[0] * n[0] + q[1] * n[1])
                })
                .collect();
            let name = if plate == 0 { "upper" } else { "lower" };
            println!("row {:3.0} {name}: {}", d.center[1], row.join(" "));
        }
    }
}
