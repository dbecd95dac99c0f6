//! Developer probe: the keypoints on a real CT folder before and after endplate refinement.
//! `cargo run --release -p vcfd --example real_probe -- DIR OUT.png`
//! Writes the wide | thin reformat side by side, network points red, refined points green,
//! and prints both sets of heights.
use vcfd_model::keypoints::{DecodeOptions, Detection, KeypointModel, Precision};
use vcfd_model::reformat::{curved_sagittal, ReformatOptions};
use vcfd_model::spine::{locate, SpineOptions};

fn heights(r: &vcfd_model::reformat::Reformat, d: &Detection) -> [f64; 3] {
    let p: Vec<[f64; 3]> = d
        .keypoints
        .iter()
        .map(|k| r.to_patient(k[0], k[1], 0.0))
        .collect();
    let dist = |a: [f64; 3], b: [f64; 3]| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    [dist(p[0], p[3]), dist(p[1], p[4]), dist(p[2], p[5])]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(&args[0]);
    let s = vcfd::dicom_in::load_series(&[dir]).expect("load");
    let line = locate(&s.volume, &SpineOptions::default()).expect("spine");
    let r = curved_sagittal(&s.volume, &line, &ReformatOptions::default()).expect("reformat");
    let m = KeypointModel::shipped(Precision::F32).expect("model");
    let raw = m.detect(&r, &DecodeOptions::default()).expect("detect");
    let mut refined = raw.clone();
    m.endplates().refine(&r, &mut refined).expect("refine");
    for (a, b) in raw.iter().zip(&refined) {
        let (ha, hb) = (heights(&r, a), heights(&r, b));
        println!(
            "row {:.0}: network {:.1}/{:.1}/{:.1} refined {:.1}/{:.1}/{:.1}",
            a.center[1], ha[0], ha[1], ha[2], hb[0], hb[1], hb[2]
        );
        for k in 0..6 {
            println!(
                "   k{k} network ({:.1},{:.1}) refined ({:.1},{:.1})",
                a.keypoints[k][0], a.keypoints[k][1], b.keypoints[k][0], b.keypoints[k][1]
            );
        }
    }
    let (w1, h) = (r.width, r.height);
    let w = 2 * w1;
    let mut px = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for img in [&r.pixels, &r.thin] {
            for &v in &img[row * w1..(row + 1) * w1] {
                let g = ((v + 300.0) / 1300.0 * 255.0).clamp(0.0, 255.0) as u8;
                px.extend_from_slice(&[g, g, g]);
            }
        }
    }
    for (set, rgb) in [(&raw, [255u8, 0, 0]), (&refined, [0u8, 255, 0])] {
        for d in set.iter() {
            for k in d.keypoints {
                let (c, rr) = (k[0].round() as usize, k[1].round() as usize);
                if c < w1 && rr < h {
                    let i = (rr * w + c) * 3;
                    px[i..i + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    vcfd::preview::write_png_pixels(
        std::path::Path::new(&args[1]),
        w,
        h,
        png::ColorType::Rgb,
        &px,
    )
    .expect("write png");
}
