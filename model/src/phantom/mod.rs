//! Synthetic chest/abdomen CT with exactly known vertebral anatomy and pathology.
//!
//! The phantom is the only labelled data the product has: it trains and tests the keypoint CNN
//! and the quality checks. Every property is drawn from the seed unless an option fixes it, and
//! the same (seed, options) give the same voxels bit for bit (every random stream is derived from
//! the seed and a purpose, never from thread order).
//!
//! Geometry: axial, head first supine, DICOM LPS (x to the patient's left, y posterior,
//! z superior); slices advance with increasing z. Shapes are analytic (signed distances in each
//! object's frame) and painted per slice inside bounding boxes with partial-volume edges; the
//! slice profile is integrated by sub-slices, then the reconstruction kernel, rings, metal
//! streaks and correlated noise are applied.
//!
//! Files: `spine` (levels, sizes, curve and chain), `vertebra` (body, endplates, fractures,
//! mimics, keypoints), `anatomy` (everything else), `acquisition` (kernel, noise, rings, metal
//! streaks), `scene` (assembly), `raster` (painting primitives), `math`, `rng`.

mod acquisition;
mod anatomy;
mod math;
mod raster;
mod rng;
mod scene;
mod spine;
mod vertebra;

pub use acquisition::{Acquisition, Kernel, MetalKind, MetalSpec, RingSpec};
pub use rng::Rng;
pub use spine::{FractureSpec, Level, MimicKind, MimicSpec};
pub use vertebra::{FractureKind, KEYPOINT_INSET_MM};

use crate::morphometry::classify;
use crate::truth::{
    FractureTruth, Keypoints, MetalTruth, RingTruth, StudyTruth, Truth, VertebraTruth,
};
use crate::{Error, Geometry, Result, Volume};
use acquisition::PostProcess;
use math::{add, scale};
use raster::Plane;
use rayon::prelude::*;
use scene::Scene;
use std::str::FromStr;

/// Body habitus: how much subcutaneous and visceral fat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Habitus {
    Thin,
    Normal,
    Obese,
}

impl Habitus {
    pub fn as_str(self) -> &'static str {
        match self {
            Habitus::Thin => "thin",
            Habitus::Normal => "normal",
            Habitus::Obese => "obese",
        }
    }
}

impl FromStr for Habitus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "thin" | "slim" => Ok(Habitus::Thin),
            "normal" | "average" => Ok(Habitus::Normal),
            "obese" => Ok(Habitus::Obese),
            o => Err(Error::PhantomOption(format!(
                "unknown habitus {o:?} (thin, normal, obese)"
            ))),
        }
    }
}

/// Arm position: raised above the head (out of the field) or down beside the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arms {
    Up,
    Down,
}

impl Arms {
    pub fn as_str(self) -> &'static str {
        match self {
            Arms::Up => "up",
            Arms::Down => "down",
        }
    }
}

impl FromStr for Arms {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" | "raised" => Ok(Arms::Up),
            "down" | "side" => Ok(Arms::Down),
            o => Err(Error::PhantomOption(format!(
                "unknown arm position {o:?} (up, down)"
            ))),
        }
    }
}

