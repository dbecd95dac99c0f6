//! How the scanner sees the phantom: slice profile, reconstruction kernel, correlated noise,
//! ring artifacts from a failing detector channel, and metal streaks.

use super::rng::Rng;
use super::spine::Level;
use crate::{Error, Result};
use std::str::FromStr;

/// Reconstruction kernel families (names as GE writes them; Siemens' Br36/Br40/Br64/Bl57 are
/// the same idea).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Soft,
    Standard,
    Bone,
    Lung,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Soft => "SOFT",
            Kernel::Standard => "STANDARD",
            Kernel::Bone => "BONE",
            Kernel::Lung => "LUNG",
        }
    }

    /// Gaussian point spread (sigma, mm) and edge enhancement (unsharp-mask gain).
    pub(crate) fn psf(self) -> (f64, f64) {
        match self {
            Kernel::Soft => (0.62, 0.0),
            Kernel::Standard => (0.48, 0.0),
            Kernel::Bone => (0.30, 0.55),
            Kernel::Lung => (0.36, 0.35),
        }
    }

    /// Grain of the noise texture (sigma of the correlating filter, mm): soft kernels give
    /// blotchy noise, sharp kernels fine grain.
    pub(crate) fn grain_mm(self) -> f64 {
        match self {
            Kernel::Soft => 0.95,
            Kernel::Standard => 0.75,
            Kernel::Bone => 0.45,
            Kernel::Lung => 0.55,
        }
    }

    /// Typical image noise range (HU sd) for the kernel at routine dose.
    pub(crate) fn noise_range(self) -> (f64, f64) {
        match self {
            Kernel::Soft => (8.0, 16.0),
            Kernel::Standard => (10.0, 22.0),
            Kernel::Bone => (24.0, 40.0),
            Kernel::Lung => (18.0, 32.0),
        }
    }
}

impl FromStr for Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kernel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "soft" | "b30f" | "br36" => Ok(Kernel::Soft),
            "standard" | "std" | "b40f" | "br40" => Ok(Kernel::Standard),
            "bone" | "sharp" | "b70f" | "br64" => Ok(Kernel::Bone),
            "lung" | "b60f" | "bl57" => Ok(Kernel::Lung),
            other => Err(Error::PhantomOption(format!(
                "unknown kernel {other:?} (soft, standard, bone, lung)"
            ))),
        }
    }
}

/// Ring artifacts to add: peak contrast and (optionally) the radii.
#[derive(Clone, Debug, PartialEq)]
pub struct RingSpec {
    /// Peak contrast of the strongest ring, HU.
    pub strength_hu: f64,
    /// Ring radii about the reconstruction centre, mm; `None`: 1-4 drawn from the seed.
    pub radii_mm: Option<Vec<f64>>,
}

/// Kind of metal in the spine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetalKind {
    /// Vertebroplasty/kyphoplasty cement in the body.
    Cement,
    /// Bilateral pedicle screws (with rods when several levels are instrumented).
    Screws,
}

impl MetalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetalKind::Cement => "cement",
            MetalKind::Screws => "screws",
        }
    }
}

/// Metal at one or more levels.
#[derive(Clone, Debug, PartialEq)]
pub struct MetalSpec {
    pub kind: MetalKind,
    pub levels: Vec<Level>,
}

impl FromStr for MetalSpec {
    type Err = Error;
    /// `cement:L1`, `screws:L3`, `screws:L2-L4` or `cement:T12,L1`.
    fn from_str(s: &str) -> Result<MetalSpec> {
        let (k, l) = s.split_once(':').ok_or_else(|| {
            Error::PhantomOption(format!(
                "metal {s:?}: expected KIND:LEVELS, e.g. cement:L1 or screws:L2-L4"
            ))
        })?;
        let kind = match k.trim().to_ascii_lowercase().as_str() {
            "cement" | "vertebroplasty" | "kyphoplasty" => MetalKind::Cement,
            "screws" | "screw" | "pedicle-screws" => MetalKind::Screws,
            other => {
                return Err(Error::PhantomOption(format!(
                    "unknown metal {other:?} (cement, screws)"
                )))
            }
        };
        let mut levels = Vec::new();
        for part in l.split(',') {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b): (Level, Level) = (a.parse()?, b.parse()?);
                let (lo, hi) = (a.min(b), a.max(b));
                levels.extend(Level::ALL.iter().copied().filter(|x| *x >= lo && *x <= hi));
            } else {
                levels.push(part.parse()?);
            }
        }
        levels.sort();
        levels.dedup();
        if levels.iter().any(|l| !l.is_graded()) {
            return Err(Error::PhantomOption(format!(
                "metal {s:?}: levels must be within T1..L5"
            )));
        }
        Ok(MetalSpec { kind, levels })
    }
}

