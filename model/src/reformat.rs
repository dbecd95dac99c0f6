//! Curved sagittal reformat: the spine straightened along its centreline.
//!
//! Row `r` of the image lies at arc length `r * pixel_mm` below the cranial end of the
//! centreline; column `c` lies `(c - c0) * pixel_mm` posterior of it (anterior on the left, as
//! radiologists view sagittal images). Each pixel is the mean of a slab `slab_mm` thick across
//! the patient's left-right direction, which keeps a scoliotic body in view. The mapping back to
//! patient space is exact (piecewise-linear frames), so keypoints found in the image become
//! measurements in mm in the patient, where heights are measured: straightening distorts the
//! image, never the measurement.

use crate::spine::Centreline;
use crate::volume::{cross, dot, norm, Volume};
use crate::{Error, Result};
use rayon::prelude::*;

/// Size and sampling of the reformat.
#[derive(Clone, Debug)]
pub struct ReformatOptions {
    /// Pixel size along both image axes, mm.
    pub pixel_mm: f64,
    /// Half the anterior-posterior field, mm, centred on the centreline.
    pub half_width_mm: f64,
    /// Slab thickness across the left-right direction, mm.
    pub slab_mm: f64,
    /// Distance between samples across the slab, mm.
    pub slab_step_mm: f64,
    /// The central part of the slab averaged separately into [`Reformat::thin`], mm.
    pub thin_slab_mm: f64,
}

impl Default for ReformatOptions {
    fn default() -> Self {
        Self {
            pixel_mm: 1.0,
            half_width_mm: 48.0,
            slab_mm: 10.0,
            slab_step_mm: 1.0,
            thin_slab_mm: 2.0,
        }
    }
}

/// Local frame of one reformat row, in LPS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    /// Point on the centreline.
    pub origin: [f64; 3],
    /// Unit vector towards the head.
    pub cranial: [f64; 3],
    /// Unit vector towards the back, orthogonal to `cranial`.
    pub posterior: [f64; 3],
    /// `cranial x posterior`: across the slab.
    pub lateral: [f64; 3],
}

/// The straightened spine image and its geometry.
#[derive(Clone, Debug)]
pub struct Reformat {
    pub width: usize,
    pub height: usize,
    /// Mean HU over the slab, row-major, row 0 cranial.
    pub pixels: Vec<f32>,
    /// Mean HU over the slab's central [`ReformatOptions::thin_slab_mm`], same grid: the
    /// body's mid-sagittal plane, where the keypoints are defined. The wide slab keeps a
    /// scoliotic body in view but averages a central endplate depression with the shallower
    /// bone beside it; the endplate refinement reads both.
    pub thin: Vec<f32>,
    /// One frame per row.
    pub frames: Vec<Frame>,
    pub pixel_mm: f64,
}

