//! Endplate refinement: a second, local CNN moves each keypoint the keypoint network found
//! onto the endplate boundary it sees in a small patch of the reformat.
//!
//! The keypoint network regresses all six points of a body as offsets from its centre. That
//! finds every body and groups its points, but places endplates to about a millimetre and pulls
//! a failed endplate back towards the normal shape; a 1 mm error on a 25 mm body is a 4 % error
//! in deformity, the whole margin between a grade-0 body (up to ~17 %) and a grade-2 fracture
//! (25 %). This stage sees only 33 x 17 mm around one point, so it has no normal shape to
//! regress to: it answers where the boundary is, and runs twice (the second pass starts where
//! the first ended, close to where it was trained to be most precise).
//!
//! A physics fit of the profile (disc, cortex, bone, blurred) was tried first and dropped: on
//! 3-5 mm slices and edge-enhancing kernels the blur and the thin cortex cannot be told apart
//! and the fitted boundary moved by up to 1 mm (see model/MODEL_CARD.md).

use crate::dataset::{network_input, thin_input};
use crate::keypoints::{Detection, Net, Precision};
use crate::reformat::Reformat;
use crate::{Error, Result};

/// Patch rows (along the spine) and columns (anterior to posterior), 1 mm pixels.
pub const PATCH_ROWS: usize = 33;
pub const PATCH_COLS: usize = 17;
/// The wide and the thin slab, plus a one-hot ventral / middle / dorsal channel each.
pub const PATCH_CHANNELS: usize = 5;
const IMAGE_CHANNELS: usize = 2;
/// Value of pixels outside the reformat: air, as the keypoint network pads.
const PAD_VALUE: f32 = -1.5;
/// Passes of the refinement; each starts where the previous one ended.
const PASSES: usize = 2;
/// Largest move (pixels) one pass may make: beyond what it was trained on (6 mm along the
/// spine, 3 across) its answer is an extrapolation, so it is clipped to it.
const MAX_STEP_ROW: f64 = 6.0;
const MAX_STEP_COL: f64 = 3.0;
/// Patches per network run (the plan is compiled for this batch size once).
const BATCH: usize = 64;

static F32_ONNX: &[u8] = include_bytes!("../weights/endplates_f32.onnx");
static INT8_ONNX: &[u8] = include_bytes!("../weights/endplates_int8.onnx");

/// The refinement network of one precision.
pub struct EndplateModel {
    net: Net,
}

