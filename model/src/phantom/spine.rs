//! The spinal column: levels and their sizes, pathology placement, and the kinematic chain that
//! stacks bodies and discs into a curved spine with exactly known angles.
//!
//! The chain is built from the sacrum upwards: each disc is a rotation (sagittal and coronal
//! wedge) about the dorsal edge of the plate below plus a translation by its thickness, and each
//! body sits on its disc with its own (possibly fractured) endplates. A wedge fracture therefore
//! tilts everything above it, as in a patient. Sagittal and coronal curves are scaled by
//! amplitudes found by Newton iteration so that the measured kyphosis, lordosis and Cobb angle
//! equal the requested ones.

use super::math::{add, normalize, scale, sub, Frame, Mat3, V3};
use super::rng::Rng;
use super::vertebra::{Body, Canal, Disc, Fracture, FractureKind, Island, Pit};
use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A vertebral level the phantom renders with truth (cervical levels appear only at the top of
/// chest studies; "S1" is the sacrum's top segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    C5,
    C6,
    C7,
    T1,
    T2,
    T3,
    T4,
    T5,
    T6,
    T7,
    T8,
    T9,
    T10,
    T11,
    T12,
    L1,
    L2,
    L3,
    L4,
    L5,
    S1,
}

impl Level {
    pub const ALL: [Level; 21] = [
        Level::C5,
        Level::C6,
        Level::C7,
        Level::T1,
        Level::T2,
        Level::T3,
        Level::T4,
        Level::T5,
        Level::T6,
        Level::T7,
        Level::T8,
        Level::T9,
        Level::T10,
        Level::T11,
        Level::T12,
        Level::L1,
        Level::L2,
        Level::L3,
        Level::L4,
        Level::L5,
        Level::S1,
    ];

    pub fn name(self) -> &'static str {
        const NAMES: [&str; 21] = [
            "C5", "C6", "C7", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11",
            "T12", "L1", "L2", "L3", "L4", "L5", "S1",
        ];
        NAMES[self as usize]
    }

    /// Position cranial to caudal (C5 = 0).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Level> {
        Level::ALL.get(i).copied()
    }

    pub fn is_cervical(self) -> bool {
        self <= Level::C7
    }

    pub fn is_thoracic(self) -> bool {
        (Level::T1..=Level::T12).contains(&self)
    }

    pub fn is_lumbar(self) -> bool {
        (Level::L1..=Level::L5).contains(&self)
    }

    /// Thoracolumbar levels T1..L5, where fractures are graded.
    pub fn is_graded(self) -> bool {
        (Level::T1..=Level::L5).contains(&self)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = Error;
    fn from_str(s: &str) -> Result<Level> {
        let u = s.trim().to_ascii_uppercase();
        let u = u.strip_prefix("TH").map(|r| format!("T{r}")).unwrap_or(u);
        Level::ALL
            .iter()
            .copied()
            .find(|l| l.name() == u)
            .ok_or_else(|| {
                Error::PhantomOption(format!(
                    "unknown vertebral level {s:?} (expected C5..C7, T1..T12, L1..L5, S1)"
                ))
            })
    }
}

/// Mean adult dimensions of a level (mm): posterior and anterior body height, endplate depth
/// (AP) and width, thickness of the disc below (at its middle). After Panjabi et al. (Spine
/// 1991;16:888 and 1992;17:299) and disc heights from CT/MR series.
fn base_dims(l: Level) -> (f64, f64, f64, f64, f64) {
    use Level::*;
    match l {
        C5 => (13.5, 13.0, 16.0, 19.0, 5.0),
        C6 => (13.5, 13.0, 16.5, 21.0, 5.0),
        C7 => (14.0, 13.5, 17.0, 23.5, 4.5),
        T1 => (15.5, 14.9, 17.0, 25.0, 3.6),
        T2 => (16.4, 15.7, 18.0, 25.5, 3.5),
        T3 => (17.0, 16.1, 19.0, 26.0, 3.6),
        T4 => (17.5, 16.5, 20.5, 27.0, 3.8),
        T5 => (18.0, 16.9, 22.0, 28.0, 3.9),
        T6 => (18.5, 17.3, 23.5, 29.5, 4.1),
        T7 => (19.0, 17.8, 25.0, 31.0, 4.3),
        T8 => (19.6, 18.4, 26.0, 32.5, 4.6),
        T9 => (20.2, 19.0, 27.0, 34.0, 4.9),
        T10 => (21.0, 19.9, 28.0, 36.0, 5.3),
        T11 => (22.0, 20.9, 29.0, 38.5, 5.9),
        T12 => (23.2, 22.1, 30.0, 41.0, 7.0),
        L1 => (24.6, 23.6, 31.5, 43.0, 8.6),
        L2 => (25.4, 24.8, 32.5, 45.0, 9.6),
        L3 => (25.8, 25.6, 34.0, 47.0, 10.4),
        L4 => (25.6, 26.2, 34.5, 48.5, 11.0),
        L5 => (24.6, 27.0, 34.5, 50.0, 11.0),
        S1 => (26.0, 25.0, 36.0, 50.0, 1.6),
    }
}

/// Dimensions of the posterior arch of a level (mm).
#[derive(Clone, Debug)]
pub(crate) struct ArchDims {
    pub pedicle_r: f64,
    pub lamina_r: f64,
    pub spinous_len: f64,
    /// Downward slope of the spinous process from horizontal (rad).
    pub spinous_slope: f64,
    pub spinous_r: f64,
    /// Lumbar spinous processes are tall plates: a second, lower rod.
    pub spinous_tall: bool,
    pub transverse_len: f64,
    pub transverse_r: f64,
    /// Backward sweep of the transverse process (rad from lateral).
    pub transverse_back: f64,
    pub transverse_up: f64,
}

