//! The colour-coded image series the radiologist sees in PACS: the curved sagittal reformat
//! and three strictly sagittal slices, with the measurements burned in.
//!
//! Burned-in RGB images (Secondary Capture) are used instead of presentation states or
//! segmentation objects because every PACS and viewer displays them the same way. Marks are
//! drawn where the measurement was taken: keypoints in patient space are mapped into the
//! reformat with [`Reformat::from_patient`] (exact), and projected along x onto the sagittal
//! planes. Colour follows the Genant grade: green 0-1, yellow 2, red 3. The sagittal slices
//! are not straightened, so a scoliotic spine leaves and re-enters them: that is shown as is.

use crate::font;
use crate::Result;
use std::path::Path;
use vcfd_model::findings::{Findings, Severity, VertebraFinding};
use vcfd_model::reformat::Reformat;
use vcfd_model::Volume;

/// Display window for bone (centre, width in HU).
const WINDOW: (f64, f64) = (300.0, 1500.0);
/// Column right of the image for the vertebra labels, pixels.
const LABEL_PX: usize = 350;
/// Smallest image side: readable on PACS workstations.
pub const MIN_SIDE_PX: usize = 512;
/// Sagittal marks are drawn in full only for bodies whose centre lies this close to the plane.
const IN_PLANE_MM: f64 = 10.0;

pub const GREEN: [u8; 3] = [40, 220, 60];
pub const YELLOW: [u8; 3] = [250, 220, 0];
pub const RED: [u8; 3] = [255, 40, 40];
const WHITE: [u8; 3] = [255, 255, 255];
const GREY: [u8; 3] = [170, 170, 170];

/// Colour of a vertebra's marks by Genant grade.
pub fn grade_colour(grade: u8) -> [u8; 3] {
    match grade {
        0 | 1 => GREEN,
        2 => YELLOW,
        _ => RED,
    }
}

/// An 8-bit RGB image, pixel-interleaved, row 0 at the top.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// A line `thick` pixels wide (square brush).
    fn line(&mut self, a: (f64, f64), b: (f64, f64), thick: i64, c: [u8; 3]) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
        let r0 = -(thick - 1) / 2;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let x = (a.0 + t * (b.0 - a.0)).round() as i64;
            let y = (a.1 + t * (b.1 - a.1)).round() as i64;
            for dy in r0..r0 + thick {
                for dx in r0..r0 + thick {
                    self.put(x + dx, y + dy, c);
                }
            }
        }
    }

    /// Text with a one-pixel dark outline so it stays legible on bone and on air.
    fn text(&mut self, x: i64, y: i64, scale: usize, c: [u8; 3], text: &str) {
        let mut dots = Vec::new();
        font::rasterize(text, x, y, scale, |px, py| dots.push((px, py)));
        for &(px, py) in &dots {
            for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                self.put(px + dx, py + dy, [0, 0, 0]);
            }
        }
        for (px, py) in dots {
            self.put(px, py, c);
        }
    }
}

/// One rendered image of the result series.
#[derive(Clone, Debug)]
pub struct OverlayImage {
    pub image: RgbImage,
    /// Short name for ImageComments and file names, e.g. "curved sagittal".
    pub title: String,
    /// How it was made, for DerivationDescription.
    pub derivation: String,
    /// PatientOrientation (row direction, column direction), e.g. ("P", "F").
    pub orientation: (String, String),
}

/// Renders the whole series: the curved reformat (when there is one) and three sagittal slices.
pub fn render_series(
    volume: &Volume,
    reformat: Option<&Reformat>,
    findings: &Findings,
    header: &[String],
) -> Vec<OverlayImage> {
    let mut out = Vec::new();
    if let Some(r) = reformat {
        out.push(OverlayImage {
            image: render_reformat(r, findings, header),
            title: "curved sagittal reformat".into(),
            derivation: format!(
                "Curved sagittal reformat along the vertebral body centreline, {:.0} mm slab \
                 (mean), {} mm pixels, bone window C{} W{}; measurements burned in",
                slab_mm(r),
                r.pixel_mm,
                WINDOW.0,
                WINDOW.1
            ),
            orientation: ("P".into(), "F".into()),
        });
    }
    for x in sagittal_positions(volume, findings) {
        out.push(OverlayImage {
            image: render_sagittal(volume, x, findings, header),
            title: format!("sagittal x {x:+.1} mm"),
            derivation: format!(
                "Sagittal plane at x = {x:.1} mm (LPS), trilinear resampling, bone window C{} \
                 W{}; measurements projected onto the plane and burned in",
                WINDOW.0, WINDOW.1
            ),
            orientation: ("P".into(), "F".into()),
        });
    }
    out
}