/// Pixel nearest to a position, as training rounds it (`floor(x + 0.5)`).
fn nearest(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

/// The patch of keypoint `k` (0-2 upper, 3-5 lower endplate) around the pixel nearest to
/// (`col`, `row`), from the normalised wide- and thin-slab images, and that pixel.
/// Lower-endplate patches are flipped top to bottom so that every patch shows the disc above
/// and the body below. The definition is shared with model/train/train_endplates.py: change
/// both or neither.
pub fn patch(
    images: [&[f32]; IMAGE_CHANNELS],
    width: usize,
    height: usize,
    k: usize,
    col: f64,
    row: f64,
) -> (Vec<f32>, [i64; 2]) {
    let (cr, cc) = (nearest(row), nearest(col));
    let (hr, hc) = ((PATCH_ROWS / 2) as i64, (PATCH_COLS / 2) as i64);
    let plane = PATCH_ROWS * PATCH_COLS;
    let mut out = vec![0.0f32; PATCH_CHANNELS * plane];
    for (ch, img) in images.iter().enumerate() {
        for i in 0..PATCH_ROWS {
            let src_row = if k >= 3 { PATCH_ROWS - 1 - i } else { i };
            let y = cr - hr + src_row as i64;
            for j in 0..PATCH_COLS {
                let x = cc - hc + j as i64;
                let inside = y >= 0 && x >= 0 && (y as usize) < height && (x as usize) < width;
                out[ch * plane + i * PATCH_COLS + j] = if inside {
                    img[y as usize * width + x as usize]
                } else {
                    PAD_VALUE
                };
            }
        }
    }
    let onehot = IMAGE_CHANNELS + k % 3;
    out[onehot * plane..(onehot + 1) * plane].fill(1.0);
    (out, [cr, cc])
}

impl EndplateModel {
    /// Loads the shipped refinement network of a precision.
    pub fn shipped(precision: Precision) -> Result<Self> {
        let bytes = match precision {
            Precision::F32 => F32_ONNX,
            Precision::Int8 => INT8_ONNX,
        };
        Self::from_onnx(precision, bytes)
    }

    pub fn from_onnx(precision: Precision, bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            net: Net::from_onnx(&format!("{} endplate", precision.as_str()), bytes)?,
        })
    }

    /// Runs the network on `n` patches (`n * PATCH_CHANNELS * PATCH_ROWS * PATCH_COLS`
    /// values); returns (row, col) offsets in the patches' own (possibly flipped) frame.
    pub fn run_patches(&self, patches: &[f32]) -> Result<Vec<[f32; 2]>> {
        let size = PATCH_CHANNELS * PATCH_ROWS * PATCH_COLS;
        if patches.len() % size != 0 {
            return Err(Error::Model(format!(
                "{} values are not a whole number of {size}-value patches",
                patches.len()
            )));
        }
        let n = patches.len() / size;
        let mut out = Vec::with_capacity(n);
        let mut batch = vec![PAD_VALUE; BATCH * size];
        for chunk in patches.chunks(BATCH * size) {
            let m = chunk.len() / size;
            batch[..chunk.len()].copy_from_slice(chunk);
            let (shape, data) = self
                .net
                .run(&[BATCH, PATCH_CHANNELS, PATCH_ROWS, PATCH_COLS], &batch)?;
            if shape != [BATCH, 2] {
                return Err(Error::Model(format!(
                    "endplate network output shape {shape:?}, expected [{BATCH}, 2]"
                )));
            }
            out.extend(data.chunks_exact(2).take(m).map(|v| [v[0], v[1]]));
        }
        Ok(out)
    }

    /// Moves every keypoint of every detection onto the boundary the network sees.
    pub fn refine(&self, r: &Reformat, dets: &mut [Detection]) -> Result<()> {
        if dets.is_empty() {
            return Ok(());
        }
        let mut points: Vec<(usize, [f64; 2])> = dets
            .iter()
            .flat_map(|d| d.keypoints.iter().copied().enumerate())
            .collect();
        self.refine_points(r, &mut points)?;
        for (i, (_, p)) in points.into_iter().enumerate() {
            dets[i / 6].keypoints[i % 6] = p;
        }
        dets.iter_mut().for_each(pair_up);
        Ok(())
    }

    /// Moves points (keypoint index 0-5, which sets the patch's flip and one-hot channel;
    /// (col, row) in the reformat) onto the boundary the network sees, [`PASSES`] times.
    /// Other positions along an endplate may be asked with the middle point's index.
    pub fn refine_points(&self, r: &Reformat, points: &mut [(usize, [f64; 2])]) -> Result<()> {
        let (wide, thin) = (network_input(r), thin_input(r));
        for _ in 0..PASSES {
            let mut patches =
                Vec::with_capacity(points.len() * PATCH_CHANNELS * PATCH_ROWS * PATCH_COLS);
            let mut centres = Vec::with_capacity(points.len());
            for &(k, kp) in points.iter() {
                let (p, c) = patch([&wide, &thin], r.width, r.height, k, kp[0], kp[1]);
                patches.extend_from_slice(&p);
                centres.push(c);
            }
            let offsets = self.run_patches(&patches)?;
            for ((k, kp), (o, c)) in points.iter_mut().zip(offsets.iter().zip(&centres)) {
                let dr = f64::from(o[0]).clamp(-MAX_STEP_ROW, MAX_STEP_ROW);
                let dc = f64::from(o[1]).clamp(-MAX_STEP_COL, MAX_STEP_COL);
                let dr = if *k >= 3 { -dr } else { dr };
                *kp = [c[1] as f64 + dc, c[0] as f64 + dr];
            }
        }
        Ok(())
    }
}