fn arch_dims(l: Level, s: f64) -> ArchDims {
    use Level::*;
    let deg = f64::to_radians;
    let (pr, lr, sl, ss, sr, tall, tl, tr, tb, tu) = match l {
        C5 | C6 => (
            2.8,
            2.4,
            18.0,
            deg(20.0),
            2.5,
            false,
            10.0,
            2.5,
            deg(-10.0),
            0.0,
        ),
        C7 => (
            3.2,
            2.6,
            38.0,
            deg(22.0),
            3.0,
            false,
            18.0,
            3.0,
            deg(5.0),
            0.0,
        ),
        T1 | T2 => (
            3.8,
            3.0,
            34.0,
            deg(30.0),
            3.0,
            false,
            24.0,
            4.0,
            deg(30.0),
            deg(8.0),
        ),
        T3 | T4 | T5 | T6 | T7 | T8 => (
            3.6,
            3.0,
            32.0,
            deg(50.0),
            2.8,
            false,
            23.0,
            3.8,
            deg(35.0),
            deg(8.0),
        ),
        T9 | T10 => (
            3.9,
            3.1,
            30.0,
            deg(38.0),
            3.0,
            false,
            20.0,
            3.6,
            deg(32.0),
            deg(6.0),
        ),
        T11 => (
            4.2,
            3.3,
            28.0,
            deg(22.0),
            3.2,
            false,
            12.0,
            3.2,
            deg(20.0),
            0.0,
        ),
        T12 => (
            4.4,
            3.5,
            27.0,
            deg(14.0),
            3.5,
            true,
            10.0,
            3.2,
            deg(10.0),
            0.0,
        ),
        L1 => (
            4.6,
            3.8,
            27.0,
            deg(8.0),
            3.6,
            true,
            20.0,
            3.2,
            deg(5.0),
            0.0,
        ),
        L2 => (
            4.8,
            4.0,
            28.0,
            deg(6.0),
            3.7,
            true,
            26.0,
            3.4,
            deg(3.0),
            0.0,
        ),
        L3 => (
            5.2,
            4.0,
            28.0,
            deg(5.0),
            3.8,
            true,
            32.0,
            3.6,
            deg(0.0),
            0.0,
        ),
        L4 => (
            5.6,
            4.2,
            26.0,
            deg(5.0),
            3.8,
            true,
            28.0,
            3.8,
            deg(5.0),
            deg(5.0),
        ),
        L5 => (
            6.5,
            4.4,
            22.0,
            deg(8.0),
            3.6,
            true,
            24.0,
            5.5,
            deg(10.0),
            deg(10.0),
        ),
        S1 => (7.0, 4.0, 14.0, deg(25.0), 3.0, false, 0.0, 0.0, 0.0, 0.0),
    };
    ArchDims {
        pedicle_r: pr * s,
        lamina_r: lr * s,
        spinous_len: sl * s,
        spinous_slope: ss,
        spinous_r: sr * s,
        spinous_tall: tall,
        transverse_len: tl * s,
        transverse_r: tr * s,
        transverse_back: tb,
        transverse_up: tu,
    }
}

/// Canal half width and half depth, and whether the cord runs through (above the conus).
fn canal_dims(l: Level) -> (f64, f64, f64) {
    use Level::*;
    match l {
        C5 | C6 | C7 => (12.0, 7.5, 1.0),
        T1 | T2 => (9.0, 7.6, 1.0),
        T3 | T4 | T5 | T6 | T7 | T8 | T9 => (8.0, 7.6, 1.0),
        T10 | T11 => (8.6, 8.0, 1.0),
        T12 => (10.0, 8.4, 0.9),
        L1 => (10.8, 8.6, 0.55),
        L2 => (11.2, 8.8, 0.0),
        L3 | L4 => (11.5, 9.0, 0.0),
        L5 => (12.5, 9.0, 0.0),
        S1 => (13.0, 7.0, 0.0),
    }
}

/// A fracture asked for on the command line or by a caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FractureSpec {
    pub level: Level,
    pub kind: FractureKind,
    /// Fractional height loss, 0..=0.6.
    pub severity: f64,
}

impl FromStr for FractureKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wedge" => Ok(FractureKind::Wedge),
            "biconcave" | "concave" => Ok(FractureKind::Biconcave),
            "crush" => Ok(FractureKind::Crush),
            other => Err(Error::PhantomOption(format!(
                "unknown fracture type {other:?} (wedge, biconcave, crush)"
            ))),
        }
    }
}

impl FromStr for FractureSpec {
    type Err = Error;
    /// `LEVEL:TYPE:SEVERITY`, e.g. `L1:wedge:0.42`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(Error::PhantomOption(format!(
                "fracture {s:?}: expected LEVEL:TYPE:SEVERITY, e.g. L1:wedge:0.42"
            )));
        }
        let level: Level = parts[0].parse()?;
        let kind: FractureKind = parts[1].parse()?;
        let severity: f64 = parts[2].trim().parse().map_err(|_| {
            Error::PhantomOption(format!(
                "fracture {s:?}: severity {:?} is not a number",
                parts[2]
            ))
        })?;
        let spec = FractureSpec {
            level,
            kind,
            severity,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl FractureSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        if !self.level.is_graded() {
            return Err(Error::PhantomOption(format!(
                "fractures are rendered on T1..L5, not {}",
                self.level
            )));
        }
        if !(0.0..=0.6).contains(&self.severity) {
            return Err(Error::PhantomOption(format!(
                "fracture severity {} outside 0..0.6 (fractional height loss)",
                self.severity
            )));
        }
        Ok(())
    }
}

/// A hard negative: something that must not be called a fracture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MimicKind {
    /// Focal endplate pit (not at the keypoints).
    Schmorl,
    /// Bony spurs at the anterior endplate rims.
    Osteophyte,
    /// Calcified nucleus of the disc below the level.
    CalcifiedDisc,
    /// Degenerative narrowing of the disc below the level (with endplate sclerosis).
    DiscNarrowing,
    /// Physiological mild wedging (< 15 %), meant for T11..L1.
    Wedging,
    /// A bone island (enostosis) in the body, often just under an endplate.
    BoneIsland,
}

impl MimicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MimicKind::Schmorl => "schmorl_node",
            MimicKind::Osteophyte => "osteophyte",
            MimicKind::CalcifiedDisc => "calcified_disc_below",
            MimicKind::DiscNarrowing => "disc_narrowing_below",
            MimicKind::Wedging => "physiological_wedging",
            MimicKind::BoneIsland => "bone_island",
        }
    }
}

/// A mimic at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MimicSpec {
    pub kind: MimicKind,
    pub level: Level,
}

