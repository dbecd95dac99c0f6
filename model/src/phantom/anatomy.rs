//! Everything around the spine: body outline and its layers (skin, subcutaneous fat, muscle
//! wall), lungs and diaphragm, mediastinum and heart, vessels and airways, abdominal organs,
//! muscles, ribs, sternum, shoulder girdle, pelvis, arms and the patient table.
//!
//! All organs are placed relative to the spine (the vertebral level heights and the column's
//! position at each z), so they follow kyphosis, scoliosis and coverage consistently.

use super::math::{
    add, clamp01, coverage, lerp, lerp3, normalize, scale, smin, smoothstep, sub, Curve, V3,
};
use super::raster::{
    blend, harmonics, paint_capsule, AngleTable, Capsule, CapsuleSet, Fill, Loft, Plane, TexGrid,
};
use super::rng::{Noise3, Rng};
use super::spine::{Level, Spine, S1_INDEX};
use super::{Arms, Habitus};

/// Where the spine is at each height, for placing organs.
pub(crate) struct SpineRef {
    x: Curve,
    y: Curve,
    ba: Curve,
    half_width: Curve,
    zl: [f64; 21],
}

impl SpineRef {
    pub(crate) fn new(spine: &Spine) -> SpineRef {
        let mut kx = Vec::new();
        let mut ky = Vec::new();
        let mut kb = Vec::new();
        let mut ka = Vec::new();
        let mut zl = [0.0; 21];
        for (i, v) in spine.verts.iter().enumerate() {
            let o = v.frame.origin;
            if i < 21 {
                zl[i] = o[2];
            }
            kx.push((o[2], o[0]));
            ky.push((o[2], o[1]));
            kb.push((o[2], v.body.ba));
            ka.push((o[2], v.body.a));
        }
        SpineRef {
            x: Curve::new(kx),
            y: Curve::new(ky),
            ba: Curve::new(kb),
            half_width: Curve::new(ka),
            zl,
        }
    }

    pub(crate) fn x(&self, z: f64) -> f64 {
        self.x.at(z)
    }

    pub(crate) fn y(&self, z: f64) -> f64 {
        self.y.at(z)
    }

    /// y of the anterior surface of the vertebral body at height z.
    pub(crate) fn front(&self, z: f64) -> f64 {
        self.y.at(z) - self.ba.at(z)
    }

    pub(crate) fn half_width(&self, z: f64) -> f64 {
        self.half_width.at(z)
    }

    /// Height of a level's body centre.
    pub(crate) fn z(&self, l: Level) -> f64 {
        self.zl[l.index()]
    }

    /// Height between two levels (t = 0 at `a`, 1 at `b`).
    pub(crate) fn zt(&self, a: Level, b: Level, t: f64) -> f64 {
        lerp(self.z(a), self.z(b), t)
    }

    /// Point relative to the spine at height z.
    pub(crate) fn at(&self, z: f64, dx: f64, dy: f64) -> V3 {
        [self.x(z) + dx, self.y(z) + dy, z]
    }
}

/// HU of soft tissues for one patient and contrast phase.
#[derive(Clone, Debug)]
pub(crate) struct Tissues {
    pub lung: f64,
    pub fat: f64,
    pub muscle: f64,
    pub paraspinal: f64,
    pub skin: f64,
    pub blood_art: f64,
    pub blood_ven: f64,
    pub blood_pa: f64,
    pub vessel_wall: f64,
    pub myocardium: f64,
    pub liver: f64,
    pub liver_vessels: f64,
    pub spleen: f64,
    pub kidney_cortex: f64,
    pub kidney_medulla: f64,
    pub pancreas: f64,
    pub bowel_wall: f64,
    pub fluid: f64,
    pub cartilage: f64,
    pub thyroid: f64,
    pub cortex: f64,
    pub marrow: f64,
    pub yellow_marrow: f64,
    /// Visceral fat share of the abdominal fill, 0..1.
    pub visceral: f64,
}

/// Curved patient table under the body: carbon-fibre shells around a foam core, plus the
/// support rail further down.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    /// y of the top surface at x = x0 (the lowest point of the trough).
    pub y0: f64,
    pub x0: f64,
    /// Radius of curvature of the trough (mm).
    pub radius: f64,
    pub half_width: f64,
    pub shell_hu: f64,
    pub core_mm: f64,
    pub rail_gap: f64,
}

impl Table {
    /// y of the top surface at x (curving anteriorly towards the edges).
    #[inline]
    pub(crate) fn surface(&self, x: f64) -> f64 {
        let dx = x - self.x0;
        self.y0 - dx * dx / (2.0 * self.radius)
    }

    fn paint(&self, plane: &Plane, buf: &mut [f32]) {
        let (c0, c1) = plane.cols(
            self.x0 - self.half_width - 5.0,
            self.x0 + self.half_width + 5.0,
        );
        let w = plane.w_xy();
        for i in c0..c1 {
            let x = plane.x(i);
            let edge = coverage((x - self.x0).abs() - self.half_width, w);
            if edge <= 0.0 {
                continue;
            }
            let s = self.surface(x);
            let dx = x - self.x0;
            let rail = self.y0 + self.core_mm + self.rail_gap - dx * dx / (0.9 * self.radius);
            let re = coverage(dx.abs() - 0.75 * self.half_width, w);
            // Only the rows near the shells and the rail.
            for (lo, hi) in [
                (s - 2.0 * w, s + self.core_mm + 2.0 * w),
                (rail - 2.0 * w, rail + 3.0 + 2.0 * w),
            ] {
                let (r0, r1) = plane.rows(lo, hi);
                for j in r0..r1 {
                    let y = plane.y(j);
                    let px = &mut buf[j * plane.nx + i];
                    let d = y - s;
                    if d > -2.0 * w && d < self.core_mm + 2.0 * w && lo < s {
                        let shell =
                            |d0: f64, t: f64| coverage((d - d0 - 0.5 * t).abs() - 0.5 * t, w);
                        let core = coverage((d - 0.5 * self.core_mm).abs() - 0.5 * self.core_mm, w);
                        blend(px, -930.0, core * edge);
                        blend(px, self.shell_hu, shell(0.0, 1.6) * edge);
                        blend(px, self.shell_hu, shell(self.core_mm - 1.6, 1.6) * edge);
                    } else if lo >= s + self.core_mm || lo > s {
                        let dr = y - rail;
                        blend(
                            px,
                            self.shell_hu + 100.0,
                            coverage((dr - 1.5).abs() - 1.5, w) * re,
                        );
                    }
                }
            }
        }
    }
}

/// The hemidiaphragms as two paraboloid domes, the right one higher.
#[derive(Clone, Debug)]
pub(crate) struct Domes {
    pub right: (f64, f64, f64),
    pub left: (f64, f64, f64),
    pub k: f64,
}

impl Domes {
    /// Diaphragm height at (x, y) (the higher of the two domes).
    #[inline]
    pub(crate) fn height(&self, x: f64, y: f64) -> (f64, f64) {
        let r2 = |c: (f64, f64, f64)| {
            let dx = x - c.0;
            let dy = 1.25 * (y - c.1);
            dx * dx + dy * dy
        };
        let (ra, rb) = (r2(self.right), r2(self.left));
        let (za, zb) = (self.right.2 - self.k * ra, self.left.2 - self.k * rb);
        if za >= zb {
            (za, ra)
        } else {
            (zb, rb)
        }
    }

    /// Diaphragm height at (x, y) and the magnitude of its slope.
    #[inline]
    pub(crate) fn z(&self, x: f64, y: f64) -> (f64, f64) {
        let (z, r2) = self.height(x, y);
        (z, 2.0 * self.k * r2.sqrt())
    }
}

/// Lung apices: domes rising above the thoracic inlet either side of the trachea.
#[derive(Clone, Debug)]
pub(crate) struct Apices {
    pub right: (f64, f64, f64),
    pub left: (f64, f64, f64),
    pub k: f64,
}

impl Apices {
    #[inline]
    fn z(&self, x: f64, y: f64) -> (f64, f64) {
        let f = |c: (f64, f64, f64)| {
            let dx = x - c.0;
            let dy = y - c.1;
            let r2 = dx * dx + dy * dy;
            (c.2 - self.k * r2, 2.0 * self.k * r2.sqrt())
        };
        let (a, b) = (f(self.right), f(self.left));
        if a.0 >= b.0 {
            a
        } else {
            b
        }
    }
}

/// The inner chest wall is rounded towards the flanks even where the skin lies flat on the table.
const BACK_ROUNDING: f64 = 0.0022;

/// One axial section of the torso's muscle envelope (the inner surface of the subcutaneous
/// fat): an ellipse with organic harmonics, flattened where the back rests on the table.
pub(crate) struct Section {
    pub cx: f64,
    pub cy: f64,
    pub a: f64,
    pub b: f64,
    pub harm: [(f64, f64); 4],
    /// Subcutaneous fat (anterior, lateral, posterior) and muscle wall (same) thickness.
    pub fat: [f64; 3],
    pub mus: [f64; 3],
}

impl Section {
    #[inline]
    fn r_env(&self, c: f64, s: f64) -> f64 {
        let r = self.a * self.b / ((self.b * c).powi(2) + (self.a * s).powi(2)).sqrt();
        r * (1.0 + harmonics(c, s, &self.harm))
    }

    #[inline]
    fn layer(t: &[f64; 3], c: f64, s: f64) -> f64 {
        let front_back = if s < 0.0 { t[0] } else { t[2] };
        t[1] * c * c + front_back * s * s
    }

    /// y of the cavity's back wall at x (the flat back, rounded towards the flanks).
    #[inline]
    pub(crate) fn back_line(&self, x: f64, table: &Table, skin: f64) -> f64 {
        let dx = x - self.cx;
        table.surface(x) - skin - self.fat[2] - self.mus[2] - BACK_ROUNDING * dx * dx
    }

    /// Distance from the cavity wall (inner surface of the muscle layer); negative inside.
    #[inline]
    pub(crate) fn cavity_d(&self, x: f64, y: f64, table: &Table, skin: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let rho = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (c, s) = (dx / rho, dy / rho);
        let flat = table.surface(x) - skin - self.fat[2] - self.mus[2] - BACK_ROUNDING * dx * dx;
        (rho - (self.r_env(c, s) - Self::layer(&self.mus, c, s))).max(y - flat)
    }

    /// Point on the cavity wall in direction angle `t` from the centre (0 = patient's left,
    /// pi/2 = posterior), flattening ignored.
    pub(crate) fn cavity_point(&self, t: f64) -> (f64, f64) {
        let (s, c) = t.sin_cos();
        let r = self.r_env(c, s) - Self::layer(&self.mus, c, s);
        (self.cx + r * c, self.cy + r * s)
    }
}

/// Per-plane quantities shared by the torso, the liver and the abdominal organs.
pub(crate) struct PlaneCtx {
    pub sec: Section,
    /// Envelope radius, fat and muscle thickness by direction.
    pub table: AngleTable<3>,
    pub xs: f64,
    pub ys: f64,
    /// Fine texture (3 mm features) on a 2 mm grid over the body (see [`TexGrid`]).
    pub fine: TexGrid<1>,
    /// Bowel-loop field and a coarse field on a 4 mm grid (only where needed).
    pub smooth: TexGrid<2>,
}

impl PlaneCtx {
    /// Distance from the cavity wall (negative inside), from the tabulated section.
    #[inline]
    pub(crate) fn cavity_d(&self, x: f64, y: f64, torso: &Torso) -> f64 {
        let sec = &self.sec;
        let (dx, dy) = (x - sec.cx, y - sec.cy);
        let rho = (dx * dx + dy * dy).sqrt();
        let [r_env, _, mus_t] = self.table.at(dx, dy);
        let flat =
            torso.table.surface(x) - torso.skin - sec.fat[2] - sec.mus[2] - BACK_ROUNDING * dx * dx;
        (rho - (r_env - mus_t)).max(y - flat)
    }
}

