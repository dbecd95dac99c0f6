//! `vcfd phantom`: render a synthetic CT study and its ground truth.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;
use vcfd::dicom_out::{write_ct_series, CtSeriesMeta};
use vcfd::preview::{render, write_png, Plane, Window};
use vcfd_model::phantom::{
    generate, Arms, FractureSpec, Habitus, Kernel, Level, MetalSpec, MimicSpec, PhantomOptions,
    RingSpec,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created); receives one DICOM file per slice and truth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed and options give the same study, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// A fracture LEVEL:TYPE:SEVERITY (type wedge|biconcave|crush, severity 0..0.6 = height
    /// loss), e.g. L1:wedge:0.42. Repeatable.
    #[arg(long = "fracture", value_name = "SPEC")]
    pub fractures: Vec<FractureSpec>,
    /// Number of random fractures (default: drawn from the seed).
    #[arg(long = "fractures", value_name = "N", conflicts_with_all = ["fractures", "no_fractures"])]
    pub fracture_count: Option<usize>,
    /// No fractures at all.
    #[arg(long, conflicts_with = "fractures")]
    pub no_fractures: bool,
    /// A hard negative KIND:LEVEL (schmorl, osteophyte, calcified-disc, narrowing, wedging, bone-island),
    /// e.g. schmorl:T9. Repeatable; replaces the random ones.
    #[arg(long = "mimic", value_name = "SPEC")]
    pub mimics: Vec<MimicSpec>,
    /// No mimics at all.
    #[arg(long, conflicts_with = "mimics")]
    pub no_mimics: bool,

    /// Coronal Cobb angle of a scoliosis (degrees; 0 = straight).
    #[arg(long, value_name = "DEG")]
    pub cobb: Option<f64>,
    /// Thoracic kyphosis T4-T12 (degrees; > 60 is hyperkyphosis).
    #[arg(long, value_name = "DEG")]
    pub kyphosis: Option<f64>,
    /// Lumbar lordosis L1-S1 (degrees).
    #[arg(long, value_name = "DEG")]
    pub lordosis: Option<f64>,

    /// First (most cranial) level fully in view, e.g. T3.
    #[arg(long, value_name = "LEVEL")]
    pub from_level: Option<Level>,
    /// Last (most caudal) level fully in view, e.g. L2.
    #[arg(long, value_name = "LEVEL")]
    pub to_level: Option<Level>,
    /// Number of slices (centred on the coverage).
    #[arg(long, value_name = "N")]
    pub slices: Option<usize>,
    /// Rows and columns of each slice.
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    /// In-plane pixel size (default: the field of view fits the body, 0.6-1.0 mm).
    #[arg(long, value_name = "MM")]
    pub pixel_spacing: Option<f64>,
    /// Reconstructed slice thickness (the slice profile is integrated over it).
    #[arg(long, value_name = "MM")]
    pub slice_thickness: Option<f64>,
    /// Distance between slices (less than the thickness: overlapping slices).
    #[arg(long, value_name = "MM")]
    pub slice_spacing: Option<f64>,
    /// Reconstruction kernel: soft, standard, bone, lung.
    #[arg(long)]
    pub kernel: Option<Kernel>,
    /// Tube voltage written to DICOM.
    #[arg(long, value_name = "KV")]
    pub kvp: Option<f64>,
    /// Image noise, HU standard deviation at the body centre.
    #[arg(long, value_name = "HU")]
    pub noise: Option<f64>,

    /// Ring artifacts of this peak contrast (HU) about the reconstruction centre.
    #[arg(long, value_name = "STRENGTH_HU")]
    pub rings: Option<f64>,
    /// Ring radii in mm, comma separated (default: 1-4 drawn from the seed).
    #[arg(long, value_name = "MM,MM", value_delimiter = ',', requires = "rings")]
    pub ring_radii: Vec<f64>,
    /// Metal: cement:LEVELS or screws:LEVELS, e.g. cement:L1, screws:L3-L4.
    #[arg(long, value_name = "SPEC")]
    pub metal: Option<MetalSpec>,
    /// Also draw rings and metal at random (for training data).
    #[arg(long)]
    pub random_artifacts: bool,

    /// Intravenous contrast (aorta ~300 HU).
    #[arg(long, conflicts_with = "no_contrast")]
    pub contrast: bool,
    /// No intravenous contrast (blood ~40 HU).
    #[arg(long)]
    pub no_contrast: bool,
    /// Body habitus: thin, normal, obese.
    #[arg(long)]
    pub habitus: Option<Habitus>,
    /// Arm position: up (out of the field) or down (beside the body).
    #[arg(long)]
    pub arms: Option<Arms>,
    /// Trabecular bone density, HU (about 50 osteoporotic .. 300 young).
    #[arg(long, value_name = "HU")]
    pub bone_density: Option<f64>,

    /// Centre the field of view on the spine (spine-targeted reconstruction).
    #[arg(long)]
    pub center_on_spine: bool,
    /// Noise-free, unblurred, texture-free rendering (for geometry checks).
    #[arg(long)]
    pub ideal: bool,
    /// Also write PNG previews (mid-sagittal, coronal, axial at several levels) to OUT/preview.
    #[arg(long)]
    pub preview: bool,
    /// Write only truth.json (and previews), no DICOM.
    #[arg(long)]
    pub no_dicom: bool,
    /// Replace the DICOM files of an earlier phantom in OUT.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    fn options(&self) -> PhantomOptions {
        PhantomOptions {
            from_level: self.from_level,
            to_level: self.to_level,
            slices: self.slices,
            rows: self.rows,
            pixel_spacing_mm: self.pixel_spacing,
            slice_thickness_mm: self.slice_thickness,
            slice_spacing_mm: self.slice_spacing,
            kernel: self.kernel,
            kvp: self.kvp,
            noise_hu: self.noise,
            rings: self.rings.map(|s| RingSpec {
                strength_hu: s,
                radii_mm: (!self.ring_radii.is_empty()).then(|| self.ring_radii.clone()),
            }),
            metal: self.metal.clone(),
            random_artifacts: self.random_artifacts,
            contrast: if self.contrast {
                Some(true)
            } else if self.no_contrast {
                Some(false)
            } else {
                None
            },
            habitus: self.habitus,
            arms: self.arms,
            bone_density_hu: self.bone_density,
            kyphosis_deg: self.kyphosis,
            lordosis_deg: self.lordosis,
            cobb_deg: self.cobb,
            fractures: if self.no_fractures {
                Some(Vec::new())
            } else if self.fractures.is_empty() {
                None
            } else {
                Some(self.fractures.clone())
            },
            fracture_count: self.fracture_count,
            mimics: if self.no_mimics {
                Some(Vec::new())
            } else if self.mimics.is_empty() {
                None
            } else {
                Some(self.mimics.clone())
            },
            center_on_spine: self.center_on_spine,
            ideal: self.ideal,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = args.options();
    opts.validate()?;
    prepare_out(&args.out, args.force && !args.no_dicom)?;
    let t0 = Instant::now();
    let ph = generate(args.seed, &opts)?;
    let t_render = t0.elapsed().as_secs_f64();
    let acq = &ph.acquisition;
    let mut meta = CtSeriesMeta::synthetic(args.seed);
    meta.slice_thickness_mm = acq.slice_thickness_mm;
    meta.kvp = acq.kvp;
    meta.convolution_kernel = acq.kernel.clone();
    meta.reconstruction_center_mm = Some(acq.reconstruction_center_mm);
    if acq.protocol.contains("abdomen") {
        meta.study_description = "CT ABDOMEN PHANTOM".into();
    }
    meta.series_description = format!(
        "AXIAL {:.2} {} SYNTHETIC",
        acq.slice_thickness_mm, acq.kernel
    );
    let mut truth = ph.truth;
    truth.study_instance_uid = meta.study_instance_uid.clone();
    truth.series_instance_uid = meta.series_instance_uid.clone();
    let t1 = Instant::now();
    let n_files = if args.no_dicom {
        0
    } else {
        write_ct_series(&ph.volume, &meta, &args.out)?.len()
    };
    let t_write = t1.elapsed().as_secs_f64();
    let truth_path = args.out.join("truth.json");
    let text = serde_json::to_string_pretty(&truth)?;
    std::fs::write(&truth_path, text + "\n")
        .with_context(|| format!("cannot write {}", truth_path.display()))?;
    if args.preview {
        write_previews(&ph.volume, &truth, &args.out.join("preview"))?;
    }

    let g = &ph.volume.geometry;
    println!(
        "phantom seed {}: {} x {} x {} voxels, pixel {:.3} mm, slices {:.2} mm every {:.2} mm, kernel {}, {} kVp, noise {:.1} HU, contrast {}",
        args.seed,
        g.dims[0],
        g.dims[1],
        g.dims[2],
        acq.pixel_spacing_mm,
        acq.slice_thickness_mm,
        acq.slice_spacing_mm,
        acq.kernel,
        acq.kvp,
        acq.noise_hu,
        if acq.contrast { "yes" } else { "no" }
    );
    let s = &truth.study;
    println!(
        "coverage ({}): {} .. {}; levels in view: {}",
        acq.protocol,
        acq.from_level,
        acq.to_level,
        s.levels_in_view.join(" ")
    );
    println!(
        "spine: kyphosis {:.1} deg, lordosis {:.1} deg, Cobb {:.1} deg ({:.1} in view){}; bone density {:.0} HU; habitus {}, arms {}",
        s.kyphosis_deg,
        s.lordosis_deg,
        s.cobb_angle_deg,
        s.cobb_angle_in_view_deg,
        s.scoliosis.as_ref().map(|d| format!(", {d}")).unwrap_or_default(),
        s.bone_density_hu,
        s.habitus,
        s.arms
    );
    let mut any = false;
    for v in &truth.vertebrae {
        if v.genant_grade > 0 || v.fracture.is_some() || !v.mimics.is_empty() {
            any = true;
            println!(
                "  {:>3}{}: Ha {:.1} Hm {:.1} Hp {:.1} mm, deformity {:.0} % ({}, Genant {}){}{}",
                v.level,
                if v.in_view { "" } else { " (out of view)" },
                v.heights_mm.anterior,
                v.heights_mm.middle,
                v.heights_mm.posterior,
                100.0 * v.deformity,
                v.morphology.as_str(),
                v.genant_grade,
                v.fracture
                    .as_ref()
                    .map(|f| format!(", fracture {} {:.2}", f.kind, f.severity))
                    .unwrap_or_default(),
                if v.mimics.is_empty() {
                    String::new()
                } else {
                    format!(", mimics: {}", v.mimics.join(", "))
                }
            );
        }
    }
    if !any {
        println!("  no fractures or mimics");
    }
    if let Some(r) = &s.rings {
        println!(
            "rings: {:.0} HU at radii {:?} mm",
            r.strength_hu, r.radii_mm
        );
    }
    if let Some(m) = &s.metal {
        println!("metal: {} at {}", m.kind, m.levels.join(", "));
    }
    println!(
        "timing: render {:.2} s, write {:.2} s ({} DICOM files); truth {}",
        t_render,
        t_write,
        n_files,
        truth_path.display()
    );
    Ok(())
}

