//! One vertebra: body shape, endplates, fracture and mimic deformations, keypoints, and the
//! painter for everything the vertebra owns along the spine (canal, half discs, body).
//!
//! # Local frame
//! Origin at the centre of the body's cross-section at mid-height; x to the patient's left,
//! y posterior, z cranial (the body's axis). The body is the cross-section (an ellipse with a
//! concave posterior wall) extruded between the lower endplate surface `zl(x, y)` and the upper
//! endplate surface `zu(x, y)`.
//!
//! # Keypoints (the definition shared with training and evaluation)
//! All six keypoints lie on the body's mid-sagittal plane (local x = 0), on the outer surface of
//! the endplate (the bone/disc boundary). The ventral (anterior) and dorsal (posterior) points sit
//! [`KEYPOINT_INSET_MM`] inside the outer cortical surface of the anterior and posterior wall
//! (measured along local y at the endplate level); the middle points lie midway between them.
//! Upper and lower points of a pair share (x, y), so each height is measured along the body's
//! axis, and heights are the distances between the paired points.

use super::math::{coverage, lerp, smoothstep, Frame, V3};
use super::raster::{blend, Plane};
use super::rng::Noise3;
use super::spine::Level;
use crate::morphometry::Morphology;
use crate::truth::Heights;

/// Inset of the ventral and dorsal keypoints from the outer cortical rim, mm.
pub const KEYPOINT_INSET_MM: f64 = 1.5;

/// Kind of compression fracture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FractureKind {
    /// Anterior height loss (posterior wall intact).
    Wedge,
    /// Central endplate depression (middle height loss).
    Biconcave,
    /// Whole body shortened (all three heights).
    Crush,
}

impl FractureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FractureKind::Wedge => "wedge",
            FractureKind::Biconcave => "biconcave",
            FractureKind::Crush => "crush",
        }
    }

    pub fn morphology(self) -> Morphology {
        match self {
            FractureKind::Wedge => Morphology::Wedge,
            FractureKind::Biconcave => Morphology::Biconcave,
            FractureKind::Crush => Morphology::Crush,
        }
    }
}

/// A compression fracture applied to one body.
#[derive(Clone, Debug)]
pub(crate) struct Fracture {
    pub kind: FractureKind,
    /// Intended fractional height loss (Genant deformity), 0..0.6.
    pub severity: f64,
    /// Share of the loss taken by the upper endplate (the superior plate fails most often).
    pub upper_share: f64,
    /// Shape parameter: convexity of the wedge profile / peakedness of the biconcave bowl.
    pub shape: f64,
    /// Total depression at the reference keypoint, mm (computed from the severity).
    pub depth: f64,
    /// Endplate waviness amplitudes (mm) of harmonics that vanish at the keypoints.
    pub wave: [f64; 3],
    pub wave_phase: f64,
    /// Extra HU of the impacted trabecular band below the failed endplate (0: chronic).
    pub compaction_hu: f64,
    pub compaction_mm: f64,
}

/// A Schmorl's node: a focal pit in an endplate filled by disc material, with a sclerotic rim.
#[derive(Clone, Debug)]
pub(crate) struct Pit {
    pub upper: bool,
    pub x: f64,
    pub y: f64,
    pub r: f64,
    pub depth: f64,
    /// Sclerotic rim under the node's floor: thickness (mm) and extra HU. A thick dense floor
    /// is what real nodes show and what a keypoint finder mistakes for the endplate.
    pub rim_mm: f64,
    pub rim_hu: f64,
}

impl Pit {
    #[inline]
    fn depth_at(&self, x: f64, y: f64) -> f64 {
        let d2 = ((x - self.x).powi(2) + (y - self.y).powi(2)) / (self.r * self.r);
        if d2 >= 1.0 {
            0.0
        } else {
            self.depth * (1.0 - d2).sqrt()
        }
    }

    #[inline]
    fn near(&self, x: f64, y: f64, margin: f64) -> bool {
        (x - self.x).powi(2) + (y - self.y).powi(2) < (self.r + margin).powi(2)
    }
}

