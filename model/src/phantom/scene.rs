//! The assembled scene: anatomy, the spinal column's painters and metal hardware, rendered
//! plane by plane.

use super::acquisition::{MetalKind, MetalSpec};
use super::anatomy::Anatomy;
use super::math::{add, dot, scale, sub, V3};
use super::raster::{Capsule, CapsuleSet, Fill, Plane};
use super::rng::{Noise3, Rng};
use super::spine::{disc_midplane, Spine};
use super::vertebra::{arch_rods, Disc, LocalPlane, SpineHu, VertebraPainter};

/// Coarsest grid (mm) on which the anatomy around the spine is painted.
const ANATOMY_MM: f64 = 0.95;

/// Per-vertebra slab geometry (everything the painter needs besides the vertebra).
struct Slab {
    above: LocalPlane,
    below: LocalPlane,
    ratio_above: f64,
    ratio_below: f64,
    bbox: (V3, V3),
    cement: Option<(V3, V3, f64)>,
}

pub(crate) struct Scene {
    pub spine: Spine,
    pub anatomy: Anatomy,
    pub noise: Noise3,
    pub spine_hu: SpineHu,
    slabs: Vec<Slab>,
    top_disc: Disc,
    arches: Vec<CapsuleSet>,
    hardware: Vec<CapsuleSet>,
}

impl Scene {
    pub(crate) fn new(
        seed: u64,
        spine: Spine,
        anatomy: Anatomy,
        spine_hu: SpineHu,
        metal: Option<&MetalSpec>,
    ) -> Scene {
        let noise = Noise3::new(&mut Rng::stream(seed, "texture", 0));
        let n = spine.verts.len();
        let mut slabs = Vec::with_capacity(n);
        let mut mr = Rng::stream(seed, "metal", 0);
        for i in 0..n {
            let v = &spine.verts[i];
            let b = &v.body;
            let f = v.frame;
            let to_local_plane = |(p, nrm): (V3, V3)| {
                let nl = f.rot.apply_t(nrm);
                let pl = f.to_local(p);
                LocalPlane {
                    n: nl,
                    c: dot(nl, pl),
                }
            };
            let t_above = if i > 0 {
                spine.discs[i - 1].thickness
            } else {
                spine.discs[0].thickness
            };
            let t_below = if i + 1 < n {
                spine.discs[i].thickness
            } else {
                0.0
            };
            let above = if i > 0 {
                to_local_plane(disc_midplane(&spine.verts[i - 1], v))
            } else {
                LocalPlane {
                    n: [0.0, 0.0, 1.0],
                    c: 0.5 * b.hp0 + 0.5 * t_above,
                }
            };
            let below = if i + 1 < n {
                to_local_plane(disc_midplane(v, &spine.verts[i + 1]))
            } else {
                LocalPlane {
                    n: [0.0, 0.0, 1.0],
                    c: -0.5 * b.hp0 - 1.0,
                }
            };
            let size =
                |k: usize| spine.verts[k].body.a + spine.verts[k].body.ba + spine.verts[k].body.bp;
            let ratio_above = if i > 0 { size(i - 1) / size(i) } else { 1.0 };
            let ratio_below = if i + 1 < n {
                size(i + 1) / size(i)
            } else {
                1.0
            };
            let (ex, ey, ez) = b.extent();
            let ymax = v.canal.yc + v.canal.half_depth + 1.5;
            let mut lo = [f64::INFINITY; 3];
            let mut hi = [f64::NEG_INFINITY; 3];
            for cx in [-ex - 3.0, ex + 3.0] {
                for cy in [-ey - 3.0, ymax.max(ey + 3.0)] {
                    for cz in [-ez - 0.5 * t_below - 3.0, ez + 0.5 * t_above + 3.0] {
                        let g = f.to_global([cx, cy, cz]);
                        for k in 0..3 {
                            lo[k] = lo[k].min(g[k]);
                            hi[k] = hi[k].max(g[k]);
                        }
                    }
                }
            }
            let cement = match metal {
                Some(m)
                    if m.kind == MetalKind::Cement
                        && v.sacral == 0
                        && m.levels.contains(&v.level) =>
                {
                    Some((
                        [
                            mr.range(-2.0, 2.0),
                            b.ym * 0.5 + mr.range(-1.5, 1.5),
                            mr.range(-1.5, 1.5),
                        ],
                        [0.62 * b.a, 0.42 * (b.ba + b.bp), 0.4 * b.hp0.min(b.ha0)],
                        mr.range(2000.0, 3000.0),
                    ))
                }
                _ => None,
            };
            slabs.push(Slab {
                above,
                below,
                ratio_above,
                ratio_below,
                bbox: (lo, hi),
                cement,
            });
        }
        let hu = &spine_hu;
        let mut arches = Vec::new();
        for v in &spine.verts {
            let rods = arch_rods(&v.body, &v.canal, &v.arch, v.sacral);
            let caps: Vec<Capsule> = rods
                .iter()
                .map(|&(a, b, ra, rb)| {
                    Capsule::new(v.frame.to_global(a), v.frame.to_global(b), ra, rb)
                })
                .collect();
            // The arch is mostly dense cortical bone around a small marrow space.
            arches.push(CapsuleSet::new(
                caps,
                1.8,
                Fill::solid(hu.cortex * 0.95),
                Some(Fill::tex(hu.cancellous + 150.0, hu.trabecular_amp, 1.4)),
                1.6,
            ));
            if !v.spurs.is_empty() {
                let caps = v
                    .spurs
                    .iter()
                    .map(|&(a, b, ra, rb)| {
                        Capsule::new(v.frame.to_global(a), v.frame.to_global(b), ra, rb)
                    })
                    .collect();
                arches.push(CapsuleSet::new(
                    caps,
                    1.2,
                    Fill::solid(hu.cortex * 0.8),
                    Some(Fill::tex(hu.cancellous + 80.0, hu.trabecular_amp, 1.2)),
                    0.9,
                ));
            }
        }
        let hardware = match metal {
            Some(m) if m.kind == MetalKind::Screws => screws(&spine, m, &mut mr),
            _ => Vec::new(),
        };
        let top_disc = spine.discs[0].clone();
        Scene {
            spine,
            anatomy,
            noise,
            spine_hu,
            slabs,
            top_disc,
            arches,
            hardware,
        }
    }

