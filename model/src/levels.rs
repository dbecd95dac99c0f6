//! Vertebral levels T1-L5, anchored on the lowest rib-bearing vertebra (T12).

use crate::truth::Keypoints;
use crate::volume::{cross, dot, norm, sub3, Volume};
use std::collections::VecDeque;

/// One detected vertebral body, cranial to caudal order in the slice given to [`assign_levels`].
#[derive(Clone, Debug)]
pub struct Body {
    /// Centre of the vertebral body, LPS mm.
    pub center_mm: [f64; 3],
    pub keypoints_mm: Keypoints,
}

/// Levels for the bodies passed in, same order.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelAssignment {
    /// "T1".."L5"; `None` beyond that range or when no anchor was found.
    pub levels: Vec<Option<String>>,
    /// True when the levels are counted from a rib-bearing/rib-free transition or up from the
    /// sacrum.
    pub anchored: bool,
    /// What the count is anchored on, e.g. "T12 (lowest rib-bearing vertebra)".
    pub anchor: Option<String>,
    /// For the report: how the levels were found, or why they are unknown.
    pub note: String,
    /// How many of the first bodies the count puts above T1 (C7, C6): outside the range
    /// graded here. 0 when unanchored.
    pub above_t1: usize,
}

/// Level names in order; index 11 is T12, the anchor.
const NAMES: [&str; 17] = [
    "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3",
    "L4", "L5",
];
const T12: i64 = 11;
const L5: i64 = 16;

/// Bone threshold for rib voxels: above muscle/contrast-enhanced vessels, below rib cortex
/// after partial volume in 3 mm voxels.
const BONE_HU: i16 = 200;
/// A rib has cortex: some voxel of the piece exceeds this even in thick slices. Enhancing
/// kidney cortex (150-250 HU in the nephrographic phase) crosses [`BONE_HU`] in patches
/// beside T12-L2 and would pass for a rib without it.
const RIB_SEED_HU: i16 = 350;
/// Lateral distance from the body centre (mm) inside which bone is ignored: cuts the ribs off
/// the vertebra (head/neck cross it) so each rib is its own connected piece.
const CUT_MM: f64 = 30.0;
/// Outer limit of the search, lateral (mm), and its posterior range relative to the centre:
/// ribs run posterolateral from the body before turning forward; bowel and vessels lie
/// anterior.
const OUTER_MM: f64 = 76.0;
const POST_MM: (f64, f64) = (-15.0, 70.0);
/// A piece is a rib of a vertebra when it starts next to that vertebra (medial end within
/// this lateral distance) ...
const MEDIAL_MM: f64 = 50.0;
/// ... and reaches beyond where lumbar transverse processes end (their tips lie <= ~60 mm
/// from the midline).
const FAR_MM: f64 = 66.0;
/// A gap larger than this multiple of the local spacing holds missed vertebrae.
const GAP_FACTOR: f64 = 1.6;
/// Bone within 6 mm of a piece's innermost point that makes a rib start beside a vertebra:
/// a neck (about 6 mm thick, two cortices) gives ~300 mm3; a few voxels of a neighbour's
/// neck crossing the boundary between two vertebrae do not.
const NECK_MM3: f64 = 60.0;
/// How far out a second rib in one piece must reach through its own and lower vertebrae's
/// bone (mm from the body's centre in the axial plane): a short 12th rib reaches ~50-65 mm
/// before it leaves the search box. Not sideways only: the 12th rib can run steeply back
/// and leave the box behind the body before it is 50 mm out to the side (thick slices,
/// kyphosis).
const OWN_RIB_MM: f64 = 50.0;
/// Bone threshold beside S1: above muscle (psoas, iliacus), below the fatty marrow of the
/// sacral alae and iliac bones in older patients.
const SACRAL_HU: f32 = 100.0;
/// Bone beside the body's posterolateral corner, as a fraction of the sampled region, that
/// counts as a rib head on that side.
const HEAD_FRACTION: f64 = 0.12;
/// How far out from the body's side wall a rib head is looked for (mm).
const HEAD_OUT_MM: f64 = 10.0;
/// Lateral range (mm from the body centre) of the sacral alae and the sacroiliac joints.
const ALA_MM: (f64, f64) = (32.0, 84.0);
/// Posterior range (mm from the body centre) of the alae: level with the body and the
/// sacral canal; the iliac vessels lie in front of it.
const ALA_POST_MM: (f64, f64) = (-10.0, 30.0);
/// Bone fraction beside S1 on its weaker side: phantoms give 0.39-0.59 and the public
/// abdominal CT 0.50; beside lumbar bodies it is <= 0.06 (psoas, a transverse process).
const SACRAL_FRACTION: f64 = 0.3;
/// No candidate rib voxel.
const NONE: i32 = i32::MIN;