/// The torso: envelope keyframes, fat and muscle layers, and the default contents of the
/// body cavity (lung above the diaphragm, viscera below, neck tissue above the lung apices).
pub(crate) struct Torso {
    pub spine: SpineRef,
    a: Curve,
    front: Curve,
    back: Curve,
    xoff: Curve,
    harm_amp: f64,
    harm_lane: f64,
    fat: [f64; 3],
    fat_abdomen: f64,
    mus_front: Curve,
    mus_side: f64,
    mus_back: f64,
    pub skin: f64,
    pub table: Table,
    pub domes: Domes,
    pub apices: Apices,
    pub tissues: Tissues,
    z_inlet: f64,
}

impl Torso {
    pub(crate) fn section(&self, z: f64, noise: &Noise3) -> Section {
        let ys = self.spine.y(z);
        let front = ys - self.front.at(z);
        let back = ys + self.back.at(z);
        let cy = 0.5 * (front + back);
        let b = 0.5 * (back - front);
        let cx = lerp(self.spine.x(z), 0.0, 0.7) + self.xoff.at(z);
        let l = self.harm_lane;
        let zz = z / 90.0;
        let h = self.harm_amp;
        let harm = [
            (
                0.5 * h * noise.line(zz, l) + 0.02,
                h * noise.line(zz, l + 1.0) * 0.5,
            ),
            (
                0.6 * h * noise.line(zz, l + 2.0),
                0.6 * h * noise.line(zz, l + 3.0),
            ),
            (
                0.4 * h * noise.line(zz, l + 4.0) - 0.015,
                0.4 * h * noise.line(zz, l + 5.0),
            ),
            (
                0.3 * h * noise.line(zz, l + 6.0),
                0.3 * h * noise.line(zz, l + 7.0),
            ),
        ];
        // Abdominal fat is thicker in front and at the flanks.
        let abd = smoothstep(
            self.spine.z(Level::T10),
            self.spine.z(Level::L1),
            -z + 2.0 * self.spine.z(Level::T10),
        )
        .max(if z < self.spine.z(Level::L1) {
            1.0
        } else {
            0.0
        });
        let var = 1.0 + 0.18 * noise.line(zz * 1.7, l + 9.0);
        let fat = [
            self.fat[0] * var * lerp(0.7, self.fat_abdomen, abd),
            self.fat[1] * var * lerp(1.0, 0.5 + 0.5 * self.fat_abdomen, abd),
            self.fat[2] * var,
        ];
        let mus = [self.mus_front.at(z), self.mus_side, self.mus_back];
        Section {
            cx,
            cy,
            a: self.a.at(z),
            b,
            harm,
            fat,
            mus,
        }
    }

    /// Lateral subcutaneous fat thickness (mm).
    pub(crate) fn fat_lateral(&self) -> f64 {
        self.fat[1]
    }

    /// Half width of the skin outline at z (for the field of view).
    pub(crate) fn outer_half_width(&self, z: f64) -> f64 {
        self.a.at(z) + self.fat[1] * 1.4 + self.skin
    }

    /// Signed distance (positive posteriorly, inside) from the paravertebral block: the
    /// paraspinal muscles and transverse processes behind the lungs, a parabola opening
    /// backwards from just behind the vertebral bodies.
    #[inline]
    pub(crate) fn block_d(&self, x: f64, y: f64, xs: f64, ys: f64, back: f64) -> f64 {
        let dx = x - xs;
        // Rounded into the posterior chest wall, so the lungs' back is a smooth curve.
        y - smin(ys + 14.0 + 0.013 * dx * dx, back - 1.0, 18.0)
    }

    /// Point on the wall of the lung cavity (inside the ribs) seen in direction `ang` (0 =
    /// patient's left, pi/2 = posterior) from a point in the mediastinum 45 mm in front of the
    /// vertebral body centre (the centre of the rib arcs).
    pub(crate) fn lung_wall(&self, z: f64, ang: f64, noise: &Noise3) -> (f64, f64) {
        let sec = self.section(z, noise);
        let (xs, ys) = (self.spine.x(z), self.spine.y(z));
        let (ox, oy) = self.rib_centre(z);
        let (s, c) = ang.sin_cos();
        let inside = |r: f64| {
            let (x, y) = (ox + r * c, oy + r * s);
            sec.cavity_d(x, y, &self.table, self.skin) < 0.0
                && self.block_d(x, y, xs, ys, sec.back_line(x, &self.table, self.skin)) < 0.0
        };
        let (mut lo, mut hi) = (0.0, 400.0);
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            if inside(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (ox + lo * c, oy + lo * s)
    }

    /// Centre of the rib arcs at height z.
    pub(crate) fn rib_centre(&self, z: f64) -> (f64, f64) {
        (self.spine.x(z), self.spine.y(z) - 45.0)
    }

    /// Lung region test used when growing vessel trees (3 mm inside every boundary).
    pub(crate) fn in_lung(&self, p: V3, noise: &Noise3) -> bool {
        let sec = self.section(p[2], noise);
        if sec.cavity_d(p[0], p[1], &self.table, self.skin) > -4.0 {
            return false;
        }
        let (zd, _) = self.domes.z(p[0], p[1]);
        let (za, _) = self.apices.z(p[0], p[1]);
        let xs = self.spine.x(p[2]);
        p[2] > zd + 4.0
            && p[2] < za - 4.0
            && (p[0] - xs).abs() > 35.0
            && self.block_d(
                p[0],
                p[1],
                xs,
                self.spine.y(p[2]),
                sec.back_line(p[0], &self.table, self.skin),
            ) < -4.0
    }

    /// Box of the body outline in a section (x0, x1, y0, y1).
    fn bbox(sec: &Section) -> [f64; 4] {
        let hsum: f64 = sec.harm.iter().map(|h| h.0.abs() + h.1.abs()).sum();
        let rx = sec.a * (1.0 + hsum) + sec.fat[1].max(sec.fat[0]) * 1.5 + 10.0;
        let ry = sec.b * (1.0 + hsum) + sec.fat[0].max(sec.fat[2]) * 1.5 + 10.0;
        [sec.cx - rx, sec.cx + rx, sec.cy - ry, sec.cy + ry]
    }

    /// Everything per plane that several painters need.
    pub(crate) fn plane_ctx(&self, plane: &Plane, noise: &Noise3) -> PlaneCtx {
        let z = plane.z;
        let sec = self.section(z, noise);
        let table = AngleTable::<3>::new(1024, |c, s| {
            [
                sec.r_env(c, s),
                Section::layer(&sec.fat, c, s),
                Section::layer(&sec.mus, c, s),
            ]
        });
        let (xs, ys) = (self.spine.x(z), self.spine.y(z));
        let bb = Self::bbox(&sec);
        let (fine, smooth) = if plane.textured {
            let fine = TexGrid::new(bb, 2.0f64.max(plane.dx), |x, y| {
                [noise.at(x / 3.0, y / 3.0, z / 3.0)]
            });
            // Bowel loops and neck tissue exist only below the diaphragm or above the inlet.
            let needs_smooth =
                z < self.domes.right.2.max(self.domes.left.2) + 5.0 || z > self.z_inlet - 80.0;
            let smooth = if needs_smooth {
                TexGrid::new(bb, 4.0f64.max(plane.dx), |x, y| {
                    let q = [x - xs + 500.0, y - ys, z];
                    let loops = noise.at(q[0] / 17.0, q[1] / 17.0, q[2] / 19.0)
                        + 0.3 * noise.at(q[0] / 9.0 + 31.0, q[1] / 9.0, q[2] / 9.0);
                    let coarse = noise.at(q[0] / 23.0 + 11.0, q[1] / 23.0 + 33.0, q[2] / 23.0);
                    [loops, coarse]
                })
            } else {
                TexGrid::empty()
            };
            (fine, smooth)
        } else {
            (TexGrid::empty(), TexGrid::empty())
        };
        PlaneCtx {
            sec,
            table,
            xs,
            ys,
            fine,
            smooth,
        }
    }

    /// Paints skin, fat, muscle wall and the cavity's default contents.
    fn paint(&self, ctx: &PlaneCtx, plane: &Plane, buf: &mut [f32]) {
        let z = plane.z;
        let sec = &ctx.sec;
        let t = &self.tissues;
        let bb = Self::bbox(sec);
        let (c0, c1) = plane.cols(bb[0], bb[1]);
        let (r0, r1) = plane.rows(bb[2], bb[3]);
        let w = plane.w_xy();
        let tex = plane.textured;
        // Per column: the table surface under the body and the back rounding.
        let cols: Vec<(f64, f64)> = (c0..c1)
            .map(|i| {
                let x = plane.x(i);
                let dx = x - sec.cx;
                (self.table.surface(x), BACK_ROUNDING * dx * dx)
            })
            .collect();
        for j in r0..r1 {
            let y = plane.y(j);
            let dy = y - sec.cy;
            let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
            for (i, px) in row.iter_mut().enumerate().take(c1).skip(c0) {
                let x = plane.x(i);
                let dx = x - sec.cx;
                let (y_tab, round) = cols[i - c0];
                if y - y_tab > w {
                    continue;
                }
                let rho = (dx * dx + dy * dy).sqrt();
                let [r_env, fat_t, mus_t] = ctx.table.at(dx, dy);
                let d_out = (rho - (r_env + fat_t + self.skin)).max(y - y_tab);
                if d_out > w {
                    continue;
                }
                let d_fat = (rho - (r_env + fat_t)).max(y - (y_tab - self.skin));
                let y_env = y_tab - self.skin - sec.fat[2];
                let d_env = (rho - r_env).max(y - y_env);
                let d_cav = (rho - (r_env - mus_t)).max(y - (y_env - sec.mus[2] - round));
                let (a_out, a_fat, a_env, a_cav) = (
                    coverage(d_out, w),
                    coverage(d_fat, w),
                    coverage(d_env, w),
                    coverage(d_cav, w),
                );
                let f = if tex {
                    let [s0, s1] = ctx.smooth.at(x, y);
                    [ctx.fine.at(x, y)[0], s0, s1]
                } else {
                    [0.0; 3]
                };
                // Paint outside-in, skipping layers that end up fully covered.
                if a_fat < 1.0 {
                    blend(px, t.skin, a_out);
                }
                if a_fat > 0.0 && a_env < 1.0 {
                    blend(px, t.fat + 8.0 * f[0], a_fat);
                }
                if a_env > 0.0 && a_cav < 1.0 {
                    blend(px, t.muscle + 7.0 * f[0], a_env);
                }
                if a_cav > 0.0 {
                    let back = y_env - sec.mus[2] - round;
                    let v = self.cavity_fill([x, y, z], d_cav, back, plane, &f, ctx.xs, ctx.ys);
                    blend(px, v, a_cav);
                }
            }
        }
    }

    /// Lung above the diaphragm and below the apices, neck tissue above, diaphragm muscle,
    /// then bowel and visceral fat below.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn cavity_fill(
        &self,
        p: V3,
        d_cav: f64,
        back: f64,
        plane: &Plane,
        f: &[f64; 3],
        xs: f64,
        ys: f64,
    ) -> f64 {
        let t = &self.tissues;
        let (x, y, z) = (p[0], p[1], p[2]);
        let w = plane.w_xy();
        let (above, below_dia) = if z > self.domes.right.2.max(self.domes.left.2) + plane.wz {
            (1.0, 0.0)
        } else {
            let (zd, r2) = self.domes.height(x, y);
            // The slope (a square root) matters only near the surface.
            if zd - z > 4.5 + 6.0 * plane.wz + 2.0 * w * (1.0 + 2.0 * self.domes.k * 400.0) {
                (0.0, 1.0)
            } else if z - zd > 6.0 * plane.wz + 2.0 * w * (1.0 + 2.0 * self.domes.k * 400.0) {
                (1.0, 0.0)
            } else {
                let wd = plane.wz + 2.0 * self.domes.k * r2.sqrt() * w;
                (coverage(zd - z, wd), coverage(z - (zd - 4.5), wd))
            }
        };
        let (za, ga) = if z > self.z_inlet - 60.0 {
            self.apices.z(x, y)
        } else {
            (f64::INFINITY, 0.0)
        };
        let below_apex = if za.is_finite() {
            coverage(z - za, plane.wz + ga * w)
        } else {
            1.0
        };
        let pleura = coverage(d_cav + 2.0, w);
        // Behind the lungs and viscera next to the spine: paraspinal muscle.
        let front_of_block = coverage(self.block_d(x, y, xs, ys, back), w);
        let f_lung = above * below_apex * pleura * front_of_block;
        let f_neck = above * (1.0 - below_apex);
        let f_abd = below_dia * front_of_block;
        let f_wall = (1.0 - f_lung - f_neck - f_abd).max(0.0);
        let tex = plane.textured;
        let mut v = f_wall
            * if front_of_block < 1.0 {
                t.paraspinal
            } else {
                t.muscle
            };
        if f_lung > 0.0 {
            let mut l = t.lung;
            if tex {
                l += 18.0 * f[0];
                // Supine gravity gradient: dependent (posterior) lung is denser.
                l += 55.0 * smoothstep(ys - 30.0, ys + 45.0, y);
            }
            v += f_lung * l;
        }
        if f_neck > 0.0 {
            v += f_neck * lerp(t.muscle, t.fat, smoothstep(0.3, 0.55, f[2]));
        }
        if f_abd > 0.0 {
            v += f_abd * self.bowel(p, plane, f, ys);
        }
        v
    }

