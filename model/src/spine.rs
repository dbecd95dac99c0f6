//! Spine localisation: the centreline of the vertebral bodies through the field of view.
//!
//! A classical method, chosen because it needs no training data and degrades visibly rather
//! than silently: every axial slice is scored for the pattern "bright vertebral body, dark
//! spinal canal behind it, bright posterior arch behind that", which the aorta (bright, with
//! bone behind it), the sternum and the ribs do not show. A dynamic-programming path through
//! the slices then picks the smoothest high-scoring track, which follows lateral (scoliosis)
//! and sagittal (kyphosis) curves without a shape prior, and bridges discs, metal and noisy
//! slices where the per-slice score is weak.

use crate::volume::{dot, Volume};
use crate::{Error, Result};
use rayon::prelude::*;

/// Tunables of the localiser, in mm so they hold for every acquisition.
#[derive(Clone, Debug)]
pub struct SpineOptions {
    /// Working grid cell, in-plane and along z.
    pub cell_mm: f64,
    /// Largest lateral or AP shift of the centreline per mm along z.
    pub max_slope: f64,
    /// Penalty per squared cell of shift between working slices, in score units.
    pub smoothness: f32,
    /// Gaussian smoothing of the final track's left-right position along z (sigma, mm):
    /// bridges discs.
    pub smooth_sigma_mm: f64,
    /// The same for its anterior-posterior position, wider: the curved reformat's rows turn
    /// with the track's sagittal slope, and a swing of a few mm per vertebra (the body-edge
    /// estimates are noisy on real CT) fans the rows and shears the bodies the network reads.
    /// Lordosis and kyphosis bend far more slowly than this.
    pub ap_sigma_mm: f64,
}

impl Default for SpineOptions {
    fn default() -> Self {
        Self {
            cell_mm: 2.0,
            max_slope: 1.2,
            smoothness: 0.02,
            smooth_sigma_mm: 6.0,
            ap_sigma_mm: 12.0,
        }
    }
}

/// Centre of the vertebral body column at each working slice, cranial last (ascending z index).
#[derive(Clone, Debug)]
pub struct Centreline {
    /// Body centre, LPS mm.
    pub points_mm: Vec<[f64; 3]>,
    /// Per-point evidence 0..1 (how spine-like the slice looked at that point).
    pub score: Vec<f32>,
}

impl Centreline {
    /// Fraction of points with clear evidence; low values mean the track is mostly guessed.
    pub fn support(&self) -> f64 {
        if self.score.is_empty() {
            return 0.0;
        }
        self.score.iter().filter(|&&s| s > 0.25).count() as f64 / self.score.len() as f64
    }
}

/// Downsampled working volume: box means of HU in cells of about `cell_mm`.
struct Work {
    nx: usize,
    ny: usize,
    nz: usize,
    /// Source voxels per cell along i, j, k.
    block: [usize; 3],
    cell: [f64; 3],
    data: Vec<f32>,
}

impl Work {
    fn build(volume: &Volume, cell_mm: f64) -> Self {
        let g = &volume.geometry;
        let block = [0, 1, 2].map(|a| ((cell_mm / g.spacing[a]).round() as usize).max(1));
        let nx = g.dims[0] / block[0];
        let ny = g.dims[1] / block[1];
        let nz = (g.dims[2] / block[2]).max(1);
        let cell = [0, 1, 2].map(|a| g.spacing[a] * block[a] as f64);
        let mut data = vec![0f32; nx * ny * nz];
        data.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(kz, out)| {
                let k0 = kz * block[2];
                let k1 = (k0 + block[2]).min(g.dims[2]);
                for cy in 0..ny {
                    for cx in 0..nx {
                        let mut acc = 0f32;
                        let mut n = 0f32;
                        for k in k0..k1 {
                            for j in cy * block[1]..(cy + 1) * block[1] {
                                let row = g.index(0, j, k);
                                for i in cx * block[0]..(cx + 1) * block[0] {
                                    // Clamp so metal and dense contrast cannot dominate a box mean.
                                    acc += f32::from(volume.hu[row + i]).clamp(-1000.0, 1200.0);
                                    n += 1.0;
                                }
                            }
                        }
                        out[cy * nx + cx] = acc / n.max(1.0);
                    }
                }
            });
        Self {
            nx,
            ny,
            nz,
            block,
            cell,
            data,
        }
    }

    /// Continuous source voxel index of a working cell's centre.
    fn voxel_of(&self, cx: f64, cy: f64, cz: f64) -> [f64; 3] {
        [
            (cx + 0.5) * self.block[0] as f64 - 0.5,
            (cy + 0.5) * self.block[1] as f64 - 0.5,
            (cz + 0.5) * self.block[2] as f64 - 0.5,
        ]
    }
}