/// A bone island (enostosis): a focal round focus of compact bone inside the cancellous core.
/// Benign and common; on a sagittal image a dense focus just under an endplate looks like a
/// sclerotic endplate, and it must move no keypoint.
#[derive(Clone, Debug)]
pub(crate) struct Island {
    /// Centre in the body's local frame, mm.
    pub c: V3,
    /// Semi-axes, mm.
    pub r: V3,
    pub hu: f64,
}

/// Shape of a vertebral body in its local frame.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    pub level: Level,
    /// Half width (x).
    pub a: f64,
    /// Anterior and posterior half depths (y < 0 and y > 0).
    pub ba: f64,
    pub bp: f64,
    /// Depth of the posterior wall's concavity as a fraction of `bp`.
    pub cp: f64,
    /// Squareness (corners fuller) of the cross-section.
    pub q: f64,
    /// Waist: fractional narrowing of the cross-section at mid-height.
    pub waist: f64,
    /// Heights before any fracture at the ventral and dorsal keypoints.
    pub ha0: f64,
    pub hp0: f64,
    /// Normal endplate concavity depth at the centre, mm.
    pub cu: f64,
    pub cl: f64,
    /// Cortical thickness of the side walls and of the endplates (0 for fused sacral plates).
    pub t_side: f64,
    pub t_upper: f64,
    pub t_lower: f64,
    pub fracture: Option<Fracture>,
    pub pits: Vec<Pit>,
    pub islands: Vec<Island>,
    /// Keypoint AP positions (ventral, middle, dorsal), set by [`Body::finish`].
    pub ya: f64,
    pub ym: f64,
    pub yp: f64,
}

impl Body {
    /// Cross-section radius at the endplate level in direction (c, s) = (cos, sin) of the
    /// in-plane angle.
    #[inline]
    pub(crate) fn rim_radius(&self, c: f64, s: f64) -> f64 {
        let b = if s < 0.0 { self.ba } else { self.bp };
        let r = self.a * b / ((b * c).powi(2) + (self.a * s).powi(2)).sqrt();
        let c2 = c * c;
        let cos4 = 8.0 * c2 * c2 - 8.0 * c2 + 1.0;
        let conc = if s > 0.0 {
            let s2 = s * s;
            let s8 = s2 * s2 * s2 * s2;
            1.0 - self.cp * s8
        } else {
            1.0
        };
        r * (1.0 - self.q * cos4) * conc
    }

    /// Cross-section radius at local height z (waisted between the endplates).
    #[inline]
    fn radius_at(&self, c: f64, s: f64, z: f64) -> f64 {
        let zn = (z / (0.5 * self.hp0)).clamp(-1.0, 1.0);
        self.rim_radius(c, s) * (1.0 - self.waist * (1.0 - zn * zn))
    }

    /// Places the keypoints and sizes the fracture; call after every shape change.
    pub(crate) fn finish(&mut self) {
        self.ya = -self.rim_radius(0.0, -1.0) + KEYPOINT_INSET_MM;
        self.yp = self.rim_radius(0.0, 1.0) - KEYPOINT_INSET_MM;
        self.ym = 0.5 * (self.ya + self.yp);
        let hm0 = 0.5 * (self.ha0 + self.hp0) - self.cu - self.cl;
        if let Some(f) = &mut self.fracture {
            let keep = 1.0 - f.severity;
            f.depth = match f.kind {
                FractureKind::Wedge => self.ha0 - keep * self.hp0,
                FractureKind::Biconcave => hm0 - keep * self.ha0.max(self.hp0),
                FractureKind::Crush => self.ha0.max(self.hp0) - keep * self.hp0,
            }
            .max(0.0);
        }
    }

    /// 0 at the dorsal keypoint, 1 at the ventral keypoint (linear in y).
    #[inline]
    fn t(&self, y: f64) -> f64 {
        (self.yp - y) / (self.yp - self.ya)
    }

