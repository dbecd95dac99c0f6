//! The keypoint CNN: finds every vertebral body on the curved reformat and its six endplate
//! points, run on CPU by tract.
//!
//! The network (model/train/train.py) is anchor-free: at stride 4 it outputs one channel of
//! centre logits, a sub-pixel centre offset and the six keypoints as offsets from the centre.
//! Keypoints therefore belong to a vertebra by construction; no matching step can mix them up.
//! Both precisions ship inside the binary (the box may have no network and no writable model
//! store), and the int8 model is the QOperator (QLinearConv) form that tract runs natively.

use crate::dataset::network_input;
use crate::endplates::EndplateModel;
use crate::reformat::Reformat;
use crate::{Error, Result};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;

/// Output stride of the network.
pub const STRIDE: usize = 4;
/// Columns the network sees (the reformat's first `INPUT_WIDTH` columns).
pub const INPUT_WIDTH: usize = 96;
/// Keypoint offsets are regressed in units of this many pixels (keeps targets near 1).
pub const OFFSET_SCALE: f32 = 10.0;
/// Heights are padded up to a multiple of this (the deepest feature map is 1/16).
const HEIGHT_MULTIPLE: usize = 16;
/// Channels: centre logit, centre offset (x, y), 6 keypoints x (dx, dy).
const CHANNELS: usize = 15;
/// Sideways shifts (pixels) of the extra test-time passes.
const TTA_SHIFTS: [i64; 2] = [-4, 4];
/// Pixel value of padding rows: air, as the network saw beyond the image ends in training.
const PAD_VALUE: f32 = -1.5;

static F32_ONNX: &[u8] = include_bytes!("../weights/keypoints_f32.onnx");
static INT8_ONNX: &[u8] = include_bytes!("../weights/keypoints_int8.onnx");

/// Which of the shipped networks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }

    /// The shipped ONNX bytes of this precision.
    pub fn onnx_bytes(self) -> &'static [u8] {
        match self {
            Precision::F32 => F32_ONNX,
            Precision::Int8 => INT8_ONNX,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float" | "fp32" => Ok(Precision::F32),
            "int8" | "i8" | "q8" => Ok(Precision::Int8),
            o => Err(Error::Model(format!("unknown precision {o:?} (f32, int8)"))),
        }
    }
}

/// The default precision, chosen by measurement (see model/MODEL_CARD.md).
pub const DEFAULT_PRECISION: Precision = Precision::F32;

/// One vertebral body found on the reformat, in reformat pixel coordinates (col, row).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub center: [f64; 2],
    /// Upper anterior, middle, posterior; lower anterior, middle, posterior.
    pub keypoints: [[f64; 2]; 6],
    /// Centre heatmap probability at the peak.
    pub confidence: f64,
}

/// Decoding thresholds.
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// Minimum centre probability of a detection.
    pub min_confidence: f32,
    /// Peaks closer than this (pixels along the spine) are one vertebra.
    pub min_separation_px: f64,
    /// A gap between neighbouring detections longer than this many local spacings holds a
    /// missed body (a crushed one leaves about 1.5 spacings, a normal one 2), and there a
    /// peak of [`Self::gap_confidence`] is enough.
    pub gap_factor: f64,
    /// Centre probability a peak needs inside such a gap. Why: a crushed body, a third of a
    /// normal height, draws a weak centre peak (0.1-0.3 on the phantoms where it was missed),
    /// while vertebrae follow each other at nearly even spacing, so the gap itself says a body
    /// is there.
    pub gap_confidence: f32,
    /// A gap longer than this many spacings is left alone: several bodies are missing, the
    /// detector has failed over a stretch of the column (the localiser off the spine, as seen
    /// on the validation seeds), and one weak peak there was a false body as often as a true one.
    pub gap_factor_max: f64,
    /// Centre probability a peak needs one spacing beyond either end of the column, where
    /// the column says the next body is. Why: on the public CT the network's confidence is
    /// 0.4-0.7 against 0.8-0.95 on phantoms, and its L1, the first body under the field's
    /// top edge, peaked at 0.29: the even spacing of the column vouches for it as a gap does.
    pub end_confidence: f32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            min_confidence: 0.3,
            min_separation_px: 10.0,
            gap_factor: 1.3,
            gap_confidence: 0.05,
            gap_factor_max: 2.2,
            end_confidence: 0.2,
        }
    }
}