fn add(a: [f64; 3], b: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn unit(a: [f64; 3]) -> [f64; 3] {
    let n = norm(a).max(1e-12);
    [a[0] / n, a[1] / n, a[2] / n]
}

impl Reformat {
    /// Column of the centreline.
    pub fn center_col(&self) -> f64 {
        (self.width as f64 - 1.0) / 2.0
    }

    /// Frame at a fractional row: linear interpolation between neighbouring rows.
    fn frame_at(&self, row: f64) -> Frame {
        let last = self.frames.len() - 1;
        let r = row.clamp(0.0, last as f64);
        let r0 = (r.floor() as usize).min(last);
        let r1 = (r0 + 1).min(last);
        let t = r - r0 as f64;
        let (a, b) = (&self.frames[r0], &self.frames[r1]);
        let lerp = |x: [f64; 3], y: [f64; 3]| {
            [
                x[0] + t * (y[0] - x[0]),
                x[1] + t * (y[1] - x[1]),
                x[2] + t * (y[2] - x[2]),
            ]
        };
        // Extrapolate linearly past the ends so the mapping stays invertible there too.
        let origin = if row < 0.0 {
            add(
                a.origin,
                sub(a.origin, self.frames[1.min(last)].origin),
                -row,
            )
        } else if row > last as f64 {
            let prev = self.frames[last.saturating_sub(1)].origin;
            add(b.origin, sub(b.origin, prev), row - last as f64)
        } else {
            lerp(a.origin, b.origin)
        };
        Frame {
            origin,
            cranial: lerp(a.cranial, b.cranial),
            posterior: lerp(a.posterior, b.posterior),
            lateral: lerp(a.lateral, b.lateral),
        }
    }

    /// Patient position (LPS mm) of image point (col, row) at `lateral_mm` across the slab.
    pub fn to_patient(&self, col: f64, row: f64, lateral_mm: f64) -> [f64; 3] {
        let f = self.frame_at(row);
        let u = (col - self.center_col()) * self.pixel_mm;
        add(add(f.origin, f.posterior, u), f.lateral, lateral_mm)
    }

    /// Image point (col, row, lateral_mm) of a patient position: the exact inverse of
    /// [`Self::to_patient`] for points within the image's rows; `None` beyond its ends.
    pub fn from_patient(&self, p: [f64; 3]) -> Option<(f64, f64, f64)> {
        if self.frames.len() < 2 {
            return None;
        }
        // g(row): signed distance of p from the plane of that row (spanned by its interpolated
        // posterior and lateral vectors); zero exactly where to_patient can reach p.
        let g = |row: f64| {
            let f = self.frame_at(row);
            dot(sub(p, f.origin), unit(cross(f.posterior, f.lateral)))
        };
        // Bracket: nearest row by distance, then the sign change around it.
        let nearest = self
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i, norm(sub(p, f.origin))))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)?;
        let last = (self.frames.len() - 1) as f64;
        let (mut lo, mut hi) = (
            (nearest as f64 - 3.0).max(-0.5),
            (nearest as f64 + 3.0).min(last + 0.5),
        );
        if g(lo) * g(hi) > 0.0 {
            return None;
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if g(lo) * g(mid) <= 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let row = 0.5 * (lo + hi);
        let f = self.frame_at(row);
        let d = sub(p, f.origin);
        // Solve d = u * posterior + w * lateral in the (not quite orthogonal) plane basis.
        let (pp, ll, pl) = (
            dot(f.posterior, f.posterior),
            dot(f.lateral, f.lateral),
            dot(f.posterior, f.lateral),
        );
        let (dp, dl) = (dot(d, f.posterior), dot(d, f.lateral));
        let det = pp * ll - pl * pl;
        if det.abs() < 1e-12 {
            return None;
        }
        let u = (dp * ll - dl * pl) / det;
        let lat = (dl * pp - dp * pl) / det;
        let col = u / self.pixel_mm + self.center_col();
        // Interpolated frames are only nearly orthonormal: verify rather than assume.
        let back = self.to_patient(col, row, lat);
        (norm(sub(back, p)) < 1e-3).then_some((col, row, lat))
    }
}

