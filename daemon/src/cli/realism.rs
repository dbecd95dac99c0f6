//! `vcfd realism`: measures how far the phantom is from real CT (a developer's tool).
//!
//! Both volumes are brought to the same 3 mm grid, the patient's body is segmented by
//! thresholding, and HU statistics of lung/air, fat, soft tissue and bone are compared. Writes
//! side-by-side PNGs and an HU histogram plot; prints a Markdown table for docs/REALISM.md.

use anyhow::Context;
use std::path::PathBuf;
use vcfd::preview::{render, side_by_side, write_png, Gray, Plane, Window};
use vcfd_model::phantom::{generate, Level, PhantomOptions};
use vcfd_model::Volume;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Real CT series to compare with (folder of DICOM files).
    #[arg(long)]
    pub real: PathBuf,
    /// Folder for the PNGs.
    #[arg(long)]
    pub out: PathBuf,
    /// Phantom seed.
    #[arg(long, default_value_t = 3)]
    pub seed: u64,
}

/// Tissue classes by HU, inside the body outline.
const CLASSES: [(&str, f32, f32); 4] = [
    ("lung/air", -1100.0, -500.0),
    ("fat", -500.0, -30.0),
    ("soft tissue", -30.0, 150.0),
    ("bone", 150.0, 4000.0),
];

struct Stats {
    fraction: f64,
    p5: f32,
    median: f32,
    p95: f32,
}

/// Body voxels: per axial slice, everything between the outermost voxels above -500 HU on each
/// row of the slice's largest bright region (so lungs and bowel gas count, the table does not).
fn body_values(v: &Volume) -> Vec<f32> {
    let [nx, ny, nz] = v.geometry.dims;
    let mut out = Vec::new();
    for k in 0..nz {
        let mut label = vec![0u32; nx * ny];
        let mut sizes = vec![0usize];
        for start in 0..nx * ny {
            if label[start] != 0 || v.hu[v.geometry.index(start % nx, start / nx, k)] <= -500 {
                continue;
            }
            let id = sizes.len() as u32;
            let mut stack = vec![start];
            label[start] = id;
            let mut n = 0;
            while let Some(p) = stack.pop() {
                n += 1;
                let (x, y) = (p % nx, p / nx);
                let mut push = |q: usize| {
                    if label[q] == 0 && v.hu[v.geometry.index(q % nx, q / nx, k)] > -500 {
                        label[q] = id;
                        stack.push(q);
                    }
                };
                if x > 0 {
                    push(p - 1);
                }
                if x + 1 < nx {
                    push(p + 1);
                }
                if y > 0 {
                    push(p - nx);
                }
                if y + 1 < ny {
                    push(p + nx);
                }
            }
            sizes.push(n);
        }
        let Some(body) = (1..sizes.len()).max_by_key(|&i| sizes[i]) else {
            continue;
        };
        for y in 0..ny {
            let row = &label[y * nx..(y + 1) * nx];
            let (Some(x0), Some(x1)) = (
                row.iter().position(|&l| l as usize == body),
                row.iter().rposition(|&l| l as usize == body),
            ) else {
                continue;
            };
            for x in x0..=x1 {
                out.push(f32::from(v.hu[v.geometry.index(x, y, k)]));
            }
        }
    }
    out
}

fn stats(values: &[f32]) -> Vec<Stats> {
    let total = values.len().max(1) as f64;
    CLASSES
        .iter()
        .map(|&(_, lo, hi)| {
            let mut c: Vec<f32> = values
                .iter()
                .copied()
                .filter(|&h| h >= lo && h < hi)
                .collect();
            c.sort_by(f32::total_cmp);
            let q = |f: f64| {
                if c.is_empty() {
                    f32::NAN
                } else {
                    c[((c.len() - 1) as f64 * f).round() as usize]
                }
            };
            Stats {
                fraction: c.len() as f64 / total,
                p5: q(0.05),
                median: q(0.5),
                p95: q(0.95),
            }
        })
        .collect()
}

/// Normalised HU histograms (10 HU bins, -1000..1200) drawn as two curves:
/// real in white, phantom in grey.
fn histogram_plot(real: &[f32], phantom: &[f32]) -> Gray {
    const LO: f32 = -1000.0;
    const BINS: usize = 220;
    let hist = |v: &[f32]| {
        let mut h = vec![0f64; BINS];
        for &x in v {
            let b = ((x - LO) / 10.0).floor();
            if b >= 0.0 && (b as usize) < BINS {
                h[b as usize] += 1.0;
            }
        }
        let n = v.len().max(1) as f64;
        h.iter().map(|c| c / n).collect::<Vec<f64>>()
    };
    let (hr, hp) = (hist(real), hist(phantom));
    // Log scale so the small bone fraction is visible next to fat and soft tissue.
    let (w, h, scale) = (BINS * 3, 240usize, 3usize);
    let mut px = vec![0u8; w * h];
    let to_y = |f: f64| {
        let l = (f.max(1e-6)).log10(); // -6 .. 0
        let t = ((l + 6.0) / 6.0).clamp(0.0, 1.0);
        (h - 1) - (t * (h - 1) as f64).round() as usize
    };
    // Axis ticks every 500 HU.
    for hu in (-1000..=1000).step_by(500) {
        let x = ((hu as f32 - LO) / 10.0) as usize * scale;
        for y in 0..h {
            if y % 4 == 0 && x < w {
                px[y * w + x] = 60;
            }
        }
    }
    for (curve, value) in [(&hp, 140u8), (&hr, 255u8)] {
        for b in 0..BINS - 1 {
            let (y0, y1) = (to_y(curve[b]), to_y(curve[b + 1]));
            for s in 0..scale {
                let x = b * scale + s;
                let y = y0 as f64 + (y1 as f64 - y0 as f64) * s as f64 / scale as f64;
                let yy = y.round() as usize;
                if x < w && yy < h {
                    px[yy * w + x] = value;
                    if yy + 1 < h {
                        px[(yy + 1) * w + x] = value;
                    }
                }
            }
        }
    }
    Gray {
        width: w,
        height: h,
        pixels: px,
    }
}