    /// Abdominal contents: bowel loops (wall, fluid, gas, stool) in mesenteric fat. Loops are
    /// the thickened zero set of a smooth field (curved tubes in every section); thinner
    /// patients have more, tighter-packed loops.
    #[inline]
    fn bowel(&self, p: V3, plane: &Plane, f: &[f64; 3], ys: f64) -> f64 {
        let t = &self.tissues;
        if !plane.textured {
            return lerp(t.bowel_wall, t.fat, t.visceral);
        }
        let band = f[1].abs();
        let width = lerp(0.34, 0.16, t.visceral);
        let loop_w = 1.0 - smoothstep(width - 0.025, width + 0.025, band);
        let fat = t.fat + 10.0 * f[0];
        if loop_w <= 0.0 {
            return fat;
        }
        let lumen = 1.0 - smoothstep(0.55 * width - 0.025, 0.55 * width + 0.025, band);
        let mut tissue = t.bowel_wall + 5.0 * f[0];
        if lumen > 0.0 {
            // Content: fluid, gas rising anteriorly in a supine patient, or mottled stool.
            let n3 = f[2];
            let gas = smoothstep(0.18, 0.3, n3 - 0.0035 * (p[1] - ys + 80.0));
            let stool = smoothstep(0.05, 0.25, -n3) * (0.5 + 0.5 * f[0]);
            let content = lerp(lerp(t.fluid + 12.0, -350.0, stool * 0.7), -920.0, gas);
            tissue = lerp(tissue, content, lumen);
        }
        lerp(fat, tissue, loop_w)
    }
}

/// The liver: the right upper abdominal cavity under the right dome, above an oblique lower
/// edge, wrapping across the midline anteriorly (left lobe).
pub(crate) struct Liver {
    bottom_right: f64,
    bottom_left: f64,
    x_right: f64,
    x_left: f64,
    edge_post: f64,
    edge_ant: f64,
    y_turn: f64,
    fill: Fill,
}

impl Liver {
    fn paint(&self, torso: &Torso, ctx: &PlaneCtx, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        let z = plane.z;
        if z < self.bottom_right - 5.0 || z > torso.domes.right.2 + 5.0 {
            return;
        }
        let sec = &ctx.sec;
        let w = plane.w_xy();
        let (c0, c1) = plane.cols(sec.cx - sec.a - 5.0, self.edge_ant + 20.0);
        let (r0, r1) = plane.rows(sec.cy - sec.b - 5.0, sec.cy + sec.b + 5.0);
        for j in r0..r1 {
            let y = plane.y(j);
            // Medial edge: further left anteriorly (left lobe), at the IVC posteriorly.
            let edge = lerp(
                self.edge_post,
                self.edge_ant,
                smoothstep(self.y_turn + 30.0, self.y_turn - 60.0, y),
            );
            for i in c0..c1 {
                let x = plane.x(i);
                let a_edge = coverage(x - edge, w);
                if a_edge <= 0.0 {
                    continue;
                }
                let t = clamp01((x - self.x_right) / (self.x_left - self.x_right));
                let zb = lerp(self.bottom_right, self.bottom_left, t);
                let a_bot = coverage(zb - z, plane.wz + 0.4 * w);
                if a_bot <= 0.0 {
                    continue;
                }
                let (zd, r2) = torso.domes.height(x, y);
                let zt = zd - 5.0;
                if z > zt + plane.wz + 3.0 * w {
                    continue;
                }
                let a_top = if zt - z > plane.wz + 3.0 * w {
                    1.0
                } else {
                    coverage(z - zt, plane.wz + 2.0 * torso.domes.k * r2.sqrt() * w)
                };
                let a = a_edge * a_bot * a_top * coverage(ctx.cavity_d(x, y, torso) + 1.0, w);
                if a > 0.0 {
                    blend(
                        &mut buf[j * plane.nx + i],
                        self.fill.at(noise, [x, y, z], plane),
                        a,
                    );
                }
            }
        }
    }
}

/// Many small solid capsules (vessel trees), binned along z so a plane touches only its own.
pub(crate) struct CapsuleList {
    caps: Vec<Capsule>,
    fill: Fill,
    z0: f64,
    bin: f64,
    bins: Vec<Vec<u32>>,
}

impl CapsuleList {
    fn new(caps: Vec<Capsule>, fill: Fill) -> CapsuleList {
        let bin = 8.0;
        let lo = caps
            .iter()
            .map(|c| c.a[2].min(c.b[2]) - c.ra.max(c.rb))
            .fold(f64::INFINITY, f64::min);
        let hi = caps
            .iter()
            .map(|c| c.a[2].max(c.b[2]) + c.ra.max(c.rb))
            .fold(f64::NEG_INFINITY, f64::max);
        let (z0, n) = if lo.is_finite() {
            (lo - 2.0, ((hi - lo + 4.0) / bin) as usize + 1)
        } else {
            (0.0, 0)
        };
        let mut bins = vec![Vec::new(); n];
        for (k, c) in caps.iter().enumerate() {
            let r = c.ra.max(c.rb);
            let b0 = ((c.a[2].min(c.b[2]) - r - z0) / bin).floor().max(0.0) as usize;
            let b1 =
                (((c.a[2].max(c.b[2]) + r - z0) / bin).floor() as usize).min(n.saturating_sub(1));
            for b in bins.iter_mut().take(b1 + 1).skip(b0) {
                b.push(k as u32);
            }
        }
        CapsuleList {
            caps,
            fill,
            z0,
            bin,
            bins,
        }
    }

    fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        if self.bins.is_empty() {
            return;
        }
        let b = ((plane.z - self.z0) / self.bin).floor();
        if b < 0.0 || b as usize >= self.bins.len() {
            return;
        }
        for &k in &self.bins[b as usize] {
            let c = &self.caps[k as usize];
            let r = c.ra.max(c.rb) + plane.wz;
            if plane.z < c.a[2].min(c.b[2]) - r || plane.z > c.a[2].max(c.b[2]) + r {
                continue;
            }
            paint_capsule(c, &self.fill, plane, buf, noise);
        }
    }
}

/// A curved bony plate (scapula, iliac wing) as a band around a centre: at each height an arc
/// of given radius, angular span and thickness.
pub(crate) struct ArcBand {
    pub cx: Curve,
    pub cy: Curve,
    pub r: Curve,
    pub a0: Curve,
    pub a1: Curve,
    /// Thickness at the start and end of the arc.
    pub t0: Curve,
    pub t1: Curve,
    pub zlo: f64,
    pub zhi: f64,
    pub cortex: Fill,
    pub marrow: Fill,
}

impl ArcBand {
    fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        let z = plane.z;
        if z < self.zlo || z > self.zhi {
            return;
        }
        let (cx, cy, r) = (self.cx.at(z), self.cy.at(z), self.r.at(z));
        let (a0, a1) = (self.a0.at(z), self.a1.at(z));
        let (t0, t1) = (self.t0.at(z), self.t1.at(z));
        if t0.max(t1) < 0.3 || (a1 - a0).abs() < 1e-3 {
            return;
        }
        let (lo, hi) = (a0.min(a1), a0.max(a1));
        let pad = t0.max(t1) + 3.0;
        let mut bb = [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for k in 0..=24 {
            let a = lerp(lo, hi, k as f64 / 24.0);
            let (px, py) = (cx + r * a.cos(), cy + r * a.sin());
            bb = [bb[0].min(px), bb[1].max(px), bb[2].min(py), bb[3].max(py)];
        }
        let (c0, c1) = plane.cols(bb[0] - pad, bb[1] + pad);
        let (r0, r1) = plane.rows(bb[2] - pad, bb[3] + pad);
        let w = plane.w_xy();
        let mid = 0.5 * (lo + hi);
        for j in r0..r1 {
            let y = plane.y(j);
            for i in c0..c1 {
                let x = plane.x(i);
                let (dx, dy) = (x - cx, y - cy);
                let rho = (dx * dx + dy * dy).sqrt();
                if (rho - r).abs() > t0.max(t1) + 2.0 * w {
                    continue;
                }
                let mut ang = dy.atan2(dx);
                // Unwrap the angle around the arc's middle.
                while ang < mid - std::f64::consts::PI {
                    ang += std::f64::consts::TAU;
                }
                while ang > mid + std::f64::consts::PI {
                    ang -= std::f64::consts::TAU;
                }
                let u = clamp01((ang - a0) / (a1 - a0));
                let th = lerp(t0, t1, u);
                let d_rad = (rho - r).abs() - 0.5 * th;
                let d_ang = ((ang - hi).max(lo - ang)) * rho;
                let d = d_rad.max(d_ang);
                let a = coverage(d, w);
                if a <= 0.0 {
                    continue;
                }
                let p = [x, y, z];
                let px = &mut buf[j * plane.nx + i];
                blend(px, self.cortex.at(noise, p, plane), a);
                if th > 3.0 {
                    blend(px, self.marrow.at(noise, p, plane), coverage(d + 1.3, w));
                }
            }
        }
    }
}

/// A loft whose contents separate into gas (anterior, non-dependent) and fluid.
pub(crate) struct GasFluid {
    pub outer: Loft,
    pub inner: Loft,
    pub gas_level: Curve,
}

/// One paintable piece of anatomy, in painting order.
pub(crate) enum Item {
    Table,
    Torso,
    Liver(Liver),
    Loft(Loft),
    /// A loft painted only inside the body cavity and below the diaphragm.
    AbdLoft(Loft),
    Caps(CapsuleSet),
    List(CapsuleList),
    Arc(Box<ArcBand>),
    Stomach(Box<GasFluid>),
}

/// All anatomy except the spine.
pub(crate) struct Anatomy {
    pub torso: Torso,
    pub items: Vec<Item>,
}

impl Anatomy {
    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32], noise: &Noise3) {
        let ctx = self.torso.plane_ctx(plane, noise);
        // Organ textures come from the plane's texture grid.
        let plane = Plane {
            tex: Some(&ctx.fine),
            ..*plane
        };
        for it in &self.items {
            self.paint_one(it, &ctx, &plane, buf, noise);
        }
    }

    pub(crate) fn paint_one(
        &self,
        it: &Item,
        ctx: &PlaneCtx,
        plane: &Plane,
        buf: &mut [f32],
        noise: &Noise3,
    ) {
        match it {
            Item::Table => self.torso.table.paint(plane, buf),
            Item::Torso => self.torso.paint(ctx, plane, buf),
            Item::Liver(l) => l.paint(&self.torso, ctx, plane, buf, noise),
            Item::Loft(l) => l.paint(plane, buf, noise),
            Item::AbdLoft(l) => {
                let t = &self.torso;
                l.paint_with(plane, buf, noise, |x, y| {
                    ctx.cavity_d(x, y, t) < 0.0 && plane.z < t.domes.height(x, y).0 - 4.0
                })
            }
            Item::Caps(c) => c.paint(plane, buf, noise),
            Item::List(c) => c.paint(plane, buf, noise),
            Item::Arc(a) => a.paint(plane, buf, noise),
            Item::Stomach(g) => {
                g.outer.paint(plane, buf, noise);
                let level = g.gas_level.at(plane.z);
                let mut gas = g.inner.clone();
                gas.fill = Fill::solid(-950.0);
                g.inner.paint_with(plane, buf, noise, |_, y| y >= level);
                gas.paint_with(plane, buf, noise, |_, y| y < level);
            }
        }
    }
}