    /// Normal endplate concavity profile: 1 at the middle keypoint, 0 at the ventral and dorsal
    /// keypoints and beyond (so the concavity never changes the anterior/posterior heights).
    #[inline]
    fn bowl(&self, x: f64, y: f64, rx: f64) -> f64 {
        let ry = 0.5 * (self.yp - self.ya);
        let u = 1.0 - (x / rx).powi(2) - ((y - self.ym) / ry).powi(2);
        if u <= 0.0 {
            0.0
        } else {
            u * u.sqrt()
        }
    }

    /// Fracture depression of the endplates at (x, y), total over both plates (mm).
    #[inline]
    fn fracture_depth(&self, f: &Fracture, x: f64, y: f64) -> f64 {
        match f.kind {
            FractureKind::Wedge => {
                let t = self.t(y).max(0.0);
                f.depth * ((1.0 - f.shape) * t + f.shape * t * t)
            }
            FractureKind::Biconcave => {
                let b = self.bowl(x, y, 0.9 * self.a);
                f.depth * b * (1.0 - f.shape + f.shape * b)
            }
            FractureKind::Crush => f.depth,
        }
    }

    /// Waviness of a failed endplate: harmonics of the AP position that vanish at the three
    /// keypoints, so the truth heights stay exactly what the severity asks for.
    #[inline]
    fn wave(&self, f: &Fracture, x: f64, y: f64) -> f64 {
        let tp = 1.0 - self.t(y);
        let (s1, c1) = (std::f64::consts::TAU * tp).sin_cos();
        let s2 = 2.0 * s1 * c1;
        let c2 = c1 * c1 - s1 * s1;
        let s3 = s2 * c1 + c2 * s1;
        let across = 1.0 + 0.4 * (1.3 * std::f64::consts::PI * x / self.a + f.wave_phase).cos();
        (f.wave[0] * s1 + f.wave[1] * s2 + f.wave[2] * s3) * across
    }

    /// Upper endplate surface height at (x, y), Schmorl's nodes included: what the image shows.
    #[inline]
    pub(crate) fn zu(&self, x: f64, y: f64) -> f64 {
        let mut z = self.zu_plate(x, y);
        for p in self.pits.iter().filter(|p| p.upper) {
            z -= p.depth_at(x, y);
        }
        z
    }

    /// Lower endplate surface height at (x, y), Schmorl's nodes included.
    #[inline]
    pub(crate) fn zl(&self, x: f64, y: f64) -> f64 {
        let mut z = self.zl_plate(x, y);
        for p in self.pits.iter().filter(|p| !p.upper) {
            z += p.depth_at(x, y);
        }
        z
    }

    /// Upper endplate without its Schmorl's nodes: the contour a reader interpolates across a
    /// node when placing the middle point (a node is not height loss), hence the truth.
    #[inline]
    fn zu_plate(&self, x: f64, y: f64) -> f64 {
        let mut z = 0.5 * self.hp0
            - 0.5 * (self.hp0 - self.ha0) * self.t(y)
            - self.cu * self.bowl(x, y, 0.85 * self.a);
        if let Some(f) = &self.fracture {
            let share = f.upper_share;
            z -= share * self.fracture_depth(f, x, y);
            if share > 0.25 {
                z -= self.wave(f, x, y);
            }
        }
        z
    }

    /// Lower endplate without its Schmorl's nodes (see `zu_plate`).
    #[inline]
    fn zl_plate(&self, x: f64, y: f64) -> f64 {
        let mut z = -0.5 * self.hp0
            + 0.5 * (self.hp0 - self.ha0) * self.t(y)
            + self.cl * self.bowl(x, y, 0.85 * self.a);
        if let Some(f) = &self.fracture {
            let share = 1.0 - f.upper_share;
            z += share * self.fracture_depth(f, x, y);
            if share > 0.25 {
                z += 0.7 * self.wave(f, x, y);
            }
        }
        z
    }