/// Builds the reformat from a centreline (from [`crate::spine::locate`]).
pub fn curved_sagittal(
    volume: &Volume,
    line: &Centreline,
    opts: &ReformatOptions,
) -> Result<Reformat> {
    if line.points_mm.len() < 2 {
        return Err(Error::Reformat(
            "centreline has fewer than two points".into(),
        ));
    }
    // Order cranial first (LPS z grows towards the head).
    let mut pts = line.points_mm.clone();
    if pts[0][2] < pts[pts.len() - 1][2] {
        pts.reverse();
    }
    let mut arc = vec![0.0f64; pts.len()];
    for i in 1..pts.len() {
        arc[i] = arc[i - 1] + norm(sub(pts[i], pts[i - 1]));
    }
    let total = arc[arc.len() - 1];
    if total < 2.0 * opts.pixel_mm {
        return Err(Error::Reformat(format!(
            "centreline only {total:.1} mm long"
        )));
    }
    let height = (total / opts.pixel_mm).floor() as usize + 1;
    let at = |s: f64| {
        let i = arc.partition_point(|&a| a <= s).clamp(1, arc.len() - 1);
        let t = ((s - arc[i - 1]) / (arc[i] - arc[i - 1]).max(1e-9)).clamp(0.0, 1.0);
        add(pts[i - 1], sub(pts[i], pts[i - 1]), t)
    };
    let frames: Vec<Frame> = (0..height)
        .map(|r| {
            let s = r as f64 * opts.pixel_mm;
            let origin = at(s);
            let h = 2.0 * opts.pixel_mm;
            let cranial = unit(sub(at((s - h).max(0.0)), at((s + h).min(total))));
            let y = [0.0, 1.0, 0.0];
            let posterior = unit(add(y, cranial, -dot(y, cranial)));
            let lateral = cross(cranial, posterior);
            Frame {
                origin,
                cranial,
                posterior,
                lateral,
            }
        })
        .collect();
    let width = (2.0 * opts.half_width_mm / opts.pixel_mm).round() as usize + 1;
    let n_slab = (opts.slab_mm / opts.slab_step_mm).round() as usize + 1;
    let slab0 = -opts.slab_step_mm * (n_slab - 1) as f64 / 2.0;
    let mut image = Reformat {
        width,
        height,
        pixels: Vec::new(),
        thin: Vec::new(),
        frames,
        pixel_mm: opts.pixel_mm,
    };
    let c0 = image.center_col();
    let thin_half = 0.5 * opts.thin_slab_mm + 1e-9;
    let (pixels, thin): (Vec<f32>, Vec<f32>) = (0..height)
        .into_par_iter()
        .flat_map_iter(|r| {
            let f = image.frames[r];
            (0..width).map(move |c| (f, r, c))
        })
        .map(|(f, _r, c)| {
            let u = (c as f64 - c0) * opts.pixel_mm;
            let base = add(f.origin, f.posterior, u);
            let (mut acc, mut n, mut acc_thin, mut n_thin) = (0f64, 0f64, 0f64, 0f64);
            for k in 0..n_slab {
                let w = slab0 + k as f64 * opts.slab_step_mm;
                if let Some(v) = volume.sample_patient(add(base, f.lateral, w)) {
                    acc += f64::from(v);
                    n += 1.0;
                    if w.abs() <= thin_half {
                        acc_thin += f64::from(v);
                        n_thin += 1.0;
                    }
                }
            }
            let mean = |a: f64, n: f64| if n > 0.0 { (a / n) as f32 } else { -1024.0 };
            (mean(acc, n), mean(acc_thin, n_thin))
        })
        .unzip();
    image.thin = thin;
    image.pixels = pixels;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn curved_line() -> Centreline {
        // A kyphotic and scoliotic curve: both lateral and AP displacement along z.
        let points_mm = (0..60)
            .map(|k| {
                let z = 200.0 + 3.0 * k as f64;
                let t = (z - 200.0) / 180.0;
                [20.0 * (t * 3.1).sin(), -30.0 + 25.0 * (t * 2.0).cos(), z]
            })
            .collect();
        Centreline {
            points_mm,
            score: vec![1.0; 60],
        }
    }

    fn volume() -> Volume {
        let g = Geometry::axial([60, 60, 70], [-60.0, -90.0, 195.0], [2.0, 2.0, 3.0]);
        let mut hu = vec![0i16; g.len()];
        for k in 0..70 {
            for j in 0..60 {
                for i in 0..60 {
                    let p = g.voxel_to_patient([i as f64, j as f64, k as f64]);
                    hu[g.index(i, j, k)] = (p[1] * 2.0) as i16;
                }
            }
        }
        Volume::new(g, hu).unwrap()
    }

    #[test]
    fn patient_image_round_trip_is_exact() {
        let r = curved_sagittal(&volume(), &curved_line(), &ReformatOptions::default()).unwrap();
        assert!(r.height > 150);
        for &(col, row, lat) in &[(48.0, 10.0, 0.0), (20.5, 77.25, 3.0), (90.0, 140.6, -4.5)] {
            let p = r.to_patient(col, row, lat);
            let (c2, r2, l2) = r.from_patient(p).expect("inside");
            assert!((c2 - col).abs() < 1e-6, "{col} {c2}");
            assert!((r2 - row).abs() < 1e-6, "{row} {r2}");
            assert!((l2 - lat).abs() < 1e-6);
        }
        // Row 0 is cranial; the centre column lies on the centreline.
        let top = r.to_patient(r.center_col(), 0.0, 0.0);
        assert!((top[2] - 377.0).abs() < 1.0);
    }

    #[test]
    fn distances_along_a_row_are_millimetres_in_the_patient() {
        let r = curved_sagittal(&volume(), &curved_line(), &ReformatOptions::default()).unwrap();
        let a = r.to_patient(10.0, 50.0, 0.0);
        let b = r.to_patient(40.0, 50.0, 0.0);
        assert!((norm(sub(a, b)) - 30.0).abs() < 1e-9);
        // Pixels sample the volume: HU = 2 * y_mm at the slab's centre.
        let p = r.to_patient(30.0, 60.0, 0.0);
        let v = r.pixels[60 * r.width + 30];
        assert!(
            (f64::from(v) - 2.0 * p[1]).abs() < 3.0,
            "{v} vs {}",
            2.0 * p[1]
        );
    }
}
