//! Held-out evaluation on phantoms: the case mix, the matching of findings to truth, and the
//! per-case scores that `vcfd evaluate` aggregates into the metrics of the Moscow reports.
//!
//! Seeds are at or above [`crate::dataset::EVAL_SEED_MIN`], which training never uses. Half the
//! cases carry at least one fracture meant to be Genant >= 2; every case also carries one hard
//! condition in rotation (Schmorl's nodes, osteophytes, calcified discs, strong kyphosis,
//! scoliosis, thick slices, partial coverage), on positives too, because the services we learn
//! from missed fractures precisely in those settings. Labels come from the truth (grade computed
//! from the rendered heights), never from the requested severity.

use crate::analysis::ScanInfo;
use crate::findings::Findings;
use crate::phantom::{
    FractureKind, FractureSpec, Level, MimicKind, MimicSpec, Phantom, PhantomOptions, Rng,
};
use crate::truth::{dist, Truth, VertebraTruth};
use crate::Volume;

/// A detection matches a truth body when their centres are closer than this (mm).
pub const MATCH_MM: f64 = 10.0;
/// Patient-level operating point: a deformity of Genant grade 2.
pub const OPERATING_THRESHOLD: f64 = 0.25;

/// The hard condition a case carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Schmorl,
    Osteophytes,
    CalcifiedDiscs,
    Kyphosis,
    Scoliosis,
    ThickSlices,
    PartialCoverage,
}

impl Condition {
    const ALL: [Condition; 7] = [
        Condition::Schmorl,
        Condition::Osteophytes,
        Condition::CalcifiedDiscs,
        Condition::Kyphosis,
        Condition::Scoliosis,
        Condition::ThickSlices,
        Condition::PartialCoverage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Schmorl => "schmorl",
            Condition::Osteophytes => "osteophytes",
            Condition::CalcifiedDiscs => "calcified_discs",
            Condition::Kyphosis => "kyphosis",
            Condition::Scoliosis => "scoliosis",
            Condition::ThickSlices => "thick_slices",
            Condition::PartialCoverage => "partial_coverage",
        }
    }
}

/// One evaluation case: how to render it.
#[derive(Clone, Debug)]
pub struct Case {
    pub index: usize,
    pub seed: u64,
    pub positive_intended: bool,
    pub condition: Condition,
    pub options: PhantomOptions,
}

fn level_between(r: &mut Rng, lo: Level, hi: Level) -> Level {
    let span = hi.index().saturating_sub(lo.index()) + 1;
    Level::from_index(lo.index() + r.index(span)).unwrap_or(lo)
}

/// The `index`-th case of an evaluation starting at `seed`.
pub fn case(seed: u64, index: usize) -> Case {
    let s = seed + index as u64;
    let mut r = Rng::stream(s, "evaluation-case", 0);
    let positive = index % 2 == 0;
    let condition = Condition::ALL[(index / 2) % Condition::ALL.len()];
    let mut o = PhantomOptions::default();
    // Coverage: whole thoracolumbar spine, chest, or abdomen; partial coverage is its own case.
    let (from, to) = match condition {
        Condition::PartialCoverage => {
            if r.chance(0.5) {
                (Level::T10, Level::L2)
            } else {
                (Level::T5, Level::T11)
            }
        }
        _ => match r.index(3) {
            0 => (Level::T1, Level::L5),
            1 => (Level::T3, Level::L2),
            _ => (Level::T9, Level::L5),
        },
    };
    o.from_level = Some(from);
    o.to_level = Some(to);
    // Keep fractures off the first and last body in view (they may be cut by the field).
    let (flo, fhi) = (
        Level::from_index(from.index() + 1).unwrap_or(from),
        Level::from_index(to.index().saturating_sub(1)).unwrap_or(to),
    );
    let kind = |r: &mut Rng| match r.index(3) {
        0 => FractureKind::Wedge,
        1 => FractureKind::Biconcave,
        _ => FractureKind::Crush,
    };
    let mut fractures = Vec::new();
    if positive {
        fractures.push(FractureSpec {
            level: level_between(&mut r, flo, fhi),
            kind: kind(&mut r),
            severity: r.range(0.30, 0.55),
        });
    }
    // A mild (grade 0-1) deformity elsewhere in a third of the cases: the hardest negatives.
    if r.chance(0.33) {
        let level = level_between(&mut r, flo, fhi);
        if fractures.iter().all(|f: &FractureSpec| f.level != level) {
            fractures.push(FractureSpec {
                level,
                kind: kind(&mut r),
                severity: r.range(0.08, 0.17),
            });
        }
    }
    o.fractures = Some(fractures.clone());
    let mimic = |kind: MimicKind, r: &mut Rng| -> Vec<MimicSpec> {
        (0..2)
            .map(|_| MimicSpec {
                kind,
                level: level_between(r, flo, fhi),
            })
            .filter(|m| fractures.iter().all(|f| f.level != m.level))
            .collect()
    };
    match condition {
        Condition::Schmorl => o.mimics = Some(mimic(MimicKind::Schmorl, &mut r)),
        Condition::Osteophytes => o.mimics = Some(mimic(MimicKind::Osteophyte, &mut r)),
        Condition::CalcifiedDiscs => o.mimics = Some(mimic(MimicKind::CalcifiedDisc, &mut r)),
        Condition::Kyphosis => o.kyphosis_deg = Some(r.range(60.0, 75.0)),
        Condition::Scoliosis => o.cobb_deg = Some(r.range(20.0, 45.0)),
        Condition::ThickSlices => {
            o.slice_thickness_mm = Some(5.0);
            o.slice_spacing_mm = Some(5.0);
        }
        Condition::PartialCoverage => {}
    }
    Case {
        index,
        seed: s,
        positive_intended: positive,
        condition,
        options: o,
    }
}

