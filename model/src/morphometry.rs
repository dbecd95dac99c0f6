//! Genant semi-quantitative grading from vertebral body heights.
//!
//! Genant HK et al., "Vertebral fracture assessment using a semiquantitative technique",
//! J Bone Miner Res 1993;8:1137-48: grade 1 is a 20-25 % height reduction, grade 2 25-40 %,
//! grade 3 40 % or more. Wedge compares anterior with posterior height, biconcave the middle
//! with the posterior, and crush the posterior height with what the neighbours predict, because
//! a fracture that shortens the whole body keeps Ha/Hp near 1.

use crate::truth::Heights;
use serde::{Deserialize, Serialize};

/// The shape of a deformity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Morphology {
    Normal,
    Wedge,
    Biconcave,
    Crush,
}

impl Morphology {
    /// Lower-case name as it appears in JSON and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Morphology::Normal => "normal",
            Morphology::Wedge => "wedge",
            Morphology::Biconcave => "biconcave",
            Morphology::Crush => "crush",
        }
    }
}

/// Deformity (fractional height loss) and its shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Deformity {
    /// 0..1; 0.25 means a quarter of the reference height is lost.
    pub value: f64,
    pub morphology: Morphology,
    pub grade: u8,
}

/// Genant grade for a fractional height loss.
pub fn genant_grade(deformity: f64) -> u8 {
    if deformity >= 0.40 {
        3
    } else if deformity >= 0.25 {
        2
    } else if deformity >= 0.20 {
        1
    } else {
        0
    }
}

/// Grades one vertebra. `expected_posterior` is the posterior height predicted from the
/// neighbours (or, in a phantom, the height before fracture); `None` disables the crush test,
/// e.g. for an isolated vertebra.
pub fn classify(h: Heights, expected_posterior: Option<f64>) -> Deformity {
    let ratio_loss = |num: f64, den: f64| {
        if den > 1e-6 {
            (1.0 - num / den).max(0.0)
        } else {
            0.0
        }
    };
    let wedge = ratio_loss(h.anterior, h.posterior);
    // Against the posterior height only, as Genant defines it: a lower lumbar body is normally
    // taller in front (lordosis), and Hm against that taller front would read as a depression.
    let biconcave = ratio_loss(h.middle, h.posterior);
    let crush = expected_posterior
        .map(|e| ratio_loss(h.posterior.max(h.anterior), e))
        .unwrap_or(0.0);
    let (value, kind) = [
        (wedge, Morphology::Wedge),
        (biconcave, Morphology::Biconcave),
        (crush, Morphology::Crush),
    ]
    .into_iter()
    .fold((0.0, Morphology::Normal), |best, c| {
        if c.0 > best.0 {
            c
        } else {
            best
        }
    });
    let grade = genant_grade(value);
    Deformity {
        value,
        morphology: if grade == 0 { Morphology::Normal } else { kind },
        grade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(a: f64, m: f64, p: f64) -> Heights {
        Heights {
            anterior: a,
            middle: m,
            posterior: p,
        }
    }

    #[test]
    fn grade_boundaries_follow_genant() {
        assert_eq!(genant_grade(0.0), 0);
        assert_eq!(genant_grade(0.199), 0);
        assert_eq!(genant_grade(0.20), 1);
        assert_eq!(genant_grade(0.249), 1);
        assert_eq!(genant_grade(0.25), 2);
        assert_eq!(genant_grade(0.399), 2);
        assert_eq!(genant_grade(0.40), 3);
        assert_eq!(genant_grade(0.9), 3);
    }

    #[test]
    fn wedge_biconcave_and_crush_are_told_apart() {
        let d = classify(h(16.0, 22.0, 25.0), Some(25.0));
        assert_eq!((d.morphology, d.grade), (Morphology::Wedge, 2));
        assert!((d.value - 0.36).abs() < 1e-9);

        let d = classify(h(25.0, 17.0, 25.0), Some(25.0));
        assert_eq!((d.morphology, d.grade), (Morphology::Biconcave, 2));

        // Whole body shortened: Ha/Hp stays 1, only the neighbours reveal the fracture.
        let d = classify(h(14.0, 14.0, 14.0), Some(25.0));
        assert_eq!((d.morphology, d.grade), (Morphology::Crush, 3));
        let d = classify(h(14.0, 14.0, 14.0), None);
        assert_eq!((d.morphology, d.grade), (Morphology::Normal, 0));
    }

    #[test]
    fn a_lordotic_body_taller_in_front_is_normal() {
        // L5-like: Ha 29, Hm 24, Hp 25. Against Ha the middle would be 17 % short.
        let d = classify(h(29.0, 24.0, 25.0), Some(25.0));
        assert_eq!((d.morphology, d.grade), (Morphology::Normal, 0));
        assert!((d.value - 0.04).abs() < 1e-9);
    }

    #[test]
    fn mild_physiological_wedging_is_normal() {
        let d = classify(h(22.0, 23.0, 25.0), Some(25.0));
        assert_eq!(d.grade, 0);
        assert_eq!(d.morphology, Morphology::Normal);
        assert!((d.value - 0.12).abs() < 1e-9);
    }
}