impl FromStr for MimicSpec {
    type Err = Error;
    /// `KIND:LEVEL`, kinds schmorl, osteophyte, calcified-disc, narrowing, wedging,
    /// bone-island.
    fn from_str(s: &str) -> Result<Self> {
        let (k, l) = s.split_once(':').ok_or_else(|| {
            Error::PhantomOption(format!("mimic {s:?}: expected KIND:LEVEL, e.g. schmorl:T9"))
        })?;
        let kind = match k.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "schmorl" | "schmorl-node" => MimicKind::Schmorl,
            "osteophyte" | "osteophytes" => MimicKind::Osteophyte,
            "calcified-disc" | "calcified" | "disc-calcification" => MimicKind::CalcifiedDisc,
            "narrowing" | "disc-narrowing" => MimicKind::DiscNarrowing,
            "wedging" | "physiological-wedging" => MimicKind::Wedging,
            "bone-island" | "island" | "enostosis" => MimicKind::BoneIsland,
            other => {
                return Err(Error::PhantomOption(format!(
                "unknown mimic {other:?} (schmorl, osteophyte, calcified-disc, narrowing, wedging, bone-island)"
            )))
            }
        };
        let level: Level = l.parse()?;
        if !level.is_graded() {
            return Err(Error::PhantomOption(format!(
                "mimics are placed on T1..L5, not {level}"
            )));
        }
        Ok(MimicSpec { kind, level })
    }
}

/// Per-patient spine shape request (None: drawn from the seed).
#[derive(Clone, Debug, Default)]
pub(crate) struct ShapeRequest {
    pub kyphosis_deg: Option<f64>,
    pub lordosis_deg: Option<f64>,
    pub cobb_deg: Option<f64>,
}

/// One segment of the column with its pose.
#[derive(Clone, Debug)]
pub(crate) struct Vertebra {
    pub level: Level,
    /// 0 for named levels; 2..=5 for the fused sacral segments below S1.
    pub sacral: u8,
    pub body: Body,
    pub canal: Canal,
    pub arch: ArchDims,
    /// Pose: local -> patient.
    pub frame: Frame,
    pub mimics: Vec<String>,
    pub sclerosis_upper: f64,
    pub sclerosis_lower: f64,
    /// Osteophytes as (base, tip, base radius, tip radius) in local coordinates.
    pub spurs: Vec<(V3, V3, f64, f64)>,
}

impl Vertebra {
    /// Has truth (a named level with endplates).
    pub(crate) fn named(&self) -> bool {
        self.sacral == 0
    }
}

/// The column, cranial to caudal: C5..S1 then S2..S5; `discs[i]` joins `verts[i]` and
/// `verts[i + 1]`.
#[derive(Clone, Debug)]
pub(crate) struct Spine {
    pub verts: Vec<Vertebra>,
    pub discs: Vec<Disc>,
    pub kyphosis_deg: f64,
    pub lordosis_deg: f64,
    pub cobb_deg: f64,
    /// Scoliosis apex level name and convex side, for logs ("T8 right").
    pub scoliosis: Option<String>,
}

/// Index of S1 in `Spine::verts`.
pub(crate) const S1_INDEX: usize = 20;

/// Patient-level quantities the spine needs.
pub(crate) struct SpinePatient {
    /// Overall size factor (1 = average adult).
    pub size: f64,
    /// 0 (young) .. 1 (old): degeneration, osteophytes, thin cortex.
    pub age: f64,
}