/// What the phantom's acquisition tells the analysis (as the DICOM header would).
pub fn scan_info(ph: &Phantom) -> ScanInfo {
    let g = &ph.volume.geometry;
    ScanInfo {
        slice_thickness_mm: Some(ph.truth.study.slice_thickness_mm),
        slice_spacing_mm: ph.truth.study.slice_spacing_mm,
        gantry_tilt_deg: g.tilt_deg(),
        recon_center_mm: None,
    }
}

/// Truth bodies the analysis is expected to measure: graded levels (T1-L5) lying wholly
/// inside the scanned slices (a body cut by the field cannot be measured by anyone).
pub fn measurable(volume: &Volume, v: &VertebraTruth) -> bool {
    let g = &volume.geometry;
    let k_max = g.dims[2] as f64 - 1.0;
    let graded = v.level.starts_with('T') || v.level.starts_with('L');
    graded
        && v.in_view
        && v.keypoints_mm.as_array().iter().all(|&p| {
            let k = g.patient_to_voxel(p)[2];
            (0.5..=k_max - 0.5).contains(&k)
        })
}

/// One truth fracture (Genant >= 2) and what the analysis measured on it, for the per-case
/// printout that shows where the network under- or over-reads a deformity.
#[derive(Clone, Debug)]
pub struct FractureScore {
    pub level: String,
    pub truth_deformity: f64,
    /// Heights anterior, middle, posterior, mm.
    pub truth_heights_mm: [f64; 3],
    /// Deformity and heights of the matched detection; `None` when the body was missed.
    pub measured: Option<(f64, [f64; 3])>,
}

/// Scores of one case, ready to aggregate.
#[derive(Clone, Debug, Default)]
pub struct CaseScore {
    pub seed: u64,
    pub condition: String,
    /// Truth: any measurable body of Genant grade >= 2.
    pub label: bool,
    pub score: f64,
    /// (truth grade >= 2, matched deformity or 0) per measurable truth body.
    pub vertebrae: Vec<(bool, f64)>,
    pub truth_bodies: usize,
    pub matched: usize,
    pub detections: usize,
    /// Detections that lie on no truth body at all (not even one outside the graded range).
    pub false_detections: usize,
    pub level_correct: usize,
    /// Matched bodies reported without a level in a case whose field holds no anchor:
    /// the answer the method owes there ("levels are relative"), not a wrong level.
    pub level_unknown_unanchorable: usize,
    /// Levels were anchored (on T12, or up from the sacrum) in this case.
    pub anchored: bool,
    /// See [`anchor_in_view`].
    pub anchor_in_view: bool,
    /// Reported minus true level index of the matched bodies that got a level (most common
    /// value): shows whether wrong levels are a miscounted anchor (+-1) or scattered.
    pub level_shift: Option<i64>,
    /// Per matched body: mean absolute error of the three heights (mm).
    pub height_errors: Vec<f64>,
    pub grade_agree: usize,
    pub seconds: f64,
    pub reliable: bool,
    /// Truth bodies of grade >= 2.
    pub fractures: Vec<FractureScore>,
}

/// Whether the field shows the level anchor: the centres of T12 and L1 both in view, so the
/// step from rib-bearing to rib-free can be seen. Without it levels can only be relative.
pub fn anchor_in_view(truth: &Truth) -> bool {
    ["T12", "L1"]
        .iter()
        .all(|l| truth.vertebrae.iter().any(|v| v.level == *l && v.in_view))
}