/// Slab thickness of the reformat from its frames' lateral extent is not stored; the reformat
/// is built with the product default (1 cm), which this reports.
fn slab_mm(_r: &Reformat) -> f64 {
    vcfd_model::reformat::ReformatOptions::default().slab_mm
}

/// Three x positions (LPS mm) through the spine: the leftmost, median and rightmost body
/// centres when the spine curves sideways, otherwise the midline and 8 mm either side.
pub fn sagittal_positions(volume: &Volume, findings: &Findings) -> [f64; 3] {
    let mut xs: Vec<f64> = findings.vertebrae.iter().map(|v| v.center_mm[0]).collect();
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        let g = &volume.geometry;
        let c = g.voxel_to_patient([
            (g.dims[0] as f64 - 1.0) / 2.0,
            (g.dims[1] as f64 - 1.0) / 2.0,
            0.0,
        ])[0];
        return [c - 8.0, c, c + 8.0];
    }
    let med = xs[xs.len() / 2];
    let (lo, hi) = (xs[0], xs[xs.len() - 1]);
    if hi - lo >= 16.0 {
        [lo, med, hi]
    } else {
        [med - 8.0, med, med + 8.0]
    }
}

fn window(hu: f64) -> u8 {
    let (c, w) = WINDOW;
    (((hu - (c - w / 2.0)) / w).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Geometry of the image area inside the canvas: canvas pixel = offset + scale * source pixel.
struct Layout {
    scale: f64,
    img_w: usize,
    img_h: usize,
}

impl Layout {
    /// Scales the image to about 1000 rows, comfortable on a reading screen, with the
    /// canvas's short side >= 512. `min_scale` bounds the shrinking of tall (whole-body)
    /// studies: the reformat keeps every source pixel, the overview sagittal slices may halve
    /// (unbounded, a 2 m study's slices were 17 MB each and slowed delivery).
    fn new(src_w: usize, src_h: usize, min_scale: f64) -> Self {
        let scale = (1000.0 / src_h.max(1) as f64)
            .clamp(min_scale, 6.0)
            .max(MIN_SIDE_PX as f64 / src_h.max(1) as f64);
        Self {
            scale,
            img_w: (src_w as f64 * scale).round() as usize,
            img_h: (src_h as f64 * scale).round() as usize,
        }
    }

    fn width(&self) -> usize {
        (self.img_w + LABEL_PX).max(MIN_SIDE_PX)
    }

    /// Image on top, labels to its right, footer (conclusion, legend) below.
    fn canvas(&self, footer_h: usize) -> RgbImage {
        RgbImage::new(self.width(), (self.img_h + footer_h).max(MIN_SIDE_PX))
    }

    fn to_canvas(&self, col: f64, row: f64) -> (f64, f64) {
        ((col + 0.5) * self.scale, (row + 0.5) * self.scale)
    }
}

/// The curved reformat with marks; anterior left, cranial top.
pub fn render_reformat(r: &Reformat, findings: &Findings, header: &[String]) -> RgbImage {
    let lay = Layout::new(r.width, r.height, 1.0);
    let footer = footer_lines(
        findings,
        header,
        "Curved sagittal reformat, 1 cm slab",
        lay.width(),
    );
    let mut img = lay.canvas(footer_height(&footer));
    for y in 0..lay.img_h {
        let row = (y as f64 + 0.5) / lay.scale - 0.5;
        for x in 0..lay.img_w {
            let col = (x as f64 + 0.5) / lay.scale - 0.5;
            let v = window(bilinear(&r.pixels, r.width, r.height, col, row));
            img.put(x as i64, y as i64, [v, v, v]);
        }
    }
    let marks: Vec<Mark> = findings
        .vertebrae
        .iter()
        .map(|v| {
            let map = |p: [f64; 3]| r.from_patient(p).map(|(c, rr, _)| lay.to_canvas(c, rr));
            Mark::new(v, map, true)
        })
        .collect();
    draw_marks(&mut img, &lay, &marks);
    draw_footer(&mut img, lay.img_h, &footer);
    img
}

/// A strictly sagittal slice at `x_mm`; anterior left, cranial top.
pub fn render_sagittal(
    volume: &Volume,
    x_mm: f64,
    findings: &Findings,
    header: &[String],
) -> RgbImage {
    let g = &volume.geometry;
    // Bounding box of the volume in y and z.
    let (mut y0, mut y1, mut z0, mut z1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for corner in 0..8 {
        let ijk = [
            if corner & 1 == 0 {
                0.0
            } else {
                g.dims[0] as f64 - 1.0
            },
            if corner & 2 == 0 {
                0.0
            } else {
                g.dims[1] as f64 - 1.0
            },
            if corner & 4 == 0 {
                0.0
            } else {
                g.dims[2] as f64 - 1.0
            },
        ];
        let p = g.voxel_to_patient(ijk);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
        z0 = z0.min(p[2]);
        z1 = z1.max(p[2]);
    }
    let px = g.spacing[0].min(g.spacing[1]).max(0.5);
    let src_w = ((y1 - y0) / px).floor() as usize + 1;
    let src_h = ((z1 - z0) / px).floor() as usize + 1;
    let lay = Layout::new(src_w, src_h, 0.5);
    let side = if x_mm >= 0.0 { "left" } else { "right" };
    let view = format!("Sagittal slice x = {x_mm:.0} mm ({side} of the scanner axis)");
    let footer = footer_lines(findings, header, &view, lay.width());
    let mut img = lay.canvas(footer_height(&footer));
    for y in 0..lay.img_h {
        let row = (y as f64 + 0.5) / lay.scale - 0.5;
        let z = z1 - row * px;
        for x in 0..lay.img_w {
            let col = (x as f64 + 0.5) / lay.scale - 0.5;
            let hu = volume
                .sample_patient([x_mm, y0 + col * px, z])
                .map_or(-1024.0, f64::from);
            let v = window(hu);
            img.put(x as i64, y as i64, [v, v, v]);
        }
    }
    let marks: Vec<Mark> = findings
        .vertebrae
        .iter()
        .map(|v| {
            let near = (v.center_mm[0] - x_mm).abs() <= IN_PLANE_MM;
            let map = |p: [f64; 3]| Some(lay.to_canvas((p[1] - y0) / px, (z1 - p[2]) / px));
            Mark::new(v, map, near)
        })
        .collect();
    draw_marks(&mut img, &lay, &marks);
    draw_footer(&mut img, lay.img_h, &footer);
    img
}

fn bilinear(px: &[f32], w: usize, h: usize, x: f64, y: f64) -> f64 {
    if w == 0 || h == 0 {
        return -1024.0;
    }
    let x = x.clamp(0.0, (w - 1) as f64);
    let y = y.clamp(0.0, (h - 1) as f64);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = (x - x0 as f64, y - y0 as f64);
    let p = |xx: usize, yy: usize| f64::from(px[yy * w + xx]);
    let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
    let bot = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
    top * (1.0 - ty) + bot * ty
}

/// A vertebra's marks in canvas coordinates.
struct Mark {
    label: String,
    colour: [u8; 3],
    /// Anterior, middle, posterior height lines (upper point, lower point).
    lines: Vec<((f64, f64), (f64, f64))>,
    /// Where the label's leader line starts.
    anchor: Option<(f64, f64)>,
    in_plane: bool,
}

impl Mark {
    fn new(
        v: &VertebraFinding,
        map: impl Fn([f64; 3]) -> Option<(f64, f64)>,
        in_plane: bool,
    ) -> Self {
        let k = &v.keypoints_mm;
        let pairs = [
            (k.upper_anterior, k.lower_anterior),
            (k.upper_middle, k.lower_middle),
            (k.upper_posterior, k.lower_posterior),
        ];
        let lines: Vec<_> = pairs
            .iter()
            .filter_map(|&(a, b)| Some((map(a)?, map(b)?)))
            .collect();
        let anchor = match lines.last() {
            Some(&(a, b)) => Some(((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0)),
            None => map(v.center_mm),
        };
        Self {
            label: vertebra_label(v),
            colour: grade_colour(v.genant_grade),
            lines,
            anchor,
            in_plane,
        }
    }
}

/// "L1 42% G3 wedge" / "T9 8%": what is burned in next to each body.
pub fn vertebra_label(v: &VertebraFinding) -> String {
    let level = v.level.as_deref().unwrap_or("?");
    let pct = (v.deformity * 100.0).round();
    if v.genant_grade >= 1 {
        format!(
            "{level:<3} {pct:>2.0}% G{} {}",
            v.genant_grade,
            v.morphology.as_str()
        )
    } else {
        format!("{level:<3} {pct:>2.0}%")
    }
}

fn draw_marks(img: &mut RgbImage, lay: &Layout, marks: &[Mark]) {
    let thick = if lay.scale >= 3.0 { 3 } else { 2 };
    let label_x = lay.img_w as i64 + 10;
    let scale = 2;
    let lh = font::line_height(scale) as f64;
    // Labels in the panel's left column, in anchor order, pushed apart so they never overlap.
    let mut placed: Vec<(usize, f64)> = marks
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.anchor.map(|a| (i, a.1 - lh / 2.0)))
        .collect();
    placed.sort_by(|a, b| a.1.total_cmp(&b.1));
    // Starting one line above the top keeps the first label inside the canvas.
    let mut last = -(lh + 4.0) + 2.0;
    for p in &mut placed {
        p.1 = p.1.max(last + lh + 4.0);
        last = p.1;
    }
    for (i, y) in placed {
        let m = &marks[i];
        let colour = if m.in_plane { m.colour } else { GREY };
        if let Some(a) = m.anchor {
            img.line(a, (label_x as f64 - 4.0, y + lh / 2.0), 1, colour);
        }
        let text = if m.in_plane {
            m.label.clone()
        } else {
            format!(
                "{} (off plane)",
                m.label.split_whitespace().next().unwrap_or("?")
            )
        };
        img.text(label_x, y as i64, scale, colour, &text);
    }
    for m in marks.iter().filter(|m| m.in_plane) {
        for &(a, b) in &m.lines {
            img.line(a, b, thick, m.colour);
            for p in [a, b] {
                img.fill_rect(p.0 as i64 - 3, p.1 as i64 - 3, 7, 7, m.colour);
            }
        }
    }
}

/// Footer text: header, view, conclusion, reliability and legend, with scale and colour.
fn footer_lines(
    findings: &Findings,
    header: &[String],
    view: &str,
    width: usize,
) -> Vec<(String, [u8; 3], usize)> {
    let cols = |scale: usize| width.saturating_sub(20) / font::text_width("x", scale);
    let mut lines: Vec<(String, [u8; 3], usize)> = Vec::new();
    let colour = if findings.max_genant_grade >= 2 {
        grade_colour(findings.max_genant_grade)
    } else {
        WHITE
    };
    for c in wrap(&overlay_conclusion(findings), cols(2)) {
        lines.push((c, colour, 2));
    }
    if !findings.quality.reliable {
        lines.push(("RESULT UNRELIABLE".into(), RED, 2));
        for f in findings
            .quality
            .flags
            .iter()
            .filter(|f| f.severity == Severity::Critical)
        {
            for c in wrap(&f.text, cols(1)) {
                lines.push((c, RED, 1));
            }
        }
    }
    if !findings.levels_anchored && !findings.vertebrae.is_empty() {
        let why = "Levels are relative: no anchor (lowest ribs, sacrum) in view, or they disagree";
        for c in wrap(why, cols(1)) {
            lines.push((c, YELLOW, 1));
        }
    }
    let mut info = header.to_vec();
    info.push(view.to_string());
    info.push("Lines: anterior, middle, posterior height".into());
    for h in info {
        for c in wrap(&h, cols(1)) {
            lines.push((c, WHITE, 1));
        }
    }
    lines
}

const LEGEND: [([u8; 3], &str); 3] = [
    (GREEN, "Genant 0-1 (<25%)"),
    (YELLOW, "Genant 2 (25-40%)"),
    (RED, "Genant 3 (>=40%)"),
];

fn footer_height(lines: &[(String, [u8; 3], usize)]) -> usize {
    let text: usize = lines.iter().map(|l| font::line_height(l.2) + 4).sum();
    text + 18 * LEGEND.len() + 24
}

fn draw_footer(img: &mut RgbImage, top: usize, lines: &[(String, [u8; 3], usize)]) {
    let x = 10;
    let mut y = top as i64 + 10;
    for (t, c, s) in lines {
        img.text(x, y, *s, *c, t);
        y += font::line_height(*s) as i64 + 4;
    }
    for (c, t) in LEGEND {
        img.fill_rect(x, y, 24, 12, c);
        img.text(x + 32, y + 2, 1, WHITE, t);
        y += 18;
    }
}

/// The one-line conclusion burned into every image.
pub fn overlay_conclusion(findings: &Findings) -> String {
    let mut fx: Vec<&VertebraFinding> = findings
        .vertebrae
        .iter()
        .filter(|v| v.genant_grade >= 2)
        .collect();
    if fx.is_empty() {
        return "Target pathology not found".into();
    }
    fx.sort_by(|a, b| b.deformity.total_cmp(&a.deformity));
    let parts: Vec<String> = fx
        .iter()
        .map(|v| {
            format!(
                "{} {:.0}% G{}",
                v.level.as_deref().unwrap_or("?"),
                v.deformity * 100.0,
                v.genant_grade
            )
        })
        .collect();
    format!("Compression deformity: {}", parts.join(", "))
}

/// Greedy word wrap to `cols` characters.
fn wrap(text: &str, cols: usize) -> Vec<String> {
    let cols = cols.max(8);
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > cols {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Writes an RGB PNG (for docs and for eyeballing test output).
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    crate::preview::write_png_pixels(path, img.width, img.height, png::ColorType::Rgb, &img.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_follow_genant_grade() {
        assert_eq!(grade_colour(0), GREEN);
        assert_eq!(grade_colour(1), GREEN);
        assert_eq!(grade_colour(2), YELLOW);
        assert_eq!(grade_colour(3), RED);
    }

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("Compression deformity: L1 42% G3, T8 30% G2", 20);
        assert!(w.iter().all(|l| l.len() <= 20), "{w:?}");
        assert_eq!(w.join(" "), "Compression deformity: L1 42% G3, T8 30% G2");
    }
}