/// Creates the folder; refuses to mix with DICOM files of another study unless told to replace
/// them (then only `NNNN.dcm` files and truth.json are removed).
fn prepare_out(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ours = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(".dcm") {
            if stem.chars().all(|c| c.is_ascii_digit()) {
                ours.push(p.clone());
            } else {
                bail!(
                    "{} already holds other DICOM files ({name}); choose an empty folder",
                    dir.display()
                );
            }
        }
    }
    if !ours.is_empty() {
        if !force {
            bail!(
                "{} already holds {} DICOM files of an earlier phantom; pass --force to replace them",
                dir.display(),
                ours.len()
            );
        }
        for p in ours {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

/// Mid-sagittal and coronal views through the spine and axial views at a few levels.
fn write_previews(
    vol: &vcfd_model::Volume,
    truth: &vcfd_model::truth::Truth,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let g = &vol.geometry;
    let seen: Vec<_> = truth.vertebrae.iter().filter(|v| v.in_view).collect();
    let mean = |k: usize| {
        if seen.is_empty() {
            g.voxel_to_patient([g.dims[0] as f64 / 2.0, g.dims[1] as f64 / 2.0, 0.0])[k]
        } else {
            seen.iter().map(|v| v.center_mm[k]).sum::<f64>() / seen.len() as f64
        }
    };
    let c = g.patient_to_voxel([mean(0), mean(1), 0.0]);
    let col = (c[0].round().max(0.0) as usize).min(g.dims[0] - 1);
    let row = (c[1].round().max(0.0) as usize).min(g.dims[1] - 1);
    let mm = g.spacing[0].min(1.0);
    write_png(
        &dir.join("sagittal_bone.png"),
        &render(vol, Plane::Sagittal(col), Window::BONE, mm),
    )?;
    write_png(
        &dir.join("sagittal_soft.png"),
        &render(vol, Plane::Sagittal(col), Window::SOFT, mm),
    )?;
    write_png(
        &dir.join("coronal_bone.png"),
        &render(vol, Plane::Coronal(row), Window::BONE, mm),
    )?;
    for v in seen.iter().step_by(3) {
        let k = g.patient_to_voxel(v.center_mm)[2]
            .round()
            .clamp(0.0, (g.dims[2] - 1) as f64) as usize;
        write_png(
            &dir.join(format!("axial_{}_soft.png", v.level)),
            &render(vol, Plane::Axial(k), Window::SOFT, g.spacing[0]),
        )?;
        write_png(
            &dir.join(format!("axial_{}_bone.png", v.level)),
            &render(vol, Plane::Axial(k), Window::BONE, g.spacing[0]),
        )?;
    }
    let lung = Window {
        center: -600.0,
        width: 1500.0,
    };
    if let Some(v) = seen.iter().find(|v| v.level == "T6" || v.level == "T8") {
        let k = g.patient_to_voxel(v.center_mm)[2]
            .round()
            .clamp(0.0, (g.dims[2] - 1) as f64) as usize;
        write_png(
            &dir.join(format!("axial_{}_lung.png", v.level)),
            &render(vol, Plane::Axial(k), lung, g.spacing[0]),
        )?;
    }
    Ok(())
}