/// How the study was acquired and reconstructed (what DICOM and truth.json report).
#[derive(Clone, Debug, PartialEq)]
pub struct Acquisition {
    pub slice_thickness_mm: f64,
    pub slice_spacing_mm: f64,
    pub pixel_spacing_mm: f64,
    pub kernel: String,
    pub kvp: f64,
    /// Image noise (HU sd) at the centre of the body.
    pub noise_hu: f64,
    /// Reconstruction (and data collection) centre, LPS mm; rings are concentric about it.
    pub reconstruction_center_mm: [f64; 3],
    pub contrast: bool,
    /// Requested/drawn coverage: the most cranial and most caudal level fully in view.
    pub from_level: Level,
    pub to_level: Level,
    /// Protocol that chose the coverage ("chest", "abdomen", "chest-abdomen", "spine", "custom").
    pub protocol: String,
}

/// Everything the per-slice post-processing needs.
pub(crate) struct PostProcess {
    pub nx: usize,
    pub ny: usize,
    pub ps: f64,
    pub x0: f64,
    pub y0: f64,
    pub kernel: Kernel,
    pub noise_hu: f64,
    pub center: [f64; 2],
    /// Rings: (radius mm, signed amplitude HU, angular modulation phase).
    pub rings: Vec<(f64, f64, f64)>,
    pub ideal: bool,
    pub seed: u64,
    /// Clamp of the stored values (12-bit CT scale).
    pub hu_max: f32,
}

impl PostProcess {
    /// Kernel blur, metal streaks, rings and noise for output slice `k`, in place.
    pub(crate) fn apply(&self, k: usize, img: &mut [f32], tmp: &mut Vec<f32>) {
        if !self.ideal {
            // Find metal before the kernel's overshoot can lift bone edges to metal values.
            let blobs = self.metal_blobs(img);
            let (sigma, unsharp) = self.kernel.psf();
            if unsharp > 0.0 {
                // Edge enhancement of sharp kernels: overshoot at bone and air edges.
                tmp.clear();
                tmp.extend_from_slice(img);
                gaussian(tmp, self.nx, self.ny, 1.1 / self.ps);
                for (v, b) in img.iter_mut().zip(tmp.iter()) {
                    *v += unsharp as f32 * (*v - *b);
                }
            }
            gaussian(img, self.nx, self.ny, sigma / self.ps);
            self.metal_streaks(k, img, &blobs);
        }
        self.add_rings(img);
        if !self.ideal && self.noise_hu > 0.0 {
            self.add_noise(k, img, tmp);
        }
        for v in img.iter_mut() {
            *v = v.clamp(-1024.0, self.hu_max);
        }
    }

    fn add_rings(&self, img: &mut [f32]) {
        if self.rings.is_empty() {
            return;
        }
        let sigma = 0.5f64.max(0.6 * self.ps);
        let reach = 4.0 * sigma;
        let rmax = self.rings.iter().map(|r| r.0).fold(0.0, f64::max) + reach;
        for j in 0..self.ny {
            let y = self.y0 + j as f64 * self.ps - self.center[1];
            if y.abs() > rmax {
                continue;
            }
            for i in 0..self.nx {
                let x = self.x0 + i as f64 * self.ps - self.center[0];
                let rho = (x * x + y * y).sqrt();
                for &(r, amp, phase) in &self.rings {
                    let d = rho - r;
                    if d.abs() < reach {
                        // A failing channel: constant radius, intensity varying slowly around.
                        let ang = y.atan2(x);
                        let m = 1.0 + 0.15 * (ang + phase).cos();
                        img[j * self.nx + i] +=
                            (amp * m * (-0.5 * (d / sigma).powi(2)).exp()) as f32;
                    }
                }
            }
        }
    }