/// Summed-area table of one slice for O(1) box means.
struct Integral {
    w: usize,
    h: usize,
    s: Vec<f64>,
}

impl Integral {
    fn new(img: &[f32], w: usize, h: usize) -> Self {
        let mut s = vec![0f64; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0f64;
            for x in 0..w {
                row += f64::from(img[y * w + x]);
                s[(y + 1) * (w + 1) + x + 1] = s[y * (w + 1) + x + 1] + row;
            }
        }
        Self { w, h, s }
    }

    /// Mean over the box centred at (x, y) with half-sizes (hx, hy), clipped to the image;
    /// outside the image counts as air so boxes at the border are not rewarded.
    fn mean(&self, x: isize, y: isize, hx: isize, hy: isize) -> f32 {
        let area = ((2 * hx + 1) * (2 * hy + 1)) as f64;
        let x0 = (x - hx).clamp(0, self.w as isize) as usize;
        let x1 = (x + hx + 1).clamp(0, self.w as isize) as usize;
        let y0 = (y - hy).clamp(0, self.h as isize) as usize;
        let y1 = (y + hy + 1).clamp(0, self.h as isize) as usize;
        if x1 <= x0 || y1 <= y0 {
            return -1000.0;
        }
        let w1 = self.w + 1;
        let sum = self.s[y1 * w1 + x1] - self.s[y0 * w1 + x1] - self.s[y1 * w1 + x0]
            + self.s[y0 * w1 + x0];
        let inside = ((x1 - x0) * (y1 - y0)) as f64;
        ((sum - 1000.0 * (area - inside)) / area) as f32
    }
}

