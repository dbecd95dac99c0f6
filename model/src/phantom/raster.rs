//! Painting analytic shapes into one axial plane with partial-volume edges.
//!
//! Every shape is painted only inside its bounding box in the plane, front to back, as
//! `value += coverage * (tissue - value)`, where coverage is the fraction of the voxel inside the
//! shape (estimated from a signed distance and the voxel's extent along the surface normal).
//! That gives the partial-volume edges a real scanner produces without supersampling in-plane.

use super::math::{coverage, cross, dot, norm, smin, sub, Curve, V3};
use super::rng::Noise3;

/// One axial sampling plane (a sub-slice of an output slice).
pub(crate) struct Plane {
    pub z: f64,
    pub nx: usize,
    pub ny: usize,
    /// Centre of pixel (0, 0), LPS mm.
    pub x0: f64,
    pub y0: f64,
    pub dx: f64,
    pub dy: f64,
    /// Thickness this plane stands for: the edge width of surfaces facing along z.
    pub wz: f64,
    /// False in ideal (geometry test) renders: no tissue texture.
    pub textured: bool,
}

impl Plane {
    #[inline]
    pub(crate) fn x(&self, i: usize) -> f64 {
        self.x0 + i as f64 * self.dx
    }

    #[inline]
    pub(crate) fn y(&self, j: usize) -> f64 {
        self.y0 + j as f64 * self.dy
    }

    /// Columns whose centres lie in [lo, hi] (empty range when none).
    pub(crate) fn cols(&self, lo: f64, hi: f64) -> (usize, usize) {
        span(lo, hi, self.x0, self.dx, self.nx)
    }

    /// Rows whose centres lie in [lo, hi].
    pub(crate) fn rows(&self, lo: f64, hi: f64) -> (usize, usize) {
        span(lo, hi, self.y0, self.dy, self.ny)
    }

    /// Width of a voxel measured along a unit normal: the ramp width of a partial-volume edge.
    #[inline]
    pub(crate) fn edge_w(&self, n: V3) -> f64 {
        (n[0].abs() * self.dx + n[1].abs() * self.dy + n[2].abs() * self.wz).max(1e-3)
    }

    /// In-plane edge width for surfaces whose normal lies in the axial plane.
    #[inline]
    pub(crate) fn w_xy(&self) -> f64 {
        0.5 * (self.dx + self.dy)
    }
}

fn span(lo: f64, hi: f64, o: f64, d: f64, n: usize) -> (usize, usize) {
    if !(hi >= lo) || n == 0 {
        return (0, 0);
    }
    let a = ((lo - o) / d).ceil().max(0.0);
    let b = ((hi - o) / d).floor() + 1.0;
    let b = b.min(n as f64);
    if b <= a {
        (0, 0)
    } else {
        (a as usize, b as usize)
    }
}

/// Paints `hu` over the current value with coverage `a`.
#[inline]
pub(crate) fn blend(px: &mut f32, hu: f64, a: f64) {
    if a > 0.0 {
        *px += (a * (hu - f64::from(*px))) as f32;
    }
}

/// Fill of a region: a base HU plus optional 3D texture.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fill {
    pub hu: f64,
    /// Texture amplitude (HU, about the peak deviation).
    pub amp: f64,
    /// Texture feature size (mm).
    pub cell: f64,
}

impl Fill {
    pub(crate) fn solid(hu: f64) -> Fill {
        Fill {
            hu,
            amp: 0.0,
            cell: 1.0,
        }
    }

    pub(crate) fn tex(hu: f64, amp: f64, cell: f64) -> Fill {
        Fill { hu, amp, cell }
    }

    #[inline]
    pub(crate) fn at(&self, noise: &Noise3, p: V3, plane: &Plane) -> f64 {
        if self.amp == 0.0 || !plane.textured {
            self.hu
        } else {
            self.hu + self.amp * f64::from(noise.fbm2(p, self.cell))
        }
    }
}

/// A capsule with linearly varying radius (a cone with spherical caps, approximately).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capsule {
    pub a: V3,
    pub b: V3,
    pub ra: f64,
    pub rb: f64,
}

impl Capsule {
    pub(crate) fn new(a: V3, b: V3, ra: f64, rb: f64) -> Capsule {
        Capsule { a, b, ra, rb }
    }