/// Patient-level choices the anatomy needs.
pub(crate) struct AnatomyParams {
    pub size: f64,
    pub age: f64,
    pub habitus: Habitus,
    pub arms: Arms,
    pub contrast: bool,
    pub bone_density: f64,
    pub cortex_hu: f64,
}

fn keys(spine: &SpineRef, pts: &[(Level, f64)]) -> Curve {
    Curve::new(pts.iter().map(|&(l, v)| (spine.z(l), v)).collect())
}

/// Builds every organ and bone around the spine.
pub(crate) fn build(seed: u64, spine: &Spine, p: &AnatomyParams) -> Anatomy {
    let mut r = Rng::stream(seed, "anatomy", 0);
    let sref = SpineRef::new(spine);
    let s = p.size;
    let frame_scale = match p.habitus {
        Habitus::Thin => 0.95,
        Habitus::Normal => 1.0,
        Habitus::Obese => 1.05,
    } * s;
    let (fat_base, visceral) = match p.habitus {
        Habitus::Thin => (r.range(3.0, 6.0), r.range(0.05, 0.2)),
        Habitus::Normal => (r.range(8.0, 18.0), r.range(0.25, 0.45)),
        Habitus::Obese => (r.range(22.0, 42.0), r.range(0.5, 0.75)),
    };
    let fat_abdomen = match p.habitus {
        Habitus::Thin => 1.1,
        Habitus::Normal => 1.4,
        Habitus::Obese => 1.8,
    };
    let contrast = p.contrast;
    let age = p.age;
    let blood_plain = r.range(35.0, 48.0);
    let art = if contrast {
        r.range(250.0, 350.0)
    } else {
        blood_plain
    };
    let tissues = Tissues {
        lung: r.range(-880.0, -830.0) - 25.0 * age,
        fat: r.range(-112.0, -92.0),
        muscle: r.range(42.0, 55.0) + if contrast { 8.0 } else { 0.0 },
        paraspinal: r.range(30.0, 52.0) - 18.0 * age,
        skin: r.range(15.0, 40.0),
        blood_art: art,
        blood_ven: if contrast {
            r.range(90.0, 150.0)
        } else {
            blood_plain
        },
        blood_pa: if contrast {
            art * r.range(0.75, 1.0)
        } else {
            blood_plain
        },
        vessel_wall: r.range(35.0, 50.0),
        myocardium: if contrast {
            r.range(90.0, 130.0)
        } else {
            blood_plain + 2.0
        },
        liver: if contrast {
            r.range(85.0, 115.0)
        } else {
            r.range(52.0, 66.0)
        },
        liver_vessels: if contrast {
            r.range(140.0, 190.0)
        } else {
            blood_plain - 8.0
        },
        spleen: if contrast {
            r.range(100.0, 130.0)
        } else {
            r.range(42.0, 52.0)
        },
        kidney_cortex: if contrast {
            r.range(150.0, 210.0)
        } else {
            r.range(28.0, 38.0)
        },
        kidney_medulla: if contrast {
            r.range(90.0, 130.0)
        } else {
            r.range(25.0, 35.0)
        },
        pancreas: if contrast {
            r.range(85.0, 115.0)
        } else {
            r.range(35.0, 48.0)
        },
        bowel_wall: if contrast {
            r.range(60.0, 90.0)
        } else {
            r.range(32.0, 45.0)
        },
        fluid: r.range(2.0, 15.0),
        cartilage: r.range(90.0, 140.0),
        thyroid: if contrast {
            r.range(130.0, 170.0)
        } else {
            r.range(75.0, 110.0)
        },
        cortex: p.cortex_hu,
        marrow: p.bone_density * r.range(0.7, 1.0) + 30.0,
        yellow_marrow: r.range(-70.0, -20.0),
        visceral,
    };
    let arms_down = p.arms == Arms::Down;
    let zl = |l: Level| sref.z(l);
    // Envelope half width and anterior distance from the body centre, at level heights.
    let env_a = keys(
        &sref,
        &[
            (Level::C5, 55.0 * s),
            // The shoulder girdle (trapezius, supraclavicular fat) widens the section from the
            // lower neck to the acromion.
            (Level::C6, 64.0 * s),
            (Level::C7, if arms_down { 112.0 } else { 96.0 } * s),
            (
                Level::T1,
                if arms_down { 140.0 } else { 124.0 } * frame_scale,
            ),
            (
                Level::T2,
                if arms_down { 142.0 } else { 132.0 } * frame_scale,
            ),
            (Level::T4, 138.0 * frame_scale),
            (Level::T6, 141.0 * frame_scale),
            (Level::T9, 143.0 * frame_scale),
            (Level::T12, 140.0 * frame_scale),
            (Level::L2, 134.0 * frame_scale),
            (Level::L4, 138.0 * frame_scale),
            (Level::S1, 150.0 * frame_scale),
        ],
    );
    let abd = 1.0 + 0.6 * (visceral - 0.3);
    let env_front = keys(
        &sref,
        &[
            (Level::C5, 42.0 * s),
            (Level::C7, 52.0 * s),
            (Level::T1, 68.0 * s),
            (Level::T2, 88.0 * s),
            (Level::T4, 106.0 * frame_scale),
            (Level::T6, 120.0 * frame_scale),
            (Level::T9, 126.0 * frame_scale),
            (Level::T12, 124.0 * frame_scale * abd.sqrt()),
            (Level::L2, 112.0 * frame_scale * abd),
            (Level::L4, 108.0 * frame_scale * abd),
            (Level::S1, 98.0 * frame_scale),
        ],
    );
    // The back: free at the neck (head rest), resting on the table below the shoulders.
    let fat_post = fat_base * 0.7;
    let skin = r.range(1.5, 2.2);
    // Natural back (muscle surface) behind each level: the arch's reach plus the muscle over
    // the spinous processes (thicker in the lumbar spine).
    let mut nat = Vec::new();
    let mut table_env: f64 = f64::NEG_INFINITY;
    for v in spine
        .verts
        .iter()
        .take(S1_INDEX + 1)
        .skip(Level::T2.index())
    {
        let rods = super::vertebra::arch_rods(&v.body, &v.canal, &v.arch, v.sacral);
        let mut reach: f64 = 0.0;
        for (a, b, ra, rb) in rods {
            let ga = v.frame.to_global(a);
            let gb = v.frame.to_global(b);
            reach = reach.max(ga[1] + ra).max(gb[1] + rb);
        }
        let muscle = if v.level == Level::S1 {
            // The buttocks: gluteal muscle behind the sacrum.
            r.range(40.0, 55.0)
        } else if v.level.is_lumbar() {
            r.range(10.0, 16.0)
        } else {
            r.range(6.0, 10.0)
        };
        let o = v.frame.origin;
        nat.push((o[2], reach + muscle - o[1]));
        table_env = table_env.max(reach + muscle);
    }
    // The most posterior point of the back rests on the table.
    let table_y = table_env + fat_post + skin;
    let table = Table {
        y0: table_y,
        x0: r.range(-10.0, 10.0),
        radius: r.range(650.0, 1000.0),
        half_width: r.range(220.0, 255.0),
        shell_hu: r.range(150.0, 350.0),
        core_mm: r.range(14.0, 24.0),
        rail_gap: r.range(25.0, 55.0),
    };
    // Envelope back: the natural back plus some sag, flattened where it meets the table (the
    // lordotic lumbar back may stay clear of it).
    let nat = Curve::new(nat);
    let back = {
        let mut k = Vec::new();
        let z_neck = zl(Level::T1) - 10.0;
        for i in 0..=80 {
            let z = lerp(zl(Level::S1) - 150.0, zl(Level::C5) + 40.0, i as f64 / 80.0);
            let v = if z > z_neck {
                let t = smoothstep(z_neck, zl(Level::C7), z);
                lerp(nat.at(z_neck) + 22.0, 58.0 * s, t)
            } else {
                nat.at(z) + 22.0
            };
            k.push((z, v));
        }
        Curve::new(k)
    };
    let xoff = Curve::new(vec![
        (zl(Level::S1), r.range(-6.0, 6.0)),
        (zl(Level::T1), r.range(-6.0, 6.0)),
    ]);
    let mus_front = keys(
        &sref,
        &[
            (Level::C6, 8.0),
            (Level::T2, 20.0 * s),
            (Level::T4, 18.0 * s),
            (Level::T7, 10.0 * s),
            (Level::T10, 8.0 * s),
            (Level::L2, 10.0 * s),
        ],
    );
    let z_inlet = zl(Level::T1) + 0.5 * spine.verts[Level::T1.index()].body.hp0;
    let xs_t6 = sref.x(zl(Level::T6));
    let ys_t6 = sref.y(zl(Level::T6));
    let dome_r = zl(Level::T10) + r.range(-8.0, 18.0);
    let domes = Domes {
        right: (xs_t6 - 65.0 * s, ys_t6 - 35.0, dome_r),
        left: (xs_t6 + 65.0 * s, ys_t6 - 30.0, dome_r - r.range(10.0, 25.0)),
        k: r.range(0.0068, 0.0085) / s,
    };
    let apex_z = zl(Level::C7) + r.range(-8.0, 6.0);
    let apices = Apices {
        right: (sref.x(apex_z) - 45.0 * s, sref.y(apex_z) + 8.0, apex_z),
        left: (
            sref.x(apex_z) + 45.0 * s,
            sref.y(apex_z) + 8.0,
            apex_z - r.range(0.0, 6.0),
        ),
        k: 0.0026 / s,
    };
    let torso = Torso {
        spine: sref,
        a: env_a,
        front: env_front,
        back,
        xoff,
        harm_amp: r.range(0.025, 0.05),
        harm_lane: r.range(0.0, 40.0),
        fat: [fat_base, fat_base * 1.05, fat_post],
        fat_abdomen,
        mus_front,
        mus_side: r.range(10.0, 15.0) * s,
        mus_back: r.range(13.0, 18.0) * s,
        skin,
        table,
        domes,
        apices,
        tissues,
        z_inlet,
    };
    let mut items = vec![Item::Table, Item::Torso];
    let noise = Noise3::new(&mut Rng::stream(seed, "texture", 0));
    organs(&mut items, &torso, &mut r, seed, p, &noise);
    Anatomy { torso, items }
}

fn harm(r: &mut Rng, amp: f64) -> [(f64, f64); 4] {
    let mut h = [(0.0, 0.0); 4];
    for (k, v) in h.iter_mut().enumerate() {
        let a = amp / (1.0 + k as f64);
        *v = (r.normal() * a, r.normal() * a);
    }
    h
}

/// A loft along a path of (z, centre, radii) keys, with a fill.
fn loft(keys: &[(f64, f64, f64, f64, f64)], rot: f64, h: [(f64, f64); 4], fill: Fill) -> Loft {
    Loft::new(
        Curve::new(keys.iter().map(|k| (k.0, k.1)).collect()),
        Curve::new(keys.iter().map(|k| (k.0, k.2)).collect()),
        Curve::new(keys.iter().map(|k| (k.0, k.3)).collect()),
        Curve::new(keys.iter().map(|k| (k.0, k.4)).collect()),
        Curve::constant(rot),
        h,
        fill,
    )
}

/// An ellipsoid-like loft centred at c with half-axes (ax, ay, hz).
fn ellipsoid(c: V3, ax: f64, ay: f64, hz: f64, rot: f64, h: [(f64, f64); 4], fill: Fill) -> Loft {
    let kx = Loft::ellipsoid_keys(c[2] - hz, c[2] + hz, ax);
    let ky = Loft::ellipsoid_keys(c[2] - hz, c[2] + hz, ay);
    Loft::new(
        Curve::constant(c[0]),
        Curve::constant(c[1]),
        Curve::new(kx),
        Curve::new(ky),
        Curve::constant(rot),
        h,
        fill,
    )
}