type Plan = Arc<TypedRunnableModel>;

/// One ONNX network with an optimised plan per concrete input shape (compiled on first use:
/// tract optimises best with concrete shapes). Shared by the keypoint and endplate stages.
pub(crate) struct Net {
    model: InferenceModel,
    plans: Mutex<HashMap<Vec<usize>, Plan>>,
}

fn tract_err(e: impl std::fmt::Display) -> Error {
    Error::Model(e.to_string())
}

impl Net {
    pub(crate) fn from_onnx(what: &str, bytes: &[u8]) -> Result<Self> {
        let mut reader = bytes;
        let model = tract_onnx::onnx()
            .model_for_read(&mut reader)
            .map_err(|e| Error::Model(format!("cannot read the {what} ONNX model: {e}")))?;
        Ok(Self {
            model,
            plans: Mutex::new(HashMap::new()),
        })
    }

    fn plan(&self, shape: &[usize]) -> Result<Plan> {
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::Model("model cache poisoned".into()))?;
        if let Some(p) = plans.get(shape) {
            return Ok(p.clone());
        }
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(tract_err)?;
        plans.insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }

    /// Runs the network on one f32 tensor; returns the first output's shape and values.
    pub(crate) fn run(&self, shape: &[usize], input: &[f32]) -> Result<(Vec<usize>, Vec<f32>)> {
        let tensor = Tensor::from_shape(shape, input).map_err(tract_err)?;
        let out = self
            .plan(shape)?
            .run(tvec!(tensor.into_tvalue()))
            .map_err(tract_err)?;
        let t = out
            .first()
            .ok_or_else(|| Error::Model("network returned nothing".into()))?;
        let view = t.to_plain_array_view::<f32>().map_err(tract_err)?;
        Ok((view.shape().to_vec(), view.iter().copied().collect()))
    }
}

/// The loaded networks of one precision: the keypoint network and the endplate refinement.
pub struct KeypointModel {
    precision: Precision,
    net: Net,
    endplates: EndplateModel,
}

impl KeypointModel {
    /// Loads the shipped networks.
    pub fn shipped(precision: Precision) -> Result<Self> {
        Self::from_onnx(precision, precision.onnx_bytes())
    }