    /// Approximate signed distance and the unit direction away from the axis.
    #[inline]
    pub(crate) fn dist(&self, p: V3) -> (f64, V3) {
        let ab = sub(self.b, self.a);
        let ap = sub(p, self.a);
        let l2 = dot(ab, ab);
        let t = if l2 > 0.0 {
            (dot(ap, ab) / l2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let q = [ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]];
        let r = self.ra + t * (self.rb - self.ra);
        let l = norm(q);
        let n = if l > 1e-9 {
            [q[0] / l, q[1] / l, q[2] / l]
        } else {
            [1.0, 0.0, 0.0]
        };
        (l - r, n)
    }

    fn rmax(&self) -> f64 {
        self.ra.max(self.rb)
    }

    /// In-plane bounding box of the part of the capsule within `margin` of plane z, if any.
    fn bbox_at(&self, z: f64, margin: f64) -> Option<[f64; 4]> {
        let r = self.rmax() + margin;
        let (za, zb) = (self.a[2], self.b[2]);
        if z < za.min(zb) - r || z > za.max(zb) + r {
            return None;
        }
        // Parameter range where the axis is within r of the plane.
        let (t0, t1) = if (zb - za).abs() < 1e-9 {
            (0.0, 1.0)
        } else {
            let ta = (z - r - za) / (zb - za);
            let tb = (z + r - za) / (zb - za);
            (ta.min(tb).clamp(0.0, 1.0), ta.max(tb).clamp(0.0, 1.0))
        };
        let pa = [
            self.a[0] + t0 * (self.b[0] - self.a[0]),
            self.a[1] + t0 * (self.b[1] - self.a[1]),
        ];
        let pb = [
            self.a[0] + t1 * (self.b[0] - self.a[0]),
            self.a[1] + t1 * (self.b[1] - self.a[1]),
        ];
        Some([
            pa[0].min(pb[0]) - r,
            pa[0].max(pb[0]) + r,
            pa[1].min(pb[1]) - r,
            pa[1].max(pb[1]) + r,
        ])
    }
}

/// A union of capsules painted as one object: a bone (cortex + marrow), a vessel (wall +
/// lumen) or an airway. Smooth union joins the pieces without seams.
#[derive(Clone, Debug)]
pub(crate) struct CapsuleSet {
    pub caps: Vec<Capsule>,
    /// Fillet size of the smooth union (mm).
    pub blend_k: f64,
    /// Outer layer (cortex, vessel wall).
    pub outer: Fill,
    /// Interior (marrow, lumen); painted `inset` mm inside the outer surface. `None`: solid.
    pub inner: Option<Fill>,
    pub inset: f64,
    zlo: f64,
    zhi: f64,
}

impl CapsuleSet {
    pub(crate) fn new(caps: Vec<Capsule>, blend_k: f64, outer: Fill, inner: Option<Fill>, inset: f64) -> Self {
        let zlo = caps
            .iter()
            .map(|c| (c.a[2] - c.ra).min(c.b[2] - c.rb))
            .fold(f64::INFINITY, f64::min);
        let zhi = caps
            .iter()
            .map(|c| (c.a[2] + c.ra).max(c.b[2] + c.rb))
            .fold(f64::NEG_INFINITY, f64::max);
        CapsuleSet {
            caps,
            blend_k,
            outer,
            inner,
            inset,
            zlo: zlo - blend_k,
            zhi: zhi + blend_k,
        }
    }

    pub(crate) fn z_range(&self) -> (f64, f64) {
        (self.zlo, self.zhi)
    }

    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        let margin = plane.wz + self.blend_k + plane.w_xy();
        if plane.z < self.zlo - margin || plane.z > self.zhi + margin {
            return;
        }
        // Active capsules and their boxes, merged into clusters of overlapping boxes so a rib
        // crossing the plane twice is not evaluated over the empty space between crossings.
        let mut boxes: Vec<([f64; 4], Vec<usize>)> = Vec::new();
        for (i, c) in self.caps.iter().enumerate() {
            if let Some(b) = c.bbox_at(plane.z, margin) {
                boxes.push((b, vec![i]));
            }
        }
        if boxes.is_empty() {
            return;
        }
        let grow = self.blend_k + 1.0;
        loop {
            let mut merged = false;
            'outer: for i in 0..boxes.len() {
                for j in i + 1..boxes.len() {
                    let (a, b) = (boxes[i].0, boxes[j].0);
                    if a[0] <= b[1] + grow && b[0] <= a[1] + grow && a[2] <= b[3] + grow && b[2] <= a[3] + grow {
                        let (bj, mut ij) = boxes.swap_remove(j);
                        boxes[i].0 = [a[0].min(bj[0]), a[1].max(bj[1]), a[2].min(bj[2]), a[3].max(bj[3])];
                        boxes[i].1.append(&mut ij);
                        merged = true;
                        break 'outer;
                    }
                }
            }
            if !merged {
                break;
            }
        }
        for (bb, idx) in &boxes {
            let (c0, c1) = plane.cols(bb[0], bb[1]);
            let (r0, r1) = plane.rows(bb[2], bb[3]);
            for j in r0..r1 {
                let y = plane.y(j);
                let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
                for (i, px) in row.iter_mut().enumerate().take(c1).skip(c0) {
                    let p = [plane.x(i), y, plane.z];
                    let mut d = f64::INFINITY;
                    let mut dmin = f64::INFINITY;
                    let mut n = [1.0, 0.0, 0.0];
                    for &k in idx {
                        let (dk, nk) = self.caps[k].dist(p);
                        if dk < dmin {
                            dmin = dk;
                            n = nk;
                        }
                        d = smin(d, dk, self.blend_k);
                    }
                    if d > margin {
                        continue;
                    }
                    let w = plane.edge_w(n);
                    blend(px, self.outer.at(noise, p, plane), coverage(d, w));
                    if let Some(inner) = &self.inner {
                        let a = coverage(d + self.inset, w);
                        if a > 0.0 {
                            blend(px, inner.at(noise, p, plane), a);
                        }
                    }
                }
            }
        }
    }
}