/// Assigns T1-L5 to bodies ordered cranial to caudal.
///
/// Why the lowest rib-bearing vertebra: it is visible in both chest and abdomen CT, unlike
/// C2 or the sacrum, and radiology counts from it when the whole spine is not in view.
/// Each body (and each slot where a gap in the spacing says a body was missed) gets a vote
/// from the ribs that start beside it, or whose heads meet it on both sides; a step "ribs
/// above, none below" is fitted to the votes, so one rib-like body (iliac crest beside L5, a
/// rudimentary 12th rib missed) does not move the anchor. Where the field shows the sacrum
/// below a rib-free last vertebra, that vertebra is L5: a second count, upward, that must
/// agree with the first or stand alone when no step is in view. Without either all levels are `None`: counting from the field's edge would be
/// a guess.
pub fn assign_levels(volume: &Volume, bodies: &[Body]) -> LevelAssignment {
    let unknown = |note: String| LevelAssignment {
        levels: vec![None; bodies.len()],
        anchored: false,
        anchor: None,
        note,
        above_t1: 0,
    };
    if bodies.len() < 2 {
        return unknown(
            "Levels unknown: too few vertebral bodies to find the lowest rib-bearing vertebra."
                .into(),
        );
    }
    let mut slots = slots(bodies);
    let missed = slots.iter().filter(|s| s.body.is_none()).count();
    let edge = top_edge_slot(volume, &slots);
    let cut_at_top = edge.is_some();
    if let Some(s) = edge {
        slots.insert(0, s);
    }
    // A vertebra whose ribs would run out of the field (they descend about one body height
    // before passing the transverse processes) cannot be called rib-free: it abstains
    // unless ribs were found.
    let cut_off = |f: &Frame| !in_field(volume, add(f.c, scale(f.up, -f.height)));
    // Rib heads are found locally, where the pieces can mislead. A head on both sides makes a
    // vertebra rib-bearing when the one above is not rib-free: a rib fused with its neighbour
    // or with the scapula is counted for another vertebra, or for none, yet its head still
    // meets its own body. Below a rib-free vertebra it takes a head to count ribs: a piece
    // there without one is a transverse process or kidney cortex bridged to a rib shaft from
    // above (it abstains), and bone at the head's place is more likely an iliac crest or a
    // large L5 transverse process (no rib-bearing island is made).
    let mut votes: Vec<f64> = Vec::with_capacity(slots.len());
    for (&n, s) in rib_sides(volume, &slots).iter().zip(&slots) {
        let v = f64::from(n) - 1.0;
        let above = votes.last().copied();
        let v = match (rib_heads(volume, &s.frame), above) {
            (Some(h), Some(a)) if a >= 0.0 && h[0].min(h[1]) >= HEAD_FRACTION => 1.0,
            (Some(h), Some(a)) if v > 0.0 && a < 0.0 && h[0].max(h[1]) < HEAD_FRACTION => 0.0,
            _ if cut_off(&s.frame) => v.max(0.0),
            _ => v,
        };
        votes.push(v);
    }
    let steps = fit_step(&votes);
    // The sacrum below a rib-free last vertebra: that vertebra is L5, a second anchor that
    // counts upward (abdominal CT often shows S1 but cuts T12).
    let sacrum = votes.last().is_some_and(|&v| v < 0.0)
        && below_last(&slots)
            .and_then(|f| sacral_score(volume, &f))
            .is_some_and(|s| s >= SACRAL_FRACTION);
    let from_sacrum = sacrum.then(|| slots.len() as i64 - 1 - (L5 - T12));
    let ribs = match steps.map(|ties| choose(&ties, &votes, from_sacrum)) {
        Some(None) => {
            return unknown(
                "Levels unknown: counting from the lowest rib-bearing vertebra and up from the \
                 sacrum disagree by one or more vertebrae (a transitional lumbosacral \
                 vertebra, 11 or 13 rib pairs, or a missed rib); count by hand."
                    .into(),
            );
        }
        chosen => chosen.flatten(),
    };
    let t = match (ribs, from_sacrum) {
        (Some(t), _) => t as i64,
        (None, Some(s)) => s,
        (None, None) => {
            let reason = if votes.iter().all(|&v| v >= 0.0) {
                "all bodies carry ribs"
            } else if votes.iter().all(|&v| v <= 0.0) {
                "no body carries ribs on both sides"
            } else {
                "no clear rib-bearing vertebrae above rib-free ones"
            };
            return unknown(format!(
                "Levels unknown (relative order only): no transition from rib-bearing to \
                 rib-free vertebrae in view ({reason}) and no sacrum below the last vertebra."
            ));
        }
    };
    let mut levels = vec![None; bodies.len()];
    let mut above_t1 = 0;
    for (k, s) in slots.iter().enumerate() {
        if let Some(i) = s.body {
            let idx = T12 + k as i64 - t;
            above_t1 += usize::from(idx < 0);
            levels[i] = usize::try_from(idx)
                .ok()
                .and_then(|u| NAMES.get(u))
                .map(|n| n.to_string());
        }
    }
    let inferred = if missed > 0 {
        format!(" {missed} vertebra(e) inferred from gaps in the spacing and counted.")
    } else {
        String::new()
    };
    let Some(t) = ribs else {
        let note = format!(
            "Levels counted up from the sacrum: the last vertebra above it is L5. No \
             rib-bearing vertebra above rib-free ones is in view to confirm the count.{inferred}"
        );
        return LevelAssignment {
            levels,
            anchored: true,
            anchor: Some("S1 (sacrum below L5)".into()),
            note,
            above_t1,
        };
    };
    let mut note = "Levels counted from T12, the lowest rib-bearing vertebra in view.".to_string();
    if sacrum {
        note.push_str(" The sacrum below L5 gives the same count.");
    }
    note.push_str(&inferred);
    if slots[t].body.is_none() {
        if t == 0 && cut_at_top {
            note.push_str(
                " The anchor is cut by the top of the field; its ribs were found above the \
                 first body.",
            );
        } else {
            note.push_str(" The anchor itself was not detected; it was inferred from a gap.");
        }
    }
    LevelAssignment {
        levels,
        anchored: true,
        anchor: Some("T12 (lowest rib-bearing vertebra)".into()),
        note,
        above_t1,
    }
}

