//! Statistics for `vcfd evaluate`, each with the 95 % confidence interval that diagnostic
//! accuracy reports (e.g. the Moscow AI experiment's) give next to every point estimate.
//!
//! Pure functions on plain slices so evaluation code and tests can call them on any data.

use serde::{Deserialize, Serialize};

/// Two-sided 95 % normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// A point estimate with its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// ROC AUC as the Mann-Whitney statistic (ties count one half), with DeLong's variance.
///
/// DeLong (Biometrics 1988) is used because it is nonparametric and is what the clinical AI
/// literature reports; the interval is the normal one, clamped to [0, 1]. When the classes are
/// perfectly separated DeLong's variance is zero and the interval collapses onto the estimate.
/// `None` when either class is empty, lengths differ or a score is not finite.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<Estimate> {
    if scores.len() != labels.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let pos: Vec<f64> = pairs(scores, labels, true);
    let neg: Vec<f64> = pairs(scores, labels, false);
    let (m, n) = (pos.len(), neg.len());
    if m == 0 || n == 0 {
        return None;
    }
    let psi = |x: f64, y: f64| {
        if x > y {
            1.0
        } else if x == y {
            0.5
        } else {
            0.0
        }
    };
    // Structural components: each positive's share of wins over the negatives, and vice versa.
    let v10: Vec<f64> = pos
        .iter()
        .map(|&x| neg.iter().map(|&y| psi(x, y)).sum::<f64>() / n as f64)
        .collect();
    let v01: Vec<f64> = neg
        .iter()
        .map(|&y| pos.iter().map(|&x| psi(x, y)).sum::<f64>() / m as f64)
        .collect();
    let auc = v10.iter().sum::<f64>() / m as f64;
    let var = sample_var(&v10, auc) / m as f64 + sample_var(&v01, auc) / n as f64;
    let half = Z95 * var.max(0.0).sqrt();
    Some(Estimate {
        value: auc,
        lo: (auc - half).clamp(0.0, 1.0),
        hi: (auc + half).clamp(0.0, 1.0),
    })
}

/// k of n with the Wilson score interval, which stays inside [0, 1] and keeps its coverage
/// near 0 and 1 where the Wald interval fails (sensitivities of 0.95-1.0 are the normal case
/// here). `None` when n is 0 or k > n.
pub fn proportion(k: usize, n: usize) -> Option<Estimate> {
    if n == 0 || k > n {
        return None;
    }
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Some(Estimate {
        value: p,
        // Exactly 0 / 1 at k = 0 / n (the bound is analytic there; avoid rounding to 0.99..).
        lo: if k == 0 {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        hi: if k == n {
            1.0
        } else {
            (centre + half).min(1.0)
        },
    })
}

/// Mean with the Student-t interval (exact for normal data, fine for MAE-type means of
/// dozens of values). `None` for fewer than two values or any non-finite value, because a
/// spread cannot be estimated from one.
pub fn mean_ci(values: &[f64]) -> Option<Estimate> {
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = sample_var(values, mean).sqrt();
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Some(Estimate {
        value: mean,
        lo: mean - half,
        hi: mean + half,
    })
}

/// Sensitivity (positives with score >= threshold) and specificity (negatives with score
/// below it), each a Wilson proportion; `None` for a class that has no cases.
pub fn sens_spec_at(
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
) -> (Option<Estimate>, Option<Estimate>) {
    if scores.len() != labels.len() {
        return (None, None);
    }
    let pos = pairs(scores, labels, true);
    let neg = pairs(scores, labels, false);
    let tp = pos.iter().filter(|&&s| s >= threshold).count();
    let tn = neg.iter().filter(|&&s| s < threshold).count();
    (proportion(tp, pos.len()), proportion(tn, neg.len()))
}

fn pairs(scores: &[f64], labels: &[bool], want: bool) -> Vec<f64> {
    scores
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l == want)
        .map(|(&s, _)| s)
        .collect()
}

/// Unbiased sample variance about a given mean; 0 for fewer than two values.
fn sample_var(v: &[f64], mean: f64) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