    /// Renders one plane into `buf` (which the caller fills with air first).
    pub(crate) fn render_plane(&self, plane: &Plane, buf: &mut [f32]) {
        self.paint_anatomy(plane, buf);
        let n = self.spine.verts.len();
        for (i, (v, s)) in self.spine.verts.iter().zip(&self.slabs).enumerate() {
            let sclerosis_upper = v.sclerosis_upper;
            let sclerosis_lower = v.sclerosis_lower;
            let painter = VertebraPainter {
                body: &v.body,
                frame: v.frame,
                canal: &v.canal,
                disc_above: if i > 0 {
                    Some(&self.spine.discs[i - 1])
                } else {
                    Some(&self.top_disc)
                },
                disc_below: if i + 1 < n {
                    Some(&self.spine.discs[i])
                } else {
                    None
                },
                above: s.above,
                below: s.below,
                ratio_above: s.ratio_above,
                ratio_below: s.ratio_below,
                hu: &self.spine_hu,
                sclerosis_upper,
                sclerosis_lower,
                cement: s.cement,
                bbox: s.bbox,
                noise: &self.noise,
            };
            painter.paint(plane, buf);
        }
        for a in &self.arches {
            a.paint(plane, buf, &self.noise);
        }
        for h in &self.hardware {
            h.paint(plane, buf, &self.noise);
        }
    }