    /// Metal cross-sections in a slice (centroid in pixels, pixel count), from cells of a
    /// coarse grid holding voxels above 1900 HU (cement and titanium; never bone).
    fn metal_blobs(&self, img: &[f32]) -> Vec<(f64, f64, f64)> {
        let cell = 24usize;
        let (gx, gy) = (self.nx.div_ceil(cell), self.ny.div_ceil(cell));
        let mut acc = vec![(0.0f64, 0.0f64, 0usize); gx * gy];
        let mut any = false;
        for j in 0..self.ny {
            for i in 0..self.nx {
                if img[j * self.nx + i] > 1900.0 {
                    let c = &mut acc[(j / cell) * gx + i / cell];
                    c.0 += i as f64;
                    c.1 += j as f64;
                    c.2 += 1;
                    any = true;
                }
            }
        }
        if !any {
            return Vec::new();
        }
        acc.iter()
            .filter(|c| c.2 >= 3)
            .map(|c| (c.0 / c.2 as f64, c.1 / c.2 as f64, c.2 as f64))
            .collect()
    }

    /// Streaks radiating from metal and a dark band between metal objects (beam hardening and
    /// photon starvation).
    fn metal_streaks(&self, k: usize, img: &mut [f32], blobs: &[(f64, f64, f64)]) {
        if blobs.is_empty() {
            return;
        }
        let mut r = Rng::stream(self.seed, "metal-streaks", k as u64);
        let mut lines = Vec::new();
        for &(bx, by, n) in blobs {
            let amp = 18.0 * n.sqrt();
            for _ in 0..8 {
                let th = r.range(0.0, std::f64::consts::PI);
                let a = amp * r.range(0.4, 1.0) * r.sign();
                lines.push((
                    bx,
                    by,
                    th.cos(),
                    th.sin(),
                    a,
                    r.range(0.8, 1.6),
                    60.0 / self.ps,
                ));
            }
        }
        // Dark bands between pairs of metal objects.
        let mut bands = Vec::new();
        for (a, &(ax, ay, an)) in blobs.iter().enumerate() {
            for &(bx, by, bn) in blobs.iter().skip(a + 1) {
                let d = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
                if d > 4.0 && d * self.ps < 120.0 {
                    let depth = 12.0 * an.min(bn).sqrt();
                    bands.push((
                        ax,
                        ay,
                        (bx - ax) / d,
                        (by - ay) / d,
                        d,
                        depth,
                        (an.min(bn) / std::f64::consts::PI).sqrt().max(2.0),
                    ));
                }
            }
        }
        for j in 0..self.ny {
            let y = j as f64;
            for i in 0..self.nx {
                let x = i as f64;
                let mut add = 0.0;
                for &(bx, by, c, s, a, w, l) in &lines {
                    let (dx, dy) = (x - bx, y - by);
                    let perp = dx * s - dy * c;
                    if perp.abs() > 3.0 * w {
                        continue;
                    }
                    let along = dx * c + dy * s;
                    add += a * (-(perp / w).powi(2)).exp() * (-along.abs() / l).exp();
                }
                for &(bx, by, c, s, len, depth, w) in &bands {
                    let (dx, dy) = (x - bx, y - by);
                    let along = dx * c + dy * s;
                    if along < 0.0 || along > len {
                        continue;
                    }
                    let perp = dx * s - dy * c;
                    add -= depth * (-(perp / w).powi(2)).exp();
                }
                if add != 0.0 {
                    img[j * self.nx + i] += add as f32;
                }
            }
        }
    }