/// Tube along a polyline with per-point radius: wall and lumen.
fn tube(pts: &[(V3, f64)], wall: f64, outer: Fill, lumen: Option<Fill>) -> CapsuleSet {
    let caps = pts
        .windows(2)
        .map(|w| Capsule::new(w[0].0, w[1].0, w[0].1, w[1].1))
        .collect();
    CapsuleSet::new(caps, 1.0, outer, lumen, wall)
}

/// Smooth path through control points (Catmull-Rom), `n` samples per span.
fn spline(ctrl: &[(V3, f64)], n: usize) -> Vec<(V3, f64)> {
    if ctrl.len() < 3 {
        return ctrl.to_vec();
    }
    let mut out = Vec::new();
    for i in 0..ctrl.len() - 1 {
        let p0 = if i == 0 { ctrl[0] } else { ctrl[i - 1] };
        let (p1, p2) = (ctrl[i], ctrl[i + 1]);
        let p3 = if i + 2 < ctrl.len() {
            ctrl[i + 2]
        } else {
            ctrl[i + 1]
        };
        for k in 0..n {
            let t = k as f64 / n as f64;
            let t2 = t * t;
            let t3 = t2 * t;
            let f = |a: f64, b: f64, c: f64, d: f64| {
                0.5 * (2.0 * b
                    + (-a + c) * t
                    + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                    + (-a + 3.0 * b - 3.0 * c + d) * t3)
            };
            let pt = [
                f(p0.0[0], p1.0[0], p2.0[0], p3.0[0]),
                f(p0.0[1], p1.0[1], p2.0[1], p3.0[1]),
                f(p0.0[2], p1.0[2], p2.0[2], p3.0[2]),
            ];
            out.push((pt, lerp(p1.1, p2.1, t)));
        }
    }
    if let Some(l) = ctrl.last() {
        out.push(*l);
    }
    out
}

/// Random vessel (or airway) tree from a root, kept inside `inside`.
#[allow(clippy::too_many_arguments)]
fn grow_tree(
    out: &mut Vec<Capsule>,
    r: &mut Rng,
    root: V3,
    dir: V3,
    radius: f64,
    len: f64,
    min_r: f64,
    depth: u32,
    inside: &dyn Fn(V3) -> bool,
) {
    if radius < min_r || depth > 12 || out.len() > 6000 {
        return;
    }
    let mut l = len;
    let mut end = add(root, scale(dir, l));
    let mut ok = inside(end) && inside(lerp3(root, end, 0.5));
    if !ok {
        l *= 0.5;
        end = add(root, scale(dir, l));
        ok = inside(end);
    }
    if !ok {
        return;
    }
    let r_end = radius * 0.92;
    out.push(Capsule::new(root, end, radius, r_end));
    let kids = if depth < 3 { 3 } else { 2 };
    for k in 0..kids {
        let spread = r.range(0.35, 0.7);
        // Perpendicular kick in a random direction.
        let rnd = normalize([r.normal(), r.normal(), r.normal()]);
        let side = normalize(sub(rnd, scale(dir, super::math::dot(rnd, dir))));
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        let nd = normalize(add(dir, scale(side, sign * spread.tan())));
        let shrink = if k == 0 {
            r.range(0.78, 0.86)
        } else {
            r.range(0.62, 0.76)
        };
        let nl = l * r.range(0.72, 0.88);
        grow_tree(
            out,
            r,
            end,
            nd,
            r_end * shrink,
            nl,
            min_r,
            depth + 1,
            inside,
        );
    }
}

