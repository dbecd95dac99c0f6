//! Developer probe: per-vertebra keypoint errors on evaluation cases, in reformat pixels.
//! `cargo run --release -p vcfd --example kp_probe -- FIRST_SEED N [f32|int8] [PNGDIR]`
//! Prints one line per matched truth body: case, condition, level, truth grade/deformity,
//! measured deformity, and the six keypoints' (drow, dcol) errors.
use vcfd_model::analysis::{analyze, AnalysisOptions};
use vcfd_model::evaluate::{case, measurable, scan_info};
use vcfd_model::keypoints::{KeypointModel, Precision};
use vcfd_model::phantom::generate;

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(90_001);
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let p: Precision = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(Precision::F32);
    let png_dir = args.get(3).cloned();
    let model = KeypointModel::shipped(p).expect("model");
    let mut opts = AnalysisOptions::default();
    if let Some(c) = std::env::var("MIN_CONF").ok().and_then(|s| s.parse().ok()) {
        opts.decode.min_confidence = c;
    }
    if std::env::var("NO_REFINE").is_ok() {
        opts.refine_endplates = false;
    }
    let start: usize = std::env::var("START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for i in start..start + n {
        let c = case(seed, i);
        let ph = generate(c.seed, &c.options).expect("phantom");
        let a = analyze(&ph.volume, &scan_info(&ph), &model, &opts).expect("analysis");
        let Some(r) = a.reformat.as_ref() else {
            println!("case {i} no reformat");
            continue;
        };
        let f = &a.findings;
        println!(
            "CASE {i} seed {} {} score {:.3} thick {:.1}",
            c.seed,
            c.condition.as_str(),
            f.fracture_score,
            ph.truth.study.slice_thickness_mm
        );
        for t in ph
            .truth
            .vertebrae
            .iter()
            .filter(|v| measurable(&ph.volume, v))
        {
            let Some(d) = f
                .vertebrae
                .iter()
                .filter(|d| dist(d.center_mm, t.center_mm) <= 10.0)
                .min_by(|a, b| {
                    dist(a.center_mm, t.center_mm).total_cmp(&dist(b.center_mm, t.center_mm))
                })
            else {
                println!("  {} MISSED grade {}", t.level, t.genant_grade);
                continue;
            };
            if std::env::var("LAT").is_ok() {
                let lats: Vec<String> = t
                    .keypoints_mm
                    .as_array()
                    .iter()
                    .filter_map(|k| r.from_patient(*k))
                    .map(|p| format!("{:.1}/{:.1}/{:+.1}", p.1, p.0, p.2))
                    .collect();
                println!("  {} truth row/col/lat {}", t.level, lats.join(" "));
            }
            let mut errs = String::new();
            for (tk, dk) in t
                .keypoints_mm
                .as_array()
                .iter()
                .zip(d.keypoints_mm.as_array().iter())
            {
                match (r.from_patient(*tk), r.from_patient(*dk)) {
                    (Some(a), Some(b)) => {
                        errs += &format!(" {:+.1},{:+.1}", b.1 - a.1, b.0 - a.0);
                    }
                    _ => errs += " ?",
                }
            }
            let th = &t.heights_mm;
            let dh = &d.heights_mm;
            println!(
                "  {:4} z {:.1} lvl {:?} g{} tdef {:.3} mdef {:.3} {:9} mimic {:?} H {:.1}/{:.1}/{:.1} vs {:.1}/{:.1}/{:.1} err(row,col):{}",
                t.level,
                t.center_mm[2],
                d.level,
                t.genant_grade,
                t.deformity,
                d.deformity,
                d.morphology.as_str(),
                t.mimics,
                th.anterior,
                th.middle,
                th.posterior,
                dh.anterior,
                dh.middle,
                dh.posterior,
                errs
            );
        }
        for d in &f.vertebrae {
            let near = ph
                .truth
                .vertebrae
                .iter()
                .filter(|t| measurable(&ph.volume, t))
                .any(|t| dist(d.center_mm, t.center_mm) <= 10.0);
            if !near {
                let closest = ph
                    .truth
                    .vertebrae
                    .iter()
                    .min_by(|a, b| {
                        dist(a.center_mm, d.center_mm).total_cmp(&dist(b.center_mm, d.center_mm))
                    })
                    .map(|t| (t.level.clone(), dist(t.center_mm, d.center_mm), t.in_view));
                let g = &ph.volume.geometry;
                let ks: Vec<String> = d
                    .keypoints_mm
                    .as_array()
                    .iter()
                    .map(|p| format!("{:.1}", g.patient_to_voxel(*p)[2]))
                    .collect();
                let tks: Vec<String> = ph
                    .truth
                    .vertebrae
                    .iter()
                    .min_by(|a, b| {
                        dist(a.center_mm, d.center_mm).total_cmp(&dist(b.center_mm, d.center_mm))
                    })
                    .map(|t| {
                        t.keypoints_mm
                            .as_array()
                            .iter()
                            .map(|p| format!("{:.1}", g.patient_to_voxel(*p)[2]))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "  UNMATCHED detection def {:.3} conf {:.2} centre z {:.1} nearest truth {:?} slices {} k {:?} truth k {:?}",
                    d.deformity, d.confidence, d.center_mm[2], closest, g.dims[2], ks, tks
                );
            }
        }
        if let Some(dir) = &png_dir {
            write_overlay(&format!("{dir}/case{i:03}.png"), r, &ph, f);
        }
    }
}

fn write_overlay(
    path: &str,
    r: &vcfd_model::reformat::Reformat,
    ph: &vcfd_model::phantom::Phantom,
    f: &vcfd_model::findings::Findings,
) {
    // Wide slab on the left, thin slab on the right.
    let (w1, h) = (r.width, r.height);
    let w = 2 * w1;
    let mut px: Vec<u8> = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for img in [&r.pixels, &r.thin] {
            for &v in &img[row * w1..(row + 1) * w1] {
                let g = ((v + 300.0) / 1300.0 * 255.0).clamp(0.0, 255.0) as u8;
                px.extend_from_slice(&[g, g, g]);
            }
        }
    }
    let mut dot = |p: [f64; 3], rgb: [u8; 3]| {
        if let Some((c, row, _)) = r.from_patient(p) {
            let (c, row) = (c.round() as i64, row.round() as i64);
            if c >= 0 && row >= 0 && (c as usize) < w && (row as usize) < h {
                let i = (row as usize * w + c as usize) * 3;
                px[i..i + 3].copy_from_slice(&rgb);
            }
        }
    };
    for t in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
        for k in t.keypoints_mm.as_array() {
            dot(k, [0, 255, 0]);
        }
    }
    for d in &f.vertebrae {
        for k in d.keypoints_mm.as_array() {
            dot(k, [255, 0, 0]);
        }
    }
    vcfd::preview::write_png_pixels(std::path::Path::new(path), w, h, png::ColorType::Rgb, &px)
        .expect("write png");
}