/// Matches findings to truth (greedy by distance, within [`MATCH_MM`]) and scores the case.
pub fn score_case(volume: &Volume, truth: &Truth, f: &Findings, seconds: f64) -> CaseScore {
    let counted: Vec<&VertebraTruth> = truth
        .vertebrae
        .iter()
        .filter(|v| measurable(volume, v))
        .collect();
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (ti, t) in counted.iter().enumerate() {
        for (di, d) in f.vertebrae.iter().enumerate() {
            let dd = dist(t.center_mm, d.center_mm);
            if dd <= MATCH_MM {
                pairs.push((dd, ti, di));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut t_used = vec![None; counted.len()];
    let mut d_used = vec![false; f.vertebrae.len()];
    for (_, ti, di) in pairs {
        if t_used[ti].is_none() && !d_used[di] {
            t_used[ti] = Some(di);
            d_used[di] = true;
        }
    }
    let mut s = CaseScore {
        seed: truth.seed,
        label: counted.iter().any(|v| v.genant_grade >= 2),
        score: f.fracture_score,
        truth_bodies: counted.len(),
        detections: f.vertebrae.len(),
        seconds,
        reliable: f.quality.reliable,
        anchored: f.levels_anchored,
        anchor_in_view: anchor_in_view(truth),
        ..Default::default()
    };
    let mut shifts: Vec<i64> = Vec::new();
    for (ti, t) in counted.iter().enumerate() {
        let det = t_used[ti].map(|di| &f.vertebrae[di]);
        s.vertebrae
            .push((t.genant_grade >= 2, det.map_or(0.0, |d| d.deformity)));
        if t.genant_grade >= 2 {
            let h = |h: &crate::truth::Heights| [h.anterior, h.middle, h.posterior];
            s.fractures.push(FractureScore {
                level: t.level.clone(),
                truth_deformity: t.deformity,
                truth_heights_mm: h(&t.heights_mm),
                measured: det.map(|d| (d.deformity, h(&d.heights_mm))),
            });
        }
        if let Some(d) = det {
            s.matched += 1;
            if d.level.as_deref() == Some(t.level.as_str()) {
                s.level_correct += 1;
            } else if d.level.is_none() && !s.anchor_in_view {
                s.level_unknown_unanchorable += 1;
            }
            let index = |name: &str| name.parse::<Level>().ok().map(Level::index);
            if let (Some(a), Some(b)) = (d.level.as_deref().and_then(index), index(&t.level)) {
                shifts.push(a as i64 - b as i64);
            }
            let (a, b) = (&d.heights_mm, &t.heights_mm);
            s.height_errors.push(
                ((a.anterior - b.anterior).abs()
                    + (a.middle - b.middle).abs()
                    + (a.posterior - b.posterior).abs())
                    / 3.0,
            );
            if d.genant_grade == t.genant_grade {
                s.grade_agree += 1;
            }
        }
    }
    // Unmatched detections are false only when they lie on no truth body whatever (a body
    // cut by the field edge or the sacrum is real bone, just not scored).
    for (di, d) in f.vertebrae.iter().enumerate() {
        if d_used[di] {
            continue;
        }
        let on_bone = truth
            .vertebrae
            .iter()
            .filter(|v| v.in_view)
            .any(|v| dist(v.center_mm, d.center_mm) <= MATCH_MM);
        if on_bone {
            s.detections -= 1;
        } else {
            s.false_detections += 1;
        }
    }
    shifts.sort_unstable();
    s.level_shift = shifts
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .map(|run| run[0]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_alternate_and_rotate_conditions() {
        let c: Vec<Case> = (0..14).map(|i| case(90_001, i)).collect();
        assert!(c[0].positive_intended && !c[1].positive_intended);
        assert_eq!(c[0].condition, c[1].condition);
        assert_ne!(c[0].condition, c[2].condition);
        assert!(c.iter().all(|x| x.seed >= crate::dataset::EVAL_SEED_MIN));
        // Positives carry a fracture of at least 30 % requested loss.
        for x in c.iter().filter(|x| x.positive_intended) {
            let f = x.options.fractures.as_ref().unwrap();
            assert!(f.iter().any(|f| f.severity >= 0.30));
        }
        for x in c.iter().filter(|x| !x.positive_intended) {
            let f = x.options.fractures.as_ref().unwrap();
            assert!(f.iter().all(|f| f.severity < 0.2));
        }
    }
}