    /// Loads a keypoint network from ONNX bytes, with the shipped endplate refinement of the
    /// same precision (tests compare against other weights this way).
    pub fn from_onnx(precision: Precision, bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            precision,
            net: Net::from_onnx(&format!("{} keypoint", precision.as_str()), bytes)?,
            endplates: EndplateModel::shipped(precision)?,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The endplate refinement stage of the same precision.
    pub fn endplates(&self) -> &EndplateModel {
        &self.endplates
    }

    /// Runs the network on a normalised image `height x INPUT_WIDTH` (padded here) and returns
    /// the raw output maps `[CHANNELS][height/4][INPUT_WIDTH/4]`, row-major.
    pub fn run_raw(&self, pixels: &[f32], width: usize, height: usize) -> Result<Maps> {
        if width < INPUT_WIDTH || pixels.len() != width * height || height == 0 {
            return Err(Error::Model(format!(
                "network input {width}x{height} with {} pixels: need at least {INPUT_WIDTH} columns",
                pixels.len()
            )));
        }
        let padded = height.div_ceil(HEIGHT_MULTIPLE) * HEIGHT_MULTIPLE;
        let mut input = vec![PAD_VALUE; padded * INPUT_WIDTH];
        for r in 0..height {
            input[r * INPUT_WIDTH..(r + 1) * INPUT_WIDTH]
                .copy_from_slice(&pixels[r * width..r * width + INPUT_WIDTH]);
        }
        let (shape, data) = self.net.run(&[1, 1, padded, INPUT_WIDTH], &input)?;
        let (oh, ow) = (padded / STRIDE, INPUT_WIDTH / STRIDE);
        if shape != [1, CHANNELS, oh, ow] {
            return Err(Error::Model(format!(
                "network output shape {shape:?}, expected [1, {CHANNELS}, {oh}, {ow}]"
            )));
        }
        Ok(Maps {
            data,
            height: oh,
            width: ow,
            valid_rows: height.div_ceil(STRIDE),
        })
    }

    /// Finds the vertebral bodies on a reformat.
    ///
    /// The network also runs on copies shifted sideways by a few pixels (test-time
    /// augmentation: the network costs ~0.1 s, so three passes are cheap) and each vertebra's
    /// keypoints are the mean over the passes that found it. Keypoint noise is what turns into
    /// false deformity, and averaging cuts it where a single pass cannot.
    pub fn detect(&self, r: &Reformat, opts: &DecodeOptions) -> Result<Vec<Detection>> {
        let input = network_input(r);
        let base = self.run_raw(&input, r.width, r.height)?.decode(opts);
        // Matching uses the first pass's rows; the sums accumulate separately.
        let centres: Vec<[f64; 2]> = base.iter().map(|d| d.center).collect();
        let mut sums: Vec<(Detection, f64)> = base.into_iter().map(|d| (d, 1.0)).collect();
        for shift in TTA_SHIFTS {
            let shifted = shift_columns(&input, r.width, r.height, shift);
            let dets = self.run_raw(&shifted, r.width, r.height)?.decode(opts);
            for d in dets {
                let here = [d.center[0] - shift as f64, d.center[1]];
                let dist =
                    |c: &[f64; 2]| ((c[0] - here[0]).powi(2) + (c[1] - here[1]).powi(2)).sqrt();
                let Some(i) = centres
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| dist(c) < opts.min_separation_px / 2.0)
                    .min_by(|a, b| dist(a.1).total_cmp(&dist(b.1)))
                    .map(|(i, _)| i)
                else {
                    continue;
                };
                let (acc, n) = &mut sums[i];
                let dx = -(shift as f64);
                for (k, kp) in d.keypoints.iter().enumerate() {
                    acc.keypoints[k][0] += kp[0] + dx;
                    acc.keypoints[k][1] += kp[1];
                }
                acc.center[0] += d.center[0] + dx;
                acc.center[1] += d.center[1];
                acc.confidence += d.confidence;
                *n += 1.0;
            }
        }
        Ok(sums
            .into_iter()
            .map(|(mut d, n)| {
                for kp in d.keypoints.iter_mut() {
                    kp[0] /= n;
                    kp[1] /= n;
                }
                d.center = [d.center[0] / n, d.center[1] / n];
                d.confidence /= n;
                d
            })
            .collect())
    }
}

/// The image moved sideways by `dx` pixels, edge columns repeated (as in training).
fn shift_columns(img: &[f32], w: usize, h: usize, dx: i64) -> Vec<f32> {
    let mut out = vec![0.0; img.len()];
    for r in 0..h {
        for c in 0..w {
            let src = (c as i64 - dx).clamp(0, w as i64 - 1) as usize;
            out[r * w + c] = img[r * w + src];
        }
    }
    out
}