/// A vertebra position along the column: a detected body or one inferred from a gap.
struct Slot {
    body: Option<usize>,
    frame: Frame,
}

/// Detected bodies plus inferred ones wherever a gap exceeds [`GAP_FACTOR`] x local spacing.
fn slots(bodies: &[Body]) -> Vec<Slot> {
    let gaps: Vec<f64> = bodies
        .windows(2)
        .map(|w| norm(sub3(w[1].center_mm, w[0].center_mm)))
        .collect();
    let mut out = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        out.push(Slot {
            body: Some(i),
            frame: frame(b),
        });
        let Some(&gap) = gaps.get(i) else { continue };
        // Local spacing from the neighbouring gaps only, so the gap cannot hide itself.
        let mut near: Vec<f64> = gaps
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i && j + 3 >= i && j <= i + 3)
            .map(|(_, &g)| g)
            .collect();
        let Some(local) = median(&mut near) else {
            continue;
        };
        if local <= 0.0 || gap <= GAP_FACTOR * local {
            continue;
        }
        let steps = ((gap / local).round() as usize).max(2);
        let next = bodies[i + 1].center_mm;
        for s in 1..steps {
            let t = s as f64 / steps as f64;
            let mut f = frame(b);
            f.c = add(scale(b.center_mm, 1.0 - t), scale(next, t));
            out.push(Slot {
                body: None,
                frame: f,
            });
        }
    }
    out
}

/// The vertebra above the first body when the top of the field cuts it (its upper endplate
/// lies outside, its lower one inside): too little of its body is in view to be detected, but
/// its ribs can be. Why: an abdominal CT often starts inside T12, and without this slot its
/// ribs are never seen and the lumbar levels stay unknown.
fn top_edge_slot(volume: &Volume, slots: &[Slot]) -> Option<Slot> {
    let f = &slots.first()?.frame;
    let spacing = norm(sub3(f.c, slots.get(1)?.frame.c));
    let c = add(f.c, scale(f.up, spacing));
    let upper = add(c, scale(f.up, 0.5 * f.height));
    let lower = add(c, scale(f.up, -0.5 * f.height));
    if in_field(volume, upper) || !in_field(volume, lower) {
        return None;
    }
    Some(Slot {
        body: None,
        frame: Frame { c, ..f.clone() },
    })
}

/// The vertebra one spacing below the last slot, along the last body's axis.
fn below_last(slots: &[Slot]) -> Option<Frame> {
    let n = slots.len();
    let f = &slots.get(n.checked_sub(1)?)?.frame;
    let spacing = norm(sub3(f.c, slots.get(n.checked_sub(2)?)?.frame.c));
    Some(Frame {
        c: add(f.c, scale(f.up, -spacing)),
        ..f.clone()
    })
}

/// Bone beside a vertebra at its own height, lateral [`ALA_MM`] on each side, as the
/// smaller of the two sides' bone fractions; `None` when less than half of either side lies
/// in the field.
///
/// Why: S1 carries the sacral alae and meets the iliac bones there, so bone runs sideways
/// from it to the pelvis wall on both sides; beside a lumbar body there is psoas and, at
/// most, a transverse process or a rib tip on one side.
fn sacral_score(volume: &Volume, f: &Frame) -> Option<f64> {
    let mut worst = f64::INFINITY;
    for side in [-1.0, 1.0] {
        let (mut total, mut inside, mut bone) = (0usize, 0usize, 0usize);
        let half = 0.35 * f.height;
        for l in grid(ALA_MM) {
            for a in grid(ALA_POST_MM) {
                for u in grid((-half, half)) {
                    let p = add(
                        add(add(f.c, scale(f.lat, side * l)), scale(f.post, a)),
                        scale(f.up, u),
                    );
                    total += 1;
                    if let Some(h) = volume.sample_patient(p) {
                        inside += 1;
                        bone += usize::from(h > SACRAL_HU);
                    }
                }
            }
        }
        if 2 * inside < total {
            return None;
        }
        worst = worst.min(bone as f64 / inside as f64);
    }
    Some(worst)
}

/// Sample positions every 2 mm from `lo` up to `hi` (inclusive).
fn grid((lo, hi): (f64, f64)) -> impl Iterator<Item = f64> {
    (0..)
        .map(move |k| lo + 2.0 * f64::from(k))
        .take_while(move |&x| x <= hi)
}

/// Whether a patient-space point lies within the volume's voxel grid.
fn in_field(volume: &Volume, p: [f64; 3]) -> bool {
    let g = &volume.geometry;
    let v = g.patient_to_voxel(p);
    (0..3).all(|a| v[a] >= 0.0 && v[a] <= g.dims[a] as f64 - 1.0)
}

/// Most vertebrae that can lie above T12 in a CT's field (T1-T11, C7, C6) and below it
/// (L1-L5, the sacrum's top; a sixth lumbar vertebra is counted as L5's neighbour). A step
/// with more on one side has found ribs that are not the 12th pair (e.g. mid-thoracic ribs
/// missed, so T1's ribs looked like the last ones): it is refused rather than miscounted.
const MAX_ABOVE_T12: usize = 13;
const MAX_BELOW_T12: usize = 6;

