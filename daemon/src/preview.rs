//! Grey-scale PNG previews of CT volumes, for docs and for eyeballing the phantom.

use crate::{Error, Result};
use std::path::Path;
use vcfd_model::Volume;

/// A display window in HU.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub center: f32,
    pub width: f32,
}

impl Window {
    /// Bone window, where vertebral bodies and endplates are readable.
    pub const BONE: Window = Window {
        center: 400.0,
        width: 1800.0,
    };
    /// Soft-tissue window.
    pub const SOFT: Window = Window {
        center: 40.0,
        width: 400.0,
    };

    fn map(self, hu: f32) -> u8 {
        let lo = self.center - self.width / 2.0;
        ((hu - lo) / self.width * 255.0).round().clamp(0.0, 255.0) as u8
    }
}

/// Which plane to cut through the volume.
#[derive(Clone, Copy, Debug)]
pub enum Plane {
    /// Slice k of the volume (as acquired).
    Axial(usize),
    /// Column i: left-right position fixed.
    Sagittal(usize),
    /// Row j: anterior-posterior position fixed.
    Coronal(usize),
}

/// An 8-bit grey image with square pixels of `mm_per_px`.
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Cuts a plane and resamples it to square pixels of `mm_per_px`, head up for sagittal and
/// coronal views (radiological display convention: patient's anterior left on sagittal).
pub fn render(volume: &Volume, plane: Plane, window: Window, mm_per_px: f64) -> Gray {
    let g = &volume.geometry;
    let ext = g.extent_mm();
    // (u axis, v axis) in voxel index space and their extents in mm.
    let (ua, va, fixed, fixed_axis) = match plane {
        Plane::Axial(k) => (0usize, 1usize, k, 2usize),
        Plane::Sagittal(i) => (1, 2, i, 0),
        Plane::Coronal(j) => (0, 2, j, 1),
    };
    let width = ((ext[ua] / mm_per_px).round() as usize).max(1);
    let height = ((ext[va] / mm_per_px).round() as usize).max(1);
    let mut pixels = vec![0u8; width * height];
    for y in 0..height {
        for x in 0..width {
            let mut ijk = [0.0f64; 3];
            ijk[fixed_axis] = fixed as f64;
            ijk[ua] = x as f64 * mm_per_px / g.spacing[ua];
            // Slices advance towards the head in HFS axial CT: flip so the head is up.
            ijk[va] = if va == 2 {
                (height - 1 - y) as f64 * mm_per_px / g.spacing[va]
            } else {
                y as f64 * mm_per_px / g.spacing[va]
            };
            let hu = volume.sample_voxel(ijk).unwrap_or(-1024.0);
            pixels[y * width + x] = window.map(hu);
        }
    }
    Gray {
        width,
        height,
        pixels,
    }
}

/// Writes an 8-bit grey PNG.
pub fn write_png(path: &Path, img: &Gray) -> Result<()> {
    write_png_pixels(
        path,
        img.width,
        img.height,
        png::ColorType::Grayscale,
        &img.pixels,
    )
}

/// Writes 8-bit pixels (grey or RGB, row-major) as a PNG.
pub fn write_png_pixels(
    path: &Path,
    width: usize,
    height: usize,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<()> {
    let err = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| err(e.to_string()))?;
    w.write_image_data(pixels).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Places images side by side (top-aligned, black padding) for comparison figures.
pub fn side_by_side(images: &[Gray], gap: usize) -> Gray {
    let height = images.iter().map(|g| g.height).max().unwrap_or(0);
    let width =
        images.iter().map(|g| g.width).sum::<usize>() + gap * images.len().saturating_sub(1);
    let mut pixels = vec![0u8; width * height];
    let mut x0 = 0;
    for img in images {
        for y in 0..img.height {
            pixels[y * width + x0..y * width + x0 + img.width]
                .copy_from_slice(&img.pixels[y * img.width..(y + 1) * img.width]);
        }
        x0 += img.width + gap;
    }
    Gray {
        width,
        height,
        pixels,
    }
}