#[allow(clippy::too_many_lines)]
fn organs(
    items: &mut Vec<Item>,
    torso: &Torso,
    r: &mut Rng,
    seed: u64,
    p: &AnatomyParams,
    noise: &Noise3,
) {
    let sr = &torso.spine;
    let t = &torso.tissues;
    let s = p.size;
    let z = |l: Level| sr.z(l);
    let ba_at = |zz: f64| sr.y(zz) - sr.front(zz);

    // Lung vessel trees (pulmonary arteries and veins) and bronchi, grown from the hila.
    let hila = [
        (
            sr.at(sr.zt(Level::T5, Level::T6, 0.6), -38.0 * s, -38.0),
            -1.0,
        ),
        (
            sr.at(sr.zt(Level::T5, Level::T6, 0.4), 40.0 * s, -34.0),
            1.0,
        ),
    ];
    let inside = |q: V3| torso.in_lung(q, noise);
    let mut arteries = Vec::new();
    let mut veins = Vec::new();
    let mut bronchi = Vec::new();
    let mut tr = Rng::stream(seed, "lung-trees", 0);
    for &(h, side) in &hila {
        let dirs: [V3; 10] = [
            [side * 0.3, 0.1, 1.0],
            [side * 0.5, 0.5, 0.9],
            [side * 0.4, -0.5, 0.8],
            [side * 1.0, 0.0, 0.3],
            [side * 0.8, 0.5, -0.6],
            [side * 0.5, -0.6, -0.5],
            [side * 0.4, 0.4, -1.0],
            [side * 0.2, 0.8, -0.6],
            [side * 0.9, -0.3, 0.0],
            [side * 0.5, -0.8, 0.1],
        ];
        for d in dirs {
            let d = normalize(d);
            let start = add(h, scale(d, 12.0));
            grow_tree(
                &mut arteries,
                &mut tr,
                start,
                d,
                5.2 * s,
                30.0 * s,
                0.75,
                0,
                &inside,
            );
            let dv = normalize(add(d, [0.0, 0.25, -0.35]));
            let hv = add(h, [0.0, 12.0, -18.0]);
            grow_tree(
                &mut veins,
                &mut tr,
                add(hv, scale(dv, 12.0)),
                dv,
                4.6 * s,
                28.0 * s,
                0.75,
                1,
                &inside,
            );
            grow_tree(
                &mut bronchi,
                &mut tr,
                add(h, scale(d, 8.0)),
                d,
                4.0 * s,
                26.0 * s,
                1.6,
                2,
                &inside,
            );
        }
    }
    items.push(Item::List(CapsuleList::new(
        arteries,
        Fill::tex(t.blood_pa, 6.0, 2.0),
    )));
    items.push(Item::List(CapsuleList::new(
        veins,
        Fill::tex(lerp(t.blood_ven, t.blood_art, 0.6), 6.0, 2.0),
    )));
    let walls: Vec<Capsule> = bronchi
        .iter()
        .map(|c| Capsule::new(c.a, c.b, c.ra + 0.8, c.rb + 0.8))
        .collect();
    items.push(Item::List(CapsuleList::new(
        walls,
        Fill::solid(t.muscle - 5.0),
    )));
    items.push(Item::List(CapsuleList::new(bronchi, Fill::solid(-960.0))));

    // Mediastinum: a fatty column from the thoracic inlet to the diaphragm between sternum and
    // spine.
    {
        let mut keys = Vec::new();
        let z_bottom = torso
            .domes
            .z(sr.x(z(Level::T10)), sr.front(z(Level::T10)) - 30.0)
            .0
            - 6.0;
        for i in 0..=12 {
            let zz = lerp(z(Level::T1) + 10.0, z_bottom, i as f64 / 12.0);
            let sec = torso.section(zz, noise);
            let front = sec.cavity_point(-std::f64::consts::FRAC_PI_2).1 + 3.0;
            let back = sr.front(zz) - 2.0;
            let width = lerp(24.0, 34.0, i as f64 / 12.0) * s;
            keys.push((
                zz,
                sr.x(zz) + 4.0,
                0.5 * (front + back),
                width,
                0.5 * (back - front).max(4.0),
            ));
        }
        items.push(Item::Loft(loft(
            &keys,
            0.0,
            harm(r, 0.03),
            Fill::tex(t.fat + 15.0, 10.0, 3.0),
        )));
    }

    // Heart with pericardial fat, myocardium and (with contrast) bright chambers.
    let heart_rot = r.range(0.45, 0.75);
    let (hax, hay, hhz) = (62.0 * s * r.range(0.9, 1.1), 46.0 * s, 52.0 * s);
    // The heart rests on the diaphragm's central tendon.
    let hc = {
        let zh0 = sr.zt(Level::T8, Level::T9, 0.5);
        let c0 = sr.at(zh0, 22.0 * s + r.range(-5.0, 5.0), -ba_at(zh0) - 62.0 * s);
        let (zd, _) = torso.domes.z(c0[0], c0[1]);
        [c0[0], c0[1], zd + hhz - 2.0]
    };
    let hh = harm(r, 0.04);
    items.push(Item::Loft(ellipsoid(
        hc,
        hax + 5.0,
        hay + 5.0,
        hhz + 4.0,
        heart_rot,
        hh,
        Fill::tex(t.fat + 10.0, 8.0, 3.0),
    )));
    items.push(Item::Loft(ellipsoid(
        hc,
        hax,
        hay,
        hhz,
        heart_rot,
        hh,
        Fill::tex(t.myocardium, 5.0, 3.0),
    )));
    if p.contrast {
        let (sn, cs) = heart_rot.sin_cos();
        let rot = |dx: f64, dy: f64, dz: f64| {
            [
                hc[0] + cs * dx - sn * dy,
                hc[1] + sn * dx + cs * dy,
                hc[2] + dz,
            ]
        };
        let lv = t.blood_art;
        let rv = t.blood_ven.max(t.blood_pa * 0.8);
        items.push(Item::Loft(ellipsoid(
            rot(18.0, 10.0, -8.0),
            24.0 * s,
            17.0 * s,
            34.0 * s,
            heart_rot,
            harm(r, 0.05),
            Fill::solid(lv),
        )));
        items.push(Item::Loft(ellipsoid(
            rot(-18.0, -20.0, -4.0),
            30.0 * s,
            12.0 * s,
            36.0 * s,
            heart_rot,
            harm(r, 0.05),
            Fill::solid(rv),
        )));
        items.push(Item::Loft(ellipsoid(
            rot(-4.0, 30.0, 24.0),
            26.0 * s,
            14.0 * s,
            18.0 * s,
            heart_rot,
            harm(r, 0.05),
            Fill::solid(lv),
        )));
        items.push(Item::Loft(ellipsoid(
            rot(-42.0, 6.0, 10.0),
            18.0 * s,
            16.0 * s,
            26.0 * s,
            heart_rot,
            harm(r, 0.05),
            Fill::solid(rv),
        )));
    }

    // Aorta: root, ascending, arch over the left main bronchus, descending along the left
    // anterolateral spine, abdominal aorta, bifurcation into the iliac arteries.
    let ra = 1.0 + 0.15 * p.age;
    let left_of = |zz: f64, extra: f64| sr.x(zz) + sr.half_width(zz) + extra;
    let mut ctrl: Vec<(V3, f64)> = vec![
        (add(hc, [-20.0, 22.0, 30.0]), 15.0 * s * ra),
        (
            sr.at(z(Level::T5), -10.0, -ba_at(z(Level::T5)) - 52.0 * s),
            15.0 * s * ra,
        ),
        (
            sr.at(z(Level::T3) - 4.0, 2.0, -ba_at(z(Level::T3)) - 34.0 * s),
            14.0 * s * ra,
        ),
        (
            sr.at(z(Level::T4), 20.0 * s, -ba_at(z(Level::T4)) - 6.0),
            13.0 * s * ra,
        ),
    ];
    for l in [Level::T5, Level::T7, Level::T9, Level::T11] {
        let zz = z(l);
        let rr = lerp(12.5, 11.5, (l.index() - Level::T5.index()) as f64 / 6.0) * s * ra;
        ctrl.push((
            [
                left_of(zz, rr * 0.35),
                sr.y(zz) - 0.15 * ba_at(zz) - 4.0,
                zz,
            ],
            rr,
        ));
    }
    for (k, l) in [Level::L1, Level::L2, Level::L3].into_iter().enumerate() {
        let zz = z(l);
        let rr = (10.5 - 0.5 * k as f64) * s * ra;
        ctrl.push(([sr.x(zz) + 12.0, sr.front(zz) - rr - 3.0, zz], rr));
    }
    let z_bif = sr.zt(Level::L4, Level::L5, 0.2);
    ctrl.push((
        [sr.x(z_bif) + 6.0, sr.front(z_bif) - 12.0, z_bif],
        9.0 * s * ra,
    ));
    let aorta_pts = spline(&ctrl, 6);
    items.push(Item::Caps(tube(
        &aorta_pts,
        1.8,
        Fill::solid(t.vessel_wall),
        Some(Fill::solid(t.blood_art)),
    )));
    for side in [-1.0, 1.0] {
        let il = spline(
            &[
                ([sr.x(z_bif) + 6.0, sr.front(z_bif) - 10.0, z_bif], 6.5 * s),
                (
                    [
                        sr.x(z(Level::L5)) + side * 30.0,
                        sr.front(z(Level::L5)) - 6.0,
                        z(Level::L5) - 8.0,
                    ],
                    6.0 * s,
                ),
                (
                    [
                        sr.x(z(Level::S1)) + side * 55.0,
                        sr.front(z(Level::S1)) - 8.0,
                        z(Level::S1) - 25.0,
                    ],
                    5.5 * s,
                ),
                (
                    [
                        sr.x(z(Level::S1)) + side * 75.0,
                        sr.front(z(Level::S1)) - 25.0,
                        z(Level::S1) - 70.0,
                    ],
                    5.0 * s,
                ),
            ],
            4,
        );
        items.push(Item::Caps(tube(
            &il,
            1.2,
            Fill::solid(t.vessel_wall),
            Some(Fill::solid(t.blood_art)),
        )));
    }
    // Calcified plaques along the aortic wall, more with age, mostly abdominal.
    let n_plaques = (p.age * p.age * r.range(5.0, 30.0)) as usize;
    let mut plaques = Vec::new();
    for _ in 0..n_plaques {
        let k = (aorta_pts.len() as f64 * lerp(0.35, 1.0, r.f64().sqrt())) as usize;
        let (c, rr) = aorta_pts[k.min(aorta_pts.len() - 1)];
        let ang = r.range(0.0, std::f64::consts::TAU);
        let q = [c[0] + rr * ang.cos(), c[1] + rr * ang.sin(), c[2]];
        let l = r.range(1.0, 5.0);
        plaques.push(Capsule::new(
            q,
            add(q, [0.0, 0.0, l]),
            r.range(0.8, 1.8),
            r.range(0.6, 1.4),
        ));
    }
    items.push(Item::List(CapsuleList::new(
        plaques,
        Fill::tex(r.range(500.0, 900.0), 150.0, 1.0),
    )));

    // Pulmonary trunk and arteries to the hila.
    let pa_root = add(hc, [-5.0, -30.0, 40.0]);
    let bif = sr.at(
        sr.zt(Level::T5, Level::T6, 0.2),
        12.0,
        -ba_at(z(Level::T5)) - 42.0 * s,
    );
    items.push(Item::Caps(tube(
        &spline(
            &[(pa_root, 13.0 * s), (bif, 12.0 * s), (hila[1].0, 10.0 * s)],
            5,
        ),
        1.0,
        Fill::solid(t.vessel_wall),
        Some(Fill::solid(t.blood_pa)),
    )));
    items.push(Item::Caps(tube(
        &spline(
            &[
                (bif, 11.0 * s),
                (add(bif, [-30.0, 8.0, -6.0]), 10.0 * s),
                (hila[0].0, 9.5 * s),
            ],
            5,
        ),
        1.0,
        Fill::solid(t.vessel_wall),
        Some(Fill::solid(t.blood_pa)),
    )));

    // Venae cavae: IVC from the iliac confluence up the right of the spine into the right
    // atrium; SVC from the upper mediastinum down to it.
    let ivc_ctrl: Vec<(V3, f64)> = vec![
        (
            [
                sr.x(z(Level::L5)) - 18.0,
                sr.front(z(Level::L5)) - 14.0,
                z(Level::L5),
            ],
            10.0 * s,
        ),
        (
            [
                sr.x(z(Level::L3)) - 22.0,
                sr.front(z(Level::L3)) - 13.0,
                z(Level::L3),
            ],
            11.0 * s,
        ),
        (
            [
                sr.x(z(Level::L1)) - 24.0,
                sr.front(z(Level::L1)) - 18.0,
                z(Level::L1),
            ],
            12.0 * s,
        ),
        (
            [
                sr.x(z(Level::T11)) - 28.0,
                sr.front(z(Level::T11)) - 30.0,
                z(Level::T11),
            ],
            13.0 * s,
        ),
        (add(hc, [-45.0, 12.0, -30.0]), 13.0 * s),
    ];
    items.push(Item::Caps(tube(
        &spline(&ivc_ctrl, 5),
        0.0,
        Fill::solid(t.blood_ven),
        None,
    )));
    let svc = spline(
        &[
            (
                sr.at(z(Level::T2), -25.0, -ba_at(z(Level::T2)) - 40.0),
                9.0 * s,
            ),
            (
                sr.at(z(Level::T4), -28.0, -ba_at(z(Level::T4)) - 50.0),
                10.0 * s,
            ),
            (add(hc, [-40.0, 10.0, 45.0]), 10.5 * s),
        ],
        5,
    );
    items.push(Item::Caps(tube(
        &svc,
        0.0,
        Fill::solid(lerp(t.blood_ven, t.blood_art, 0.5)),
        None,
    )));
    // Azygos vein, right anterolateral on the thoracic bodies, arching into the SVC.
    let mut az = Vec::new();
    for l in [Level::T11, Level::T9, Level::T7, Level::T5] {
        let zz = z(l);
        az.push((
            [sr.x(zz) - sr.half_width(zz) * 0.55, sr.front(zz) + 2.0, zz],
            4.0 * s,
        ));
    }
    az.push((
        sr.at(z(Level::T4) + 5.0, -22.0, -ba_at(z(Level::T4)) - 30.0),
        5.0 * s,
    ));
    items.push(Item::Caps(tube(
        &spline(&az, 5),
        0.0,
        Fill::solid(t.blood_ven),
        None,
    )));

    // Trachea and main bronchi (air with a cartilage wall), esophagus behind the trachea.
    let carina = sr.at(
        sr.zt(Level::T4, Level::T5, 0.6),
        2.0,
        -ba_at(z(Level::T5)) - 26.0 * s,
    );
    let mut trachea = Vec::new();
    for l in [Level::C5, Level::C7, Level::T2] {
        let zz = z(l);
        trachea.push(([sr.x(zz), sr.front(zz) - 22.0 * s, zz], 9.5 * s));
    }
    trachea.push((add(carina, [0.0, -2.0, 20.0]), 9.5 * s));
    trachea.push((carina, 8.5 * s));
    let wall = Fill::tex(t.cartilage + 60.0 * p.age, 40.0 * p.age, 2.0);
    items.push(Item::Caps(tube(
        &spline(&trachea, 5),
        2.0,
        wall,
        Some(Fill::solid(-990.0)),
    )));
    for h in hila {
        items.push(Item::Caps(tube(
            &[(carina, 7.5 * s), (h.0, 6.0 * s)],
            1.6,
            wall,
            Some(Fill::solid(-990.0)),
        )));
    }
    let mut eso = Vec::new();
    for l in [
        Level::C5,
        Level::C7,
        Level::T2,
        Level::T4,
        Level::T6,
        Level::T8,
        Level::T10,
    ] {
        let zz = z(l);
        eso.push(([sr.x(zz) + 4.0, sr.front(zz) - 9.0, zz], 7.5 * s));
    }
    let gej = sr.at(z(Level::T11), 38.0 * s, -ba_at(z(Level::T11)) - 40.0);
    eso.push((gej, 9.0 * s));
    let eso_lumen = if r.chance(0.4) {
        Some(Fill::solid(-900.0))
    } else {
        None
    };
    items.push(Item::Caps(tube(
        &spline(&eso, 4),
        5.5,
        Fill::tex(t.muscle - 5.0, 5.0, 2.0),
        eso_lumen,
    )));

    // Neck: thyroid lobes, carotid arteries and jugular veins.
    for side in [-1.0, 1.0] {
        let zt = sr.zt(Level::C6, Level::C7, 0.8);
        let c = sr.at(zt, side * 17.0 * s, -ba_at(zt) - 20.0 * s);
        items.push(Item::Loft(ellipsoid(
            c,
            9.0 * s,
            12.0 * s,
            22.0 * s,
            side * 0.5,
            harm(r, 0.05),
            Fill::tex(t.thyroid, 8.0, 3.0),
        )));
        let carotid: Vec<(V3, f64)> = [Level::C5, Level::C7, Level::T1]
            .iter()
            .map(|&l| {
                (
                    sr.at(z(l), side * 26.0 * s, -ba_at(z(l)) - 12.0 * s),
                    4.0 * s,
                )
            })
            .collect();
        items.push(Item::Caps(tube(
            &spline(&carotid, 4),
            0.0,
            Fill::solid(t.blood_art),
            None,
        )));
        let jug: Vec<(V3, f64)> = [Level::C5, Level::C7, Level::T1]
            .iter()
            .map(|&l| {
                (
                    sr.at(z(l), side * 36.0 * s, -ba_at(z(l)) - 14.0 * s),
                    6.5 * s,
                )
            })
            .collect();
        items.push(Item::Caps(tube(
            &spline(&jug, 4),
            0.0,
            Fill::solid(t.blood_ven),
            None,
        )));
    }

    // Liver, then organs painted over it.
    let xs = sr.x(z(Level::T12));
    let ys = sr.y(z(Level::T12));
    items.push(Item::Liver(Liver {
        bottom_right: sr.zt(Level::L2, Level::L3, r.range(0.0, 0.8)),
        bottom_left: sr.zt(Level::T11, Level::T12, r.range(0.0, 1.0)),
        x_right: xs - 130.0 * s,
        x_left: xs + 40.0 * s,
        edge_post: xs - 12.0 * s,
        edge_ant: xs + r.range(25.0, 60.0) * s,
        y_turn: ys - 40.0,
        fill: Fill::tex(t.liver, 7.0, 4.0),
    }));
    // Hepatic and portal veins inside the liver.
    {
        let hv_root = [xs - 30.0 * s, ys - 40.0, torso.domes.right.2 - 15.0];
        let in_liver = |q: V3| {
            let sec = torso.section(q[2], noise);
            let (zd, _) = torso.domes.z(q[0], q[1]);
            q[0] < xs + 10.0
                && q[2] < zd - 12.0
                && q[2] > sr.zt(Level::T12, Level::L1, 0.5)
                && sec.cavity_d(q[0], q[1], &torso.table, torso.skin) < -8.0
        };
        let mut hv = Vec::new();
        let mut lr = Rng::stream(seed, "liver-trees", 0);
        for d in [
            [-1.0, 0.2, -0.5],
            [-0.6, -0.7, -0.6],
            [0.3, -0.9, -0.5],
            [-0.9, 0.5, -0.9],
        ] {
            grow_tree(
                &mut hv,
                &mut lr,
                hv_root,
                normalize(d),
                5.0 * s,
                28.0 * s,
                1.0,
                1,
                &in_liver,
            );
        }
        items.push(Item::List(CapsuleList::new(
            hv,
            Fill::solid(t.liver_vessels),
        )));
    }
    // Gallbladder.
    let gb = sr.at(
        sr.zt(Level::T12, Level::L1, 0.8),
        -55.0 * s,
        -ba_at(z(Level::L1)) - 75.0 * s,
    );
    items.push(Item::AbdLoft(ellipsoid(
        gb,
        14.0 * s,
        16.0 * s,
        30.0 * s,
        0.3,
        harm(r, 0.05),
        Fill::solid(t.fluid + 5.0),
    )));
    // Spleen against the left posterolateral wall.
    {
        let zc = sr.zt(Level::T11, Level::T12, 0.5);
        let sec = torso.section(zc, noise);
        let (wx, wy) = sec.cavity_point(0.45);
        let c = [wx - 30.0 * s, wy - 22.0 * s, zc];
        items.push(Item::AbdLoft(ellipsoid(
            c,
            52.0 * s,
            26.0 * s,
            50.0 * s,
            -0.9,
            harm(r, 0.06),
            Fill::tex(t.spleen, 6.0, 4.0),
        )));
    }
    // Stomach under the left dome, gas anteriorly.
    {
        let zc = sr.zt(Level::T11, Level::T12, 0.3);
        let c = sr.at(zc, 75.0 * s, -ba_at(zc) - 55.0 * s);
        let h = harm(r, 0.08);
        let outer = ellipsoid(
            c,
            48.0 * s,
            38.0 * s,
            45.0 * s,
            0.6,
            h,
            Fill::tex(t.bowel_wall, 5.0, 2.0),
        );
        let inner = ellipsoid(
            c,
            43.0 * s,
            33.0 * s,
            40.0 * s,
            0.6,
            h,
            Fill::tex(t.fluid + 10.0, 8.0, 4.0),
        );
        let lvl = c[1] - r.range(-5.0, 25.0);
        items.push(Item::Stomach(Box::new(GasFluid {
            outer,
            inner,
            gas_level: Curve::constant(lvl),
        })));
    }
    // Pancreas across the front of the aorta at L1.
    {
        let zc = sr.zt(Level::L1, Level::L2, 0.2);
        let mut keys = Vec::new();
        for k in 0..=6 {
            let u = k as f64 / 6.0;
            let x = sr.x(zc) + lerp(-40.0, 85.0, u) * s;
            let y = sr.front(zc) - lerp(38.0, 22.0, u) * s - 20.0 * (1.0 - (2.0 * u - 1.0).powi(2));
            keys.push((x, y, zc + lerp(-12.0, 12.0, u), lerp(12.0, 8.0, u) * s));
        }
        let pts: Vec<(V3, f64)> = keys.iter().map(|k| ([k.0, k.1, k.2], k.3)).collect();
        items.push(Item::Caps(tube(
            &spline(&pts, 4),
            0.0,
            Fill::tex(t.pancreas, 10.0, 2.5),
            None,
        )));
    }
    // Kidneys: cortex, then medulla/sinus opening medially.
    for side in [-1.0, 1.0] {
        let zc = if side < 0.0 {
            sr.zt(Level::L1, Level::L2, 0.7)
        } else {
            sr.zt(Level::T12, Level::L1, 0.9)
        };
        let c = sr.at(zc, side * 68.0 * s, 0.35 * ba_at(zc) + 8.0);
        let rot = side * r.range(0.5, 0.8);
        let h = harm(r, 0.04);
        let pf = 4.0 + 14.0 * t.visceral;
        items.push(Item::AbdLoft(ellipsoid(
            c,
            24.0 * s + pf,
            29.0 * s + pf,
            54.0 * s + pf,
            rot,
            h,
            Fill::tex(t.fat + 10.0, 10.0, 3.0),
        )));
        items.push(Item::AbdLoft(ellipsoid(
            c,
            24.0 * s,
            29.0 * s,
            54.0 * s,
            rot,
            h,
            Fill::tex(t.kidney_cortex, 6.0, 3.0),
        )));
        let (sn, cs) = rot.sin_cos();
        let inner_c = [c[0] - side * 9.0 * cs, c[1] - side * 9.0 * sn, c[2]];
        items.push(Item::AbdLoft(ellipsoid(
            inner_c,
            14.0 * s,
            17.0 * s,
            40.0 * s,
            rot,
            h,
            Fill::tex(t.kidney_medulla, 6.0, 3.0),
        )));
        let sinus_c = [c[0] - side * 16.0 * cs, c[1] - side * 16.0 * sn, c[2]];
        items.push(Item::AbdLoft(ellipsoid(
            sinus_c,
            9.0 * s,
            9.0 * s,
            24.0 * s,
            rot,
            h,
            Fill::tex(t.fat + 40.0, 20.0, 3.0),
        )));
    }
    // Colon frame: ascending, transverse, descending; gas and stool. Placed from the cavity
    // wall inwards so it always lies inside the abdomen.
    {
        let inward = |zz: f64, ang: f64, depth: f64| {
            let sec = torso.section(zz, noise);
            let (wx, wy) = sec.cavity_point(ang);
            let (dx, dy) = (wx - sec.cx, wy - sec.cy);
            let l = (dx * dx + dy * dy).sqrt().max(1.0);
            [wx - dx / l * depth, wy - dy / l * depth, zz]
        };
        let pi = std::f64::consts::PI;
        let zl1 = z(Level::L1);
        let pts = [
            (inward(z(Level::S1) - 10.0, pi - 0.55, 30.0 * s), 20.0 * s),
            (inward(z(Level::L3), pi - 0.45, 32.0 * s), 22.0 * s),
            (inward(zl1 - 8.0, pi + 0.55, 30.0 * s), 21.0 * s),
            (inward(z(Level::L2) + 5.0, -pi / 2.0, 35.0 * s), 19.0 * s),
            (inward(z(Level::T12), 0.25, 30.0 * s), 19.0 * s),
            (inward(z(Level::L3), 0.35, 26.0 * s), 17.0 * s),
            (inward(z(Level::S1) - 20.0, 0.6, 28.0 * s), 16.0 * s),
        ];
        let path = spline(&pts, 6);
        let content = Fill::tex(-450.0, 520.0, 6.0);
        let caps: Vec<Capsule> = path
            .windows(2)
            .map(|w| Capsule::new(w[0].0, w[1].0, w[0].1, w[1].1))
            .collect();
        let colon = CapsuleSet::new(caps, 2.0, Fill::solid(t.bowel_wall), Some(content), 2.5);
        items.push(Item::Caps(colon));
    }

    // Muscles: psoas, quadratus lumborum, paraspinal columns.
    for side in [-1.0, 1.0] {
        let mut keys = Vec::new();
        for (l, rr) in [
            (Level::T12, 4.0),
            (Level::L1, 9.0),
            (Level::L2, 14.0),
            (Level::L3, 19.0),
            (Level::L4, 23.0),
            (Level::L5, 25.0),
            (Level::S1, 24.0),
        ] {
            let zz = z(l);
            let x = sr.x(zz) + side * (sr.half_width(zz) + rr * 0.7 + 2.0);
            let y = sr.y(zz) - 0.1 * ba_at(zz);
            keys.push((zz, x, y, rr * s, rr * s * 0.85));
        }
        let zz = z(Level::S1) - 40.0;
        keys.push((
            zz,
            sr.x(zz) + side * 70.0 * s,
            sr.y(zz) - 45.0,
            22.0 * s,
            18.0 * s,
        ));
        keys.insert(0, (z(Level::T12) + 15.0, keys[0].1, keys[0].2, 0.0, 0.0));
        items.push(Item::Loft(loft(
            &keys,
            0.0,
            harm(r, 0.04),
            Fill::tex(t.muscle, 6.0, 2.5),
        )));
        // Quadratus lumborum.
        let mut q = Vec::new();
        for (l, w) in [
            (Level::T12, 0.0),
            (Level::L1, 12.0),
            (Level::L3, 18.0),
            (Level::L5, 10.0),
        ] {
            let zz = z(l);
            q.push((
                zz,
                sr.x(zz) + side * 72.0 * s,
                sr.y(zz) + 38.0,
                w * s,
                w * s * 0.55,
            ));
        }
        q.push((z(Level::S1), q[3].1, q[3].2, 0.0, 0.0));
        items.push(Item::Loft(loft(
            &q,
            side * 0.5,
            harm(r, 0.04),
            Fill::tex(t.muscle, 6.0, 2.5),
        )));
        // Paraspinals fill the gutter between spinous process and ribs/transverse processes.
        let mut ps = Vec::new();
        for (l, ax, ay, dy) in [
            (Level::C5, 18.0, 16.0, 36.0),
            (Level::C7, 22.0, 20.0, 44.0),
            (Level::T2, 22.0, 18.0, 48.0),
            (Level::T6, 21.0, 16.0, 46.0),
            (Level::T10, 24.0, 18.0, 48.0),
            (Level::T12, 28.0, 24.0, 52.0),
            (Level::L2, 34.0, 30.0, 58.0),
            (Level::L4, 34.0, 30.0, 60.0),
            (Level::S1, 26.0, 22.0, 55.0),
        ] {
            let zz = z(l);
            ps.push((
                zz,
                sr.x(zz) + side * (ax * 0.95 + 5.0) * s,
                sr.y(zz) + dy * s,
                ax * s,
                ay * s,
            ));
        }
        let zz = z(Level::S1) - 45.0;
        ps.push((
            zz,
            sr.x(zz) + side * 20.0 * s,
            sr.y(zz) + 35.0,
            10.0 * s,
            8.0 * s,
        ));
        items.push(Item::Loft(loft(
            &ps,
            side * 0.15,
            harm(r, 0.05),
            Fill::tex(t.paraspinal, 9.0, 3.0),
        )));
    }

    // Arms (down: beside the body; up: only the upper arm near the top of the field).
    arms(items, torso, r, p, noise);
    // Ribs, costal cartilages, sternum, clavicles, scapulae, pelvis.
    bones(items, torso, r, p, noise);
}