/// Indices (ascending) of the last rib-bearing slot of the best "ribs above, none below"
/// steps, or `None` when the best step has nothing on one side or the change is not clear.
///
/// Votes are +1 (ribs both sides), 0 (one side), -1 (none). Steps that fit equally well
/// differ by one-sided votes at the transition; of those, a step that would put more
/// vertebrae above or below T12 than a spine has, or with a rib-free slot above it or a
/// rib-bearing one below, is dropped (none left: refused rather than miscounted, e.g.
/// mid-thoracic ribs missed so that T1's ribs looked like the last ones). The caller picks
/// among the rest.
fn fit_step(v: &[f64]) -> Option<Vec<usize>> {
    let total: f64 = v.iter().sum();
    let mut fits = Vec::with_capacity(v.len());
    let mut above = 0.0;
    for x in v.iter().take(v.len().saturating_sub(1)) {
        above += x;
        fits.push(above - (total - above));
    }
    let best = fits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The step must beat both "no transition" fits (all above, all below) by a full vote.
    if fits.is_empty() || best < total.abs() + 1.0 {
        return None;
    }
    let ties: Vec<usize> = fits
        .iter()
        .enumerate()
        .filter(|&(t, &f)| {
            f >= best - 1e-9
                && t <= MAX_ABOVE_T12
                && v.len() - 1 - t <= MAX_BELOW_T12
                && v[t] >= 0.0
                && v[t + 1] <= 0.0
        })
        .map(|(t, _)| t)
        .collect();
    (!ties.is_empty()).then_some(ties)
}

/// The step to count from among equally good ones (slot order): the one the sacrum points
/// to, or `None` when it points to none of them; without the sacrum, the lowest that no
/// rib-free vertebra separates from the highest. Why the lowest: a one-sided rib at the
/// transition is far more often a short 12th rib than a lumbar rib. Why not past a rib-free
/// one: no vertebra above T12 lacks ribs on both sides, so ribs below it are false (a
/// transverse process or kidney cortex bridged to a rib shaft).
fn choose(ties: &[usize], votes: &[f64], sacrum: Option<i64>) -> Option<usize> {
    match sacrum {
        Some(s) => ties.iter().copied().find(|&t| t as i64 == s),
        None => {
            let top = *ties.first()?;
            let rib_free = votes.iter().skip(top).position(|&x| x < 0.0);
            ties.iter()
                .copied()
                .rev()
                .find(|&t| rib_free.is_none_or(|p| t < top + p))
        }
    }
}

/// Local frame of a body: unit vectors up (cranial), posterior and lateral (patient left).
#[derive(Clone)]
pub(crate) struct Frame {
    pub c: [f64; 3],
    pub up: [f64; 3],
    pub post: [f64; 3],
    pub lat: [f64; 3],
    pub height: f64,
}

pub(crate) fn frame(b: &Body) -> Frame {
    let k = &b.keypoints_mm;
    let upper = mean(&[k.upper_anterior, k.upper_middle, k.upper_posterior]);
    let lower = mean(&[k.lower_anterior, k.lower_middle, k.lower_posterior]);
    let ant = mean(&[k.upper_anterior, k.lower_anterior]);
    let pos = mean(&[k.upper_posterior, k.lower_posterior]);
    let up = unit(sub3(upper, lower)).unwrap_or([0.0, 0.0, 1.0]);
    let ap = sub3(pos, ant);
    let post = unit(sub3(ap, scale(up, dot(ap, up)))).unwrap_or([0.0, 1.0, 0.0]);
    let lat = cross(post, up);
    let h = norm(sub3(upper, lower));
    Frame {
        c: b.center_mm,
        up,
        post,
        lat,
        height: if h > 5.0 { h } else { 25.0 },
    }
}