    /// The six keypoints in the local frame: upper a/m/p, lower a/m/p.
    pub(crate) fn keypoints_local(&self) -> [V3; 6] {
        [
            [0.0, self.ya, self.zu_plate(0.0, self.ya)],
            [0.0, self.ym, self.zu_plate(0.0, self.ym)],
            [0.0, self.yp, self.zu_plate(0.0, self.yp)],
            [0.0, self.ya, self.zl_plate(0.0, self.ya)],
            [0.0, self.ym, self.zl_plate(0.0, self.ym)],
            [0.0, self.yp, self.zl_plate(0.0, self.yp)],
        ]
    }

    pub(crate) fn heights(&self) -> Heights {
        let h = |y: f64| self.zu_plate(0.0, y) - self.zl_plate(0.0, y);
        Heights {
            anterior: h(self.ya),
            middle: h(self.ym),
            posterior: h(self.yp),
        }
    }

    /// Heights the body had before its fracture (Schmorl's nodes are not height loss either).
    pub(crate) fn normal_heights(&self) -> Heights {
        let mut b = self.clone();
        b.fracture = None;
        b.heights()
    }

    /// Slope angle of the upper (or lower) rim line through the ventral and dorsal keypoints,
    /// and its height at the dorsal keypoint: what the next disc rests on.
    pub(crate) fn plate_line(&self, upper: bool) -> (f64, f64) {
        let f = |y: f64| {
            if upper {
                self.zu_plate(0.0, y)
            } else {
                self.zl_plate(0.0, y)
            }
        };
        let (za, zp) = (f(self.ya), f(self.yp));
        (((zp - za) / (self.yp - self.ya)).atan(), zp)
    }

    /// Local points bounding the body (for boxes).
    pub(crate) fn extent(&self) -> (f64, f64, f64) {
        (
            self.a * 1.1,
            self.ba.max(self.bp) * 1.1,
            0.5 * self.ha0.max(self.hp0) + 2.0,
        )
    }
}

/// An intervertebral disc (or a fused sacral junction).
#[derive(Clone, Debug)]
pub(crate) struct Disc {
    /// Thickness at the middle keypoints before wedging by the spine's curve, mm.
    pub thickness: f64,
    /// Outward bulge of the annulus at mid-height as a fraction of the rim radius.
    pub bulge: f64,
    pub hu_annulus: f64,
    pub hu_nucleus: f64,
    /// Calcified nucleus: extra HU (0 = none).
    pub calcified_hu: f64,
    /// Vacuum phenomenon: gas in a central cleft of a degenerated disc.
    pub vacuum: bool,
    /// Fused sacral junction: bone, not disc.
    pub fused: bool,
    /// Degenerative narrowing applied (fraction of thickness lost).
    pub narrowing: f64,
}

/// Spinal canal and thecal sac dimensions.
#[derive(Clone, Debug)]
pub(crate) struct Canal {
    pub half_width: f64,
    pub half_depth: f64,
    /// Centre of the canal on local y.
    pub yc: f64,
    /// Spinal cord half axes (0 below the conus).
    pub cord_rx: f64,
    pub cord_ry: f64,
}

/// Tissue values used inside the spine.
#[derive(Clone, Debug)]
pub(crate) struct SpineHu {
    pub cortex: f64,
    pub cancellous: f64,
    /// Amplitude of trabecular texture (HU).
    pub trabecular_amp: f64,
    pub epidural_fat: f64,
    pub csf: f64,
    pub cord: f64,
}

/// A plane in a vertebra's local frame: points with `dot(n, p) - c` >= 0 are on its far side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalPlane {
    pub n: V3,
    pub c: f64,
}

impl LocalPlane {
    #[inline]
    fn eval(&self, p: V3) -> f64 {
        self.n[0] * p[0] + self.n[1] * p[1] + self.n[2] * p[2] - self.c
    }
}

