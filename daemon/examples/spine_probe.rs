//! Developer probe: locates the spine in a phantom and reports the distance to truth.
//! `cargo run --release -p vcfd --example spine_probe -- SEED [COBB] [KYPHOSIS]`
//! or `... -- case N` for the N-th evaluation case.
use vcfd_model::phantom::{generate, PhantomOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut o = PhantomOptions {
        cobb_deg: args.get(1).and_then(|s| s.parse().ok()),
        kyphosis_deg: args.get(2).and_then(|s| s.parse().ok()),
        ..Default::default()
    };
    if args.get(3).is_some() {
        o.rows = Some(256);
        o.pixel_spacing_mm = Some(1.4);
        o.slice_thickness_mm = Some(3.0);
        o.slice_spacing_mm = Some(3.0);
    }
    // `case N`: the N-th case (0-based) of `vcfd evaluate --seed 90001`.
    let (seed, o) = if args.first().map(String::as_str) == Some("case") {
        let i: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let c = vcfd_model::evaluate::case(90_001, i);
        (c.seed, c.options)
    } else {
        (seed, o)
    };
    let ph = generate(seed, &o).expect("phantom");
    let t = std::time::Instant::now();
    let c = vcfd_model::spine::locate(&ph.volume, &Default::default());
    println!("locate {:?}", t.elapsed());
    let c = match c {
        Ok(c) => c,
        Err(e) => {
            println!("ERR {e}");
            return;
        }
    };
    let s = &ph.truth.study;
    println!(
        "support {:.2} cobb {:.1} kyph {:.1} levels {:?}",
        c.support(),
        s.cobb_angle_deg,
        s.kyphosis_deg,
        s.levels_in_view
    );
    for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
        let p = c
            .points_mm
            .iter()
            .min_by(|a, b| {
                (a[2] - v.center_mm[2])
                    .abs()
                    .total_cmp(&(b[2] - v.center_mm[2]).abs())
            })
            .expect("points");
        println!(
            "  {:4} z {:.0} truth ({:.0},{:.0}) dx {:+.1} dy {:+.1} (at dz {:+.1}) mm",
            v.level,
            v.center_mm[2],
            v.center_mm[0],
            v.center_mm[1],
            p[0] - v.center_mm[0],
            p[1] - v.center_mm[1],
            p[2] - v.center_mm[2]
        );
    }
    let r = vcfd_model::reformat::curved_sagittal(&ph.volume, &c, &Default::default())
        .expect("reformat");
    let px: Vec<u8> = r
        .pixels
        .iter()
        .map(|&h| ((h + 500.0) / 1800.0 * 255.0).clamp(0.0, 255.0) as u8)
        .collect();
    vcfd::preview::write_png_pixels(
        std::path::Path::new("/tmp/reformat_probe.png"),
        r.width,
        r.height,
        png::ColorType::Grayscale,
        &px,
    )
    .expect("write png");
}