/// Per slot, on how many sides (0-2) a rib starts beside it.
///
/// Why connected pieces rather than bone fractions beside each body: the 11th/12th ribs
/// descend beside L1-L2, and lumbar transverse processes sit where rib necks do. Bone beside
/// the column, cut off the vertebrae at [`CUT_MM`], falls apart into ribs and processes; a
/// piece that reaches beyond the transverse processes ([`FAR_MM`]) is a rib, and it belongs to
/// the vertebra beside its medial end (head/neck), however far down its shaft runs.
fn rib_sides(volume: &Volume, slots: &[Slot]) -> Vec<u8> {
    let g = &volume.geometry;
    // Voxel box around the column.
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for s in slots {
        let v = g.patient_to_voxel(s.frame.c);
        let r = OUTER_MM.max(POST_MM.1) + 0.5 * s.frame.height + 5.0;
        for a in 0..3 {
            lo[a] = lo[a].min(v[a] - r / g.spacing[a]);
            hi[a] = hi[a].max(v[a] + r / g.spacing[a]);
        }
    }
    let mut lo_i = [0usize; 3];
    let mut n = [0usize; 3];
    for a in 0..3 {
        let l = lo[a].floor().max(0.0);
        let h = hi[a].ceil().min(g.dims[a] as f64 - 1.0);
        if h < l {
            return vec![0; slots.len()];
        }
        lo_i[a] = l as usize;
        n[a] = h as usize - lo_i[a] + 1;
    }
    // Candidate bone voxels: nearest slot along the column, lateral distance, side.
    let len = n[0] * n[1] * n[2];
    let mut rank_of = vec![NONE; len];
    let mut lat_of = vec![0f32; len];
    // Distance from the body's axis in the axial plane, for how far a second rib reaches.
    let mut out_of = vec![0f32; len];
    let mut left = vec![false; len];
    let local = |i: usize, j: usize, k: usize| (k * n[1] + j) * n[0] + i;
    for k in 0..n[2] {
        for j in 0..n[1] {
            for i in 0..n[0] {
                let (gi, gj, gk) = (i + lo_i[0], j + lo_i[1], k + lo_i[2]);
                if volume.hu[g.index(gi, gj, gk)] <= BONE_HU {
                    continue;
                }
                let p = g.voxel_to_patient([gi as f64, gj as f64, gk as f64]);
                let mut best = (f64::INFINITY, 0usize);
                for (s, slot) in slots.iter().enumerate() {
                    let u = dot(sub3(p, slot.frame.c), slot.frame.up).abs();
                    if u < best.0 {
                        best = (u, s);
                    }
                }
                let f = &slots[best.1].frame;
                // Position along the column: slot index, or -1 / len beyond its ends, kept
                // for 2.5 heights so that ribs can be followed down from the last vertebra
                // and pieces starting above the first one recognised as not its own.
                let along = dot(sub3(p, f.c), f.up);
                let rank = if best.0 <= 0.75 * f.height {
                    best.1 as i32
                } else if best.0 > 2.5 * f.height {
                    continue;
                } else if best.1 == 0 && along > 0.0 {
                    -1
                } else if best.1 + 1 == slots.len() && along < 0.0 {
                    slots.len() as i32
                } else {
                    best.1 as i32
                };
                let d = sub3(p, f.c);
                let l = dot(d, f.lat);
                let a = dot(d, f.post);
                if l.abs() < CUT_MM || l.abs() > OUTER_MM || a < POST_MM.0 || a > POST_MM.1 {
                    continue;
                }
                let x = local(i, j, k);
                rank_of[x] = rank;
                lat_of[x] = l.abs() as f32;
                out_of[x] = l.hypot(a) as f32;
                left[x] = l > 0.0;
            }
        }
    }
    // 26-connected pieces of bone beside the column; ribs among them vote for their vertebra.
    let mut sides = vec![[false; 2]; slots.len()];
    let voxel_mm3 = g.spacing[0] * g.spacing[1] * g.spacing[2];
    let mut seen = vec![false; len];
    let coords = |x: usize| (x % n[0], (x / n[0]) % n[1], x / (n[0] * n[1]));
    // The 26 neighbours of a voxel of the box.
    let neighbours = |x: usize| {
        let (i, j, k) = coords(x);
        (0..27usize).filter_map(move |m| {
            let (ii, jj, kk) = (
                (i + m % 3) as i64 - 1,
                (j + (m / 3) % 3) as i64 - 1,
                (k + m / 9) as i64 - 1,
            );
            if m == 13
                || ii < 0
                || jj < 0
                || kk < 0
                || ii >= n[0] as i64
                || jj >= n[1] as i64
                || kk >= n[2] as i64
            {
                return None;
            }
            Some((kk as usize * n[1] + jj as usize) * n[0] + ii as usize)
        })
    };
    let mut queue = VecDeque::new();
    let mut piece = Vec::new();
    // Visit marks for the reach test of lower medial ends (a new stamp per test).
    let mut mark = vec![0u32; len];
    let mut stamp = 0u32;
    for start in 0..len {
        if seen[start] || rank_of[start] == NONE {
            continue;
        }
        seen[start] = true;
        queue.push_back(start);
        piece.clear();
        flood(
            &mut queue,
            neighbours,
            |y| {
                let new = !seen[y] && rank_of[y] != NONE;
                seen[y] |= new;
                new
            },
            |x| piece.push(x),
        );
        let min = piece
            .iter()
            .map(|&x| lat_of[x])
            .fold(f32::INFINITY, f32::min);
        let max = piece.iter().map(|&x| lat_of[x]).fold(0f32, f32::max);
        if f64::from(min) > MEDIAL_MM || f64::from(max) < FAR_MM {
            continue;
        }
        let hu_at = |x: usize| {
            let (i, j, k) = coords(x);
            volume.hu[g.index(i + lo_i[0], j + lo_i[1], k + lo_i[2])]
        };
        if piece.iter().all(|&x| hu_at(x) < RIB_SEED_HU) {
            continue;
        }
        // Medial ends: where the piece comes close to the column, per vertebra. Ribs 11 and 12
        // can touch where the 11th descends past the 12th's neck, so the vertebra just below
        // the piece's top may start a rib of its own; it counts when it reaches out without
        // climbing back up (a rib leaves its neck sideways and only descends). Further down
        // a medial end is a transverse process the rib shaft touches, not a rib.
        let medial = |x: &usize| lat_of[*x] <= min + 6.0;
        let mut ends: Vec<(i32, usize, i64)> = Vec::new();
        for &x in piece.iter().filter(|x| medial(x)) {
            let side = if left[x] { 1 } else { -1 };
            match ends.iter_mut().find(|e| e.0 == rank_of[x]) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += side;
                }
                None => ends.push((rank_of[x], 1, side)),
            }
        }
        ends.sort_unstable();
        let Some(top) = ends.first().map(|e| e.0) else {
            continue;
        };
        for (r, count, side_vote) in ends {
            let Ok(s) = usize::try_from(r) else { continue };
            if s >= slots.len() || r > top + 1 || count as f64 * voxel_mm3 < NECK_MM3 {
                continue;
            }
            if r > top {
                stamp += 1;
                queue.clear();
                for &x in piece.iter().filter(|&&x| medial(&x) && rank_of[x] == r) {
                    mark[x] = stamp;
                    queue.push_back(x);
                }
                let mut reach = 0f32;
                flood(
                    &mut queue,
                    neighbours,
                    |y| {
                        // Ranks are >= 0 here, so this also keeps to bone (`NONE` is below).
                        let new = mark[y] != stamp && rank_of[y] >= r;
                        if new {
                            mark[y] = stamp;
                        }
                        new
                    },
                    |x| reach = reach.max(out_of[x]),
                );
                if f64::from(reach) < OWN_RIB_MM {
                    continue;
                }
            }
            sides[s][usize::from(side_vote > 0)] = true;
        }
    }
    sides
        .iter()
        .map(|s| u8::from(s[0]) + u8::from(s[1]))
        .collect()
}