    /// Correlated noise: white noise filtered to the kernel's grain with its low frequencies
    /// suppressed (the ring-shaped noise power spectrum of filtered back projection), scaled to
    /// the requested sd at the body centre, lower in air and towards the body surface.
    fn add_noise(&self, k: usize, img: &mut [f32], tmp: &mut Vec<f32>) {
        let n = self.nx * self.ny;
        let mut r = Rng::stream(self.seed, "image-noise", k as u64);
        tmp.clear();
        tmp.extend((0..n).map(|_| r.sym_f32()));
        let s1 = (self.kernel.grain_mm() / self.ps).max(0.35);
        gaussian(tmp, self.nx, self.ny, s1);
        let mut wide = tmp.clone();
        let half = box_half_width(s1);
        box3(&mut wide, self.nx, self.ny, half);
        let lambda = 0.85f32;
        for (v, w) in tmp.iter_mut().zip(wide.iter()) {
            *v -= lambda * *w;
        }
        let sd = filtered_sd(&kernel1d(s1), &box3_kernel(half), f64::from(lambda));
        let scale = (self.noise_hu / sd) as f32;
        // Noise is highest at the centre of the body (longest paths), separable in x and y.
        let s2 = 150.0f64 * 150.0;
        let ex: Vec<f32> = (0..self.nx)
            .map(|i| {
                let x = self.x0 + i as f64 * self.ps - self.center[0];
                (-(x * x) / s2).exp() as f32
            })
            .collect();
        for j in 0..self.ny {
            let y = self.y0 + j as f64 * self.ps - self.center[1];
            let ey = (-(y * y) / s2).exp() as f32;
            let row = &mut img[j * self.nx..(j + 1) * self.nx];
            let nrow = &tmp[j * self.nx..(j + 1) * self.nx];
            for ((v, nz), e) in row.iter_mut().zip(nrow).zip(&ex) {
                let body = if *v > -850.0 { 1.0 } else { 0.6 };
                let central = (0.85 + 0.3 * e * ey) * (1.0 / 1.15);
                *v += nz * scale * body * central;
            }
        }
    }
}

/// Half width (pixels) of the box whose triple pass suppresses frequencies below the grain.
fn box_half_width(s1: f64) -> usize {
    // Three passes of a box of width 2h+1 have variance 3 * ((2h+1)^2 - 1) / 12; aim at
    // sigma = 3 * s1.
    let target = 3.0 * s1;
    let w = (4.0 * target * target / 3.0 * 3.0 + 1.0).sqrt();
    (((w - 1.0) / 2.0).round() as usize).max(1)
}

/// The 1D kernel of three box passes of half width h.
fn box3_kernel(h: usize) -> Vec<f64> {
    let b = vec![1.0 / (2 * h + 1) as f64; 2 * h + 1];
    let conv = |a: &[f64], b: &[f64]| {
        let mut c = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                c[i + j] += x * y;
            }
        }
        c
    };
    conv(&conv(&b, &b), &b)
}

/// Three passes of a running-sum box filter along rows and columns (a cheap wide Gaussian).
/// The vertical passes keep running sums of whole rows, so they vectorise and stay in cache.
fn box3(img: &mut [f32], nx: usize, ny: usize, h: usize) {
    let inv = 1.0 / (2 * h + 1) as f32;
    let mut line = vec![0.0f32; nx + 2 * h + 1];
    for j in 0..ny {
        let row = &mut img[j * nx..(j + 1) * nx];
        for _ in 0..3 {
            line[h..h + nx].copy_from_slice(row);
            let (first, last) = (row[0], row[nx - 1]);
            line[..h].fill(first);
            line[h + nx..].fill(last);
            let mut acc: f32 = line[..2 * h + 1].iter().sum();
            for (i, o) in row.iter_mut().enumerate() {
                *o = acc * inv;
                acc += line[i + 2 * h + 1] - line[i];
            }
        }
    }
    let mut src = img.to_vec();
    let mut acc = vec![0.0f32; nx];
    for pass in 0..3 {
        if pass > 0 {
            src.copy_from_slice(img);
        }
        let row = |j: isize| {
            let jj = j.clamp(0, ny as isize - 1) as usize;
            &src[jj * nx..(jj + 1) * nx]
        };
        acc.fill(0.0);
        for j in -(h as isize)..=h as isize {
            for (a, v) in acc.iter_mut().zip(row(j)) {
                *a += v;
            }
        }
        for j in 0..ny {
            let out = &mut img[j * nx..(j + 1) * nx];
            for (o, a) in out.iter_mut().zip(&acc) {
                *o = a * inv;
            }
            let (add, sub) = (
                row(j as isize + h as isize + 1),
                row(j as isize - h as isize),
            );
            for ((a, p), m) in acc.iter_mut().zip(add).zip(sub) {
                *a += p - m;
            }
        }
    }
}

