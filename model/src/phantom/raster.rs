//! Painting analytic shapes into one axial plane with partial-volume edges.
//!
//! Every shape is painted only inside its bounding box in the plane, front to back, as
//! `value += coverage * (tissue - value)`, where coverage is the fraction of the voxel inside the
//! shape (estimated from a signed distance and the voxel's extent along the surface normal).
//! That gives the partial-volume edges a real scanner produces without supersampling in-plane.

use super::math::{coverage, dot, norm, smin, sub, Curve, V3};
use super::rng::Noise3;

/// One axial sampling plane (a sub-slice of an output slice).
#[derive(Clone, Copy)]
pub(crate) struct Plane<'a> {
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
    /// Precomputed fine texture for this plane (organ fills read it instead of evaluating
    /// 3D noise at every voxel).
    pub tex: Option<&'a TexGrid<1>>,
}

impl Plane<'_> {
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
    // NaN bounds (never expected) give an empty span rather than a panic.
    if hi
        .partial_cmp(&lo)
        .is_none_or(|o| o == std::cmp::Ordering::Less)
        || n == 0
    {
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

/// Smooth noise fields sampled on a coarse grid and interpolated bilinearly: the fields vary
/// over millimetres, so sampling every 2-4 mm instead of at every voxel costs nothing visible
/// and saves most of the texture time.
pub(crate) struct TexGrid<const K: usize> {
    x0: f64,
    y0: f64,
    step: f64,
    nx: usize,
    ny: usize,
    vals: Vec<[f32; K]>,
}

impl<const K: usize> TexGrid<K> {
    pub(crate) fn new(bb: [f64; 4], step: f64, f: impl Fn(f64, f64) -> [f32; K]) -> Self {
        let nx = ((bb[1] - bb[0]) / step).ceil().max(0.0) as usize + 2;
        let ny = ((bb[3] - bb[2]) / step).ceil().max(0.0) as usize + 2;
        let mut vals = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                vals.push(f(bb[0] + i as f64 * step, bb[2] + j as f64 * step));
            }
        }
        TexGrid {
            x0: bb[0],
            y0: bb[2],
            step,
            nx,
            ny,
            vals,
        }
    }

    pub(crate) fn empty() -> Self {
        TexGrid {
            x0: 0.0,
            y0: 0.0,
            step: 1.0,
            nx: 0,
            ny: 0,
            vals: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, x: f64, y: f64) -> bool {
        self.nx >= 2
            && self.ny >= 2
            && x >= self.x0
            && y >= self.y0
            && x <= self.x0 + (self.nx - 1) as f64 * self.step
            && y <= self.y0 + (self.ny - 1) as f64 * self.step
    }

    /// Fields at (x, y) (clamped to the grid; zeros for an empty grid).
    #[inline]
    pub(crate) fn at(&self, x: f64, y: f64) -> [f64; K] {
        let mut out = [0.0; K];
        if self.nx < 2 || self.ny < 2 {
            return out;
        }
        let u = ((x - self.x0) / self.step).clamp(0.0, (self.nx - 2) as f64 + 0.999);
        let v = ((y - self.y0) / self.step).clamp(0.0, (self.ny - 2) as f64 + 0.999);
        let (i, j) = (u as usize, v as usize);
        let (fu, fv) = ((u - i as f64) as f32, (v - j as f64) as f32);
        let a = &self.vals[j * self.nx + i];
        let b = &self.vals[j * self.nx + i + 1];
        let c = &self.vals[(j + 1) * self.nx + i];
        let d = &self.vals[(j + 1) * self.nx + i + 1];
        for k in 0..K {
            let top = a[k] + fu * (b[k] - a[k]);
            let bot = c[k] + fu * (d[k] - c[k]);
            out[k] = f64::from(top + fv * (bot - top));
        }
        out
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
        } else if let Some(t) = plane.tex.filter(|t| t.contains(p[0], p[1])) {
            self.hu + self.amp * t.at(p[0], p[1])[0]
        } else {
            self.hu + self.amp * f64::from(noise.mm(p, self.cell))
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
    pub(crate) fn new(
        caps: Vec<Capsule>,
        blend_k: f64,
        outer: Fill,
        inner: Option<Fill>,
        inset: f64,
    ) -> Self {
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

    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        let margin = plane.wz + self.blend_k + plane.w_xy();
        if plane.z < self.zlo - margin || plane.z > self.zhi + margin {
            return;
        }
        // Active capsules and their boxes in this plane. Each pixel is painted once, by the
        // first active capsule whose box holds it, with the union over all boxes that hold it.
        let k = self.blend_k;
        let active: Vec<(usize, [f64; 4])> = self
            .caps
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.bbox_at(plane.z, margin)
                    .map(|b| (i, [b[0] - k, b[1] + k, b[2] - k, b[3] + k]))
            })
            .collect();
        for (a, &(_, bb)) in active.iter().enumerate() {
            let (c0, c1) = plane.cols(bb[0], bb[1]);
            let (r0, r1) = plane.rows(bb[2], bb[3]);
            for j in r0..r1 {
                let y = plane.y(j);
                let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
                'px: for (i, px) in row.iter_mut().enumerate().take(c1).skip(c0) {
                    let x = plane.x(i);
                    let inside = |b: &[f64; 4]| x >= b[0] && x <= b[1] && y >= b[2] && y <= b[3];
                    for (_, b) in &active[..a] {
                        if inside(b) {
                            continue 'px;
                        }
                    }
                    let p = [x, y, plane.z];
                    let mut d = f64::INFINITY;
                    let mut dmin = f64::INFINITY;
                    let mut n = [1.0, 0.0, 0.0];
                    for (ci, b) in &active[a..] {
                        if !inside(b) {
                            continue;
                        }
                        let (dk, nk) = self.caps[*ci].dist(p);
                        if dk < dmin {
                            dmin = dk;
                            n = nk;
                        }
                        d = smin(d, dk, k);
                    }
                    if d > margin {
                        continue;
                    }
                    let w = plane.edge_w(n);
                    let a_out = coverage(d, w);
                    let a_in = if self.inner.is_some() {
                        coverage(d + self.inset, w)
                    } else {
                        0.0
                    };
                    if a_in < 1.0 {
                        blend(px, self.outer.at(noise, p, plane), a_out);
                    }
                    if let Some(inner) = &self.inner {
                        if a_in > 0.0 {
                            blend(px, inner.at(noise, p, plane), a_in);
                        }
                    }
                }
            }
        }
    }
}

