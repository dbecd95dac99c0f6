//! Developer probe: the level each detected body got against the truth level nearest to it
//! (with its confidence, heights and grade),
//! for evaluation cases (0-based indices of `vcfd evaluate --seed SEED`).
//! `cargo run --release -p vcfd --example level_probe -- SEED I [I...]`
//! With `AXIAL=z_mm` it also writes the axial slice nearest to z as /tmp/level_probe_I.png
//! (bone window), to see the ribs the level count relies on; with `KEYPOINTS=1` it prints
//! each body's keypoint z (mm).
use vcfd::preview::{render, write_png, Plane, Window};
use vcfd_model::analysis::{analyze, AnalysisOptions};
use vcfd_model::evaluate::{anchor_in_view, case, scan_info};
use vcfd_model::keypoints::{KeypointModel, Precision};
use vcfd_model::phantom::{generate, Phantom};

fn dist2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|k| (a[k] - b[k]).powi(2)).sum()
}

fn write_axial(ph: &Phantom, z: f64, path: &str) {
    let g = &ph.volume.geometry;
    let k = g.patient_to_voxel([0.0, 0.0, z])[2].round();
    if !(0.0..g.dims[2] as f64).contains(&k) {
        eprintln!("z {z} is outside the volume");
        return;
    }
    let img = render(
        &ph.volume,
        Plane::Axial(k as usize),
        Window::BONE,
        g.spacing[0],
    );
    write_png(std::path::Path::new(path), &img).expect("png");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(90_001);
    let axial: Option<f64> = std::env::var("AXIAL").ok().and_then(|s| s.parse().ok());
    let keypoints = std::env::var("KEYPOINTS").is_ok();
    let model = KeypointModel::shipped(Precision::F32).expect("model");
    let (mut wrong, mut total) = (0, 0);
    for i in args.iter().skip(1).filter_map(|s| s.parse::<usize>().ok()) {
        let c = case(seed, i);
        let ph = generate(c.seed, &c.options).expect("phantom");
        if let Some(z) = axial {
            write_axial(&ph, z, &format!("/tmp/level_probe_{i}.png"));
        }
        let a = analyze(
            &ph.volume,
            &scan_info(&ph),
            &model,
            &AnalysisOptions::default(),
        )
        .expect("analysis");
        let g = &ph.volume.geometry;
        let z_of = |k: f64| g.voxel_to_patient([0.0, 0.0, k])[2];
        // As `evaluate` counts it: an unknown level is right where T12 or L1 is out of view.
        let anchorable = anchor_in_view(&ph.truth);
        println!(
            "CASE {i} seed {} {} anchored {} anchor_in_view {anchorable} slices z {:.1}..{:.1}",
            c.seed,
            c.condition.as_str(),
            a.findings.levels_anchored,
            z_of(0.0),
            z_of(g.dims[2] as f64 - 1.0)
        );
        for d in &a.findings.vertebrae {
            let truth = ph
                .truth
                .vertebrae
                .iter()
                .filter(|v| v.in_view)
                .min_by(|x, y| {
                    dist2(x.center_mm, d.center_mm).total_cmp(&dist2(y.center_mm, d.center_mm))
                })
                .map_or("?", |v| v.level.as_str());
            let got = d.level.as_deref().unwrap_or("-");
            total += 1;
            wrong += usize::from(got != truth && (anchorable || d.level.is_some()));
            let h = &d.heights_mm;
            println!(
                "  z {:7.1} got {got:4} truth {truth:4} conf {:.2} H {:.1}/{:.1}/{:.1} def {:.2} grade {}",
                d.center_mm[2],
                d.confidence,
                h.anterior,
                h.middle,
                h.posterior,
                d.deformity,
                d.genant_grade
            );
            if keypoints {
                let z: Vec<String> = d
                    .keypoints_mm
                    .as_array()
                    .iter()
                    .map(|p| format!("{:.1}", p[2]))
                    .collect();
                println!("      keypoint z {}", z.join(" "));
            }
        }
    }
    println!(
        "level_probe: {wrong} of {total} bodies without their true level (unknown counts as \
         right where T12 or L1 is out of view)"
    );
}