/// Raw network output at stride 4.
#[derive(Clone, Debug)]
pub struct Maps {
    /// `[CHANNELS][height][width]`.
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
    /// Output rows that correspond to image rows (the rest is padding).
    pub valid_rows: usize,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Maps {
    fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Local maxima of the centre heatmap above threshold, strongest first, then merged when
    /// closer than a vertebra could be.
    pub fn decode(&self, opts: &DecodeOptions) -> Vec<Detection> {
        let logit = |p: f32| {
            let p = p.clamp(1e-4, 1.0 - 1e-4);
            (p / (1.0 - p)).ln()
        };
        let logit_main = logit(opts.min_confidence);
        let logit_min = logit_main
            .min(logit(opts.gap_confidence))
            .min(logit(opts.end_confidence));
        let mut peaks = Vec::new();
        for y in 0..self.valid_rows.min(self.height) {
            for x in 0..self.width {
                let v = self.at(0, y, x);
                if v < logit_min {
                    continue;
                }
                let mut is_max = true;
                'n: for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                        if (dy, dx) == (0, 0)
                            || ny < 0
                            || nx < 0
                            || ny >= self.height as i64
                            || nx >= self.width as i64
                        {
                            continue;
                        }
                        let w = self.at(0, ny as usize, nx as usize);
                        // Ties go to the earlier pixel so a plateau gives one peak.
                        if w > v || (w == v && (dy, dx) < (0, 0)) {
                            is_max = false;
                            break 'n;
                        }
                    }
                }
                if is_max {
                    peaks.push((v, y, x));
                }
            }
        }
        peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
        let detection = |v: f32, y: usize, x: usize| {
            let s = STRIDE as f64;
            let cx = (x as f64 + self.at(1, y, x) as f64) * s;
            let cy = (y as f64 + self.at(2, y, x) as f64) * s;
            let mut keypoints = [[0.0; 2]; 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                let dx = self.at(3 + 2 * k, y, x) * OFFSET_SCALE;
                let dy = self.at(4 + 2 * k, y, x) * OFFSET_SCALE;
                *kp = [cx + dx as f64, cy + dy as f64];
            }
            Detection {
                center: [cx, cy],
                keypoints,
                confidence: sigmoid(v) as f64,
            }
        };
        let mut out: Vec<Detection> = Vec::new();
        for &(v, y, x) in peaks.iter().filter(|p| p.0 >= logit_main) {
            let d = detection(v, y, x);
            if out
                .iter()
                .all(|o| (o.center[1] - d.center[1]).abs() >= opts.min_separation_px)
            {
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.center[1].total_cmp(&b.center[1]));
        let weak: Vec<Detection> = peaks
            .iter()
            .filter(|p| p.0 < logit_main)
            .map(|&(v, y, x)| detection(v, y, x))
            .collect();
        fill_gaps(&mut out, &weak, opts.gap_factor..=opts.gap_factor_max);
        let ends: Vec<Detection> = weak
            .into_iter()
            .filter(|d| d.confidence >= f64::from(opts.end_confidence))
            .collect();
        extend_ends(&mut out, &ends, (self.valid_rows * STRIDE) as f64);
        out
    }
}

/// Adds, in each gap of `factor` local spacings between neighbouring detections, the
/// strongest of the `weak` candidates that lies at least half a spacing from both sides.
/// `dets` is sorted along the spine and stays so.
fn fill_gaps(dets: &mut Vec<Detection>, weak: &[Detection], factor: std::ops::RangeInclusive<f64>) {
    if dets.len() < 3 || weak.is_empty() {
        return;
    }
    let rows: Vec<f64> = dets.iter().map(|d| d.center[1]).collect();
    let gaps: Vec<f64> = rows.windows(2).map(|w| w[1] - w[0]).collect();
    let mut added = Vec::new();
    for (i, &gap) in gaps.iter().enumerate() {
        // Local spacing from the two neighbouring gaps only, so the gap cannot hide itself;
        // spacing grows down the spine (23 mm above a missed T11 and 28 mm below it in one
        // phantom), so farther gaps would misjudge it.
        let near: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| gaps.get(j).copied())
            .collect();
        if near.is_empty() {
            continue;
        }
        let local = near.iter().sum::<f64>() / near.len() as f64;
        if local <= 0.0 || gap <= factor.start() * local || gap > factor.end() * local {
            continue;
        }
        let (lo, hi) = (rows[i] + 0.5 * local, rows[i + 1] - 0.5 * local);
        if let Some(d) = weak
            .iter()
            .filter(|d| (lo..=hi).contains(&d.center[1]))
            .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        {
            added.push(d.clone());
        }
    }
    dets.extend(added);
    dets.sort_by(|a, b| a.center[1].total_cmp(&b.center[1]));
}

/// Adds at each end of the column the strongest of the `weak` candidates lying one local
/// spacing beyond it (within [`END_TOLERANCE`] spacings) whose keypoints all keep a quarter
/// spacing from the image's first and last row (`rows`), so a body cut by the field's edge
/// is not taken for a whole one. `dets` is sorted along the spine and stays so.
fn extend_ends(dets: &mut Vec<Detection>, weak: &[Detection], rows: f64) {
    if dets.len() < 3 || weak.is_empty() {
        return;
    }
    let n = dets.len();
    let row = |i: usize| dets[i].center[1];
    // (end row, outward step: the local spacing, negative upward)
    let ends = [
        (row(0), -(row(1) - row(0))),
        (row(n - 1), row(n - 1) - row(n - 2)),
    ];
    let mut added = Vec::new();
    for (end, step) in ends {
        let local = step.abs();
        if local <= 0.0 {
            continue;
        }
        let expect = end + step;
        if let Some(d) = weak
            .iter()
            .filter(|d| (d.center[1] - expect).abs() <= END_TOLERANCE * local)
            .filter(|d| {
                d.keypoints
                    .iter()
                    .all(|k| k[1] >= 0.25 * local && k[1] <= rows - 0.25 * local)
            })
            .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        {
            added.push(d.clone());
        }
    }
    dets.extend(added);
    dets.sort_by(|a, b| a.center[1].total_cmp(&b.center[1]));
}