/// Everything that can be fixed; `None` draws the property from the seed.
#[derive(Clone, Debug, Default)]
pub struct PhantomOptions {
    /// Most cranial level fully in view (coverage start).
    pub from_level: Option<Level>,
    /// Most caudal level fully in view (coverage end).
    pub to_level: Option<Level>,
    /// Number of slices (centred on the requested coverage).
    pub slices: Option<usize>,
    /// In-plane matrix (rows = columns).
    pub rows: Option<usize>,
    pub pixel_spacing_mm: Option<f64>,
    pub slice_thickness_mm: Option<f64>,
    /// Distance between slice centres (may be less than the thickness: overlapping slices).
    pub slice_spacing_mm: Option<f64>,
    pub kernel: Option<Kernel>,
    pub kvp: Option<f64>,
    /// Image noise (HU sd at the body centre).
    pub noise_hu: Option<f64>,
    /// Ring artifacts; `None` means none (unless `random_artifacts`).
    pub rings: Option<RingSpec>,
    /// Metal in the spine; `None` means none (unless `random_artifacts`).
    pub metal: Option<MetalSpec>,
    /// Draw rings and metal at random too (for training), instead of only on request.
    pub random_artifacts: bool,
    pub contrast: Option<bool>,
    pub habitus: Option<Habitus>,
    pub arms: Option<Arms>,
    /// Mean HU of trabecular bone (per-patient bone density).
    pub bone_density_hu: Option<f64>,
    /// Thoracic kyphosis, T4 upper to T12 lower endplate (degrees).
    pub kyphosis_deg: Option<f64>,
    /// Lumbar lordosis, L1 upper to S1 upper endplate (degrees).
    pub lordosis_deg: Option<f64>,
    /// Coronal Cobb angle (degrees); 0 gives a straight spine.
    pub cobb_deg: Option<f64>,
    /// Exact fractures (`Some(vec![])`: none).
    pub fractures: Option<Vec<FractureSpec>>,
    /// Number of random fractures (when `fractures` is `None`).
    pub fracture_count: Option<usize>,
    /// Exact mimics (`Some(vec![])`: none).
    pub mimics: Option<Vec<MimicSpec>>,
    /// Centre the field of view on the vertebral bodies (a spine-targeted reconstruction)
    /// instead of on the body.
    pub center_on_spine: bool,
    /// Geometry-test rendering: no noise, kernel blur, texture, rings or streaks; one sample per
    /// slice. Truth is unchanged.
    pub ideal: bool,
}

/// A rendered study.
pub struct Phantom {
    pub volume: Volume,
    pub truth: Truth,
    pub acquisition: Acquisition,
}