/// Bone fraction (right, left) just outside the body's side wall, in its posterior half and
/// upper part: where a rib head meets its vertebra (the costovertebral joint). `None` when the
/// region or the wall's ray lies partly outside the field, or the ray finds no bone (a thin
/// osteoporotic cortex): no evidence either way.
///
/// Why: every thoracic vertebra carries its ribs' heads there and no lumbar one does (psoas
/// lies beside the lumbar body; transverse processes leave behind it). The wall is found
/// below the head's level, as the outermost bone on a ray sideways through the body's
/// posterior half.
fn rib_heads(volume: &Volume, f: &Frame) -> Option<[f64; 2]> {
    let mut out = [0.0; 2];
    for (k, side) in [-1.0f64, 1.0].into_iter().enumerate() {
        let at = |l: f64, a: f64, u: f64| {
            volume.sample_patient(add(
                add(add(f.c, scale(f.lat, side * l)), scale(f.post, a)),
                scale(f.up, u * f.height),
            ))
        };
        let mut wall = None;
        for step in 0..=80 {
            let l = 5.0 + 0.5 * f64::from(step);
            if (at(l, 4.0, -0.3)? + at(l, 8.0, -0.3)?) / 2.0 > f32::from(BONE_HU) {
                wall = Some(l);
            }
        }
        let wall = wall?;
        // 1 mm steps out and back (0-14 mm behind the centre), 5 % of the height up.
        let (mut total, mut bone) = (0usize, 0usize);
        for l in 1..=HEAD_OUT_MM as i32 {
            for a in 0..=14 {
                for u in 0..=9 {
                    let h = at(wall + f64::from(l), f64::from(a), 0.05 * f64::from(u))?;
                    total += 1;
                    bone += usize::from(h > f32::from(BONE_HU));
                }
            }
        }
        out[k] = bone as f64 / total as f64;
    }
    Some(out)
}