/// Standard deviation of uniform [-1,1] white noise after `G - lambda * B * G` (G the grain
/// Gaussian, B the wide low-pass), computed from the discrete kernels so the requested HU sd
/// comes out exactly.
fn filtered_sd(g1: &[f64], g2: &[f64], lambda: f64) -> f64 {
    // c = g2 * g1 (1D convolution).
    let n = g1.len() + g2.len() - 1;
    let mut c = vec![0.0; n];
    for (i, a) in g2.iter().enumerate() {
        for (j, b) in g1.iter().enumerate() {
            c[i + j] += a * b;
        }
    }
    // Align g1 inside c's support.
    let off = (g2.len() - 1) / 2;
    let mut g1c = vec![0.0; n];
    for (j, v) in g1.iter().enumerate() {
        g1c[j + off] = *v;
    }
    let s_gg: f64 = g1c.iter().map(|v| v * v).sum();
    let s_gc: f64 = g1c.iter().zip(&c).map(|(a, b)| a * b).sum();
    let s_cc: f64 = c.iter().map(|v| v * v).sum();
    // 2D separable: h = g1 (x) g1 - lambda c (x) c.
    let var_h = s_gg * s_gg - 2.0 * lambda * s_gc * s_gc + lambda * lambda * s_cc * s_cc;
    (var_h / 3.0).sqrt()
}

fn kernel1d(sigma: f64) -> Vec<f64> {
    if sigma < 0.05 {
        return vec![1.0];
    }
    let r = (3.0 * sigma).ceil() as i64;
    let mut k: Vec<f64> = (-r..=r)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    for v in k.iter_mut() {
        *v /= s;
    }
    k
}

/// Separable Gaussian blur in place (edges clamped). Both passes run along rows so the inner
/// loops vectorise and stay in cache.
pub(crate) fn gaussian(img: &mut [f32], nx: usize, ny: usize, sigma_px: f64) {
    let k = kernel1d(sigma_px);
    if k.len() == 1 {
        return;
    }
    let kf: Vec<f32> = k.iter().map(|&v| v as f32).collect();
    let r = kf.len() / 2;
    // Horizontal: pad each row with its edge values, then accumulate shifted copies.
    let mut line = vec![0.0f32; nx + 2 * r];
    for j in 0..ny {
        let row = &mut img[j * nx..(j + 1) * nx];
        line[r..r + nx].copy_from_slice(row);
        let (first, last) = (row[0], row[nx - 1]);
        line[..r].fill(first);
        line[r + nx..].fill(last);
        row.fill(0.0);
        for (t, &w) in kf.iter().enumerate() {
            for (o, &v) in row.iter_mut().zip(&line[t..t + nx]) {
                *o += w * v;
            }
        }
    }
    // Vertical: each output row is a weighted sum of input rows.
    let src = img.to_vec();
    for j in 0..ny {
        let out = &mut img[j * nx..(j + 1) * nx];
        out.fill(0.0);
        for (t, &w) in kf.iter().enumerate() {
            let jj = (j as isize + t as isize - r as isize).clamp(0, ny as isize - 1) as usize;
            for (o, &v) in out.iter_mut().zip(&src[jj * nx..(jj + 1) * nx]) {
                *o += w * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_requested_sd() {
        let (nx, ny) = (256, 256);
        for kernel in [Kernel::Soft, Kernel::Bone] {
            let pp = PostProcess {
                nx,
                ny,
                ps: 0.7,
                x0: -1e6,
                y0: -1e6,
                kernel,
                noise_hu: 20.0,
                center: [0.0, 0.0],
                rings: vec![],
                ideal: false,
                seed: 3,
                hu_max: 3071.0,
            };
            let mut img = vec![0.0f32; nx * ny];
            let mut tmp = Vec::new();
            pp.add_noise(0, &mut img, &mut tmp);
            let n = img.len() as f64;
            let mean = img.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let sd = (img
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            // Far from the centre the central boost is gone: sd = 20 * 0.85 / 1.15.
            let expect = 20.0 * 0.85 / 1.15;
            assert!(
                (sd - expect).abs() / expect < 0.06,
                "{kernel:?}: sd {sd} vs {expect}"
            );
        }
    }

    #[test]
    fn metal_spec_parses_ranges() {
        let m: MetalSpec = "screws:L2-L4".parse().unwrap();
        assert_eq!(m.levels, vec![Level::L2, Level::L3, Level::L4]);
        let c: MetalSpec = "cement:T12,L1".parse().unwrap();
        assert_eq!((c.kind, c.levels.len()), (MetalKind::Cement, 2));
        assert!("glass:L1".parse::<MetalSpec>().is_err());
    }
}
