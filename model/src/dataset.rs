//! Training samples for the keypoint CNN, built by the same code that prepares inference input.
//!
//! A sample is the curved sagittal reformat of a phantom (found by [`crate::spine::locate`],
//! exactly as at inference, not from the truth centreline) with the truth keypoints mapped into
//! its pixel grid. Python only trains on these; it never re-implements preprocessing, so
//! training and serving cannot disagree about what the network sees.

use crate::phantom::Phantom;
use crate::reformat::{curved_sagittal, Reformat, ReformatOptions};
use crate::spine::{locate, SpineOptions};
use crate::Result;
use serde::{Deserialize, Serialize};

/// Seeds at or above this are reserved for evaluation: training data never uses them.
pub const EVAL_SEED_MIN: u64 = 90_000;

/// HU window the network sees; values are mapped to about -1.5..2.5.
pub const HU_LOW: f32 = -500.0;
pub const HU_HIGH: f32 = 1500.0;

/// Network input value of one HU: the single definition shared by training and inference.
#[inline]
pub fn normalize(hu: f32) -> f32 {
    (hu.clamp(HU_LOW, HU_HIGH) - 250.0) / 500.0
}

/// One vertebra's targets in reformat pixel coordinates (col, row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleVertebra {
    pub level: String,
    /// Mean of the six keypoints: the point the centre heatmap marks.
    pub center: [f64; 2],
    /// Upper anterior, middle, posterior; lower anterior, middle, posterior.
    pub keypoints: [[f64; 2]; 6],
    /// Lateral distance (mm) of the keypoints from the slab centre: large values mean the slab
    /// missed the body's mid-plane and the sample teaches the wrong thing.
    pub max_lateral_mm: f64,
    pub genant_grade: u8,
    pub deformity: f64,
    pub morphology: String,
    /// All six keypoints inside the image.
    pub complete: bool,
}

/// A reformat image with its labels.
#[derive(Clone, Debug)]
pub struct Sample {
    pub width: usize,
    pub height: usize,
    /// Normalised pixels, row-major, row 0 cranial.
    pub pixels: Vec<f32>,
    /// The thin central slab ([`Reformat::thin`]), normalised, same grid.
    pub thin: Vec<f32>,
    pub vertebrae: Vec<SampleVertebra>,
}

/// Builds the network input from a reformat.
pub fn network_input(r: &Reformat) -> Vec<f32> {
    r.pixels.iter().map(|&h| normalize(h)).collect()
}

/// The thin-slab image, normalised the same way (the endplate refinement's second channel).
pub fn thin_input(r: &Reformat) -> Vec<f32> {
    r.thin.iter().map(|&h| normalize(h)).collect()
}

/// Builds one training sample from a rendered phantom.
pub fn sample(ph: &Phantom) -> Result<Sample> {
    let line = locate(&ph.volume, &SpineOptions::default())?;
    let r = curved_sagittal(&ph.volume, &line, &ReformatOptions::default())?;
    let inside = |c: f64, row: f64| {
        c >= 0.0 && row >= 0.0 && c <= (r.width - 1) as f64 && row <= (r.height - 1) as f64
    };
    let mut vertebrae = Vec::new();
    for v in ph.truth.vertebrae.iter().filter(|v| v.in_view) {
        let mut kp = [[0.0; 2]; 6];
        let mut complete = true;
        let mut max_lat: f64 = 0.0;
        for (slot, p) in kp.iter_mut().zip(v.keypoints_mm.as_array()) {
            match r.from_patient(p) {
                Some((c, row, lat)) => {
                    *slot = [c, row];
                    complete &= inside(c, row);
                    max_lat = max_lat.max(lat.abs());
                }
                None => complete = false,
            }
        }
        if kp.iter().all(|k| k[0] == 0.0 && k[1] == 0.0) {
            continue;
        }
        let center = [
            kp.iter().map(|k| k[0]).sum::<f64>() / 6.0,
            kp.iter().map(|k| k[1]).sum::<f64>() / 6.0,
        ];
        vertebrae.push(SampleVertebra {
            level: v.level.clone(),
            center,
            keypoints: kp,
            max_lateral_mm: max_lat,
            genant_grade: v.genant_grade,
            deformity: v.deformity,
            morphology: v.morphology.as_str().to_string(),
            complete,
        });
    }
    Ok(Sample {
        width: r.width,
        height: r.height,
        pixels: network_input(&r),
        thin: thin_input(&r),
        vertebrae,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{generate, PhantomOptions};

    #[test]
    fn labels_land_on_the_vertebrae_in_the_image() {
        let opts = PhantomOptions {
            rows: Some(256),
            pixel_spacing_mm: Some(1.4),
            slice_thickness_mm: Some(2.0),
            slice_spacing_mm: Some(2.0),
            ..Default::default()
        };
        let ph = generate(4, &opts).unwrap();
        let s = sample(&ph).unwrap();
        assert_eq!(s.pixels.len(), s.width * s.height);
        assert_eq!(s.thin.len(), s.pixels.len());
        let complete: Vec<_> = s.vertebrae.iter().filter(|v| v.complete).collect();
        assert!(complete.len() >= 4, "{} complete vertebrae", complete.len());
        for v in complete {
            // Cranial keypoints lie above caudal ones; anterior left of posterior.
            for i in 0..3 {
                assert!(v.keypoints[i][1] < v.keypoints[i + 3][1], "{}", v.level);
            }
            assert!(v.keypoints[0][0] < v.keypoints[2][0], "{}", v.level);
            // The body centre lies on the reformat's centreline column.
            let mid = (s.width as f64 - 1.0) / 2.0;
            assert!(
                (v.center[0] - mid).abs() < 8.0,
                "{}: centre col {:.1}",
                v.level,
                v.center[0]
            );
            assert!(
                v.max_lateral_mm < 10.0,
                "{}: slab {:.1} mm off",
                v.level,
                v.max_lateral_mm
            );
        }
    }
}