/// Breadth-first flood from the voxels in `queue`: `enter` admits (and marks) a neighbour,
/// `visit` sees every voxel reached, the seeds included.
fn flood<I: Iterator<Item = usize>>(
    queue: &mut VecDeque<usize>,
    neighbours: impl Fn(usize) -> I,
    mut enter: impl FnMut(usize) -> bool,
    mut visit: impl FnMut(usize),
) {
    while let Some(x) = queue.pop_front() {
        visit(x);
        for y in neighbours(x) {
            if enter(y) {
                queue.push_back(y);
            }
        }
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn unit(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = norm(a);
    (n.is_finite() && n > 1e-9).then(|| scale(a, 1.0 / n))
}
fn mean(p: &[[f64; 3]]) -> [f64; 3] {
    let mut s = [0.0; 3];
    for q in p {
        s = add(s, *q);
    }
    scale(s, 1.0 / p.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{generate, Phantom, PhantomOptions};

    struct Case {
        seed: u64,
        from: &'static str,
        to: &'static str,
        cobb: Option<f64>,
        kyphosis: Option<f64>,
        drop: Option<&'static str>,
    }

    const fn case(seed: u64, from: &'static str, to: &'static str) -> Case {
        Case {
            seed,
            from,
            to,
            cobb: None,
            kyphosis: None,
            drop: None,
        }
    }

    /// Small, fast render; bodies from the truth (in view, T1-L5), one optionally dropped as
    /// a detector miss would.
    fn render(c: &Case) -> (Phantom, Vec<Body>, Vec<String>) {
        let opts = PhantomOptions {
            rows: Some(256),
            pixel_spacing_mm: Some(1.4),
            slice_thickness_mm: Some(2.0),
            slice_spacing_mm: Some(2.0),
            from_level: Some(c.from.parse().unwrap()),
            to_level: Some(c.to.parse().unwrap()),
            cobb_deg: c.cobb,
            kyphosis_deg: c.kyphosis,
            ..Default::default()
        };
        let ph = generate(c.seed, &opts).unwrap();
        let (bodies, names) = truth_bodies(&ph, c.drop);
        (ph, bodies, names)
    }

    /// The phantom's bodies in view (T1-L5) and their levels, less the one named `drop`.
    fn truth_bodies(ph: &Phantom, drop: Option<&str>) -> (Vec<Body>, Vec<String>) {
        ph.truth
            .vertebrae
            .iter()
            .filter(|v| v.in_view && NAMES.contains(&v.level.as_str()))
            .filter(|v| Some(v.level.as_str()) != drop)
            .map(|v| {
                (
                    Body {
                        center_mm: v.center_mm,
                        keypoints_mm: v.keypoints_mm.clone(),
                    },
                    v.level.clone(),
                )
            })
            .unzip()
    }

    #[test]
    fn levels_on_phantoms_are_counted_from_t12() {
        let cases = [
            case(11, "T8", "L5"),
            case(12, "T8", "L5"),
            case(13, "T8", "L5"),
            case(21, "T10", "L3"),
            case(22, "T4", "L1"),
            Case {
                cobb: Some(30.0),
                ..case(23, "T10", "L3")
            },
            Case {
                cobb: Some(45.0),
                ..case(24, "T8", "L5")
            },
            Case {
                cobb: Some(38.0),
                ..case(25, "T6", "L2")
            },
            Case {
                kyphosis: Some(65.0),
                ..case(26, "T4", "L1")
            },
            Case {
                kyphosis: Some(65.0),
                ..case(27, "T9", "L4")
            },
            Case {
                drop: Some("L1"),
                ..case(28, "T8", "L5")
            },
            Case {
                drop: Some("T11"),
                ..case(29, "T10", "L3")
            },
        ];
        let (mut right, mut total, mut anchored) = (0usize, 0usize, 0usize);
        for c in &cases {
            let (ph, bodies, truth) = render(c);
            let a = assign_levels(&ph.volume, &bodies);
            let got: Vec<String> = a
                .levels
                .iter()
                .map(|l| l.clone().unwrap_or_else(|| "-".into()))
                .collect();
            let ok = got.iter().zip(&truth).filter(|(g, t)| g == t).count();
            println!("truth {}", truth.join(" "));
            let votes = rib_sides(&ph.volume, &slots(&bodies));
            println!(
                "seed {} {}-{} cobb {:?} kyph {:?} drop {:?}: {ok}/{} | {} | sides {votes:?} | {}",
                c.seed,
                c.from,
                c.to,
                c.cobb,
                c.kyphosis,
                c.drop,
                truth.len(),
                got.join(" "),
                a.note
            );
            right += ok;
            total += truth.len();
            anchored += usize::from(a.anchored);
        }
        let acc = right as f64 / total as f64;
        println!(
            "level accuracy {right}/{total} = {acc:.3}; anchored {anchored}/{}",
            cases.len()
        );
        assert!(acc >= 0.95, "level accuracy {acc:.3}");
    }

    /// Evaluation studies (validation seeds) whose 12th rib is fused with the 11th in one piece
    /// and runs back out of the box before it is 50 mm out to the side: a kyphosis and a
    /// 5 mm-slice study. Bodies from the truth.
    #[test]
    fn a_twelfth_rib_running_back_still_counts() {
        truth_levels_are_right(93_001, 21);
        truth_levels_are_right(97_001, 38);
    }

    /// Levels of an evaluation study's truth bodies, all right.
    fn truth_levels_are_right(seed: u64, index: usize) {
        let c = crate::evaluate::case(seed, index);
        let ph = generate(c.seed, &c.options).unwrap();
        let (bodies, names) = truth_bodies(&ph, None);
        let a = assign_levels(&ph.volume, &bodies);
        let got: Vec<String> = a
            .levels
            .iter()
            .map(|l| l.clone().unwrap_or_default())
            .collect();
        assert_eq!(got, names, "{seed} case {index}: {}", a.note);
    }

    /// An evaluation study (dev seed, 5 mm slices) whose 12th rib is fused with the 11th in
    /// one piece and counted for T11 only (one off): its head beside T12 is found. Bodies
    /// from the truth.
    #[test]
    fn a_rib_head_finds_a_twelfth_rib_fused_with_the_eleventh() {
        truth_levels_are_right(96_001, 10);
    }

    /// Levels of an evaluation study's bodies as the shipped detector finds them (the daemon's
    /// view), all matched bodies right.
    fn detected_levels_are_right(seed: u64, index: usize) {
        use crate::keypoints::{KeypointModel, Precision};
        let c = crate::evaluate::case(seed, index);
        let ph = generate(c.seed, &c.options).unwrap();
        let model = KeypointModel::shipped(Precision::F32).unwrap();
        let scan = crate::evaluate::scan_info(&ph);
        let a = crate::analysis::analyze(&ph.volume, &scan, &model, &Default::default()).unwrap();
        let s = crate::evaluate::score_case(&ph.volume, &ph.truth, &a.findings, 0.0);
        assert!(
            s.anchor_in_view && s.matched >= 10,
            "{seed}/{index}: {}",
            s.matched
        );
        assert_eq!(
            s.level_correct, s.matched,
            "{seed}/{index}: {}",
            a.findings.levels_note
        );
    }

    /// A dev study whose ribs T3-T11 join through the scapula into one piece on each side,
    /// so the pieces show no step: their heads are found.
    #[test]
    fn rib_heads_find_ribs_joined_through_the_scapula() {
        detected_levels_are_right(97_001, 46);
    }

    /// A dev study (osteophytes) where a piece bridged to a rib shaft gives L2, below the
    /// rib-free L1, ribs on both sides: without a head beside L2 they do not count.
    #[test]
    fn ribs_below_a_rib_free_vertebra_need_a_head() {
        detected_levels_are_right(95_001, 73);
    }

    /// Rib heads beside most of T8-T12, and beside none of L1-L5 on either side. (A body
    /// whose side wall is not found, e.g. thin osteoporotic cortex, gives no evidence.)
    #[test]
    fn rib_heads_are_thoracic_only() {
        let (mut found, mut thoracic) = (0, 0);
        for seed in [11, 12, 13] {
            let (ph, bodies, names) = render(&case(seed, "T8", "L5"));
            for (b, name) in bodies.iter().zip(&names) {
                let h = rib_heads(&ph.volume, &frame(b));
                println!("seed {seed} {name}: {h:.3?}");
                let Some(h) = h else { continue };
                if name.starts_with('T') {
                    found += usize::from(h[0].min(h[1]) >= HEAD_FRACTION);
                    thoracic += 1;
                } else {
                    assert!(h[0].max(h[1]) < HEAD_FRACTION, "seed {seed} {name}: {h:?}");
                }
            }
        }
        assert!(
            thoracic >= 8 && 4 * found >= 3 * thoracic,
            "{found} of {thoracic}"
        );
    }

    #[test]
    fn no_anchor_in_view_leaves_levels_unknown() {
        for c in [case(31, "T3", "T9"), case(32, "L2", "L5")] {
            let (ph, bodies, _) = render(&c);
            assert!(bodies.len() >= 3);
            let a = assign_levels(&ph.volume, &bodies);
            println!("{}-{}: {}", c.from, c.to, a.note);
            assert!(!a.anchored, "{}-{}: {:?}", c.from, c.to, a.levels);
            assert!(a.anchor.is_none());
            assert!(a.levels.iter().all(Option::is_none), "{:?}", a.levels);
        }
    }

    #[test]
    fn the_sacrum_below_l5_anchors_a_lumbar_field() {
        // L2-S1 in view: no rib-bearing vertebra, but S1 lies below the last body.
        for seed in [41, 42, 43] {
            let (ph, bodies, truth) = render(&case(seed, "L2", "S1"));
            let a = assign_levels(&ph.volume, &bodies);
            println!("seed {seed}: {truth:?} -> {:?} ({})", a.levels, a.note);
            assert!(a.anchored, "{}", a.note);
            assert_eq!(a.anchor.as_deref(), Some("S1 (sacrum below L5)"));
            let got: Vec<String> = a.levels.iter().flatten().cloned().collect();
            assert_eq!(got, truth);
        }
    }

    /// The step the count uses when no sacrum is in view.
    fn lowest(v: &[f64]) -> Option<usize> {
        fit_step(v).and_then(|t| choose(&t, v, None))
    }

    #[test]
    fn the_sacrum_picks_among_equal_steps_and_refuses_others() {
        let v = [1.0; 14];
        assert_eq!(choose(&[11, 12], &v, Some(11)), Some(11));
        assert_eq!(choose(&[11, 12], &v, None), Some(12));
        assert_eq!(choose(&[11, 12], &v, Some(13)), None);
    }

    #[test]
    fn step_fit_needs_ribs_above_and_none_below() {
        assert_eq!(lowest(&[1.0, 1.0, 1.0, -1.0, -1.0]), Some(2));
        // One outlier on either side does not move the step.
        assert_eq!(lowest(&[1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0]), Some(3));
        // A one-sided (short) rib at the transition is the anchor.
        assert_eq!(lowest(&[1.0, 1.0, 0.0, -1.0, -1.0]), Some(2));
        assert_eq!(lowest(&[1.0; 5]), None);
        assert_eq!(lowest(&[-1.0; 5]), None);
        assert_eq!(lowest(&[-1.0, -1.0, 1.0, 1.0]), None);
        // Ribs on the first two bodies only, sixteen rib-free below: not a spine's count
        // (mid-thoracic ribs were missed), so no anchor rather than T1 called T12.
        let mut v = vec![1.0, 1.0];
        v.extend([-1.0; 16]);
        assert_eq!(lowest(&v), None);
        let mut v = vec![1.0; 12];
        v.extend([-1.0; 5]);
        assert_eq!(lowest(&v), Some(11));
        // One-sided votes at the transition tie several steps; those that would put more
        // than T1-T11, C7 and C6 above T12 are dropped, not the whole count.
        let mut v = vec![-1.0, -1.0, 0.0, 1.0, -1.0, -1.0];
        v.extend([1.0; 8]);
        v.extend([0.0, 0.0, -1.0, -1.0, 0.0]);
        assert_eq!(fit_step(&v), Some(vec![13]));
        assert_eq!(
            fit_step(&[1.0, 1.0, 0.0, 0.0, -1.0, -1.0]),
            Some(vec![1, 2, 3])
        );
        // A rib-free vertebra between equal steps: ribs below it are false, the upper step
        // is the anchor (a scoliosis study, dev seed 98001, case 37).
        let v = [0.0, 1.0, 1.0, 1.0, 0.0, -1.0, 1.0, -1.0, -1.0, -1.0];
        assert_eq!(fit_step(&v), Some(vec![3, 4, 6]));
        assert_eq!(lowest(&v), Some(4));
    }

    #[test]
    fn gaps_become_inferred_slots() {
        let kp = |z: f64| Keypoints {
            upper_anterior: [0.0, -15.0, z + 11.0],
            upper_middle: [0.0, 0.0, z + 11.0],
            upper_posterior: [0.0, 15.0, z + 11.0],
            lower_anterior: [0.0, -15.0, z - 11.0],
            lower_middle: [0.0, 0.0, z - 11.0],
            lower_posterior: [0.0, 15.0, z - 11.0],
        };
        let bodies: Vec<Body> = [300.0, 270.0, 240.0, 180.0, 150.0, 120.0]
            .iter()
            .map(|&z| Body {
                center_mm: [0.0, 0.0, z],
                keypoints_mm: kp(z),
            })
            .collect();
        let s = slots(&bodies);
        assert_eq!(s.len(), 7);
        assert!(s[3].body.is_none());
        assert!((s[3].frame.c[2] - 210.0).abs() < 1e-9);
        assert_eq!(s[4].body, Some(3));
    }
}