fn arms(items: &mut Vec<Item>, torso: &Torso, r: &mut Rng, p: &AnatomyParams, noise: &Noise3) {
    let sr = &torso.spine;
    let t = &torso.tissues;
    let s = p.size;
    let z = |l: Level| sr.z(l);
    let fat = torso.fat[1];
    for side in [-1.0, 1.0] {
        let zs = sr.zt(Level::T1, Level::T2, 0.3);
        let sec = torso.section(zs, noise);
        let shoulder_x = sec.cx + side * (sec.a + 8.0 * s);
        let shoulder = [shoulder_x, sec.cy + 5.0, zs];
        let cortex = Fill::solid(t.cortex);
        let marrow = Fill::tex(t.yellow_marrow, 30.0, 3.0);
        match p.arms {
            Arms::Down => {
                let gap = r.range(2.0, 25.0);
                let zd = |l: Level| z(l);
                // The arm hangs free below the axilla and merges with the shoulder above it.
                let z_axilla = sr.zt(Level::T3, Level::T4, 0.5);
                let x_arm = |zz: f64| {
                    let sc = torso.section(zz, noise);
                    let g = lerp(gap, -30.0, smoothstep(z_axilla, z_axilla + 40.0, zz));
                    sc.cx + side * (sc.a + fat * 1.4 + g + 42.0 * s + fat)
                };
                let elbow_z = zd(Level::L1);
                let mut keys = Vec::new();
                for k in 0..=8 {
                    let zz = lerp(elbow_z - 10.0, zs + 30.0, k as f64 / 8.0);
                    let rr = (lerp(38.0, 46.0, k as f64 / 8.0) * s + fat).min(70.0);
                    keys.push((zz, x_arm(zz), sec.cy + 5.0, rr, rr * 0.95));
                }
                // Forearm below the elbow, a little anterior.
                for k in 1..=4 {
                    let zz = elbow_z - 10.0 - k as f64 * 40.0;
                    let rr = (34.0 * s + 0.8 * fat).min(55.0);
                    keys.insert(
                        0,
                        (
                            zz,
                            x_arm(zz) - side * 4.0,
                            sec.cy - 10.0 - 4.0 * k as f64,
                            rr,
                            rr * 0.85,
                        ),
                    );
                }
                let top = keys
                    .last()
                    .copied()
                    .unwrap_or((zs, shoulder_x, sec.cy, 40.0, 40.0));
                keys.push((
                    top.0 + 25.0,
                    top.1 - side * 15.0,
                    top.2,
                    top.3 * 0.7,
                    top.4 * 0.7,
                ));
                keys.push((top.0 + 45.0, top.1 - side * 30.0, top.2, 0.0, 0.0));
                items.push(Item::Loft(loft(
                    &keys,
                    0.0,
                    harm(r, 0.04),
                    Fill::tex(t.muscle, 8.0, 3.0),
                )));
                let xm = |zz: f64| x_arm(zz);
                let head = [xm(zs + 15.0) - side * 18.0 * s, sec.cy + 5.0, zs + 15.0];
                let shaft = vec![
                    Capsule::new(head, head, 23.0 * s, 23.0 * s),
                    Capsule::new(
                        head,
                        [xm(elbow_z), sec.cy + 8.0, elbow_z],
                        12.0 * s,
                        11.0 * s,
                    ),
                ];
                items.push(Item::Caps(CapsuleSet::new(
                    shaft,
                    3.0,
                    cortex,
                    Some(marrow),
                    3.0,
                )));
                let fz = elbow_z - 150.0;
                for dx in [-8.0, 8.0] {
                    let fore = vec![Capsule::new(
                        [xm(elbow_z) + dx, sec.cy + 5.0, elbow_z - 5.0],
                        [xm(fz) + dx, sec.cy - 20.0, fz],
                        7.0 * s,
                        6.0 * s,
                    )];
                    items.push(Item::Caps(CapsuleSet::new(
                        fore,
                        1.0,
                        cortex,
                        Some(marrow),
                        2.0,
                    )));
                }
            }
            Arms::Up => {
                // Upper arm rising beside the head: the proximal humerus and axillary soft
                // tissue appear at the top of chest studies.
                let head = [
                    shoulder[0] - side * 8.0 * s,
                    shoulder[1],
                    shoulder[2] + 12.0,
                ];
                let up = [head[0] + side * 25.0, head[1] + 5.0, head[2] + 250.0];
                let soft = vec![Capsule::new(
                    add(head, [side * 10.0, 0.0, 0.0]),
                    add(up, [side * 10.0, 0.0, 0.0]),
                    45.0 * s + fat,
                    40.0 * s + fat,
                )];
                items.push(Item::Caps(CapsuleSet::new(
                    soft,
                    0.0,
                    Fill::tex(t.fat, 8.0, 3.0),
                    Some(Fill::tex(t.muscle, 8.0, 3.0)),
                    fat.max(2.0),
                )));
                let bone = vec![
                    Capsule::new(head, head, 23.0 * s, 23.0 * s),
                    Capsule::new(head, up, 12.0 * s, 11.0 * s),
                ];
                items.push(Item::Caps(CapsuleSet::new(
                    bone,
                    3.0,
                    cortex,
                    Some(marrow),
                    3.0,
                )));
            }
        }
    }
}