/// How far (in local spacings) from one spacing beyond an end of the column a weak peak may
/// lie and still be the next body.
const END_TOLERANCE: f64 = 0.3;

/// A little-endian f32 file from `weights/` (the onnxruntime references written by training).
#[cfg(test)]
pub(crate) fn read_weights_f32(name: &str) -> Vec<f32> {
    let path = format!("{}/weights/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps_with_peaks(peaks: &[(usize, usize, f32)]) -> Maps {
        maps_with_peaks_h(peaks, 40)
    }

    fn maps_with_peaks_h(peaks: &[(usize, usize, f32)], h: usize) -> Maps {
        let w = 24;
        let mut data = vec![-10.0; CHANNELS * h * w];
        for &(y, x, logit) in peaks {
            data[y * w + x] = logit;
            // Keypoint k offset: (k+1, -(k+1)) * OFFSET_SCALE / 10.
            for k in 0..6 {
                data[((3 + 2 * k) * h + y) * w + x] = (k + 1) as f32 / 10.0;
                data[((4 + 2 * k) * h + y) * w + x] = -((k + 1) as f32) / 10.0;
            }
            data[(h + y) * w + x] = 0.5;
            data[(2 * h + y) * w + x] = 0.25;
        }
        Maps {
            data,
            height: h,
            width: w,
            valid_rows: h,
        }
    }

    #[test]
    fn decode_places_centre_and_keypoints_by_offsets() {
        let m = maps_with_peaks(&[(10, 12, 3.0), (20, 12, 2.0)]);
        let d = m.decode(&DecodeOptions::default());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].center, [50.0, 41.0]);
        assert_eq!(d[0].keypoints[0], [51.0, 40.0]);
        assert_eq!(d[0].keypoints[5], [56.0, 35.0]);
        assert!((d[0].confidence - sigmoid(3.0) as f64).abs() < 1e-9);
    }

    #[test]
    fn a_weak_peak_is_kept_only_where_a_gap_says_a_body_is_missing() {
        // Bodies every 5 cells (20 px); the one at row 25 is weak (p 0.12), as is a stray
        // peak at row 37 between two regular neighbours.
        let strong: Vec<(usize, usize, f32)> = [5, 10, 15, 20, 30, 35, 40]
            .iter()
            .map(|&y| (y, 12, 3.0))
            .collect();
        let mut all = strong.clone();
        all.push((25, 12, -2.0));
        all.push((37, 12, -2.0));
        let m = maps_with_peaks_h(&all, 48);
        let d = m.decode(&DecodeOptions::default());
        let rows: Vec<f64> = d.iter().map(|d| d.center[1]).collect();
        assert_eq!(d.len(), 8, "{rows:?}");
        assert!(rows.contains(&101.0), "{rows:?}");
        assert!(!rows.contains(&149.0), "{rows:?}");
        // Without the gap rule the weak body is lost.
        let plain = DecodeOptions {
            gap_confidence: 0.3,
            ..Default::default()
        };
        assert_eq!(m.decode(&plain).len(), 7);
        // Three spacings empty: several bodies are missing, one weak peak is not trusted.
        let mut wide: Vec<(usize, usize, f32)> = [5, 10, 15, 30, 35, 40]
            .iter()
            .map(|&y| (y, 12, 3.0))
            .collect();
        wide.push((22, 12, -2.0));
        assert_eq!(
            maps_with_peaks_h(&wide, 48)
                .decode(&DecodeOptions::default())
                .len(),
            6
        );
    }

    #[test]
    fn a_weaker_peak_one_spacing_beyond_an_end_extends_the_column() {
        // Bodies every 5 cells (20 px) from row 10 to 30; p 0.27 peaks one spacing above
        // and below, and one off the spacing (row 7, 0.6 spacings from where a body belongs).
        let mut peaks: Vec<(usize, usize, f32)> =
            [10, 15, 20, 25, 30].iter().map(|&y| (y, 12, 3.0)).collect();
        peaks.extend([(5, 12, -1.0), (35, 12, -1.0)]);
        let rows = |d: &[Detection]| d.iter().map(|d| d.center[1]).collect::<Vec<_>>();
        let d = maps_with_peaks_h(&peaks, 48).decode(&DecodeOptions::default());
        assert_eq!(d.len(), 7, "{:?}", rows(&d));
        assert_eq!((d[0].center[1], d[6].center[1]), (21.0, 141.0));
        // Off the spacing, or under the end threshold: not a body.
        let mut off = peaks[..5].to_vec();
        off.push((7, 12, -1.0));
        assert_eq!(
            maps_with_peaks_h(&off, 48)
                .decode(&DecodeOptions::default())
                .len(),
            5
        );
        let strict = DecodeOptions {
            end_confidence: 0.3,
            ..Default::default()
        };
        assert_eq!(maps_with_peaks_h(&peaks, 48).decode(&strict).len(), 5);
        // Keypoints at the image's edge: a body cut by the field, left out.
        let mut edge: Vec<(usize, usize, f32)> =
            [6, 11, 16, 21].iter().map(|&y| (y, 12, 3.0)).collect();
        edge.push((1, 12, -1.0));
        assert_eq!(
            maps_with_peaks_h(&edge, 48)
                .decode(&DecodeOptions::default())
                .len(),
            4
        );
    }

    #[test]
    fn decode_merges_close_peaks_and_drops_weak_ones() {
        // Two peaks 2 cells (8 px) apart are one vertebra; the weak one is dropped.
        let m = maps_with_peaks(&[(10, 12, 3.0), (12, 3, 2.0), (30, 12, -2.0)]);
        let d = m.decode(&DecodeOptions::default());
        assert_eq!(d.len(), 1);
        assert!((d[0].confidence - sigmoid(3.0) as f64).abs() < 1e-9);
    }

    /// The shipped models run in tract and reproduce onnxruntime's output (stored by
    /// train.py on a real reformat crop) map for map and keypoint for keypoint.
    #[test]
    fn shipped_models_match_the_onnxruntime_reference() {
        let input = read_weights_f32("reference_input.f32");
        let h = input.len() / INPUT_WIDTH;
        assert_eq!(h * INPUT_WIDTH, input.len());
        // Loose enough for int8 rounding differences between runtimes, tight enough to catch
        // a wrong layout, a dropped op or mismatched scales.
        for (p, map_tol, kp_tol) in [(Precision::F32, 1e-3, 0.05), (Precision::Int8, 0.35, 1.5)] {
            let reference = read_weights_f32(&format!("reference_{}.f32", p.as_str()));
            let m = KeypointModel::shipped(p).unwrap();
            let maps = m.run_raw(&input, INPUT_WIDTH, h).unwrap();
            assert_eq!(maps.data.len(), reference.len(), "{p:?}");
            let worst = maps
                .data
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= map_tol,
                "{p:?}: max |tract - onnxruntime| = {worst}"
            );
            let ours = maps.decode(&DecodeOptions::default());
            let theirs = Maps {
                data: reference,
                ..maps.clone()
            }
            .decode(&DecodeOptions::default());
            assert!(!theirs.is_empty(), "{p:?}: reference finds no vertebra");
            assert_eq!(ours.len(), theirs.len(), "{p:?}");
            for (a, b) in ours.iter().zip(&theirs) {
                for (ka, kb) in a.keypoints.iter().zip(&b.keypoints) {
                    let d = ((ka[0] - kb[0]).powi(2) + (ka[1] - kb[1]).powi(2)).sqrt();
                    assert!(d <= kp_tol, "{p:?}: keypoint differs by {d:.3} px");
                }
            }
        }
    }

    #[test]
    fn precision_parses() {
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
        assert!("fp16".parse::<Precision>().is_err());
    }
}