/// Paints one solid capsule (no union, no interior): the fast path for vessel trees.
pub(crate) fn paint_capsule(
    c: &Capsule,
    fill: &Fill,
    plane: &Plane,
    buf: &mut [f32],
    noise: &Noise3,
) {
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
    pub(crate) fn new(
        cx: Curve,
        cy: Curve,
        ax: Curve,
        ay: Curve,
        rot: Curve,
        harm: [(f64, f64); 4],
        fill: Fill,
    ) -> Loft {
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
        [
            -1.0, -0.97, -0.85, -0.6, -0.3, 0.0, 0.3, 0.6, 0.85, 0.97, 1.0,
        ]
        .iter()
        .map(|&t: &f64| (zc + t * h, r * (1.0 - t * t).max(0.0).sqrt()))
        .collect()
    }

    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        self.paint_with(plane, buf, noise, |_, _| true);
    }

    /// Paints, skipping points for which `keep(x, y)` is false (e.g. outside a cavity).
    pub(crate) fn paint_with(
        &self,
        plane: &Plane,
        buf: &mut [f32],
        noise: &Noise3,
        keep: impl Fn(f64, f64) -> bool,
    ) {
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
        let bins = ((rmax * 2.0) as usize).clamp(32, 512);
        let table = AngleTable::<1>::new(bins, |c, s| [radius(ax, ay, c, s, &self.harm)]);
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
                    table.at(lx, ly)[0]
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

/// Pseudo-angle in [0, 4) of a direction (monotone in the true angle, no trigonometry).
#[inline]
pub(crate) fn diamond(c: f64, s: f64) -> f64 {
    if s >= 0.0 {
        if c >= 0.0 {
            s / (c + s).max(1e-12)
        } else {
            1.0 - c / (s - c)
        }
    } else if c < 0.0 {
        2.0 - s / (-c - s)
    } else {
        3.0 + c / (c - s)
    }
}

/// Unit direction of a pseudo-angle (inverse of [`diamond`]).
pub(crate) fn undiamond(d: f64) -> (f64, f64) {
    let d = d.rem_euclid(4.0);
    let (c, s) = if d < 1.0 {
        (1.0 - d, d)
    } else if d < 2.0 {
        (-(d - 1.0), 2.0 - d)
    } else if d < 3.0 {
        (-(3.0 - d), -(d - 2.0))
    } else {
        (d - 3.0, -(4.0 - d))
    };
    let l = (c * c + s * s).sqrt();
    (c / l, s / l)
}

/// A per-plane table of a smooth function of direction, indexed by pseudo-angle.
pub(crate) struct AngleTable<const K: usize> {
    vals: Vec<[f64; K]>,
}

impl<const K: usize> AngleTable<K> {
    pub(crate) fn new(n: usize, f: impl Fn(f64, f64) -> [f64; K]) -> Self {
        let vals = (0..=n)
            .map(|b| {
                let (c, s) = undiamond(4.0 * b as f64 / n as f64);
                f(c, s)
            })
            .collect();
        AngleTable { vals }
    }

    #[inline]
    pub(crate) fn at(&self, c: f64, s: f64) -> [f64; K] {
        let n = self.vals.len() - 1;
        let t = diamond(c, s) * (n as f64 / 4.0);
        let i = (t as usize).min(n - 1);
        let f = t - i as f64;
        let (a, b) = (&self.vals[i], &self.vals[i + 1]);
        let mut out = [0.0; K];
        for k in 0..K {
            out[k] = a[k] + f * (b[k] - a[k]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::rng::Rng;

    fn plane(n: usize, d: f64) -> Plane<'static> {
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
            tex: None,
        }
    }

    #[test]
    fn capsule_area_matches_its_cross_section() {
        // A vertical cylinder of radius 10 mm: painted area should be pi r^2 within a pixel ring.
        let p = plane(64, 0.5);
        let noise = Noise3::new(&mut Rng::new(1));
        let set = CapsuleSet::new(
            vec![Capsule::new(
                [0.0, 0.0, -50.0],
                [0.0, 0.0, 50.0],
                10.0,
                10.0,
            )],
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
    fn pseudo_angle_round_trips() {
        for k in 0..360 {
            let t = (k as f64).to_radians();
            let (s, c) = t.sin_cos();
            let (c2, s2) = undiamond(diamond(c, s));
            assert!((c - c2).abs() < 1e-9 && (s - s2).abs() < 1e-9, "{k}");
        }
        let tab = AngleTable::<1>::new(256, |c, s| [radius(20.0, 10.0, c, s, &[(0.0, 0.0); 4])]);
        for k in 0..360 {
            let t = (k as f64 + 0.37).to_radians();
            let (s, c) = t.sin_cos();
            let exact = radius(20.0, 10.0, c, s, &[(0.0, 0.0); 4]);
            assert!((tab.at(c, s)[0] - exact).abs() < 0.02, "{k}");
        }
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