/// Everything needed to paint one vertebra's slab of the column.
pub(crate) struct VertebraPainter<'a> {
    pub body: &'a Body,
    pub frame: Frame,
    pub canal: &'a Canal,
    pub disc_above: Option<&'a Disc>,
    pub disc_below: Option<&'a Disc>,
    /// Mid-planes of the discs above and below, in local coordinates; the slab lies between
    /// (below `above`: eval <= 0, above `below`: eval >= 0).
    pub above: LocalPlane,
    pub below: LocalPlane,
    /// Size ratio of the neighbour above/below to this body (disc outline blends towards it).
    pub ratio_above: f64,
    pub ratio_below: f64,
    pub hu: &'a SpineHu,
    /// Extra sclerosis (HU) next to the upper / lower endplate (degenerated disc).
    pub sclerosis_upper: f64,
    pub sclerosis_lower: f64,
    /// Cement blob: centre (local), radii, HU.
    pub cement: Option<(V3, V3, f64)>,
    /// Axis-aligned bounding box of the slab in patient space: min, max.
    pub bbox: (V3, V3),
    pub noise: &'a Noise3,
}

impl VertebraPainter<'_> {
    /// Paints canal, half discs and body where this plane cuts the slab.
    pub(crate) fn paint(&self, plane: &Plane, buf: &mut [f32]) {
        let (lo, hi) = self.bbox;
        if plane.z < lo[2] - plane.wz || plane.z > hi[2] + plane.wz {
            return;
        }
        let (c0, c1) = plane.cols(lo[0], hi[0]);
        let (r0, r1) = plane.rows(lo[1], hi[1]);
        let b = self.body;
        let rot = &self.frame.rot;
        // Edge widths: endplates face along local z; walls along local x/y.
        let ez = rot.col(2);
        let w_plate = plane.edge_w(ez);
        let (ex, ey) = (rot.col(0), rot.col(1));
        let step = rot.apply_t([plane.dx, 0.0, 0.0]);
        let canal = self.canal;
        let hu = self.hu;
        for j in r0..r1 {
            let y = plane.y(j);
            let row = &mut buf[j * plane.nx..(j + 1) * plane.nx];
            let mut p = self.frame.to_local([plane.x(c0), y, plane.z]);
            for px in row.iter_mut().take(c1).skip(c0) {
                let l = p;
                p = [p[0] + step[0], p[1] + step[1], p[2] + step[2]];
                let s_hi = self.above.eval(l);
                let s_lo = self.below.eval(l);
                if s_hi > 0.0 || s_lo < 0.0 {
                    continue;
                }
                let (x, yl, z) = (l[0], l[1], l[2]);
                // Canal contents (the bony walls are painted over them).
                let cx = x / canal.half_width;
                let cy = (yl - canal.yc) / canal.half_depth;
                let rc = (cx * cx + cy * cy).sqrt();
                let w = plane.w_xy();
                if rc < 1.0 + 2.0 * w / canal.half_depth {
                    let rmin = canal.half_width.min(canal.half_depth);
                    blend(px, hu.epidural_fat, coverage((rc - 1.0) * rmin, w));
                    // Thecal sac: more epidural fat dorsally than ventrally.
                    let sx = x / (canal.half_width - 1.0);
                    let sy = (yl - canal.yc + 0.6) / (canal.half_depth - 1.6);
                    let rs = (sx * sx + sy * sy).sqrt();
                    blend(px, hu.csf, coverage((rs - 1.0) * (rmin - 1.6), w));
                    if canal.cord_rx > 0.3 {
                        let kx = x / canal.cord_rx;
                        let ky = (yl - canal.yc + 0.8) / canal.cord_ry;
                        let rk = (kx * kx + ky * ky).sqrt();
                        blend(px, hu.cord, coverage((rk - 1.0) * canal.cord_ry, w));
                    }
                }
                let rho = (x * x + yl * yl).sqrt();
                let (c, s) = if rho > 1e-9 {
                    (x / rho, yl / rho)
                } else {
                    (1.0, 0.0)
                };
                let n_wall = [
                    ex[0] * c + ey[0] * s,
                    ex[1] * c + ey[1] * s,
                    ex[2] * c + ey[2] * s,
                ];
                let w_wall = plane.edge_w(n_wall);
                let rim = b.rim_radius(c, s);
                let zu = b.zu(x, yl);
                let zl = b.zl(x, yl);
                // Half discs above and below the body.
                if z > zu - b.t_upper - w_plate || z < zl + b.t_lower + w_plate {
                    let upper = z > 0.0;
                    let disc = if upper {
                        self.disc_above
                    } else {
                        self.disc_below
                    };
                    if let Some(d) = disc {
                        let half = 0.5 * d.thickness.max(0.5);
                        let g = if upper {
                            ((z - zu) / half).clamp(0.0, 1.0)
                        } else {
                            ((zl - z) / half).clamp(0.0, 1.0)
                        };
                        let ratio = if upper {
                            self.ratio_above
                        } else {
                            self.ratio_below
                        };
                        let r_disc = rim
                            * (1.0 + d.bulge * (std::f64::consts::FRAC_PI_2 * g).sin())
                            * lerp(1.0, ratio, 0.5 * g);
                        let a = coverage(rho - r_disc, w_wall);
                        if a > 0.0 {
                            let v = if d.fused {
                                self.cancellous(l, zu, zl)
                            } else {
                                self.disc_hu(d, rho / r_disc, g, z, l, plane)
                            };
                            blend(px, v, a);
                        }
                    }
                }
                // Body: cortex shell, then cancellous core.
                let r = b.radius_at(c, s, z);
                let d_xy = rho - r;
                if d_xy > w_wall {
                    continue;
                }
                let d_z = (z - zu).max(zl - z);
                let a_body = coverage(d_xy, w_wall) * coverage(d_z, w_plate);
                if a_body <= 0.0 {
                    continue;
                }
                blend(px, hu.cortex, a_body);
                let d_zi = (z - zu + b.t_upper).max(zl + b.t_lower - z);
                let a_in = coverage(d_xy + b.t_side, w_wall) * coverage(d_zi, w_plate);
                if a_in > 0.0 {
                    let v = if plane.textured {
                        self.cancellous(l, zu, zl)
                    } else {
                        hu.cancellous
                    };
                    blend(px, v, a_in);
                    for isl in &b.islands {
                        let e = (((x - isl.c[0]) / isl.r[0]).powi(2)
                            + ((yl - isl.c[1]) / isl.r[1]).powi(2)
                            + ((z - isl.c[2]) / isl.r[2]).powi(2))
                        .sqrt();
                        let r_min = isl.r[0].min(isl.r[1]).min(isl.r[2]);
                        blend(px, isl.hu, coverage((e - 1.0) * r_min, w_wall) * a_in);
                    }
                    if let Some((cc, cr, chu)) = self.cement {
                        let e = (((x - cc[0]) / cr[0]).powi(2)
                            + ((yl - cc[1]) / cr[1]).powi(2)
                            + ((z - cc[2]) / cr[2]).powi(2))
                        .sqrt();
                        let wob = if plane.textured {
                            0.25 * f64::from(self.noise.mm([x * 1.3 + 50.0, yl, z], 4.0))
                        } else {
                            0.0
                        };
                        let ac = coverage((e - 1.0 + wob) * cr[0].min(cr[2]), w_wall) * a_in;
                        blend(px, chu, ac);
                    }
                }
            }
        }
    }

    /// Trabecular bone: per-patient density, vertical trabecular texture, impaction band under a
    /// failed endplate, sclerosis next to degenerated discs and around Schmorl's nodes.
    #[inline]
    fn cancellous(&self, l: V3, zu: f64, zl: f64) -> f64 {
        let hu = self.hu;
        let b = self.body;
        let g = self.frame.to_global(l);
        // Trabeculae run mostly vertically: stretch the texture along the local axis.
        let t = self
            .noise
            .at(l[0] / 1.1 + g[0] * 0.01, l[1] / 1.1 + 31.7, g[2] / 2.6);
        let t2 = self
            .noise
            .at(l[0] / 0.55 + 77.0, l[1] / 0.55, l[2] / 0.9 + g[2] * 0.001);
        let mut v = hu.cancellous + hu.trabecular_amp * (0.7 * f64::from(t) + 0.45 * f64::from(t2));
        let du = zu - l[2];
        let dl = l[2] - zl;
        if let Some(f) = &b.fracture {
            if f.compaction_hu > 0.0 {
                if f.upper_share > 0.25 {
                    v += f.compaction_hu
                        * f.upper_share
                        * (1.0 - smoothstep(0.0, f.compaction_mm, du - b.t_upper));
                }
                if f.upper_share < 0.75 {
                    v += f.compaction_hu
                        * (1.0 - f.upper_share)
                        * (1.0 - smoothstep(0.0, f.compaction_mm, dl - b.t_lower));
                }
            }
        }
        if self.sclerosis_upper > 0.0 {
            v += self.sclerosis_upper * (1.0 - smoothstep(0.0, 4.0, du));
        }
        if self.sclerosis_lower > 0.0 {
            v += self.sclerosis_lower * (1.0 - smoothstep(0.0, 4.0, dl));
        }
        for p in &b.pits {
            if p.near(l[0], l[1], 0.75 * p.rim_mm) {
                let d = if p.upper { du } else { dl };
                v += p.rim_hu
                    * (1.0
                        - smoothstep(
                            0.0,
                            p.rim_mm,
                            d - if p.upper { b.t_upper } else { b.t_lower },
                        ));
            }
        }
        v
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn disc_hu(&self, d: &Disc, rn: f64, g: f64, z: f64, l: V3, plane: &Plane) -> f64 {
        let mut v = lerp(d.hu_nucleus, d.hu_annulus, smoothstep(0.45, 0.8, rn));
        if plane.textured {
            v += 6.0 * f64::from(self.noise.mm([l[0] + 300.0, l[1], z], 2.0));
        }
        // Central part of the disc: calcification or a vacuum cleft near the mid-plane.
        if rn < 0.6 && g > 0.35 {
            let core = 1.0 - smoothstep(0.35, 0.6, rn);
            let mid = smoothstep(0.35, 0.8, g);
            if d.calcified_hu > 0.0 {
                v += d.calcified_hu * core * mid;
            }
            if d.vacuum {
                let cleft = smoothstep(0.7, 0.95, g);
                v = lerp(v, -850.0, core * cleft);
            }
        }
        v
    }
}