    /// Soft tissues and non-spinal bones. With pixels finer than [`ANATOMY_MM`] they are painted
    /// on a grid of about that spacing and interpolated: after the reconstruction kernel the
    /// difference is invisible, and it saves most of the rendering time of small-pixel studies.
    /// The spine is always painted at full resolution.
    pub(crate) fn paint_anatomy(&self, plane: &Plane, buf: &mut [f32]) {
        if plane.dx > 0.85 * ANATOMY_MM || !plane.textured {
            self.anatomy.paint(plane, buf, &self.noise);
            return;
        }
        let d = ANATOMY_MM;
        let nx = ((plane.nx - 1) as f64 * plane.dx / d).ceil() as usize + 1;
        let ny = ((plane.ny - 1) as f64 * plane.dy / d).ceil() as usize + 1;
        let coarse = Plane {
            z: plane.z,
            nx,
            ny,
            x0: plane.x0,
            y0: plane.y0,
            dx: d,
            dy: d,
            wz: plane.wz,
            textured: plane.textured,
            tex: None,
        };
        let mut cb = vec![-1000.0f32; nx * ny];
        self.anatomy.paint(&coarse, &mut cb, &self.noise);
        // Bilinear upsampling; the column weights are the same on every row.
        let cols: Vec<(usize, usize, f32)> = (0..plane.nx)
            .map(|i| {
                let u = (i as f64 * plane.dx / d).min((nx - 1) as f64 - 1e-9);
                let ii = u as usize;
                (ii, (ii + 1).min(nx - 1), (u - ii as f64) as f32)
            })
            .collect();
        let mut top = vec![0.0f32; plane.nx];
        let mut bot = vec![0.0f32; plane.nx];
        for j in 0..plane.ny {
            let v = (j as f64 * plane.dy / d).min((ny - 1) as f64 - 1e-9);
            let jj = v as usize;
            let fv = (v - jj as f64) as f32;
            let (r0, r1) = (
                &cb[jj * nx..(jj + 1) * nx],
                &cb[(jj + 1).min(ny - 1) * nx..((jj + 1).min(ny - 1) + 1) * nx],
            );
            for (k, &(a, b, fu)) in cols.iter().enumerate() {
                top[k] = r0[a] + fu * (r0[b] - r0[a]);
                bot[k] = r1[a] + fu * (r1[b] - r1[a]);
            }
            let out = &mut buf[j * plane.nx..(j + 1) * plane.nx];
            for ((o, t), b) in out.iter_mut().zip(&top).zip(&bot) {
                *o = t + fv * (b - t);
            }
        }
    }

    /// Levels with cement (for truth).
    pub(crate) fn has_cement(&self, i: usize) -> bool {
        self.slabs.get(i).is_some_and(|s| s.cement.is_some())
    }
}

/// Bilateral pedicle screws with tulip heads, and rods joining the heads of adjacent levels.
fn screws(spine: &Spine, m: &MetalSpec, r: &mut Rng) -> Vec<CapsuleSet> {
    let metal = Fill::tex(r.range(3000.0, 3400.0), 0.0, 1.0);
    let mut out = Vec::new();
    let mut heads: [Vec<V3>; 2] = [Vec::new(), Vec::new()];
    for v in spine
        .verts
        .iter()
        .filter(|v| v.sacral == 0 && m.levels.contains(&v.level))
    {
        let b = &v.body;
        let c = &v.canal;
        let pr = v.arch.pedicle_r;
        let zp = if b.level.is_lumbar() {
            0.08 * b.hp0
        } else {
            0.16 * b.hp0
        };
        let y_wall = b.rim_radius(0.0, 1.0);
        for (k, sx) in [-1.0f64, 1.0].into_iter().enumerate() {
            let mid = [sx * (c.half_width + 0.7 * pr), 0.5 * (y_wall + c.yc), zp];
            let tip = [sx * 0.22 * b.a, -0.5 * b.ba, zp + r.range(-1.0, 1.0)];
            let dir = super::math::normalize(sub(tip, mid));
            let entry = sub(mid, scale(dir, 16.0));
            let head = sub(entry, scale(dir, 7.0));
            let g = |p: V3| v.frame.to_global(p);
            let radius = (0.55 * pr).clamp(2.2, 3.3);
            out.push(CapsuleSet::new(
                vec![
                    Capsule::new(g(entry), g(tip), radius, radius * 0.8),
                    Capsule::new(g(head), g(entry), 5.5, 4.5),
                ],
                1.0,
                metal,
                None,
                0.0,
            ));
            heads[k].push(g(add(head, [0.0, 1.0, 0.0])));
        }
    }
    for side in heads {
        if side.len() >= 2 {
            let mut caps = Vec::new();
            for w in side.windows(2) {
                caps.push(Capsule::new(w[0], w[1], 2.75, 2.75));
            }
            // Rods overhang the end screws a little.
            let first = side[0];
            let last = side[side.len() - 1];
            let d = super::math::normalize(sub(first, last));
            caps.push(Capsule::new(first, add(first, scale(d, 8.0)), 2.75, 2.75));
            caps.push(Capsule::new(last, sub(last, scale(d, 8.0)), 2.75, 2.75));
            out.push(CapsuleSet::new(caps, 0.5, metal, None, 0.0));
        }
    }
    out
}