/// Paints one solid capsule (no union, no interior): the fast path for vessel trees.
pub(crate) fn paint_capsule(c: &Capsule, fill: &Fill, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
    let margin = plane.wz + plane.w_xy();
    let Some(bb) = c.bbox_at(plane.z, margin) else {
        return;
    };
    let (c0, c1) = plane.cols(bb[0], bb[1]);
    let (r0, r1) = plane.rows(bb[2], bb[3]);
    for j in r0..r1 {
        let y = plane.y(j);
        let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
        for (i, px) in row.iter_mut().enumerate().take(c1).skip(c0) {
            let p = [plane.x(i), y, plane.z];
            let (d, n) = c.dist(p);
            if d > margin {
                continue;
            }
            blend(px, fill.at(noise, p, plane), coverage(d, plane.edge_w(n)));
        }
    }
}

/// A lofted organ: an ellipse (with low-frequency radial harmonics for an organic outline)
/// whose centre, radii and rotation follow keyframes along z.
#[derive(Clone, Debug)]
pub(crate) struct Loft {
    pub cx: Curve,
    pub cy: Curve,
    pub ax: Curve,
    pub ay: Curve,
    /// In-plane rotation of the ellipse (rad).
    pub rot: Curve,
    /// Radial harmonics k = 2..=5 as (cos, sin) fractions of the radius.
    pub harm: [(f64, f64); 4],
    pub fill: Fill,
    zlo: f64,
    zhi: f64,
}

impl Loft {
    pub(crate) fn new(cx: Curve, cy: Curve, ax: Curve, ay: Curve, rot: Curve, harm: [(f64, f64); 4], fill: Fill) -> Loft {
        let zlo = ax.first_x().max(ay.first_x());
        let zhi = ax.last_x().min(ay.last_x());
        Loft {
            cx,
            cy,
            ax,
            ay,
            rot,
            harm,
            fill,
            zlo,
            zhi,
        }
    }

    /// Radius profile keys of an ellipsoid-like body (blunt ends), from z0 to z1.
    pub(crate) fn ellipsoid_keys(z0: f64, z1: f64, r: f64) -> Vec<(f64, f64)> {
        let zc = 0.5 * (z0 + z1);
        let h = 0.5 * (z1 - z0);
        [-1.0, -0.97, -0.85, -0.6, -0.3, 0.0, 0.3, 0.6, 0.85, 0.97, 1.0]
            .iter()
            .map(|&t: &f64| (zc + t * h, r * (1.0 - t * t).max(0.0).sqrt()))
            .collect()
    }

    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        self.paint_with(plane, buf, noise, |_, _| true);
    }

    /// Paints, skipping points for which `keep(x, y)` is false (e.g. outside a cavity).
    pub(crate) fn paint_with(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3, keep: impl Fn(f64, f64) -> bool) {
        let z = plane.z;
        if z < self.zlo || z > self.zhi {
            return;
        }
        let (ax, ay) = (self.ax.at(z), self.ay.at(z));
        if ax < 0.2 || ay < 0.2 {
            return;
        }
        let (cx, cy) = (self.cx.at(z), self.cy.at(z));
        let (sr, cr) = self.rot.at(z).sin_cos();
        let hsum: f64 = self.harm.iter().map(|h| h.0.abs() + h.1.abs()).sum();
        let rmax = ax.max(ay) * (1.0 + hsum) + 2.0 * plane.w_xy();
        let (c0, c1) = plane.cols(cx - rmax, cx + rmax);
        let (r0, r1) = plane.rows(cy - rmax, cy + rmax);
        let w = plane.w_xy();
        for j in r0..r1 {
            let y = plane.y(j);
            let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
            for (i, px) in row.iter_mut().enumerate().take(c1).skip(c0) {
                let x = plane.x(i);
                let (ux, uy) = (x - cx, y - cy);
                let lx = cr * ux + sr * uy;
                let ly = -sr * ux + cr * uy;
                let rho = (lx * lx + ly * ly).sqrt();
                let r = if rho > 1e-9 {
                    radius(ax, ay, lx / rho, ly / rho, &self.harm)
                } else {
                    ax.min(ay)
                };
                let d = rho - r;
                if d > w {
                    continue;
                }
                if !keep(x, y) {
                    continue;
                }
                blend(px, self.fill.at(noise, [x, y, z], plane), coverage(d, w));
            }
        }
    }
}