fn ramp(v: f32, lo: f32, hi: f32) -> f32 {
    ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Finds the vertebral body centreline of an axial CT volume.
pub fn locate(volume: &Volume, opts: &SpineOptions) -> Result<Centreline> {
    let g = &volume.geometry;
    let work = Work::build(volume, opts.cell_mm);
    if work.nx < 16 || work.ny < 16 || work.nz < 2 {
        return Err(Error::Spine(format!(
            "volume too small to find a spine ({}x{}x{} cells of {:.1} mm)",
            work.nx, work.ny, work.nz, opts.cell_mm
        )));
    }
    // Which way is posterior (+y in LPS) in working-grid index space.
    let post = [
        dot(g.axes[0], [0.0, 1.0, 0.0]),
        dot(g.axes[1], [0.0, 1.0, 0.0]),
    ];
    let (pdx, pdy) = if post[1].abs() >= post[0].abs() {
        (0isize, post[1].signum() as isize)
    } else {
        (post[0].signum() as isize, 0isize)
    };
    let cells = |mm: f64, axis: usize| ((mm / work.cell[axis]).round() as isize).max(1);
    let (nx, ny) = (work.nx, work.ny);
    // Body box ~14 mm, canal box ~8 mm, arch box ~10 mm; canal 14-30 mm behind the body centre.
    let hb = [cells(7.0, 0), cells(7.0, 1)];
    let hc = [cells(3.5, 0), cells(3.5, 1)];
    let ha = [cells(5.0, 0), cells(4.0, 1)];
    let (ldx, ldy) = (pdy.abs(), pdx.abs());
    let post_axis = if pdy != 0 { 1 } else { 0 };
    let behind = (
        cells(BEHIND_MM.0, post_axis) as usize,
        cells(BEHIND_MM.1, post_axis) as usize,
    );
    let side = cells(BEHIND_SIDE_MM, 1 - post_axis);
    const CANAL_MM: [f64; 7] = [14.0, 18.0, 22.0, 26.0, 30.0, 34.0, 38.0];
    // The canal lies straight behind the body, or turned with a vertebra rotated by scoliosis
    // (up to ~30 degrees at the apex): searching only straight back, a rotated spine scored
    // so low that a contrast-filled heart chamber in front of it (bright, then darker wall,
    // then the vertebral body as "arch") won the track.
    let turns: [(f64, f64); 3] = [0.0f64, 20.0, -20.0].map(|deg: f64| {
        let r = deg.to_radians();
        (r.cos(), r.sin())
    });
    // Index offset of a point `post` mm behind and `lat` mm beside a centre, for a turn.
    let offset = |post: f64, lat: f64, (c, s): (f64, f64)| -> (isize, isize) {
        let (px, py) = (pdx as f64, pdy as f64);
        let (lx, ly) = (ldx as f64, ldy as f64);
        let dx = post * (px * c + lx * s) + lat * (lx * c - px * s);
        let dy = post * (py * c + ly * s) + lat * (ly * c - py * s);
        (
            (dx / work.cell[0]).round() as isize,
            (dy / work.cell[1]).round() as isize,
        )
    };
    // Per turn and canal distance: canal, left and right pedicle, arch offsets, and the
    // weight of the turn (a turned pattern is less specific: the pelvis offers more of them).
    let probes: Vec<([(isize, isize); 4], f32)> = turns
        .iter()
        .enumerate()
        .flat_map(|(i, &t)| {
            CANAL_MM.iter().map(move |&d| {
                (
                    [
                        offset(d, 0.0, t),
                        offset(d, -13.0, t),
                        offset(d, 13.0, t),
                        offset(d + 11.0, 0.0, t),
                    ],
                    if i == 0 { 1.0 } else { TURNED_WEIGHT },
                )
            })
        })
        .collect();
    let scores: Vec<Vec<f32>> = (0..work.nz)
        .into_par_iter()
        .map(|kz| {
            let img = &work.data[kz * nx * ny..(kz + 1) * nx * ny];
            let it = Integral::new(img, nx, ny);
            // The spine sits near the body's left-right middle even in severe scoliosis;
            // a mild prior keeps iliac wings and rib heads from winning.
            let (mut sum, mut n) = (0f64, 0f64);
            for y in 0..ny {
                for x in 0..nx {
                    if img[y * nx + x] > -500.0 {
                        sum += if ldx != 0 { x as f64 } else { y as f64 };
                        n += 1.0;
                    }
                }
            }
            let mid = if n > 0.0 { sum / n } else { 0.0 };
            let mid_scale = 50.0 / work.cell[if ldx != 0 { 0 } else { 1 }];
            // Box means of canal and arch size at every cell, computed once per slice: each
            // body candidate reads them at 21 probe positions.
            let boxes = |h: [isize; 2]| -> Vec<f32> {
                (0..nx * ny)
                    .map(|i| it.mean((i % nx) as isize, (i / nx) as isize, h[0], h[1]))
                    .collect()
            };
            let (canal_box, arch_box) = (boxes(hc), boxes(ha));
            let at = |map: &[f32], x: isize, y: isize, h: [isize; 2]| {
                cell(x, y, nx, ny).map_or_else(|| it.mean(x, y, h[0], h[1]), |i| map[i])
            };
            let mut s = vec![0f32; nx * ny];
            for y in 0..ny as isize {
                for x in 0..nx as isize {
                    let body = it.mean(x, y, hb[0], hb[1]);
                    let b = ramp(body, 60.0, 260.0);
                    if b <= 0.0 {
                        continue;
                    }
                    let off = (if ldx != 0 { x } else { y }) as f64 - mid;
                    let prior = (-(off / mid_scale).powi(2)).exp() as f32;
                    let mut best = 0f32;
                    for &([canal_at, left_at, right_at, arch_at], weight) in &probes {
                        let canal = at(&canal_box, x + canal_at.0, y + canal_at.1, hc);
                        // CSF and cord are ~0-60 HU; air outside the body must not pass as canal.
                        let c = ramp(canal, 160.0, 60.0) * ramp(canal, -300.0, -150.0);
                        if c <= 0.0 {
                            continue;
                        }
                        // Pedicles or facet joints flank the canal on both sides.
                        let left = at(&canal_box, x + left_at.0, y + left_at.1, hc);
                        let right = at(&canal_box, x + right_at.0, y + right_at.1, hc);
                        let p = ramp(left.min(right), 60.0, 250.0);
                        let arch = at(&arch_box, x + arch_at.0, y + arch_at.1, ha);
                        let a = ramp(arch, 40.0, 220.0);
                        best = best.max(weight * c * (0.25 + 0.75 * p) * (0.5 + 0.5 * a));
                    }
                    s[y as usize * nx + x as usize] = b * best * prior;
                }
            }
            suppress_in_front(&s, nx, ny, (pdx, pdy), behind, side)
        })
        .collect();

    // Dynamic programming: maximise summed score minus a smoothness penalty.
    let step = [0, 1].map(|a| {
        ((opts.max_slope * work.cell[2] / work.cell[a]).ceil() as isize).clamp(1, MAX_STEP)
    });
    let mut acc = scores[0].clone();
    let mut back: Vec<Vec<u8>> = Vec::with_capacity(work.nz);
    back.push(vec![pack(0, 0); nx * ny]);
    for score in scores.iter().skip(1) {
        let (mut best, arg) = max_shift(&acc, nx, ny, step, opts.smoothness);
        for (b, s) in best.iter_mut().zip(score) {
            *b += s;
        }
        acc = best;
        back.push(arg);
    }
    let mut idx = acc
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let mut path = vec![0usize; work.nz];
    for kz in (0..work.nz).rev() {
        path[kz] = idx;
        let (dx, dy) = unpack(back[kz][idx]);
        let (x, y) = ((idx % nx) as isize + dx, (idx / nx) as isize + dy);
        idx = y as usize * nx + x as usize;
    }
    if acc.iter().cloned().fold(f32::NEG_INFINITY, f32::max) <= 0.0 {
        return Err(Error::Spine(
            "no slice shows a vertebral body in front of a spinal canal".into(),
        ));
    }

    let mut xs: Vec<f64> = path.iter().map(|&p| (p % nx) as f64).collect();
    let mut ys: Vec<f64> = path.iter().map(|&p| (p / nx) as f64).collect();
    // Re-centre along AP between the body's front and the canal: the score above finds the
    // body-canal pattern but not where in a deep lumbar body the centre lies. Only slices
    // through a body give a measurement; the shifts are then spread over the discs between
    // them (normalised smoothing), because leaving disc slices where the score put them makes
    // the track swing back and forth once per vertebra and shears the bodies in the reformat.
    // Per slice, along AP and across: (shift in cells, 1 where measured else 0).
    let reach = ((TUBE_REACH_MM / work.cell[2]).ceil() as usize).max(1);
    let mut ap_shift = vec![(0.0f64, 0.0f64); work.nz];
    let mut lat_shift = vec![(0.0f64, 0.0f64); work.nz];
    for kz in 0..work.nz {
        let img = &work.data[kz * nx * ny..(kz + 1) * nx * ny];
        let (x, y) = (xs[kz] as isize, ys[kz] as isize);
        let at = |u: isize| band_mean(img, nx, ny, (x + pdx * u, y + pdy * u), (ldx, ldy));
        let Some(inside) = body_level(
            img,
            nx,
            ny,
            (x, y),
            (pdx, pdy),
            cells(15.0, if pdy != 0 { 1 } else { 0 }),
        ) else {
            continue;
        };
        let threshold = 40.0 + 0.5 * (inside - 40.0);
        if inside < 80.0 {
            continue;
        }
        let limit = cells(45.0, if pdy != 0 { 1 } else { 0 });
        let front = (1..=limit).find(|&u| at(-u) < threshold);
        let back = (1..=limit).find(|&u| at(u) < threshold);
        let mut ap = 0.0;
        if let (Some(f), Some(b)) = (front, back) {
            ap = (b - f) as f64 / 2.0;
            ap_shift[kz] = (ap, 1.0);
        }
        // Same across the body (left-right), where lung or psoas borders it. A contrast-filled
        // aorta beside the body is as bright as bone here; it is told apart by staying bright
        // through the discs above and below, where a body gives way to disc tissue.
        let (x, y) = (
            (xs[kz] + ap * pdx as f64).round() as isize,
            (ys[kz] + ap * pdy as f64).round() as isize,
        );
        let side = |l: isize| band_mean(img, nx, ny, (x + ldx * l, y + ldy * l), (pdx, pdy));
        let tube = |l: isize| tube_floor(&work, (x + ldx * l, y + ldy * l), (pdx, pdy), kz, reach);
        let outside = |l: isize| side(l) < threshold || tube(l) >= TUBE_HU;
        let limit = cells(35.0, if ldx != 0 { 0 } else { 1 });
        let left = (1..=limit).find(|&l| outside(-l));
        let right = (1..=limit).find(|&l| outside(l));
        if let (Some(a), Some(b)) = (left, right) {
            lat_shift[kz] = ((b - a) as f64 / 2.0, 1.0);
        }
    }
    let ap_shift = spread(&ap_shift, SHIFT_SPREAD_MM / work.cell[2]);
    let lat_shift = spread(&lat_shift, SHIFT_SPREAD_MM / work.cell[2]);
    for kz in 0..work.nz {
        xs[kz] += ap_shift[kz] * pdx as f64 + lat_shift[kz] * ldx as f64;
        ys[kz] += ap_shift[kz] * pdy as f64 + lat_shift[kz] * ldy as f64;
    }
    // Smooth the track along z (in cell units), then convert to patient coordinates.
    let sigma = |axis_is_ap: bool| {
        let mm = if axis_is_ap {
            opts.ap_sigma_mm
        } else {
            opts.smooth_sigma_mm
        };
        mm / work.cell[2]
    };
    let xs = smooth(&xs, sigma(pdx != 0));
    let ys = smooth(&ys, sigma(pdy != 0));
    // Keep only the stretch the evidence supports: below the sacrum and above the neck the
    // track has nothing to follow and would drift into the pelvis or the mediastinum.
    let raw: Vec<f64> = (0..work.nz)
        .map(|kz| f64::from(scores[kz][path[kz]]))
        .collect();
    let support = smooth(&raw, 15.0 / work.cell[2]);
    let (mut best, mut cur) = ((0usize, 0usize), None::<usize>);
    for kz in 0..=work.nz {
        let on = support.get(kz).is_some_and(|&v| v >= MIN_SUPPORT);
        match (on, cur) {
            (true, None) => cur = Some(kz),
            (false, Some(start)) => {
                if kz - start > best.1 - best.0 {
                    best = (start, kz);
                }
                cur = None;
            }
            _ => {}
        }
    }
    if best.1 - best.0 < 2 {
        return Err(Error::Spine(
            "no stretch of slices shows a vertebral column".into(),
        ));
    }
    let mut points_mm = Vec::with_capacity(best.1 - best.0);
    let mut score = Vec::with_capacity(best.1 - best.0);
    for kz in best.0..best.1 {
        let v = work.voxel_of(xs[kz], ys[kz], kz as f64);
        points_mm.push(g.voxel_to_patient(v));
        score.push(scores[kz][path[kz]]);
    }
    Ok(Centreline { points_mm, score })
}

/// How far behind a candidate (mm) another spine-like pattern makes the candidate something
/// in front of the spine: a contrast-filled heart chamber, darker wall and fat behind it, and
/// the vertebral body itself playing the arch, scores like a spine at the apex of a kyphotic
/// scoliosis, where the rotated and tilted real body scores low. Nothing behind the real
/// body scores like a spine (its spinous process has no pedicles beside a canal).
const BEHIND_MM: (f64, f64) = (35.0, 80.0);
/// ... and within this distance to either side (a scoliotic column runs obliquely).
const BEHIND_SIDE_MM: f64 = 12.0;
/// Score of such a pattern behind a candidate that starts (and then fully) suppresses it.
const BEHIND_SCORE: (f32, f32) = (0.1, 0.3);

/// Each candidate's score, lowered where a spine-like pattern lies behind it (see
/// [`BEHIND_MM`]). `behind` is that range in cells along the posterior axis `post`, `side`
/// the reach across it.
fn suppress_in_front(
    s: &[f32],
    nx: usize,
    ny: usize,
    post: (isize, isize),
    behind: (usize, usize),
    side: isize,
) -> Vec<f32> {
    let across = (post.1.abs(), post.0.abs());
    let mut out = s.to_vec();
    for y in 0..ny as isize {
        for x in 0..nx as isize {
            let own = s[y as usize * nx + x as usize];
            if own <= 0.0 {
                continue;
            }
            let mut worst = 0f32;
            for d in behind.0 as isize..=behind.1 as isize {
                for l in -side..=side {
                    let (qx, qy) = (x + post.0 * d + across.0 * l, y + post.1 * d + across.1 * l);
                    if let Some(i) = cell(qx, qy, nx, ny) {
                        worst = worst.max(s[i]);
                    }
                }
            }
            out[y as usize * nx + x as usize] =
                own * (1.0 - ramp(worst, BEHIND_SCORE.0, BEHIND_SCORE.1));
        }
    }
    out
}

/// Index of cell (`x`, `y`) in a row-major `nx` x `ny` grid, `None` outside it.
fn cell(x: isize, y: isize, nx: usize, ny: usize) -> Option<usize> {
    let (xu, yu) = (usize::try_from(x).ok()?, usize::try_from(y).ok()?);
    (xu < nx && yu < ny).then_some(yu * nx + xu)
}

/// Score weight of a canal found turned from straight behind the body (see `locate`).
const TURNED_WEIGHT: f32 = 0.8;

/// Largest per-slice shift of the track, in cells, along either in-plane axis.
const MAX_STEP: isize = 6;
const STEP_CODES: isize = 2 * MAX_STEP + 1;

/// Packs a predecessor offset (dx, dy), each within MAX_STEP, into one byte.
fn pack(dx: isize, dy: isize) -> u8 {
    ((dx + MAX_STEP) * STEP_CODES + dy + MAX_STEP) as u8
}

fn unpack(code: u8) -> (isize, isize) {
    let c = code as isize;
    (c / STEP_CODES - MAX_STEP, c % STEP_CODES - MAX_STEP)
}

/// For every cell, the best predecessor within `step` cells and its penalised value:
/// max over |dx| <= step[0], |dy| <= step[1] of prev - smoothness * (dx^2 + dy^2).
/// The penalty is a sum of an x and a y term over a rectangular window, so the maximum
/// separates into a pass along x then one along y, each a few shifted whole-row compares
/// the compiler vectorises. Predecessors are kept as packed offsets (one byte per cell per
/// slice): this was the slowest stage of the analysis and its largest allocation.
fn max_shift(
    prev: &[f32],
    nx: usize,
    ny: usize,
    step: [isize; 2],
    smoothness: f32,
) -> (Vec<f32>, Vec<u8>) {
    let step = step.map(|s| s.clamp(0, MAX_STEP));
    const ROWS: usize = 16;
    let mut row_best = vec![f32::NEG_INFINITY; nx * ny];
    let mut row_dx = vec![0i8; nx * ny];
    row_best
        .par_chunks_mut(nx * ROWS)
        .zip(row_dx.par_chunks_mut(nx * ROWS))
        .enumerate()
        .for_each(|(chunk, (best, arg))| {
            for (r, (best, arg)) in best.chunks_mut(nx).zip(arg.chunks_mut(nx)).enumerate() {
                let y = chunk * ROWS + r;
                let row = &prev[y * nx..(y + 1) * nx];
                for dx in -step[0]..=step[0] {
                    let pen = smoothness * (dx * dx) as f32;
                    let x0 = (-dx).max(0) as usize;
                    let x1 = (nx as isize - dx.max(0)).max(0) as usize;
                    let src = &row[(x0 as isize + dx) as usize..(x1 as isize + dx).max(0) as usize];
                    for ((b, a), &v) in best[x0..x1].iter_mut().zip(&mut arg[x0..x1]).zip(src) {
                        let v = v - pen;
                        if v > *b {
                            *b = v;
                            *a = dx as i8;
                        }
                    }
                }
            }
        });
    let mut best = vec![f32::NEG_INFINITY; nx * ny];
    let mut code = vec![0u8; nx * ny];
    best.par_chunks_mut(nx * ROWS)
        .zip(code.par_chunks_mut(nx * ROWS))
        .enumerate()
        .for_each(|(chunk, (best, code))| {
            for (r, (best, code)) in best.chunks_mut(nx).zip(code.chunks_mut(nx)).enumerate() {
                let y = (chunk * ROWS + r) as isize;
                for dy in -step[1]..=step[1] {
                    let py = y + dy;
                    if py < 0 || py >= ny as isize {
                        continue;
                    }
                    let pen = smoothness * (dy * dy) as f32;
                    let src = &row_best[py as usize * nx..(py as usize + 1) * nx];
                    let dxs = &row_dx[py as usize * nx..(py as usize + 1) * nx];
                    for (((b, c), &v), &dx) in
                        best.iter_mut().zip(code.iter_mut()).zip(src).zip(dxs)
                    {
                        let v = v - pen;
                        if v > *b {
                            *b = v;
                            *c = pack(dx as isize, dy);
                        }
                    }
                }
            }
        });
    (best, code)
}

/// Mean of three cells centred at `p` along `across`: a profile sample that tolerates one
/// noisy cell. Outside the image counts as air.
fn band_mean(img: &[f32], nx: usize, ny: usize, p: (isize, isize), across: (isize, isize)) -> f32 {
    let (mut acc, mut n) = (0f32, 0f32);
    for l in -1..=1 {
        let (qx, qy) = (p.0 + across.0 * l, p.1 + across.1 * l);
        if let Some(i) = cell(qx, qy, nx, ny) {
            acc += img[i];
            n += 1.0;
        }
    }
    if n > 0.0 {
        acc / n
    } else {
        -1000.0
    }
}

/// Reach (Gaussian sigma, mm along z) over which body-centre corrections are spread to the
/// disc slices around them: about half a lumbar body's height.
const SHIFT_SPREAD_MM: f64 = 8.0;

/// HU of the body's interior near the track point. The track often sits on the bright
/// posterior cortex or a pedicle (the box score favours it), and an edge threshold taken
/// there cuts off a low-density interior. Within `r` cells along AP (not across: across, the
/// posterior rim is cortex and pedicles all the way) the samples are soft tissue, interior,
/// cortex and canal; a low quantile of those above soft tissue is the interior's level whether
/// the point is inside the body or on its rim. Seen on the real abdominal CT: a rim sample of
/// ~280 HU before an ~85 HU interior.
fn body_level(
    img: &[f32],
    nx: usize,
    ny: usize,
    p: (isize, isize),
    post: (isize, isize),
    r: isize,
) -> Option<f32> {
    let mut v: Vec<f32> = (-r..=r)
        .map(|u| {
            band_mean(
                img,
                nx,
                ny,
                (p.0 + post.0 * u, p.1 + post.1 * u),
                (post.1.abs(), post.0.abs()),
            )
        })
        .filter(|&hu| hu > SOFT_TISSUE_HU)
        .collect();
    if v.len() < 3 {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[v.len() * 3 / 10])
}

/// Lowest HU a cell keeps within this distance along z, above and below, to count as a vessel
/// rather than bone: further than half the tallest vertebral body, so a body cell always meets a
/// disc.
const TUBE_REACH_MM: f64 = 18.0;
/// Contrast-filled arteries stay above this through the discs; disc tissue is 65-115 HU, and
/// partial volume with bone under thick slices keeps it well below.
const TUBE_HU: f32 = 180.0;

/// The lowest band mean (as `band_mean`) at `p` over the working slices within `reach` of `kz`:
/// high only where something bright runs on along z, such as a vessel.
fn tube_floor(
    work: &Work,
    p: (isize, isize),
    across: (isize, isize),
    kz: usize,
    reach: usize,
) -> f32 {
    let plane = work.nx * work.ny;
    let lo = kz.saturating_sub(reach);
    let hi = (kz + reach).min(work.nz - 1);
    (lo..=hi)
        .map(|k| {
            band_mean(
                &work.data[k * plane..(k + 1) * plane],
                work.nx,
                work.ny,
                p,
                across,
            )
        })
        .fold(f32::INFINITY, f32::min)
}

/// Above muscle, also contrast-enhanced (<= ~65 HU), below osteoporotic cancellous bone.
const SOFT_TISSUE_HU: f32 = 70.0;

/// Gaussian-weighted mean of the measured values (value, weight) around each slice; 0 where
/// nothing was measured within reach.
fn spread(values: &[(f64, f64)], sigma: f64) -> Vec<f64> {
    let radius = (3.0 * sigma).ceil() as isize;
    (0..values.len() as isize)
        .map(|kz| {
            let (mut num, mut den) = (0.0, 0.0);
            for d in -radius..=radius {
                if let Some(&(v, m)) = usize::try_from(kz + d).ok().and_then(|k| values.get(k)) {
                    let w = m * (-(d * d) as f64 / (2.0 * sigma * sigma)).exp();
                    num += w * v;
                    den += w;
                }
            }
            if den > 1e-3 {
                num / den
            } else {
                0.0
            }
        })
        .collect()
}

/// Gaussian smoothing along z, every slice counting (the ends normalised by what is there).
fn smooth(values: &[f64], sigma: f64) -> Vec<f64> {
    spread(&values.iter().map(|&v| (v, 1.0)).collect::<Vec<_>>(), sigma)
}

/// Smoothed per-slice evidence below which the track is not trusted (trimmed at the ends).
const MIN_SUPPORT: f64 = 0.06;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{generate, PhantomOptions};

    /// Largest 3D distance from an in-view body centre to the centreline.
    fn worst_miss(seed: u64, opts: PhantomOptions) -> f64 {
        let ph = generate(seed, &opts).unwrap();
        let line = locate(&ph.volume, &SpineOptions::default()).unwrap();
        ph.truth
            .vertebrae
            .iter()
            .filter(|v| v.in_view)
            .map(|v| {
                line.points_mm
                    .iter()
                    .map(|p| {
                        (0..3)
                            .map(|a| (p[a] - v.center_mm[a]).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .fold(0.0, f64::max)
    }

    fn small() -> PhantomOptions {
        PhantomOptions {
            rows: Some(256),
            pixel_spacing_mm: Some(1.4),
            slice_thickness_mm: Some(3.0),
            slice_spacing_mm: Some(3.0),
            ..Default::default()
        }
    }

    #[test]
    fn follows_straight_scoliotic_and_kyphotic_spines() {
        // Bodies are 15-50 mm across: within 12 mm the reformat's slab still cuts the body.
        for (seed, cobb, kyphosis) in [(13, 0.0, 40.0), (12, 40.0, 50.0), (21, 10.0, 68.0)] {
            let opts = PhantomOptions {
                cobb_deg: Some(cobb),
                kyphosis_deg: Some(kyphosis),
                ..small()
            };
            let miss = worst_miss(seed, opts);
            assert!(
                miss < 12.0,
                "seed {seed} cobb {cobb} kyphosis {kyphosis}: {miss:.1} mm"
            );
        }
    }

    #[test]
    fn separable_max_shift_equals_the_full_window() {
        let (nx, ny, step, lambda) = (23usize, 17usize, [3isize, 2isize], 0.07f32);
        let mut rng = crate::phantom::Rng::new(5);
        let prev: Vec<f32> = (0..nx * ny).map(|_| rng.f64() as f32).collect();
        let (best, arg) = max_shift(&prev, nx, ny, step, lambda);
        for y in 0..ny as isize {
            for x in 0..nx as isize {
                let mut want = f32::NEG_INFINITY;
                for dy in -step[1]..=step[1] {
                    for dx in -step[0]..=step[0] {
                        let (px, py) = (x + dx, y + dy);
                        if px >= 0 && py >= 0 && px < nx as isize && py < ny as isize {
                            let v = prev[py as usize * nx + px as usize]
                                - lambda * (dx * dx + dy * dy) as f32;
                            want = want.max(v);
                        }
                    }
                }
                let i = y as usize * nx + x as usize;
                assert!((best[i] - want).abs() < 1e-6, "value at ({x},{y})");
                // The chosen predecessor is inside the window and yields that value.
                let (dx, dy) = unpack(arg[i]);
                let (ax, ay) = (x + dx, y + dy);
                assert!(dx.abs() <= step[0] && dy.abs() <= step[1]);
                assert!(ax >= 0 && ay >= 0 && ax < nx as isize && ay < ny as isize);
                let a = ay as usize * nx + ax as usize;
                let got = prev[a] - lambda * (dx * dx + dy * dy) as f32;
                assert!((got - want).abs() < 1e-6, "argmax at ({x},{y})");
            }
        }
    }

    /// A working grid of `nz` slices of 20 x 20 cells (3 mm) of soft tissue.
    fn work(nz: usize) -> Work {
        Work {
            nx: 20,
            ny: 20,
            nz,
            block: [1; 3],
            cell: [3.0; 3],
            data: vec![40.0; 20 * 20 * nz],
        }
    }

    #[test]
    fn a_bright_tube_through_the_discs_is_told_from_a_body() {
        // Bodies 8 slices (24 mm) tall with 3-slice discs at 90 HU; beside them an artery
        // at 250 HU runs through every slice.
        let mut w = work(33);
        for k in 0..w.nz {
            let body = if k % 11 < 8 { 260.0 } else { 90.0 };
            let plane = &mut w.data[k * 400..(k + 1) * 400];
            for y in 8..12 {
                for x in 4..10 {
                    plane[y * 20 + x] = body;
                }
                for x in 12..15 {
                    plane[y * 20 + x] = 250.0;
                }
            }
        }
        let reach = (TUBE_REACH_MM / 3.0).ceil() as usize;
        for kz in [3, 15, 26] {
            assert!(tube_floor(&w, (13, 10), (0, 1), kz, reach) >= TUBE_HU);
            assert!(tube_floor(&w, (6, 10), (0, 1), kz, reach) < TUBE_HU);
        }
    }

    #[test]
    fn interior_level_ignores_a_bright_rim_at_the_track() {
        // AP profile (posterior +y): fat, a 85 HU interior 36 mm deep, a 280 HU posterior
        // rim where the track sits, then the canal.
        let mut w = work(1);
        let hu = |y: usize| match y {
            0..=2 => -90.0,
            3..=14 => 85.0,
            15 => 280.0,
            _ => 10.0,
        };
        for y in 0..20 {
            for x in 0..20 {
                w.data[y * 20 + x] = hu(y);
            }
        }
        let level = body_level(&w.data, 20, 20, (10, 15), (0, 1), 5).unwrap();
        assert!((80.0..=100.0).contains(&level), "{level}");
        // Nothing above soft tissue: no level, no re-centring.
        let level = body_level(&vec![40.0; 400], 20, 20, (10, 10), (0, 1), 5);
        assert!(level.is_none());
    }

    #[test]
    fn shifts_measured_in_bodies_reach_the_discs_between_them() {
        // Measured 3 cells in two bodies, nothing on the disc between them or far away.
        let mut v = vec![(0.0, 0.0); 40];
        for k in (5..10).chain(13..18) {
            v[k] = (3.0, 1.0);
        }
        let s = spread(&v, 8.0 / 3.0);
        assert!((s[11] - 3.0).abs() < 1e-9, "{}", s[11]);
        assert_eq!(s[39], 0.0);
    }

    #[test]
    fn refuses_a_volume_without_a_spine() {
        let g = crate::Geometry::axial([100, 100, 20], [0.0; 3], [2.0, 2.0, 3.0]);
        let v = Volume::filled(g, 40).unwrap();
        assert!(matches!(
            locate(&v, &SpineOptions::default()),
            Err(Error::Spine(_))
        ));
    }
}