/// Rods of the posterior arch in the local frame: (from, to, radius at from, radius at to).
///
/// Pedicles leave the upper half of the body's posterolateral corners; laminae close the canal
/// behind; the spinous process slopes down steeply in the mid-thoracic spine and runs level in
/// the lumbar spine; transverse processes sweep back in the thorax (where ribs meet them).
pub(crate) fn arch_rods(
    body: &Body,
    canal: &Canal,
    arch: &super::spine::ArchDims,
    sacral: u8,
) -> Vec<(V3, V3, f64, f64)> {
    let mut rods = Vec::new();
    let h = body.hp0;
    let y_wall = body.rim_radius(0.0, 1.0);
    let (cw, cd, yc) = (canal.half_width, canal.half_depth, canal.yc);
    let pr = arch.pedicle_r;
    let zp = if body.level.is_lumbar() {
        0.08 * h
    } else {
        0.16 * h
    };
    if sacral >= 2 {
        // Fused sacral segment: lateral masses and the dorsal wall of the sacral canal.
        let k = f64::from(sacral - 2);
        for sx in [-1.0, 1.0] {
            rods.push((
                [sx * body.a * 0.6, 0.0, 0.0],
                [sx * (body.a + 22.0 - 4.0 * k), 0.4 * body.bp, -0.1 * h],
                9.0 - 1.5 * k,
                7.0 - 1.2 * k,
            ));
            rods.push((
                [sx * body.a * 0.5, 0.3 * body.bp, 0.0],
                [sx * (cw + 2.0), yc + cd + 1.5, 0.0],
                3.0,
                2.5,
            ));
        }
        rods.push((
            [-(cw + 2.0), yc + cd + 1.5, 0.0],
            [cw + 2.0, yc + cd + 1.5, 0.0],
            2.5,
            2.5,
        ));
        rods.push((
            [0.0, yc + cd + 2.0, 0.0],
            [0.0, yc + cd + 7.0 - k, -0.3 * h],
            2.5,
            2.0,
        ));
        return rods;
    }
    let mut pillar = [[0.0; 3]; 2];
    for (k, sx) in [-1.0f64, 1.0].into_iter().enumerate() {
        // Pedicle: two stacked rods make the oval, taller-than-wide section.
        let xa = sx * (cw + 0.55 * pr);
        let xb = sx * (cw + 0.85 * pr);
        for dz in [-0.4 * pr, 0.4 * pr] {
            rods.push((
                [xa, y_wall - 3.0, zp + dz],
                [xb, yc + 0.35 * cd, zp + dz],
                0.8 * pr,
                0.8 * pr,
            ));
        }
        let j = [sx * (cw + 0.9 * pr), yc + 0.6 * cd, zp];
        pillar[k] = j;
        // Lamina: a plate from the pillar to the midline, sloping down.
        let m = [0.0, yc + cd + arch.lamina_r + 0.3, zp - 0.22 * h];
        rods.push((j, m, arch.lamina_r, arch.lamina_r));
        rods.push((
            [j[0], j[1] + 0.5, j[2] - 0.3 * h],
            [0.0, m[1], m[2] - 0.25 * h],
            0.85 * arch.lamina_r,
            0.85 * arch.lamina_r,
        ));
        // Articular processes: superior up, inferior down (facet joints with the neighbours).
        rods.push((
            j,
            [
                sx * (cw + 0.9 * pr + 1.0),
                yc + 0.5 * cd,
                zp + 0.5 * h + 3.0,
            ],
            3.2,
            3.0,
        ));
        rods.push((
            [j[0] * 0.95, j[1] + 2.0, j[2] - 0.3 * h],
            [sx * (cw + 0.6 * pr), yc + cd + 1.5, zp - 0.55 * h - 5.0],
            3.0,
            2.8,
        ));
        if body.level == super::spine::Level::S1 {
            // Sacral ala: a broad wing from the body to the sacroiliac joint.
            rods.push((
                [sx * body.a * 0.5, 0.1 * body.bp, 0.0],
                [sx * (body.a + 38.0), 0.5 * body.bp, -0.15 * h],
                13.0,
                12.0,
            ));
            rods.push((
                [sx * body.a * 0.5, 0.2 * body.bp, -0.35 * h],
                [sx * (body.a + 32.0), 0.7 * body.bp, -0.6 * h],
                11.0,
                10.0,
            ));
        } else if arch.transverse_len > 0.0 {
            let (cb, sb) = (arch.transverse_back.cos(), arch.transverse_back.sin());
            let (cu, su) = (arch.transverse_up.cos(), arch.transverse_up.sin());
            let dir = [sx * cb * cu, sb * cu, su];
            let tip = [
                j[0] + dir[0] * arch.transverse_len,
                j[1] + dir[1] * arch.transverse_len,
                j[2] + dir[2] * arch.transverse_len,
            ];
            rods.push((j, tip, arch.transverse_r, arch.transverse_r * 1.1));
        }
    }
    // Spinous process from the laminar junction.
    let m = [0.0, yc + cd + arch.lamina_r + 0.3, zp - 0.22 * h];
    let (ss, cs) = arch.spinous_slope.sin_cos();
    let tip = [
        0.0,
        m[1] + cs * arch.spinous_len,
        m[2] - ss * arch.spinous_len,
    ];
    // Slightly curved (droops at the tip) and tapering to a rounded tubercle.
    let mid = [
        0.0,
        m[1] + 0.55 * cs * arch.spinous_len,
        m[2] - 0.5 * ss * arch.spinous_len + 1.0,
    ];
    rods.push((m, mid, arch.spinous_r * 1.15, arch.spinous_r * 0.85));
    rods.push((mid, tip, arch.spinous_r * 0.85, arch.spinous_r * 1.05));
    if arch.spinous_tall {
        let dz = 0.32 * h;
        rods.push((
            [0.0, m[1], m[2] - dz],
            [0.0, tip[1] - 2.0, tip[2] - 0.8 * dz],
            0.9 * arch.spinous_r,
            arch.spinous_r,
        ));
    }
    rods
}