/// Radius of an ellipse with half-axes (ax, ay) in direction (c, s), with radial harmonics.
#[inline]
pub(crate) fn radius(ax: f64, ay: f64, c: f64, s: f64, harm: &[(f64, f64); 4]) -> f64 {
    let r = ax * ay / ((ay * c).powi(2) + (ax * s).powi(2)).sqrt();
    r * (1.0 + harmonics(c, s, harm))
}

/// Sum of cos/sin harmonics k = 2..=5 for the direction (cos t, sin t), via complex powers.
#[inline]
pub(crate) fn harmonics(c: f64, s: f64, harm: &[(f64, f64); 4]) -> f64 {
    let (mut pc, mut ps) = (c * c - s * s, 2.0 * c * s);
    let mut acc = 0.0;
    for h in harm {
        acc += h.0 * pc + h.1 * ps;
        let npc = pc * c - ps * s;
        ps = pc * s + ps * c;
        pc = npc;
    }
    acc
}

/// Unit normal of the plane spanned by two vectors (for slab planes).
pub(crate) fn plane_normal(u: V3, v: V3) -> V3 {
    let n = cross(u, v);
    let l = norm(n);
    [n[0] / l, n[1] / l, n[2] / l]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::rng::Rng;

    fn plane(n: usize, d: f64) -> Plane {
        Plane {
            z: 0.0,
            nx: n,
            ny: n,
            x0: -(n as f64 - 1.0) * d / 2.0,
            y0: -(n as f64 - 1.0) * d / 2.0,
            dx: d,
            dy: d,
            wz: d,
            textured: false,
        }
    }

    #[test]
    fn capsule_area_matches_its_cross_section() {
        // A vertical cylinder of radius 10 mm: painted area should be pi r^2 within a pixel ring.
        let p = plane(64, 0.5);
        let noise = Noise3::new(&mut Rng::new(1));
        let set = CapsuleSet::new(
            vec![Capsule::new([0.0, 0.0, -50.0], [0.0, 0.0, 50.0], 10.0, 10.0)],
            0.0,
            Fill::solid(1.0),
            None,
            0.0,
        );
        let mut buf = vec![0.0f32; 64 * 64];
        set.paint(&p, &mut buf, &noise);
        let area: f64 = buf.iter().map(|&v| f64::from(v)).sum::<f64>() * 0.25;
        let expect = std::f64::consts::PI * 100.0;
        assert!((area - expect).abs() / expect < 0.01, "{area} vs {expect}");
    }

    #[test]
    fn loft_paints_an_ellipse_of_the_right_area() {
        let p = plane(128, 0.5);
        let noise = Noise3::new(&mut Rng::new(1));
        let l = Loft::new(
            Curve::constant(1.0),
            Curve::constant(-2.0),
            Curve::new(vec![(-10.0, 20.0), (10.0, 20.0)]),
            Curve::new(vec![(-10.0, 12.0), (10.0, 12.0)]),
            Curve::constant(0.4),
            [(0.0, 0.0); 4],
            Fill::solid(1.0),
        );
        let mut buf = vec![0.0f32; 128 * 128];
        l.paint(&p, &mut buf, &noise);
        let area: f64 = buf.iter().map(|&v| f64::from(v)).sum::<f64>() * 0.25;
        let expect = std::f64::consts::PI * 240.0;
        assert!((area - expect).abs() / expect < 0.02, "{area} vs {expect}");
    }
}