/// Column (i) of the sagittal plane through the spine: the centreline's mean position.
fn spine_column(v: &Volume) -> usize {
    match vcfd_model::spine::locate(v, &Default::default()) {
        Ok(c) if !c.points_mm.is_empty() => {
            let n = c.points_mm.len() as f64;
            let mean = [0, 1, 2].map(|a| c.points_mm.iter().map(|p| p[a]).sum::<f64>() / n);
            let i = v.geometry.patient_to_voxel(mean)[0].round();
            i.clamp(0.0, (v.geometry.dims[0] - 1) as f64) as usize
        }
        _ => v.geometry.dims[0] / 2,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let real = vcfd::dicom_in::load_series(std::slice::from_ref(&args.real))
        .with_context(|| format!("loading {}", args.real.display()))?;
    let opts = PhantomOptions {
        from_level: Some(Level::T11),
        to_level: Some(Level::L5),
        slice_thickness_mm: Some(3.0),
        slice_spacing_mm: Some(3.0),
        pixel_spacing_mm: Some(0.8),
        fracture_count: Some(0),
        ..Default::default()
    };
    let ph = generate(args.seed, &opts).context("rendering the phantom")?;
    let real_v = real.volume.resample_isotropic(3.0)?;
    let ph_v = ph.volume.resample_isotropic(3.0)?;
    let (rv, pv) = (body_values(&real_v), body_values(&ph_v));
    let (rs, ps) = (stats(&rv), stats(&pv));

    std::fs::create_dir_all(&args.out)?;
    let mm = 1.0;
    let sag = side_by_side(
        &[
            render(
                &real_v,
                Plane::Sagittal(spine_column(&real_v)),
                Window::BONE,
                mm,
            ),
            render(
                &ph_v,
                Plane::Sagittal(spine_column(&ph_v)),
                Window::BONE,
                mm,
            ),
        ],
        8,
    );
    let axial_at = |v: &Volume, z: f64| {
        let k = v.geometry.patient_to_voxel([0.0, 0.0, z])[2].round();
        k.clamp(0.0, (v.geometry.dims[2] - 1) as f64) as usize
    };
    let real_mid_z =
        real_v
            .geometry
            .voxel_to_patient([0.0, 0.0, (real_v.geometry.dims[2] / 2) as f64])[2];
    let l3 = ph
        .truth
        .vertebrae
        .iter()
        .find(|v| v.level == "L3")
        .map(|v| v.center_mm[2])
        .unwrap_or_else(|| {
            ph_v.geometry
                .voxel_to_patient([0.0, 0.0, (ph_v.geometry.dims[2] / 2) as f64])[2]
        });
    let ax = side_by_side(
        &[
            render(
                &real_v,
                Plane::Axial(axial_at(&real_v, real_mid_z)),
                Window::SOFT,
                mm,
            ),
            render(&ph_v, Plane::Axial(axial_at(&ph_v, l3)), Window::SOFT, mm),
        ],
        8,
    );
    write_png(&args.out.join("realism-sagittal.png"), &sag)?;
    write_png(&args.out.join("realism-axial.png"), &ax)?;
    write_png(
        &args.out.join("realism-histogram.png"),
        &histogram_plot(&rv, &pv),
    )?;

    println!(
        "real: {} ({} slices); phantom: seed {} {}..{}, 3 mm slices; both resampled to 3 mm",
        args.real.display(),
        real.volume.geometry.dims[2],
        args.seed,
        ph.acquisition.from_level.name(),
        ph.acquisition.to_level.name(),
    );
    println!("body voxels: real {}, phantom {}\n", rv.len(), pv.len());
    println!("| class | fraction real | fraction phantom | HU p5/median/p95 real | HU p5/median/p95 phantom |");
    println!("|---|---|---|---|---|");
    for (i, (name, _, _)) in CLASSES.iter().enumerate() {
        let (r, p) = (&rs[i], &ps[i]);
        println!(
            "| {name} | {:.3} | {:.3} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            r.fraction, p.fraction, r.p5, r.median, r.p95, p.p5, p.median, p.p95
        );
    }
    println!(
        "\nwrote realism-sagittal.png, realism-axial.png, realism-histogram.png to {}",
        args.out.display()
    );
    Ok(())
}