/// Puts each upper point and its lower partner on one line along the body's axis, and the
/// middle pair midway between the ventral and dorsal ones: the keypoint definition (heights
/// are measured along the axis, the middle height halfway across). The network moves each
/// point on its own; its across-the-axis answer is the noisier one (the middle points' more
/// so: a flat stretch of endplate says little about where along it a point sits).
pub fn pair_up(d: &mut Detection) {
    let kp = &mut d.keypoints;
    let mut axis = [0.0; 2];
    for k in 0..3 {
        axis[0] += kp[k + 3][0] - kp[k][0];
        axis[1] += kp[k + 3][1] - kp[k][1];
    }
    let len = axis[0].hypot(axis[1]);
    if len < 1e-6 {
        return;
    }
    let a = [axis[0] / len, axis[1] / len];
    let across = [a[1], -a[0]];
    let along_of = |p: [f64; 2]| p[0] * a[0] + p[1] * a[1];
    let across_of = |p: [f64; 2]| p[0] * across[0] + p[1] * across[1];
    let mut u: [f64; 3] = std::array::from_fn(|k| 0.5 * (across_of(kp[k]) + across_of(kp[k + 3])));
    u[1] = 0.5 * (u[0] + u[2]);
    for k in 0..6 {
        let (t, w) = (along_of(kp[k]), u[k % 3]);
        kp[k] = [t * a[0] + w * across[0], t * a[1] + w * across[1]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_share_a_line_along_the_axis_and_the_middle_sits_halfway() {
        // An upright body (the pairs' tilts cancel: axis along +row), middle points off centre.
        let mut d = Detection {
            center: [50.0, 50.0],
            keypoints: [
                [40.0, 40.0],
                [48.0, 42.0],
                [60.0, 40.0],
                [41.0, 60.0],
                [47.0, 58.0],
                [60.0, 60.0],
            ],
            confidence: 1.0,
        };
        pair_up(&mut d);
        let k = d.keypoints;
        for i in 0..3 {
            assert!((k[i][0] - k[i + 3][0]).abs() < 1e-9, "pair {i}: {k:?}");
        }
        assert!((k[0][0] - 40.5).abs() < 1e-9 && (k[2][0] - 60.0).abs() < 1e-9);
        assert!((k[1][0] - 50.25).abs() < 1e-9);
        // Positions along the axis (the heights) are kept.
        assert_eq!([k[1][1], k[4][1]], [42.0, 58.0]);
    }

    #[test]
    fn lower_patches_are_flipped_and_padded_with_air() {
        // A 40 x 20 image whose value is its row number.
        let (w, h) = (20, 40);
        let img: Vec<f32> = (0..w * h).map(|i| (i / w) as f32).collect();
        let neg: Vec<f32> = img.iter().map(|v| -v).collect();
        let (up, c) = patch([&img, &neg], w, h, 1, 10.4, 20.6);
        assert_eq!(c, [21, 10]);
        let at = |p: &[f32], i: usize, j: usize| p[i * PATCH_COLS + j];
        assert_eq!(at(&up, 16, 8), 21.0);
        assert_eq!(at(&up, 0, 8), 5.0);
        let plane = PATCH_ROWS * PATCH_COLS;
        // The thin slab is the second channel.
        assert_eq!(at(&up[plane..], 16, 8), -21.0);
        let (low, _) = patch([&img, &neg], w, h, 4, 10.4, 20.6);
        assert_eq!(at(&low, 0, 8), 37.0);
        assert_eq!(at(&low, 32, 8), 5.0);
        // Middle point: the second one-hot channel is one, the others zero.
        assert!(up[3 * plane..4 * plane].iter().all(|&v| v == 1.0));
        assert!(up[2 * plane..3 * plane].iter().all(|&v| v == 0.0));
        assert!(up[4 * plane..5 * plane].iter().all(|&v| v == 0.0));
        // Near the top edge the patch reads air above the image.
        let (edge, _) = patch([&img, &neg], w, h, 0, 0.0, 2.0);
        assert_eq!(at(&edge, 0, 0), PAD_VALUE);
        assert_eq!(at(&edge, 14, 8), 0.0);
    }

    /// On phantoms with a fracture of each kind, the refinement brings the endplate points
    /// closer to the truth than the keypoint network left them, above all on the fractured
    /// body, where the network is pulled towards the normal shape.
    #[test]
    fn refinement_moves_points_onto_the_endplates() {
        use crate::keypoints::{DecodeOptions, KeypointModel};
        use crate::phantom::{generate, FractureKind, FractureSpec, Level, PhantomOptions};
        use crate::reformat::{curved_sagittal, ReformatOptions};
        use crate::spine::{locate, SpineOptions};
        let model = KeypointModel::shipped(Precision::F32).unwrap();
        let (mut raw_err, mut ref_err, mut n) = (0.0, 0.0, 0.0);
        let (mut raw_frac, mut ref_frac) = (0.0f64, 0.0f64);
        for (seed, kind) in [
            (11, FractureKind::Biconcave),
            (12, FractureKind::Wedge),
            (13, FractureKind::Crush),
        ] {
            let opts = PhantomOptions {
                rows: Some(256),
                pixel_spacing_mm: Some(1.4),
                slice_thickness_mm: Some(2.0),
                slice_spacing_mm: Some(2.0),
                from_level: Some(Level::T10),
                to_level: Some(Level::L3),
                fractures: Some(vec![FractureSpec {
                    level: Level::L1,
                    kind,
                    severity: 0.45,
                }]),
                mimics: Some(vec![]),
                ..Default::default()
            };
            let ph = generate(seed, &opts).unwrap();
            let line = locate(&ph.volume, &SpineOptions::default()).unwrap();
            let r = curved_sagittal(&ph.volume, &line, &ReformatOptions::default()).unwrap();
            let raw = model.detect(&r, &DecodeOptions::default()).unwrap();
            let mut refined = raw.clone();
            model.endplates().refine(&r, &mut refined).unwrap();
            for t in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
                let truth: Vec<(f64, f64, f64)> = t
                    .keypoints_mm
                    .as_array()
                    .iter()
                    .filter_map(|p| r.from_patient(*p))
                    .collect();
                if truth.len() != 6 {
                    continue;
                }
                let centre_row = truth.iter().map(|p| p.1).sum::<f64>() / 6.0;
                let Some(i) = raw
                    .iter()
                    .position(|d| (d.center[1] - centre_row).abs() < 8.0)
                else {
                    continue;
                };
                let err = |d: &Detection| {
                    (0..6)
                        .map(|k| (d.keypoints[k][1] - truth[k].1).abs())
                        .sum::<f64>()
                        / 6.0
                };
                let (a, b) = (err(&raw[i]), err(&refined[i]));
                raw_err += a;
                ref_err += b;
                n += 1.0;
                if t.level == "L1" {
                    raw_frac = raw_frac.max(a);
                    ref_frac = ref_frac.max(b);
                }
            }
        }
        assert!(n >= 12.0, "{n} bodies matched");
        let (raw_err, ref_err) = (raw_err / n, ref_err / n);
        eprintln!("row error: network {raw_err:.2} px, refined {ref_err:.2} px; worst fracture {raw_frac:.2} -> {ref_frac:.2}");
        assert!(
            ref_err < 0.8 * raw_err,
            "network {raw_err:.2} px, refined {ref_err:.2} px"
        );
        assert!(ref_err < 0.4, "refined {ref_err:.2} px");
        assert!(
            ref_frac < 0.6,
            "worst fractured body {ref_frac:.2} px after refinement"
        );
    }

    /// The shipped refinement networks run in tract and reproduce onnxruntime's offsets
    /// (stored by train_endplates.py for 16 real patches).
    #[test]
    fn shipped_models_match_the_onnxruntime_reference() {
        let input = crate::keypoints::read_weights_f32("endplates_reference_input.f32");
        for (p, tol) in [(Precision::F32, 1e-3), (Precision::Int8, 0.1)] {
            let reference = crate::keypoints::read_weights_f32(&format!(
                "endplates_reference_{}.f32",
                p.as_str()
            ));
            let m = EndplateModel::shipped(p).unwrap();
            let ours = m.run_patches(&input).unwrap();
            assert_eq!(ours.len() * 2, reference.len(), "{p:?}");
            for (a, b) in ours.iter().zip(reference.chunks_exact(2)) {
                let d = (a[0] - b[0]).abs().max((a[1] - b[1]).abs());
                assert!(d <= tol, "{p:?}: tract {a:?} vs onnxruntime {b:?}");
            }
        }
    }
}