/// 97.5 % quantile of Student's t with `df` degrees of freedom: tabulated up to 30, then the
/// Cornish-Fisher expansion about the normal quantile (error below 1e-5 there).
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706_205, 4.302_653, 3.182_446, 2.776_445, 2.570_582, 2.446_912, 2.364_624, 2.306_004,
        2.262_157, 2.228_139, 2.200_985, 2.178_813, 2.160_369, 2.144_787, 2.131_450, 2.119_905,
        2.109_816, 2.100_922, 2.093_024, 2.085_963, 2.079_614, 2.073_873, 2.068_658, 2.063_899,
        2.059_539, 2.055_529, 2.051_831, 2.048_407, 2.045_230, 2.042_272,
    ];
    if df == 0 {
        return f64::INFINITY;
    }
    if df <= TABLE.len() {
        return TABLE[df - 1];
    }
    let z = Z95;
    let v = df as f64;
    let z3 = z.powi(3);
    let z5 = z.powi(5);
    let z7 = z.powi(7);
    let z9 = z.powi(9);
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v.powi(3))
        + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92160.0 * v.powi(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_95_of_100() {
        // Hand computation: centre 0.93335, half-width 0.04510.
        let e = proportion(95, 100).unwrap();
        assert!(close(e.value, 0.95, 1e-12));
        assert!(close(e.lo, 0.88825, 1e-4), "{e:?}");
        assert!(close(e.hi, 0.97846, 1e-4), "{e:?}");
    }

    #[test]
    fn wilson_edges() {
        let e = proportion(0, 10).unwrap();
        assert_eq!(e.lo, 0.0);
        // z^2 / (n + z^2) for k = 0.
        assert!(close(e.hi, 0.27753, 1e-4), "{e:?}");
        let e = proportion(10, 10).unwrap();
        assert!(close(e.lo, 1.0 - 0.27753, 1e-4) && e.hi == 1.0, "{e:?}");
        assert!(proportion(1, 0).is_none() && proportion(3, 2).is_none());
    }

    #[test]
    fn auc_small_example_with_delong() {
        // Positives 0.9, 0.8, 0.4; negatives 0.7, 0.4, 0.2.
        // Wins: 0.9 -> 3, 0.8 -> 3, 0.4 -> 0.5 + 1 = 1.5 ; AUC = 7.5 / 9.
        // V10 = [1, 1, 0.5], V01 = [2/3, 5/6 (0.4 ties 0.4), 1]; var = s10/3 + s01/3
        // with s10 = 1/12, s01 = 1/36 -> var = 1/27, se = 0.19245.
        let scores = [0.9, 0.8, 0.4, 0.7, 0.4, 0.2];
        let labels = [true, true, true, false, false, false];
        let e = roc_auc(&scores, &labels).unwrap();
        assert!(close(e.value, 7.5 / 9.0, 1e-12), "{e:?}");
        let se = (1.0f64 / 27.0).sqrt();
        assert!(close(e.lo, 7.5 / 9.0 - Z95 * se, 1e-9), "{e:?}");
        assert_eq!(e.hi, 1.0);
    }

    #[test]
    fn auc_is_rank_based_and_symmetric() {
        let scores = [3.0, 1.0, 2.0, 0.0];
        let labels = [true, false, false, true];
        let a = roc_auc(&scores, &labels).unwrap().value;
        // pos {3, 0} vs neg {1, 2}: wins 2 + 0 = 2 of 4.
        assert!(close(a, 0.5, 1e-12));
        let flipped: Vec<bool> = labels.iter().map(|l| !l).collect();
        let b = roc_auc(&scores, &flipped).unwrap().value;
        assert!(close(a + b, 1.0, 1e-12));
        assert!(roc_auc(&[1.0, 2.0], &[true, true]).is_none());
        assert!(roc_auc(&[1.0, f64::NAN], &[true, false]).is_none());
    }

    #[test]
    fn mean_ci_uses_student_t() {
        // Mean 3, sd sqrt(2.5), n 5: half-width 2.776445 * 1.581139 / 2.236068 = 1.96324.
        let e = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(close(e.value, 3.0, 1e-12));
        assert!(close(e.hi - e.value, 1.96324, 1e-4), "{e:?}");
        assert!(mean_ci(&[1.0]).is_none());
        // Large df: the expansion joins the table smoothly and tends to the normal quantile.
        assert!(close(t975(31), 2.039_513, 1e-4));
        assert!(close(t975(120), 1.979_930, 1e-4));
        assert!(t975(30) > t975(31) && t975(100_000) - Z95 < 1e-4);
    }

    #[test]
    fn sens_spec_at_threshold() {
        let scores = [0.9, 0.6, 0.3, 0.55, 0.2, 0.1, 0.05];
        let labels = [true, true, true, false, false, false, false];
        let (se, sp) = sens_spec_at(&scores, &labels, 0.5);
        let (se, sp) = (se.unwrap(), sp.unwrap());
        assert!(close(se.value, 2.0 / 3.0, 1e-12));
        assert!(close(sp.value, 0.75, 1e-12));
        assert_eq!(se, proportion(2, 3).unwrap());
        let (se, sp) = sens_spec_at(&[1.0], &[false], 0.5);
        assert!(se.is_none() && sp.is_some());
    }
}