fn check(name: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<()> {
    if let Some(x) = v {
        if !(x.is_finite() && x >= lo && x <= hi) {
            return Err(Error::PhantomOption(format!(
                "{name} = {x} outside {lo}..{hi}"
            )));
        }
    }
    Ok(())
}

impl PhantomOptions {
    /// Rejects values the generator cannot render truthfully.
    pub fn validate(&self) -> Result<()> {
        check("pixel spacing (mm)", self.pixel_spacing_mm, 0.2, 5.0)?;
        check("slice thickness (mm)", self.slice_thickness_mm, 0.3, 10.0)?;
        check("slice spacing (mm)", self.slice_spacing_mm, 0.2, 10.0)?;
        check("kVp", self.kvp, 70.0, 150.0)?;
        check("noise (HU)", self.noise_hu, 0.0, 200.0)?;
        check("bone density (HU)", self.bone_density_hu, 20.0, 500.0)?;
        check("kyphosis (deg)", self.kyphosis_deg, 0.0, 85.0)?;
        check("lordosis (deg)", self.lordosis_deg, 0.0, 85.0)?;
        check("Cobb angle (deg)", self.cobb_deg, 0.0, 60.0)?;
        if let Some(r) = self.rows {
            if !(16..=2048).contains(&r) {
                return Err(Error::PhantomOption(format!("rows = {r} outside 16..2048")));
            }
        }
        if let Some(n) = self.slices {
            if !(1..=3000).contains(&n) {
                return Err(Error::PhantomOption(format!(
                    "slices = {n} outside 1..3000"
                )));
            }
        }
        if let (Some(a), Some(b)) = (self.from_level, self.to_level) {
            if a > b {
                return Err(Error::PhantomOption(format!(
                    "coverage from {a} to {b}: the first level must be cranial to the second"
                )));
            }
        }
        if let Some(r) = &self.rings {
            check("ring strength (HU)", Some(r.strength_hu), 0.0, 1000.0)?;
            if let Some(radii) = &r.radii_mm {
                if radii.is_empty()
                    || radii
                        .iter()
                        .any(|&x| !(x.is_finite() && x > 0.0 && x < 400.0))
                {
                    return Err(Error::PhantomOption(format!(
                        "ring radii {radii:?} must be in 0..400 mm"
                    )));
                }
            }
        }
        if let Some(fs) = &self.fractures {
            let mut seen = Vec::new();
            for f in fs {
                f.validate()?;
                if seen.contains(&f.level) {
                    return Err(Error::PhantomOption(format!(
                        "two fractures at {}",
                        f.level
                    )));
                }
                seen.push(f.level);
            }
        }
        Ok(())
    }
}

/// Patient draws that do not depend on options (each from its own stream).
struct Patient {
    age: f64,
    size: f64,
    habitus: Habitus,
    arms: Arms,
    contrast: bool,
    bone_density: f64,
}

fn draw_patient(seed: u64, o: &PhantomOptions) -> Patient {
    let mut r = Rng::stream(seed, "patient", 0);
    let age = r.range(0.15, 1.0);
    let male = r.chance(0.5);
    let size = if male {
        r.range(0.98, 1.1)
    } else {
        r.range(0.88, 0.98)
    };
    let habitus = match r.weighted(&[0.2, 0.55, 0.25]) {
        0 => Habitus::Thin,
        1 => Habitus::Normal,
        _ => Habitus::Obese,
    };
    let arms = if r.chance(0.65) { Arms::Up } else { Arms::Down };
    let contrast = r.chance(0.55);
    let bone_density = r.normal_clamped(235.0 - 135.0 * age, 30.0, 60.0, 320.0);
    Patient {
        age,
        size,
        habitus: o.habitus.unwrap_or(habitus),
        arms: o.arms.unwrap_or(arms),
        contrast: o.contrast.unwrap_or(contrast),
        bone_density: o.bone_density_hu.unwrap_or(bone_density),
    }
}

fn draw_fractures(seed: u64, o: &PhantomOptions) -> Vec<FractureSpec> {
    if let Some(f) = &o.fractures {
        return f.clone();
    }
    let mut r = Rng::stream(seed, "fracture-draw", 0);
    let n = o
        .fracture_count
        .unwrap_or_else(|| r.weighted(&[0.5, 0.3, 0.13, 0.07]));
    // Thoracolumbar junction and mid-thoracic spine fracture most often.
    let levels: Vec<Level> = (Level::T1.index()..=Level::L5.index())
        .filter_map(Level::from_index)
        .collect();
    let weights: Vec<f64> = levels
        .iter()
        .map(|l| match l {
            Level::T11 | Level::T12 | Level::L1 => 3.0,
            Level::L2 | Level::T7 | Level::T8 => 2.0,
            Level::T1 | Level::T2 | Level::T3 => 0.3,
            _ => 1.0,
        })
        .collect();
    let mut out: Vec<FractureSpec> = Vec::new();
    let mut w = weights;
    for _ in 0..n.min(levels.len()) {
        let i = r.weighted(&w);
        w[i] = 0.0;
        let kind = match r.weighted(&[0.5, 0.3, 0.2]) {
            0 => FractureKind::Wedge,
            1 => FractureKind::Biconcave,
            _ => FractureKind::Crush,
        };
        out.push(FractureSpec {
            level: levels[i],
            kind,
            severity: r.range(0.1, 0.6),
        });
    }
    out
}

fn draw_mimics(
    seed: u64,
    o: &PhantomOptions,
    age: f64,
    fractures: &[FractureSpec],
) -> Vec<MimicSpec> {
    if let Some(m) = &o.mimics {
        return m.clone();
    }
    let mut r = Rng::stream(seed, "mimic-draw", 0);
    let fractured = |l: Level| fractures.iter().any(|f| f.level == l);
    let mut out = Vec::new();
    let any = |r: &mut Rng, lo: Level, hi: Level| {
        Level::from_index(lo.index() + r.index(hi.index() - lo.index() + 1)).unwrap_or(lo)
    };
    if r.chance(0.35) {
        for _ in 0..1 + r.index(3) {
            let l = any(&mut r, Level::T6, Level::L4);
            if !fractured(l) {
                out.push(MimicSpec {
                    kind: MimicKind::Schmorl,
                    level: l,
                });
            }
        }
    }
    if r.chance(0.2 + 0.5 * age) {
        for _ in 0..1 + r.index(4) {
            let l = any(&mut r, Level::T6, Level::L5);
            out.push(MimicSpec {
                kind: MimicKind::Osteophyte,
                level: l,
            });
        }
    }
    if r.chance(0.12) {
        out.push(MimicSpec {
            kind: MimicKind::CalcifiedDisc,
            level: any(&mut r, Level::T5, Level::L3),
        });
    }
    if r.chance(0.15 + 0.35 * age) {
        let l = if r.chance(0.6) {
            any(&mut r, Level::L3, Level::L5)
        } else {
            any(&mut r, Level::T5, Level::T11)
        };
        out.push(MimicSpec {
            kind: MimicKind::DiscNarrowing,
            level: l,
        });
    }
    if r.chance(0.4) {
        for l in [Level::T11, Level::T12, Level::L1] {
            if r.chance(0.6) && !fractured(l) {
                out.push(MimicSpec {
                    kind: MimicKind::Wedging,
                    level: l,
                });
            }
        }
    }
    // Drawn last, from its own stream, so studies drawn before bone islands existed keep
    // every other mimic.
    let mut r = Rng::stream(seed, "island-draw", 0);
    if r.chance(0.25) {
        for _ in 0..1 + r.index(2) {
            out.push(MimicSpec {
                kind: MimicKind::BoneIsland,
                level: any(&mut r, Level::T1, Level::L5),
            });
        }
    }
    out.sort_by_key(|m| (m.level, m.kind as u8));
    out.dedup();
    out
}

/// Renders a phantom study for a seed.
pub fn generate(seed: u64, opts: &PhantomOptions) -> Result<Phantom> {
    opts.validate()?;
    let pat = draw_patient(seed, opts);
    let fractures = draw_fractures(seed, opts);
    let mimics = draw_mimics(seed, opts, pat.age, &fractures);
    let shape = spine::ShapeRequest {
        kyphosis_deg: opts.kyphosis_deg,
        lordosis_deg: opts.lordosis_deg,
        cobb_deg: opts.cobb_deg,
    };
    let mut sp = spine::build_spine(
        seed,
        &spine::SpinePatient {
            size: pat.size,
            age: pat.age,
        },
        &fractures,
        &mimics,
        &shape,
    )?;
    // Place the column in the scanner's patient coordinates.
    {
        let mut r = Rng::stream(seed, "placement", 0);
        let t12 = sp.verts[Level::T12.index()].frame.origin;
        let target = [
            r.range(-8.0, 8.0),
            r.range(-150.0, 60.0),
            r.range(-750.0, -200.0),
        ];
        let d = math::sub(target, t12);
        for v in sp.verts.iter_mut() {
            v.frame.origin = add(v.frame.origin, d);
        }
    }
    let cortex_hu = 720.0 + 1.1 * pat.bone_density;
    let anat = anatomy::build(
        seed,
        &sp,
        &anatomy::AnatomyParams {
            size: pat.size,
            age: pat.age,
            habitus: pat.habitus,
            arms: pat.arms,
            contrast: pat.contrast,
            bone_density: pat.bone_density,
            cortex_hu,
        },
    );
    let plan = plan_acquisition(seed, opts, &sp, &anat, &pat)?;
    let spine_hu = vertebra::SpineHu {
        cortex: cortex_hu,
        cancellous: pat.bone_density,
        trabecular_amp: 0.32 * pat.bone_density + 22.0,
        epidural_fat: -85.0,
        csf: 8.0,
        cord: 33.0,
    };
    let metal = plan.metal.clone();
    let scene = Scene::new(seed, sp, anat, spine_hu, metal.as_ref());
    let volume = render(seed, &scene, &plan, opts.ideal)?;
    let truth = make_truth(seed, &scene, &plan, &volume, &fractures, &pat);
    Ok(Phantom {
        volume,
        truth,
        acquisition: plan.acq,
    })
}

/// Chosen grid and acquisition.
struct Plan {
    acq: Acquisition,
    geometry: Geometry,
    kernel: Kernel,
    rings: Option<RingTruth>,
    ring_list: Vec<(f64, f64, f64)>,
    metal: Option<MetalSpec>,
}

/// Lowest and highest z of a vertebral body (its keypoints and rim).
fn body_z_range(v: &spine::Vertebra) -> (f64, f64) {
    let b = &v.body;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for x in [-b.a, 0.0, b.a] {
        for y in [-b.ba, 0.0, b.bp] {
            for z in [b.zl(x * 0.9, y * 0.9), b.zu(x * 0.9, y * 0.9)] {
                let g = v.frame.to_global([x, y, z]);
                lo = lo.min(g[2]);
                hi = hi.max(g[2]);
            }
        }
    }
    (lo, hi)
}

fn plan_acquisition(
    seed: u64,
    o: &PhantomOptions,
    sp: &spine::Spine,
    anat: &anatomy::Anatomy,
    pat: &Patient,
) -> Result<Plan> {
    let mut r = Rng::stream(seed, "acquisition", 0);
    // Coverage: protocol-like ranges unless fixed.
    let (protocol, from, to) = {
        let pick = |r: &mut Rng, c: &[Level]| c[r.index(c.len())];
        let (name, f, t) = match r.weighted(&[0.5, 0.22, 0.16, 0.12]) {
            0 => (
                "chest",
                pick(
                    &mut r,
                    &[Level::C6, Level::C7, Level::T1, Level::T1, Level::T2],
                ),
                pick(
                    &mut r,
                    &[Level::T12, Level::L1, Level::L1, Level::L2, Level::L3],
                ),
            ),
            1 => (
                "abdomen",
                pick(&mut r, &[Level::T8, Level::T9, Level::T10, Level::T11]),
                pick(&mut r, &[Level::L5, Level::S1, Level::S1]),
            ),
            2 => (
                "chest-abdomen",
                pick(&mut r, &[Level::C7, Level::T1]),
                pick(&mut r, &[Level::L5, Level::S1]),
            ),
            _ => {
                let a = Level::T1.index() + r.index(12);
                let b = (a + 3 + r.index(10)).min(Level::S1.index());
                (
                    "spine",
                    Level::from_index(a).unwrap_or(Level::T8),
                    Level::from_index(b).unwrap_or(Level::L2),
                )
            }
        };
        let custom = o.from_level.is_some() || o.to_level.is_some();
        let from = o.from_level.unwrap_or(f);
        let to = o.to_level.unwrap_or(t).max(from);
        (if custom { "custom" } else { name }, from, to)
    };
    let kernel = o
        .kernel
        .unwrap_or_else(|| match r.weighted(&[0.25, 0.45, 0.2, 0.1]) {
            0 => Kernel::Soft,
            1 => Kernel::Standard,
            2 => Kernel::Bone,
            _ => Kernel::Lung,
        });
    let (thick, spacing) = {
        let (t, sp): (f64, f64) = match r.weighted(&[0.12, 0.18, 0.2, 0.12, 0.1, 0.1, 0.1, 0.08]) {
            0 => (0.625, 0.625),
            1 => (1.0, 1.0),
            2 => (1.25, 1.25),
            3 => (1.0, 0.7),
            4 => (2.0, 1.5),
            5 => (3.0, 2.0),
            6 => (3.0, 3.0),
            _ => (5.0, 5.0),
        };
        match (o.slice_thickness_mm, o.slice_spacing_mm) {
            (Some(t), Some(s)) => (t, s),
            (Some(t), None) => (t, t),
            (None, Some(s)) => (t.max(s), s),
            (None, None) => (t, sp),
        }
    };
    let top = body_z_range(&sp.verts[from.index()]).1 + r.range(2.0, 15.0);
    let bottom = body_z_range(&sp.verts[to.index()]).0 - r.range(2.0, 15.0);
    let (z0, n) = match o.slices {
        Some(n) => {
            let mid = 0.5 * (top + bottom);
            (mid - 0.5 * (n as f64 - 1.0) * spacing, n)
        }
        None => (bottom, ((top - bottom) / spacing).floor() as usize + 1),
    };
    let rows = o.rows.unwrap_or(512);
    let zmid = z0 + 0.5 * (n as f64 - 1.0) * spacing;
    let torso = &anat.torso;
    let noise = rng::Noise3::new(&mut Rng::stream(seed, "texture", 0));
    let sec = torso.section(zmid, &noise);
    let arms_w = if pat.arms == Arms::Down {
        2.0 * (100.0 + 2.0 * torso.fat_lateral())
    } else {
        0.0
    };
    let width = 2.0
        * (z0..=z0 + (n as f64 - 1.0) * spacing)
            .step_by_f64(20.0)
            .into_iter()
            .map(|z| torso.outer_half_width(z))
            .fold(0.0, f64::max)
        + arms_w
        + r.range(10.0, 50.0);
    let ps = o
        .pixel_spacing_mm
        .unwrap_or_else(|| ((width / rows as f64) * 512.0 / 512.0).clamp(0.6, 1.0));
    let jitter = [r.range(-12.0, 12.0), r.range(-25.0, 15.0)];
    let center = if o.center_on_spine {
        let vs: Vec<&spine::Vertebra> = sp.verts[from.index()..=to.index()].iter().collect();
        let m = |k: usize| vs.iter().map(|v| v.frame.origin[k]).sum::<f64>() / vs.len() as f64;
        [m(0), m(1), zmid]
    } else {
        [sec.cx + jitter[0], sec.cy + jitter[1], zmid]
    };
    let origin = [
        center[0] - 0.5 * (rows as f64 - 1.0) * ps,
        center[1] - 0.5 * (rows as f64 - 1.0) * ps,
        z0,
    ];
    let geometry = Geometry::axial([rows, rows, n], origin, [ps, ps, spacing]);
    geometry.validate()?;
    if geometry.len() > 2_000_000_000 {
        return Err(Error::PhantomOption(format!(
            "grid {:?} is too large",
            geometry.dims
        )));
    }
    let (nlo, nhi) = kernel.noise_range();
    let noise_hu = if o.ideal {
        0.0
    } else {
        o.noise_hu.unwrap_or_else(|| r.range(nlo, nhi))
    };
    let kvp = o
        .kvp
        .unwrap_or_else(|| r.pick(&[100.0, 120.0, 120.0, 120.0, 140.0]));
    // Artifacts: only on request unless asked to randomise.
    let mut ar = Rng::stream(seed, "artifacts", 0);
    let rings_spec = match &o.rings {
        Some(s) => Some(s.clone()),
        None if o.random_artifacts && ar.chance(0.15) => Some(RingSpec {
            strength_hu: ar.range(10.0, 120.0),
            radii_mm: None,
        }),
        None => None,
    };
    let (rings, ring_list) = match rings_spec {
        Some(spec) if spec.strength_hu > 0.0 => {
            let radii = spec.radii_mm.clone().unwrap_or_else(|| {
                let k = 1 + ar.index(4);
                let mut v: Vec<f64> = (0..k)
                    .map(|_| (ar.range(12.0, 0.42 * rows as f64 * ps) * 10.0).round() / 10.0)
                    .collect();
                v.sort_by(f64::total_cmp);
                v
            });
            let list: Vec<(f64, f64, f64)> = radii
                .iter()
                .enumerate()
                .map(|(k, &rad)| {
                    let a = if k == 0 { 1.0 } else { ar.range(0.5, 1.0) }
                        * spec.strength_hu
                        * ar.sign();
                    (rad, a, ar.range(0.0, std::f64::consts::TAU))
                })
                .collect();
            (
                Some(RingTruth {
                    radii_mm: radii,
                    strength_hu: spec.strength_hu,
                    center_mm: [center[0], center[1]],
                }),
                list,
            )
        }
        _ => (None, Vec::new()),
    };
    let metal = match &o.metal {
        Some(m) => Some(m.clone()),
        None if o.random_artifacts && ar.chance(0.1) => {
            let l = Level::from_index(Level::T10.index() + ar.index(8)).unwrap_or(Level::L1);
            if ar.chance(0.5) {
                Some(MetalSpec {
                    kind: MetalKind::Cement,
                    levels: vec![l],
                })
            } else {
                let l2 = Level::from_index((l.index() + 1).min(Level::L5.index())).unwrap_or(l);
                Some(MetalSpec {
                    kind: MetalKind::Screws,
                    levels: vec![l, l2],
                })
            }
        }
        None => None,
    };
    let acq = Acquisition {
        slice_thickness_mm: thick,
        slice_spacing_mm: spacing,
        pixel_spacing_mm: ps,
        kernel: kernel.name().to_string(),
        kvp,
        noise_hu,
        reconstruction_center_mm: center,
        contrast: pat.contrast,
        from_level: from,
        to_level: to,
        protocol: protocol.to_string(),
    };
    Ok(Plan {
        acq,
        geometry,
        kernel,
        rings,
        ring_list,
        metal,
    })
}

trait StepF64 {
    fn step_by_f64(self, step: f64) -> Vec<f64>;
}

impl StepF64 for std::ops::RangeInclusive<f64> {
    fn step_by_f64(self, step: f64) -> Vec<f64> {
        let (a, b) = (*self.start(), *self.end());
        let n = ((b - a) / step).floor().max(0.0) as usize;
        let mut v: Vec<f64> = (0..=n).map(|i| a + i as f64 * step).collect();
        v.push(b);
        v
    }
}

fn render(seed: u64, scene: &Scene, plan: &Plan, ideal: bool) -> Result<Volume> {
    let g = &plan.geometry;
    let (nx, ny) = (g.dims[0], g.dims[1]);
    let ps = g.spacing[0];
    let thick = plan.acq.slice_thickness_mm;
    // Surfaces get exact partial volume within each sub-slice from their signed distance, so
    // sub-slices only need to follow curvature along z: one per 1.7 mm is plenty.
    let n_sub = if ideal {
        1
    } else {
        (thick / 1.7 - 1e-6).ceil().max(1.0) as usize
    };
    let post = PostProcess {
        nx,
        ny,
        ps,
        x0: g.origin[0],
        y0: g.origin[1],
        kernel: plan.kernel,
        noise_hu: plan.acq.noise_hu,
        center: [
            plan.acq.reconstruction_center_mm[0],
            plan.acq.reconstruction_center_mm[1],
        ],
        rings: if ideal {
            Vec::new()
        } else {
            plan.ring_list.clone()
        },
        ideal,
        seed,
        hu_max: 3071.0,
    };
    let mut hu = vec![0i16; g.len()];
    // Each worker reuses its buffers across slices (no per-slice page faults).
    let n = nx * ny;
    hu.par_chunks_mut(n).enumerate().for_each_init(
        || (vec![0.0f32; n], vec![0.0f32; n], Vec::new()),
        |(acc, buf, tmp), (k, out)| {
            let zc = g.origin[2] + k as f64 * g.spacing[2];
            acc.fill(0.0);
            for m in 0..n_sub {
                let z = zc + thick * ((m as f64 + 0.5) / n_sub as f64 - 0.5);
                buf.fill(-1000.0);
                let plane = Plane {
                    z,
                    nx,
                    ny,
                    x0: g.origin[0],
                    y0: g.origin[1],
                    dx: ps,
                    dy: g.spacing[1],
                    wz: thick / n_sub as f64,
                    textured: !ideal,
                    tex: None,
                };
                scene.render_plane(&plane, buf);
                for (a, b) in acc.iter_mut().zip(buf.iter()) {
                    *a += *b;
                }
            }
            let inv = 1.0 / n_sub as f32;
            for a in acc.iter_mut() {
                *a *= inv;
            }
            post.apply(k, acc, tmp);
            for (o, a) in out.iter_mut().zip(acc.iter()) {
                // Round half away from zero without a libm call.
                *o = if *a >= 0.0 {
                    (*a + 0.5) as i16
                } else {
                    (*a - 0.5) as i16
                };
            }
        },
    );
    Volume::new(g.clone(), hu)
}

/// Mean HU of the trabecular core as rendered: voxels at most 60 % of the way from the body's
/// axis to its wall and at least 2.5 mm inside both endplates (cortex excluded).
fn trabecular_mean(v: &spine::Vertebra, vol: &Volume) -> Option<f64> {
    let b = &v.body;
    let g = &vol.geometry;
    let (ex, ey, ez) = b.extent();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for cx in [-ex, ex] {
        for cy in [-ey, ey] {
            for cz in [-ez, ez] {
                let p = g.patient_to_voxel(v.frame.to_global([cx, cy, cz]));
                for k in 0..3 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
            }
        }
    }
    let range = |k: usize| {
        let a = lo[k].floor().max(0.0) as usize;
        let b = (hi[k].ceil().max(-1.0) + 1.0)
            .min(g.dims[k] as f64)
            .max(0.0) as usize;
        a..b.max(a)
    };
    let (mut sum, mut n) = (0.0f64, 0usize);
    for k in range(2) {
        for j in range(1) {
            for i in range(0) {
                let p = v
                    .frame
                    .to_local(g.voxel_to_patient([i as f64, j as f64, k as f64]));
                let rho = (p[0] * p[0] + p[1] * p[1]).sqrt();
                if rho > 1e-9 {
                    let rim = b.rim_radius(p[0] / rho, p[1] / rho);
                    if rho > 0.6 * rim {
                        continue;
                    }
                }
                if p[2] > b.zu(p[0], p[1]) - b.t_upper - 2.5
                    || p[2] < b.zl(p[0], p[1]) + b.t_lower + 2.5
                {
                    continue;
                }
                if let Some(hv) = vol.get(i, j, k) {
                    sum += f64::from(hv);
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| sum / n as f64)
}

fn make_truth(
    seed: u64,
    scene: &Scene,
    plan: &Plan,
    vol: &Volume,
    fractures: &[FractureSpec],
    pat: &Patient,
) -> Truth {
    let g = &vol.geometry;
    let inside = |p: [f64; 3]| {
        let v = g.patient_to_voxel(p);
        (0..3).all(|k| v[k] >= -0.5 && v[k] <= g.dims[k] as f64 - 0.5)
    };
    let mut vertebrae = Vec::new();
    let mut in_view_levels = Vec::new();
    for (i, v) in scene
        .spine
        .verts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.named())
    {
        let b = &v.body;
        let kl = b.keypoints_local();
        let kg: Vec<[f64; 3]> = kl.iter().map(|&p| v.frame.to_global(p)).collect();
        let kp = Keypoints {
            upper_anterior: kg[0],
            upper_middle: kg[1],
            upper_posterior: kg[2],
            lower_anterior: kg[3],
            lower_middle: kg[4],
            lower_posterior: kg[5],
        };
        let heights = b.heights();
        let normal = b.normal_heights();
        let d = classify(heights, Some(normal.posterior));
        let center = scale(kg.iter().fold([0.0; 3], |a, &p| add(a, p)), 1.0 / 6.0);
        let in_view = inside(center);
        if in_view {
            in_view_levels.push(v.level);
        }
        let trabecular = trabecular_mean(v, vol).unwrap_or(scene.spine_hu.cancellous);
        let mut mimics = v.mimics.clone();
        if scene.has_cement(i) {
            mimics.push("cement".into());
        }
        vertebrae.push(VertebraTruth {
            level: v.level.name().to_string(),
            center_mm: center,
            keypoints_mm: kp,
            heights_mm: heights,
            normal_heights_mm: normal,
            deformity: d.value,
            genant_grade: d.grade,
            morphology: d.morphology,
            trabecular_hu: trabecular,
            in_view,
            mimics,
            fracture: fractures
                .iter()
                .find(|f| f.level == v.level)
                .map(|f| FractureTruth {
                    kind: f.kind.as_str().to_string(),
                    severity: f.severity,
                    upper_share: b.fracture.as_ref().map(|x| x.upper_share).unwrap_or(0.5),
                }),
        });
    }
    let cobb_in_view = spine::cobb_over(&scene.spine, &in_view_levels);
    let a = &plan.acq;
    Truth {
        seed,
        study_instance_uid: String::new(),
        series_instance_uid: String::new(),
        vertebrae,
        study: StudyTruth {
            cobb_angle_deg: scene.spine.cobb_deg,
            kyphosis_deg: scene.spine.kyphosis_deg,
            lordosis_deg: scene.spine.lordosis_deg,
            slice_thickness_mm: a.slice_thickness_mm,
            pixel_spacing_mm: a.pixel_spacing_mm,
            slice_spacing_mm: a.slice_spacing_mm,
            noise_hu: a.noise_hu,
            rings: plan.rings.clone(),
            metal: plan.metal.as_ref().map(|m| MetalTruth {
                kind: m.kind.as_str().to_string(),
                levels: m.levels.iter().map(|l| l.name().to_string()).collect(),
            }),
            contrast: a.contrast,
            levels_in_view: in_view_levels
                .iter()
                .map(|l| l.name().to_string())
                .collect(),
            cobb_angle_in_view_deg: cobb_in_view,
            kernel: a.kernel.clone(),
            kvp: a.kvp,
            reconstruction_center_mm: a.reconstruction_center_mm,
            bone_density_hu: scene.spine_hu.cancellous,
            habitus: pat.habitus.as_str().to_string(),
            arms: pat.arms.as_str().to_string(),
            scoliosis: scene.spine.scoliosis.clone(),
            protocol: a.protocol.clone(),
            lowest_rib_level: "T12".to_string(),
        },
    }
}