/// Draws the column (shapes, pathology, discs) and builds its pose.
pub(crate) fn build_spine(
    seed: u64,
    patient: &SpinePatient,
    fractures: &[FractureSpec],
    mimics: &[MimicSpec],
    shape: &ShapeRequest,
) -> Result<Spine> {
    let mut rng = Rng::stream(seed, "spine", 0);
    let s = patient.size;
    let hs = s * rng.normal_clamped(1.0, 0.03, 0.92, 1.08);
    let mut verts = Vec::with_capacity(25);
    let mut discs = Vec::with_capacity(24);
    for &level in Level::ALL.iter() {
        let (hp, ha, depth, width, disc_t) = base_dims(level);
        let var = |r: &mut Rng| r.normal_clamped(1.0, 0.025, 0.94, 1.06);
        let hp0 = hp * hs * var(&mut rng);
        // Physiological wedge, with a little individual variation.
        let ratio = (ha / hp) * rng.normal_clamped(1.0, 0.015, 0.96, 1.04);
        let ha0 = hp0 * ratio;
        let d = depth * s * var(&mut rng);
        let w = width * s * var(&mut rng);
        let lumbar = level.is_lumbar() || level == Level::S1;
        let body = Body {
            level,
            a: 0.5 * w,
            ba: 0.53 * d,
            bp: 0.47 * d,
            cp: if lumbar { 0.09 } else { 0.06 } * rng.range(0.8, 1.2),
            q: if lumbar { 0.045 } else { 0.02 } * rng.range(0.6, 1.3),
            waist: rng.range(0.03, 0.07),
            ha0,
            hp0,
            cu: rng.range(0.4, 1.1) * hp0 / 20.0,
            cl: rng.range(0.4, 1.1) * hp0 / 20.0,
            t_side: lerp_age(0.9, 0.6, patient.age) * rng.range(0.9, 1.1),
            t_upper: lerp_age(1.2, 0.8, patient.age) * rng.range(0.9, 1.1),
            t_lower: lerp_age(1.2, 0.8, patient.age) * rng.range(0.9, 1.1),
            fracture: None,
            pits: Vec::new(),
            islands: Vec::new(),
            ya: 0.0,
            ym: 0.0,
            yp: 0.0,
        };
        let (cw, cd, cord) = canal_dims(level);
        let canal = Canal {
            half_width: cw * s.sqrt(),
            half_depth: cd * s.sqrt(),
            yc: 0.0,
            cord_rx: if level.is_cervical() { 6.5 } else { 4.6 } * cord,
            cord_ry: if level.is_cervical() { 4.2 } else { 3.9 } * cord,
        };
        verts.push(Vertebra {
            level,
            sacral: 0,
            body,
            canal,
            arch: arch_dims(level, s),
            frame: Frame {
                origin: [0.0; 3],
                rot: Mat3::IDENTITY,
            },
            mimics: Vec::new(),
            sclerosis_upper: 0.0,
            sclerosis_lower: 0.0,
            spurs: Vec::new(),
        });
        let young = 1.0 - 0.15 * patient.age;
        discs.push(Disc {
            thickness: disc_t * hs * young * rng.normal_clamped(1.0, 0.08, 0.8, 1.2),
            bulge: rng.range(0.03, 0.07) * (1.0 + patient.age),
            hu_annulus: rng.range(90.0, 115.0),
            hu_nucleus: rng.range(65.0, 90.0),
            calcified_hu: 0.0,
            vacuum: false,
            fused: false,
            narrowing: 0.0,
        });
    }
    // The S1/S2 junction: a thin rudimentary disc, partly ossified.
    if let Some(d) = discs.last_mut() {
        d.hu_annulus = rng.range(150.0, 250.0);
        d.hu_nucleus = d.hu_annulus;
        d.bulge = 0.0;
    }
    // Fused sacral segments S2..S5 shrink quickly.
    for (k, (h, dd, w)) in [
        (21.0, 29.0, 40.0),
        (17.0, 23.0, 31.0),
        (13.0, 17.0, 23.0),
        (10.0, 12.0, 17.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = verts[S1_INDEX].body.clone();
        body.hp0 = h * hs;
        body.ha0 = h * hs * 0.97;
        body.a = 0.5 * w * s;
        body.ba = 0.5 * dd * s;
        body.bp = 0.5 * dd * s;
        body.cu = 0.0;
        body.cl = 0.0;
        body.t_upper = if k == 0 { body.t_upper } else { 0.0 };
        body.t_lower = 0.0;
        body.waist = 0.0;
        let canal = Canal {
            half_width: 11.0 - 2.0 * k as f64,
            half_depth: 5.5 - k as f64,
            yc: 0.0,
            cord_rx: 0.0,
            cord_ry: 0.0,
        };
        verts.push(Vertebra {
            level: Level::S1,
            sacral: k as u8 + 2,
            body,
            canal,
            arch: arch_dims(Level::S1, s * (1.0 - 0.2 * k as f64)),
            frame: verts[S1_INDEX].frame,
            mimics: Vec::new(),
            sclerosis_upper: 0.0,
            sclerosis_lower: 0.0,
            spurs: Vec::new(),
        });
        discs.push(Disc {
            thickness: 0.0,
            bulge: 0.0,
            hu_annulus: 0.0,
            hu_nucleus: 0.0,
            calcified_hu: 0.0,
            vacuum: false,
            fused: true,
            narrowing: 0.0,
        });
    }
    discs.pop();
    for v in verts.iter_mut() {
        v.body.finish();
    }

    // Mimics first (wedging changes the pre-fracture shape), then fractures.
    for m in mimics {
        apply_mimic(
            &mut verts,
            &mut discs,
            m,
            &mut Rng::stream(seed, "mimic", m.level.index() as u64 * 8 + m.kind as u64),
            patient,
        );
    }
    for f in fractures {
        f.validate()?;
        let mut r = Rng::stream(seed, "fracture", f.level.index() as u64);
        let v = &mut verts[f.level.index()];
        let upper_share = match r.weighted(&[0.55, 0.2, 0.25]) {
            0 => r.range(0.75, 1.0),
            1 => r.range(0.0, 0.25),
            _ => r.range(0.35, 0.65),
        };
        let amp = 0.35 * f.severity / 0.4;
        v.body.fracture = Some(Fracture {
            kind: f.kind,
            severity: f.severity,
            upper_share,
            shape: r.range(0.0, 0.6),
            depth: 0.0,
            wave: [
                r.normal() * amp,
                r.normal() * amp * 0.6,
                r.normal() * amp * 0.4,
            ],
            wave_phase: r.range(0.0, std::f64::consts::TAU),
            compaction_hu: if r.chance(0.6) {
                r.range(80.0, 250.0)
            } else {
                0.0
            },
            compaction_mm: r.range(3.0, 7.0),
        });
        if f.kind == FractureKind::Crush {
            // Crushed bodies spread a little.
            let wdn = 1.0 + 0.12 * f.severity;
            v.body.a *= wdn;
            v.body.ba *= wdn;
        }
        v.body.finish();
    }
    for v in verts.iter_mut() {
        v.canal.yc = v.body.rim_radius(0.0, 1.0) + v.canal.half_depth + 0.5;
    }

    // Curve shapes and their amplitudes.
    let mut srng = Rng::stream(seed, "curve", 0);
    let profile = CurveProfile::draw(&mut srng, shape, patient);
    let targets = [
        shape.kyphosis_deg.unwrap_or(profile.kyphosis_deg),
        shape.lordosis_deg.unwrap_or(profile.lordosis_deg),
        shape.cobb_deg.unwrap_or(profile.cobb_deg),
    ];
    let amps = solve_amplitudes(&verts, &discs, &profile, targets);
    let (frames, measured) = pose_chain(&verts, &discs, &profile, amps);
    for (v, f) in verts.iter_mut().zip(frames) {
        v.frame = f;
    }
    Ok(Spine {
        verts,
        discs,
        kyphosis_deg: measured[0],
        lordosis_deg: measured[1],
        cobb_deg: measured[2],
        scoliosis: profile.describe(),
    })
}

fn lerp_age(young: f64, old: f64, age: f64) -> f64 {
    young + (old - young) * age
}

fn apply_mimic(
    verts: &mut [Vertebra],
    discs: &mut [Disc],
    m: &MimicSpec,
    r: &mut Rng,
    patient: &SpinePatient,
) {
    let i = m.level.index();
    let name = m.kind.as_str().to_string();
    match m.kind {
        MimicKind::Schmorl => {
            let b = &mut verts[i].body;
            // Between two keypoints (never on their AP lines) or off the midline; central ones below.
            let upper = r.chance(0.6);
            let seg = (b.ym - b.ya).min(b.yp - b.ym);
            let r_pit = r.range(0.22, 0.33) * seg * 1.0;
            let r_pit = r_pit.clamp(1.6, 4.5);
            let (x, y) = if r.chance(0.75) {
                let mid = if r.chance(0.5) {
                    0.5 * (b.ya + b.ym)
                } else {
                    0.5 * (b.ym + b.yp)
                };
                (0.0, mid + r.range(-0.1, 0.1) * seg)
            } else {
                (
                    r.sign() * r.range(4.0, 0.45 * b.a),
                    b.ym + r.range(-0.3, 0.3) * seg,
                )
            };
            let mut pit = Pit {
                upper,
                x,
                y,
                r: r_pit,
                depth: r.range(1.8, 4.5).min(0.22 * b.hp0),
                rim_mm: 2.0,
                rim_hu: 350.0,
            };
            // Drawn last so the other nodes stay where they were: a central node right over
            // the middle keypoint, wide and deep, as on real CT. The truth interpolates the
            // endplate across it (`Body::zu_plate`), so the network learns not to follow it.
            if r.chance(0.4) {
                pit.x = r.range(-3.0, 3.0);
                pit.y = b.ym + r.range(-0.35, 0.35) * seg;
                pit.r = (r.range(0.25, 0.5) * seg).clamp(2.5, 7.0);
                pit.depth = r.range(2.5, 7.0).min(0.3 * b.hp0);
                pit.rim_mm = r.range(1.5, 6.0);
                pit.rim_hu = r.range(250.0, 650.0);
            }
            b.pits.push(pit);
        }
        MimicKind::Osteophyte => {
            let v = &mut verts[i];
            let b = &v.body;
            for upper in [true, false] {
                if !r.chance(0.8) {
                    continue;
                }
                let n = 1 + r.index(3);
                for k in 0..n {
                    // Anterior midline first, then anterolateral.
                    let ang = if k == 0 {
                        r.range(-0.2, 0.2)
                    } else {
                        r.sign() * r.range(0.4, 1.1)
                    };
                    let (c, s) = (ang.sin(), -ang.cos());
                    let rim = b.rim_radius(c, s);
                    let len = r.range(3.0, 8.0) * (0.6 + 0.6 * patient.age);
                    let r0 = r.range(1.6, 2.6);
                    let zs = if upper { 1.0 } else { -1.0 };
                    let z_rim = if upper {
                        b.zu(rim * c * 0.9, rim * s * 0.9)
                    } else {
                        b.zl(rim * c * 0.9, rim * s * 0.9)
                    };
                    // Base just outside the rim (tangent), tip outward and towards the disc.
                    let base = [c * (rim + r0), s * (rim + r0), z_rim - zs * 1.2];
                    let out = len * r.range(0.5, 0.8);
                    let tip = [
                        c * (rim + r0 + out),
                        s * (rim + r0 + out),
                        z_rim + zs * len * r.range(0.4, 0.8),
                    ];
                    v.spurs.push((base, tip, r0, r.range(0.6, 1.0)));
                }
            }
        }
        MimicKind::CalcifiedDisc => {
            if let Some(d) = discs.get_mut(i) {
                d.calcified_hu = r.range(250.0, 700.0);
            }
        }
        MimicKind::DiscNarrowing => {
            if let Some(d) = discs.get_mut(i) {
                let f = r.range(0.4, 0.65);
                d.narrowing = f;
                d.thickness *= 1.0 - f;
                d.bulge *= 1.6;
                d.hu_nucleus = d.hu_annulus;
                d.vacuum = r.chance(0.45);
                let scl = if r.chance(0.6) {
                    r.range(80.0, 220.0)
                } else {
                    0.0
                };
                verts[i].sclerosis_lower = scl;
                if let Some(v) = verts.get_mut(i + 1) {
                    v.sclerosis_upper = scl;
                }
            }
        }
        MimicKind::Wedging => {
            let b = &mut verts[i].body;
            let w = r.range(0.08, 0.14);
            b.ha0 = b.hp0 * (1.0 - w);
            b.finish();
        }
        MimicKind::BoneIsland => {
            let b = &mut verts[i].body;
            let rad = [r.range(2.0, 4.5), r.range(2.0, 4.5), r.range(1.8, 4.0)];
            // Keep the focus inside the cancellous core: clear of the walls and at least
            // 1.5 mm under each endplate; most sit just under one, where they mislead most.
            let half = 0.5 * b.ha0.min(b.hp0) - b.cu.max(b.cl) - rad[2] - 1.5;
            let z = if half <= 0.0 {
                0.0
            } else if r.chance(0.6) {
                r.sign() * r.range(0.6 * half, half)
            } else {
                r.range(-half, half)
            };
            b.islands.push(Island {
                c: [
                    r.range(-0.3, 0.3) * b.a,
                    r.range(
                        b.ya + 2.0 + rad[1],
                        (b.yp - 2.0 - rad[1]).max(b.ya + 2.0 + rad[1]),
                    ),
                    z,
                ],
                r: rad,
                hu: r.range(700.0, 1300.0),
            });
        }
    }
    let v = &mut verts[i];
    if !v.mimics.contains(&name) {
        v.mimics.push(name);
    }
}

/// Shapes of the sagittal and coronal curves (unit amplitudes) and the drawn target angles.
#[derive(Clone, Debug)]
pub(crate) struct CurveProfile {
    pub kyphosis_deg: f64,
    pub lordosis_deg: f64,
    pub cobb_deg: f64,
    /// Coronal tilt function over the level index u (T1 = 0 .. L5 = 16); curve ends at +-1.
    curves: Vec<(f64, f64, f64)>,
    /// Natural small coronal angles per disc and axial rotations per vertebra (rad).
    natural_cor: Vec<f64>,
    natural_rot: Vec<f64>,
    natural_sag: Vec<f64>,
    /// Axial rotation per unit lateral tilt amplitude.
    rot_gain: f64,
    sagittal_tilt: f64,
    coronal_tilt: f64,
}

impl CurveProfile {
    fn draw(r: &mut Rng, req: &ShapeRequest, patient: &SpinePatient) -> CurveProfile {
        let kyph = r.normal_clamped(38.0 + 14.0 * patient.age, 9.0, 20.0, 70.0);
        let lord = r.normal_clamped(48.0, 9.0, 28.0, 70.0);
        let scoliotic = r.chance(0.22);
        let cobb = if scoliotic { r.range(10.0, 50.0) } else { 0.0 };
        let straight = req.cobb_deg == Some(0.0) || (req.cobb_deg.is_none() && !scoliotic);
        // Curve types: (start u, end u, relative amplitude) segments of the coronal tilt.
        let side = if r.chance(0.7) { -1.0 } else { 1.0 };
        let curves = match r.weighted(&[0.45, 0.25, 0.15, 0.15]) {
            0 => vec![(r.range(2.5, 5.0), r.range(9.5, 11.5), side)],
            1 => vec![(r.range(6.5, 8.5), r.range(13.0, 15.0), side)],
            2 => vec![(r.range(10.5, 12.0), r.range(15.5, 16.5), -side)],
            _ => {
                let m = r.range(10.0, 11.5);
                vec![
                    (r.range(3.0, 5.0), m, side),
                    (m, r.range(15.5, 16.5), -side * r.range(0.6, 1.0)),
                ]
            }
        };
        let n = Level::ALL.len() + 4;
        let nat = if straight { 0.0 } else { 1.0 };
        let natural_cor = (0..n)
            .map(|_| nat * r.normal() * 0.6f64.to_radians())
            .collect();
        let natural_rot = (0..n)
            .map(|_| nat * r.normal() * 1.2f64.to_radians())
            .collect();
        let natural_sag = (0..n).map(|_| r.normal() * 0.8f64.to_radians()).collect();
        CurveProfile {
            kyphosis_deg: kyph,
            lordosis_deg: lord,
            cobb_deg: cobb,
            curves,
            natural_cor,
            natural_rot,
            natural_sag,
            rot_gain: r.range(0.35, 0.55),
            sagittal_tilt: r.normal_clamped(0.0, 3.0, -6.0, 6.0).to_radians(),
            coronal_tilt: if straight {
                0.0
            } else {
                r.normal_clamped(0.0, 1.5, -3.0, 3.0).to_radians()
            },
        }
    }

    /// Coronal tilt (unit amplitude) at level index u (T1 = 0): +-1 at the end vertebrae of a
    /// curve, 0 at its apex, decaying to 0 over the compensatory regions.
    fn tilt(&self, u: f64) -> f64 {
        let pi = std::f64::consts::PI;
        let mut t = 0.0;
        let first = self.curves.first().map(|c| c.0).unwrap_or(0.0);
        let last = self.curves.last().map(|c| c.1).unwrap_or(0.0);
        for &(u0, u1, a) in &self.curves {
            if u >= u0 && u <= u1 {
                t = a * (pi * (u - u0) / (u1 - u0)).cos();
            }
        }
        if u < first {
            let a = self.curves[0].2;
            t = a * (1.0 - (first - u) / 4.0).max(0.0).powi(2);
        }
        if u > last {
            let c = self.curves[self.curves.len() - 1];
            t = -c.2 * (1.0 - (u - last) / 4.0).max(0.0).powi(2);
        }
        t
    }

    /// Lateral displacement shape (1 at an apex), for axial rotation towards the convexity.
    fn bump(&self, u: f64) -> f64 {
        let pi = std::f64::consts::PI;
        let mut b = 0.0;
        for &(u0, u1, a) in &self.curves {
            if u >= u0 && u <= u1 {
                b = -a * (pi * (u - u0) / (u1 - u0)).sin();
            }
        }
        b
    }

    fn describe(&self) -> Option<String> {
        if self.cobb_deg <= 0.0 && self.natural_cor.iter().all(|&c| c == 0.0) {
            return None;
        }
        let c = self.curves[0];
        let apex = 0.5 * (c.0 + c.1);
        let level =
            Level::from_index(Level::T1.index() + apex.round() as usize).unwrap_or(Level::T8);
        Some(format!(
            "apex {} convex {}",
            level,
            if c.2 < 0.0 { "right" } else { "left" }
        ))
    }
}

/// Unit sagittal angle per disc (positive kyphotic) for the kyphosis amplitude, indexed by the
/// cranial vertebra of the disc.
fn kyphosis_weight(l: Level) -> f64 {
    use Level::*;
    match l {
        C7 => 0.02,
        T1 => 0.06,
        T2 => 0.08,
        T3 => 0.10,
        T4 => 0.11,
        T5 => 0.13,
        T6 => 0.14,
        T7 => 0.14,
        T8 => 0.13,
        T9 => 0.11,
        T10 => 0.08,
        T11 => 0.05,
        _ => 0.0,
    }
}

fn lordosis_weight(l: Level) -> f64 {
    use Level::*;
    match l {
        T12 => -0.02,
        L1 => -0.10,
        L2 => -0.15,
        L3 => -0.20,
        L4 => -0.25,
        L5 => -0.30,
        _ => 0.0,
    }
}

/// Fixed sagittal angles of discs outside the thoracolumbar curves (cervical lordosis, sacral
/// kyphosis), by disc index.
fn fixed_sagittal(i: usize) -> f64 {
    let deg = f64::to_radians;
    match i {
        0 | 1 => deg(-5.0),
        20 => deg(6.0),
        21 => deg(10.0),
        22 => deg(14.0),
        23 => deg(16.0),
        _ => 0.0,
    }
}

/// Rigid chain of all segments for the given amplitudes (kyphosis, lordosis, scoliosis in rad
/// of unit weights); returns frames and measured (kyphosis, lordosis, Cobb) in degrees.
fn pose_chain(
    verts: &[Vertebra],
    discs: &[Disc],
    prof: &CurveProfile,
    amps: [f64; 3],
) -> (Vec<Frame>, [f64; 3]) {
    let n = verts.len();
    let mut frames = vec![
        Frame {
            origin: [0.0; 3],
            rot: Mat3::IDENTITY
        };
        n
    ];
    let u_of = |i: usize| i as f64 - Level::T1.index() as f64;
    let disc_angles = |i: usize| -> (f64, f64) {
        let l = verts[i].level;
        let named = verts[i].sacral == 0 && i < S1_INDEX;
        let sag = if named {
            amps[0] * kyphosis_weight(l) + amps[1] * lordosis_weight(l)
        } else {
            0.0
        } + fixed_sagittal(i)
            + prof.natural_sag[i] * f64::from(u8::from(named));
        let cor = if named {
            amps[2] * (prof.tilt(u_of(i)) - prof.tilt(u_of(i + 1))) + prof.natural_cor[i]
        } else {
            0.0
        };
        (sag, cor)
    };
    // Plate frames and dorsal reference points.
    let plate = |v: &Vertebra, f: &Frame, upper: bool| -> (Mat3, V3) {
        let (beta, zp) = v.body.plate_line(upper);
        (
            f.rot.mul(&Mat3::rot_x(beta)),
            f.to_global([0.0, v.body.yp, zp]),
        )
    };
    let place = |v: &Vertebra, plate_rot: Mat3, point: V3, upper: bool| -> Frame {
        let (beta, zp) = v.body.plate_line(upper);
        let rot = plate_rot.mul(&Mat3::rot_x(-beta)).orthonormalized();
        let origin = sub(point, rot.apply([0.0, v.body.yp, zp]));
        Frame { origin, rot }
    };
    let s1 = S1_INDEX;
    frames[s1] = Frame {
        origin: [0.0; 3],
        rot: Mat3::rot_x(-0.6),
    };
    // Upwards from S1.
    for i in (0..s1).rev() {
        let (below, above) = (&verts[i + 1], &verts[i]);
        let (p_rot, p_pt) = plate(below, &frames[i + 1], true);
        let (sag, cor) = disc_angles(i);
        let half = Mat3::rot_y(0.5 * cor).mul(&Mat3::rot_x(0.5 * sag));
        let full = Mat3::rot_y(cor).mul(&Mat3::rot_x(sag));
        let t_p = disc_posterior(&discs[i], &below.body, sag);
        let pt = add(p_pt, scale(p_rot.mul(&half).col(2), t_p));
        frames[i] = place(above, p_rot.mul(&full), pt, false);
    }
    // Downwards into the fused sacrum.
    for i in s1..n - 1 {
        let (above, below) = (&verts[i], &verts[i + 1]);
        let (p_rot, p_pt) = plate(above, &frames[i], false);
        let (sag, _) = disc_angles(i);
        let half = Mat3::rot_x(-0.5 * sag);
        let full = Mat3::rot_x(-sag);
        let t_p = disc_posterior(&discs[i], &below.body, sag);
        let pt = sub(p_pt, scale(p_rot.mul(&half).col(2), t_p));
        frames[i + 1] = place(below, p_rot.mul(&full), pt, true);
    }
    // Global alignment: the T1..L5 chord runs cranially along +z (plus a small positioning
    // tilt), the chord T1..S1 has no lateral slant.
    let t1 = frames[Level::T1.index()].origin;
    let l5 = frames[Level::L5.index()].origin;
    let chord = sub(t1, l5);
    let ax = chord[1].atan2(chord[2]) + prof.sagittal_tilt;
    let g1 = Mat3::rot_x(ax);
    let c2 = g1.apply(sub(t1, frames[s1].origin));
    let ay = -c2[0].atan2(c2[2]) + prof.coronal_tilt;
    let g = Mat3::rot_y(ay).mul(&g1);
    for f in frames.iter_mut() {
        f.origin = g.apply(f.origin);
        f.rot = g.mul(&f.rot);
    }
    // Axial rotation of each body (about its own axis), towards the convexity.
    for (i, f) in frames.iter_mut().enumerate() {
        if verts[i].sacral != 0 || i >= s1 {
            continue;
        }
        let psi = amps[2] * prof.rot_gain * prof.bump(u_of(i)) * 2.0 + prof.natural_rot[i];
        f.rot = f.rot.mul(&Mat3::rot_z(psi));
    }
    let measured = measure_angles(verts, &frames);
    (frames, measured)
}

/// Posterior disc height for a given sagittal wedge, keeping the middle thickness.
fn disc_posterior(d: &Disc, below: &Body, sag: f64) -> f64 {
    if d.fused {
        return 0.0;
    }
    let t_m = d.thickness;
    let tp = t_m + (below.yp - below.ym) * sag.tan();
    // Never let the disc's thin edge go below half a millimetre.
    let ta = tp - (below.yp - below.ya) * sag.tan();
    if ta < 0.5 {
        tp + (0.5 - ta)
    } else if tp < 0.5 {
        0.5
    } else {
        tp
    }
}

/// Upward unit normal of a body's upper or lower rim plate, in patient coordinates.
pub(crate) fn plate_normal(v: &Vertebra, frame: &Frame, upper: bool) -> V3 {
    let (beta, _) = v.body.plate_line(upper);
    frame.rot.apply([0.0, -beta.sin(), beta.cos()])
}

/// Sagittal projected tilt (rad): positive when the normal leans posteriorly.
fn sag_tilt(n: V3) -> f64 {
    n[1].atan2(n[2])
}

/// Coronal projected tilt (rad): positive when the normal leans to the patient's left.
fn cor_tilt(n: V3) -> f64 {
    n[0].atan2(n[2])
}

/// Kyphosis (T4 upper to T12 lower endplate), lordosis (L1 upper to S1 upper) and the largest
/// coronal Cobb angle over T1..L5, all in degrees from the plate normals.
fn measure_angles(verts: &[Vertebra], frames: &[Frame]) -> [f64; 3] {
    let n = |l: Level, upper: bool| plate_normal(&verts[l.index()], &frames[l.index()], upper);
    let kyph = sag_tilt(n(Level::T12, false)) - sag_tilt(n(Level::T4, true));
    let lord = sag_tilt(n(Level::L1, true)) - sag_tilt(n(Level::S1, true));
    let levels: Vec<usize> = (Level::T1.index()..=Level::L5.index()).collect();
    let cobb = cobb_of(&levels, |i, up| {
        cor_tilt(plate_normal(&verts[i], &frames[i], up))
    });
    [kyph.to_degrees(), lord.to_degrees(), cobb]
}

/// Largest angle between the upper endplate of a vertebra and the lower endplate of one at or
/// below it (Cobb's method), over the given indices, in degrees.
pub(crate) fn cobb_of(indices: &[usize], tilt: impl Fn(usize, bool) -> f64) -> f64 {
    let ups: Vec<f64> = indices.iter().map(|&i| tilt(i, true)).collect();
    let lows: Vec<f64> = indices.iter().map(|&i| tilt(i, false)).collect();
    let mut best = 0.0f64;
    for (k, up) in ups.iter().enumerate() {
        for low in &lows[k..] {
            best = best.max((up - low).abs());
        }
    }
    best.to_degrees()
}

/// Finds the amplitudes whose measured (kyphosis, lordosis, Cobb) equal the targets: a damped
/// 2x2 Newton solve for the two sagittal amplitudes nested in a bisection on the coronal
/// amplitude (Cobb's max-over-pairs is continuous but not smooth, so Newton is unsafe there).
fn solve_amplitudes(
    verts: &[Vertebra],
    discs: &[Disc],
    prof: &CurveProfile,
    targets: [f64; 3],
) -> [f64; 3] {
    let deg = f64::to_radians;
    let measure = |a: [f64; 3]| pose_chain(verts, discs, prof, a).1;
    let sagittal = |cobb_amp: f64, start: [f64; 2]| -> [f64; 3] {
        let mut a = [start[0], start[1], cobb_amp];
        for _ in 0..20 {
            let m = measure(a);
            let e = [targets[0] - m[0], targets[1] - m[1]];
            if e[0].abs() < 1e-9 && e[1].abs() < 1e-9 {
                break;
            }
            let h = 1e-5;
            let mk = measure([a[0] + h, a[1], a[2]]);
            let ml = measure([a[0], a[1] + h, a[2]]);
            let j = [
                [(mk[0] - m[0]) / h, (ml[0] - m[0]) / h],
                [(mk[1] - m[1]) / h, (ml[1] - m[1]) / h],
            ];
            let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
            if det.abs() < 1e-9 {
                break;
            }
            let d0 = (e[0] * j[1][1] - e[1] * j[0][1]) / det;
            let d1 = (j[0][0] * e[1] - j[1][0] * e[0]) / det;
            // Damp: never move more than ~15 degrees of amplitude per step.
            let lim = 0.25;
            a[0] += d0.clamp(-lim, lim);
            a[1] += d1.clamp(-lim, lim);
        }
        a
    };
    let start = [deg(targets[0]) / 0.9, deg(targets[1]) / 1.0];
    let cobb_of_amp = |c: f64| {
        let a = sagittal(c, start);
        (measure(a)[2], a)
    };
    let (c0, a0) = cobb_of_amp(0.0);
    if targets[2] <= c0 {
        return a0;
    }
    let mut lo = 0.0;
    let mut hi = deg(targets[2]).max(0.02);
    let mut best = a0;
    for _ in 0..12 {
        let (c, a) = cobb_of_amp(hi);
        best = a;
        if c >= targets[2] {
            break;
        }
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        let (c, a) = cobb_of_amp(mid);
        best = a;
        if (c - targets[2]).abs() < 1e-9 {
            break;
        }
        if c < targets[2] {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    best
}

/// Mid-plane of the disc between two posed vertebrae: (point, unit normal pointing cranially).
pub(crate) fn disc_midplane(above: &Vertebra, below: &Vertebra) -> (V3, V3) {
    let ba = &above.body;
    let bb = &below.body;
    let pa = {
        let (beta, zp) = ba.plate_line(false);
        let z = zp + (ba.ym - ba.yp) * beta.tan();
        above.frame.to_global([0.0, ba.ym, z])
    };
    let pb = {
        let (beta, zp) = bb.plate_line(true);
        let z = zp + (bb.ym - bb.yp) * beta.tan();
        below.frame.to_global([0.0, bb.ym, z])
    };
    let na = plate_normal(above, &above.frame, false);
    let nb = plate_normal(below, &below.frame, true);
    let n = normalize(add(na, nb));
    (scale(add(pa, pb), 0.5), n)
}

/// Level-wise angle helpers for truth: Cobb over a subset of named levels (in view).
pub(crate) fn cobb_over(spine: &Spine, levels: &[Level]) -> f64 {
    let idx: Vec<usize> = levels
        .iter()
        .filter(|l| l.is_graded())
        .map(|l| l.index())
        .collect();
    cobb_of(&idx, |i, up| {
        let v = &spine.verts[i];
        cor_tilt(plate_normal(v, &v.frame, up))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> SpinePatient {
        SpinePatient {
            size: 1.0,
            age: 0.5,
        }
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!("t12".parse::<Level>().unwrap(), Level::T12);
        assert_eq!("Th7".parse::<Level>().unwrap(), Level::T7);
        assert!("X3".parse::<Level>().is_err());
        assert!(Level::T12 < Level::L1);
        let f: FractureSpec = "L1:wedge:0.42".parse().unwrap();
        assert_eq!((f.level, f.kind), (Level::L1, FractureKind::Wedge));
        assert!("L1:wedge:0.9".parse::<FractureSpec>().is_err());
        assert!("C6:wedge:0.3".parse::<FractureSpec>().is_err());
        let m: MimicSpec = "schmorl:T9".parse().unwrap();
        assert_eq!((m.kind, m.level), (MimicKind::Schmorl, Level::T9));
    }

    /// Schmorl's nodes dent the image, never the truth: some land on the middle keypoint and
    /// the truth heights still equal those of the same spine without nodes.
    #[test]
    fn schmorl_nodes_leave_truth_heights_alone() {
        let req = ShapeRequest::default();
        let mut on_middle = 0;
        for seed in 0..12 {
            let mimics: Vec<MimicSpec> = [Level::T8, Level::T11, Level::L1, Level::L3]
                .iter()
                .map(|&level| MimicSpec {
                    kind: MimicKind::Schmorl,
                    level,
                })
                .collect();
            let plain = build_spine(seed, &patient(), &[], &[], &req).unwrap();
            let dented = build_spine(seed, &patient(), &[], &mimics, &req).unwrap();
            for m in &mimics {
                let (a, b) = (
                    &plain.verts[m.level.index()].body,
                    &dented.verts[m.level.index()].body,
                );
                assert_eq!(b.pits.len(), 1);
                let (ha, hb) = (a.heights(), b.heights());
                assert!(
                    (ha.middle - hb.middle).abs() < 1e-9
                        && (ha.anterior - hb.anterior).abs() < 1e-9
                );
                let kp = b.keypoints_local();
                let dip = (kp[1][2] - b.zu(0.0, b.ym)) + (b.zl(0.0, b.ym) - kp[4][2]);
                if dip > 1.0 {
                    on_middle += 1;
                }
            }
        }
        assert!(
            on_middle >= 5,
            "{on_middle} of 48 nodes over the middle keypoint"
        );
    }

    #[test]
    fn requested_angles_are_met_exactly() {
        for (k, l, c) in [(20.0, 30.0, 0.0), (45.0, 50.0, 25.0), (70.0, 65.0, 50.0)] {
            let req = ShapeRequest {
                kyphosis_deg: Some(k),
                lordosis_deg: Some(l),
                cobb_deg: Some(c),
            };
            let sp = build_spine(11, &patient(), &[], &[], &req).unwrap();
            assert!(
                (sp.kyphosis_deg - k).abs() < 1e-4,
                "{} vs {k}",
                sp.kyphosis_deg
            );
            assert!(
                (sp.lordosis_deg - l).abs() < 1e-4,
                "{} vs {l}",
                sp.lordosis_deg
            );
            assert!((sp.cobb_deg - c).abs() < 1e-4, "{} vs {c}", sp.cobb_deg);
        }
    }

    #[test]
    fn discs_keep_positive_height_and_column_runs_cranially() {
        let sp = build_spine(3, &patient(), &[], &[], &ShapeRequest::default()).unwrap();
        for w in sp.verts.windows(2).take(S1_INDEX) {
            assert!(
                w[0].frame.origin[2] > w[1].frame.origin[2],
                "{} not above {}",
                w[0].level,
                w[1].level
            );
        }
        let t1 = sp.verts[Level::T1.index()].frame.origin;
        let l5 = sp.verts[Level::L5.index()].frame.origin;
        let len = t1[2] - l5[2];
        assert!((330.0..560.0).contains(&len), "T1-L5 length {len}");
    }
}
