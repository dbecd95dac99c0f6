//! Temporary development helper (removed before hand-off): dumps a phantom as raw voxels.
#[cfg(test)]
mod tests {
    use crate::phantom::*;
    #[test]
    #[ignore]
    fn dump() {
        let seed: u64 = std::env::var("PH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
        let dir = std::env::var("PH_OUT").unwrap_or("/root/phwork/dump".into());
        let mut o = PhantomOptions::default();
        let env = |k: &str| std::env::var(k).ok();
        if let Some(v) = env("PH_FROM") { o.from_level = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_TO") { o.to_level = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_THICK") { o.slice_thickness_mm = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_SPACING") { o.slice_spacing_mm = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_PS") { o.pixel_spacing_mm = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_ROWS") { o.rows = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_SLICES") { o.slices = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_FRAC") { o.fractures = Some(v.split(';').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()); }
        if let Some(v) = env("PH_MIMIC") { o.mimics = Some(v.split(';').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()); }
        if let Some(v) = env("PH_COBB") { o.cobb_deg = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_KYPH") { o.kyphosis_deg = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_METAL") { o.metal = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_RINGS") { o.rings = Some(RingSpec { strength_hu: v.parse().unwrap(), radii_mm: None }); }
        if let Some(v) = env("PH_ARMS") { o.arms = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_HABITUS") { o.habitus = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_KERNEL") { o.kernel = Some(v.parse().unwrap()); }
        if let Some(v) = env("PH_CONTRAST") { o.contrast = Some(v == "1"); }
        if env("PH_IDEAL").is_some() { o.ideal = true; }
        let t0 = std::time::Instant::now();
        let ph = generate(seed, &o).unwrap();
        eprintln!("render {:.2} s", t0.elapsed().as_secs_f64());
        std::fs::create_dir_all(&dir).unwrap();
        let g = &ph.volume.geometry;
        let bytes: Vec<u8> = ph.volume.hu.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(format!("{dir}/vol.raw"), bytes).unwrap();
        std::fs::write(format!("{dir}/geom.json"), format!("{{\"dims\":{:?},\"origin\":{:?},\"spacing\":{:?}}}", g.dims, g.origin, g.spacing)).unwrap();
        std::fs::write(format!("{dir}/truth.json"), serde_json::to_string_pretty(&ph.truth).unwrap()).unwrap();
        eprintln!("{:?} {:?}", ph.acquisition, ph.truth.study.levels_in_view);
    }
}