fn bones(items: &mut Vec<Item>, torso: &Torso, r: &mut Rng, p: &AnatomyParams, noise: &Noise3) {
    let sr = &torso.spine;
    let t = &torso.tissues;
    let s = p.size;
    let z = |l: Level| sr.z(l);
    let cortex = Fill::solid(t.cortex * 0.85);
    let marrow = Fill::tex(t.marrow, 35.0, 2.0);
    // Ribs: head at the body, tubercle at the transverse process, shaft following the inner
    // chest wall and sloping down, costal cartilage to the sternum.
    let sternum_z = |k: usize| lerp(z(Level::T2) + 5.0, z(Level::T9), (k as f64 / 7.0).min(1.0));
    for (k, l) in (Level::T1.index()..=Level::T12.index()).enumerate() {
        let level = Level::from_index(l).unwrap_or(Level::T6);
        let zh = z(level) + 4.0;
        let n = k + 1;
        for side in [-1.0f64, 1.0] {
            let head = [
                sr.x(zh) + side * (sr.half_width(zh) + 4.0),
                sr.y(zh) + 6.0,
                zh,
            ];
            let tub = [
                sr.x(zh) + side * (sr.half_width(zh) + 26.0 * s),
                sr.y(zh) + 30.0 * s,
                zh - 2.0,
            ];
            // Span of the shaft around the torso centre: from the posterior angle forward.
            let end_angle: f64 = match n {
                1 => -1.25,
                2..=7 => -1.30 + 0.04 * (n as f64 - 2.0),
                8 => -0.80,
                9 => -0.55,
                10 => -0.30,
                11 => 0.15,
                _ => 0.55,
            };
            let drop: f64 = match n {
                1 => 18.0,
                2 => 32.0,
                3..=7 => 42.0 + 4.0 * (n as f64 - 3.0),
                8..=10 => 60.0,
                11 => 45.0,
                _ => 30.0,
            } * s;
            // The 12th rib is short or rudimentary in some patients.
            let short12 = n == 12 && r.chance(0.25);
            let mirror = |a: f64| {
                if side > 0.0 {
                    a
                } else {
                    std::f64::consts::PI - a
                }
            };
            // Start where the shaft leaves the tubercle: the wall direction of the tubercle.
            let start_angle = {
                let (ox, oy) = torso.rib_centre(zh);
                let a = (tub[1] - oy).atan2(tub[0] - ox);
                // Express on the left-side convention.
                let a = if side > 0.0 {
                    a
                } else {
                    std::f64::consts::PI - a
                };
                a - 0.05
            };
            let mut pts = vec![(head, 4.5 * s), (tub, 4.5 * s)];
            let steps = 14;
            let end = if short12 {
                start_angle - 0.5
            } else {
                end_angle
            };
            for k2 in 1..=steps {
                let u = k2 as f64 / steps as f64;
                let a = lerp(start_angle, end, u);
                let zz = zh - 4.0 - drop * u.powf(1.2);
                let (wx, wy) = torso.lung_wall(zz, mirror(a), noise);
                let (ox, oy) = torso.rib_centre(zz);
                let (dx, dy) = (wx - ox, wy - oy);
                let l = (dx * dx + dy * dy).sqrt().max(1.0);
                let out = 4.0;
                pts.push(([wx + dx / l * out, wy + dy / l * out, zz], 4.5 * s));
            }
            let caps: Vec<Capsule> = pts
                .windows(2)
                .flat_map(|w| {
                    [-2.2, 2.2].map(|dz| {
                        Capsule::new(
                            add(w[0].0, [0.0, 0.0, dz]),
                            add(w[1].0, [0.0, 0.0, dz]),
                            0.72 * w[0].1,
                            0.72 * w[1].1,
                        )
                    })
                })
                .collect();
            items.push(Item::Caps(CapsuleSet::new(
                caps,
                2.0,
                cortex,
                Some(marrow),
                1.3,
            )));
            // Costal cartilage to the sternum (ribs 1-7) or to the costal margin (8-10).
            if n <= 10 && !short12 {
                let last = pts[pts.len() - 1].0;
                let target = if n <= 7 {
                    let zz = sternum_z(n - 1);
                    let sec = torso.section(zz, noise);
                    let (fx, fy) = sec.cavity_point(-std::f64::consts::FRAC_PI_2);
                    [fx + side * 14.0 * s, fy + 6.0, zz]
                } else {
                    add(last, [-side * 30.0, -12.0, 28.0])
                };
                let cal = if r.chance(p.age * 0.8) {
                    280.0 * p.age
                } else {
                    0.0
                };
                let cart = vec![Capsule::new(last, target, 4.2 * s, 3.8 * s)];
                items.push(Item::Caps(CapsuleSet::new(
                    cart,
                    1.0,
                    Fill::tex(t.cartilage + cal, 40.0 + cal, 2.0),
                    None,
                    0.0,
                )));
            }
        }
    }
    // Sternum: manubrium, body, xiphoid.
    {
        let mut keys_c = Vec::new();
        let z_top = z(Level::T2) + 10.0;
        let z_bot = z(Level::T10);
        for k in 0..=12 {
            let zz = lerp(z_bot, z_top, k as f64 / 12.0);
            let sec = torso.section(zz, noise);
            let (fx, fy) = sec.cavity_point(-std::f64::consts::FRAC_PI_2);
            let u = k as f64 / 12.0;
            let w = if u > 0.78 {
                26.0
            } else if u > 0.1 {
                15.0
            } else {
                8.0
            } * s;
            let th = if u > 0.78 { 7.5 } else { 6.0 } * s;
            keys_c.push((zz, fx, fy + th - 1.0, w, th));
        }
        keys_c.insert(0, (z_bot - 8.0, keys_c[0].1, keys_c[0].2, 0.0, 0.0));
        let top = keys_c[keys_c.len() - 1];
        keys_c.push((top.0 + 6.0, top.1, top.2, 0.0, 0.0));
        let outer = loft(&keys_c, 0.0, [(0.0, 0.0); 4], cortex);
        let inner_keys: Vec<_> = keys_c
            .iter()
            .map(|k| (k.0, k.1, k.2, (k.3 - 1.5).max(0.0), (k.4 - 1.5).max(0.0)))
            .collect();
        let inner = loft(&inner_keys, 0.0, [(0.0, 0.0); 4], marrow);
        items.push(Item::Loft(outer));
        items.push(Item::Loft(inner));
    }
    // Clavicles and scapulae.
    for side in [-1.0f64, 1.0] {
        let zc = z(Level::T2) + 12.0;
        let sec = torso.section(zc, noise);
        let (fx, fy) = sec.cavity_point(-std::f64::consts::FRAC_PI_2);
        let med = [fx + side * 22.0 * s, fy - 6.0, zc];
        let zt1 = z(Level::T1) + 8.0;
        let sec1 = torso.section(zt1, noise);
        let lat = [sec1.cx + side * (sec1.a - 8.0), sec1.cy + 10.0, zt1 + 12.0];
        let mid = [
            lerp(med[0], lat[0], 0.45),
            fy - 16.0,
            lerp(med[2], lat[2], 0.5),
        ];
        let pts = spline(&[(med, 8.0 * s), (mid, 6.5 * s), (lat, 7.5 * s)], 5);
        items.push(Item::Caps(CapsuleSet::new(
            pts.windows(2)
                .map(|w| Capsule::new(w[0].0, w[1].0, w[0].1, w[1].1))
                .collect(),
            1.0,
            cortex,
            Some(marrow),
            2.0,
        )));
        // Scapula: a thin curved plate on the posterior chest wall, T1 to T7.
        let z_top = z(Level::T1) + 10.0;
        let z_inf = z(Level::T7) - 5.0;
        let cen = |zz: f64| torso.rib_centre(zz);
        let mirror = |a: f64| {
            if side > 0.0 {
                a
            } else {
                std::f64::consts::PI - a
            }
        };
        // Outside the ribs, within the posterior muscle layer.
        let rad = |zz: f64| {
            let (ox, oy) = torso.rib_centre(zz);
            let (wx, wy) = torso.lung_wall(zz, mirror(0.75), noise);
            ((wx - ox).powi(2) + (wy - oy).powi(2)).sqrt() + 16.0
        };
        let zs = [z_inf, lerp(z_inf, z_top, 0.5), z_top];
        let band = ArcBand {
            cx: Curve::new(zs.iter().map(|&zz| (zz, cen(zz).0)).collect()),
            cy: Curve::new(zs.iter().map(|&zz| (zz, cen(zz).1)).collect()),
            r: Curve::new(zs.iter().map(|&zz| (zz, rad(zz))).collect()),
            a0: Curve::new(vec![(z_inf, mirror(1.05)), (z_top, mirror(1.2))]),
            a1: Curve::new(vec![(z_inf, mirror(1.0)), (z_top, mirror(0.35))]),
            t0: Curve::new(vec![(z_inf, 3.0), (z_top, 3.5)]),
            t1: Curve::new(vec![(z_inf, 6.0), (z_top, 10.0)]),
            zlo: z_inf,
            zhi: z_top,
            cortex,
            marrow,
        };
        items.push(Item::Arc(Box::new(band)));
        // Iliac wing from the sacroiliac joint up to the crest, curving forward and out.
        let s1 = z(Level::S1);
        let crest = sr.zt(Level::L4, Level::L5, r.range(0.3, 0.8));
        let zlo = s1 - 60.0;
        let xs1 = sr.x(s1);
        let ys1 = sr.y(s1);
        let c = (xs1 + side * 25.0 * s, ys1 - 30.0 * s);
        let band = ArcBand {
            cx: Curve::constant(c.0),
            cy: Curve::constant(c.1),
            r: Curve::new(vec![(zlo, 62.0 * s), (s1, 80.0 * s), (crest, 95.0 * s)]),
            a0: Curve::new(vec![(zlo, mirror(1.05)), (crest, mirror(1.15))]),
            a1: Curve::new(vec![
                (zlo, mirror(0.5)),
                (s1, mirror(-0.2)),
                (crest, mirror(-0.55)),
            ]),
            t0: Curve::new(vec![
                (zlo, 16.0 * s),
                (s1 + 20.0, 14.0 * s),
                (crest - 8.0, 8.0 * s),
                (crest, 0.0),
            ]),
            t1: Curve::new(vec![
                (zlo, 9.0 * s),
                (s1, 6.0 * s),
                (crest - 8.0, 9.0 * s),
                (crest, 0.0),
            ]),
            zlo,
            zhi: crest,
            cortex,
            marrow: Fill::tex(t.marrow, 35.0, 2.0),
        };
        items.push(Item::Arc(Box::new(band)));
    }
}
