//! Stacking decoded CT slices into one volume, with every geometric check a real scanner needs.
//!
//! The analysis measures vertebral heights in millimetres, so a wrongly stacked series (a
//! missing slice, two series mixed, a tilted gantry taken for an upright one) would give wrong
//! grades without any visible failure. [`assemble`] therefore either returns a volume whose
//! geometry is exactly what the slices say, or refuses with a message naming the problem.
//!
//! Decisions:
//! - Slices are ordered by ImagePositionPatient projected on the image-plane normal; instance
//!   numbers are only reported on. The slice spacing comes from the positions too
//!   (SpacingBetweenSlices is often missing or means something else per vendor).
//! - Two slices at the same position with identical pixels are one image received twice (the
//!   same SOP instance copied into two folders, possibly with its UID stripped): one is kept and
//!   a note says so. Same position with different pixels is refused: two acquisitions mixed.
//! - Axial means the image-plane normal lies within [`MAX_AXIAL_OBLIQUITY_DEG`] of the patient's
//!   feet-head axis; anything else (coronal or sagittal reformats, strong obliques) is refused
//!   because the analysis assumes axial slices.
//! - Gantry tilt (slices advance along the table, not along the plane normal) is corrected by
//!   shifting each slice in its own plane (bilinear, out-of-field filled with -1024 HU), which
//!   yields an orthogonal grid along the plane normal: the standard correction (as dcm2niix
//!   does). Tilts above [`MAX_GANTRY_TILT_DEG`] are refused.

use crate::volume::{cross, dot, norm};
use crate::{Error, Geometry, Result, Volume};
use serde::{Deserialize, Serialize};

/// Largest angle between the image-plane normal and the feet-head axis still called axial;
/// covers the gantry tilts scanners offer (up to 30 degrees).
pub const MAX_AXIAL_OBLIQUITY_DEG: f64 = 30.0;
/// Largest gantry tilt corrected; scanners do not tilt further.
pub const MAX_GANTRY_TILT_DEG: f64 = 30.0;
/// HU written where tilt correction shifts a slice past its field of view.
pub const OUTSIDE_FOV_HU: i16 = -1024;

/// One decoded slice with the attributes that place it in patient space.
#[derive(Clone, Debug)]
pub struct SliceInput {
    /// ImagePositionPatient: centre of the first transmitted pixel, LPS mm.
    pub position: [f64; 3],
    /// ImageOrientationPatient: row direction cosine, then column direction cosine.
    pub orientation: [f64; 6],
    /// PixelSpacing in DICOM order: row spacing (between rows), column spacing (between columns).
    pub pixel_spacing: [f64; 2],
    pub rows: usize,
    pub cols: usize,
    /// HU, row by row.
    pub hu: Vec<i16>,
    pub instance_number: Option<i32>,
    pub slice_thickness: Option<f64>,
    /// Where the slice came from (a file path), for messages.
    pub source: String,
}

/// How the slices were stacked and what was noticed on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesLayout {
    pub n_slices: usize,
    /// Distance between consecutive slices along the plane normal, mm.
    pub slice_spacing_mm: f64,
    /// Nominal SliceThickness (median over slices), mm; `None` when no slice states it.
    pub slice_thickness_mm: Option<f64>,
    /// Positions of the first and last slice projected on the plane normal, mm.
    pub first_position_mm: f64,
    pub last_position_mm: f64,
    /// Gantry tilt found in the positions, degrees (0 for an ordinary axial series).
    pub gantry_tilt_deg: f64,
    /// True when the slices were shifted to correct gantry tilt.
    pub tilt_corrected: bool,
    /// For each volume slice k, the index of the input slice it came from.
    pub input_index: Vec<usize>,
    /// Observations a reader of the report should know (overlap, instance order, dropped copies).
    pub notes: Vec<String>,
}

/// Sorts, checks and stacks slices into a volume; see the module docs for what is refused.
pub fn assemble(slices: Vec<SliceInput>) -> Result<(Volume, SeriesLayout)> {
    let n_in = slices.len();
    if n_in < 2 {
        return Err(Error::Series(format!(
            "a volume needs at least 2 slices, got {n_in}"
        )));
    }
    let first = &slices[0];
    check_slice(first)?;
    for s in &slices[1..] {
        check_slice(s)?;
    }
    check_consistent(&slices)?;

    let (row_dir, col_dir) = unit_orientation(&first.orientation, &first.source)?;
    let normal = cross(row_dir, col_dir);
    let obliquity = normal[2].abs().clamp(0.0, 1.0).acos().to_degrees();
    if obliquity > MAX_AXIAL_OBLIQUITY_DEG {
        return Err(Error::Series(format!(
            "{} slices (image orientation {:?}, plane normal {:.0} degrees from the feet-head \
             axis): only axial series can be analysed, the analysis assumes axial slices",
            plane_name(normal),
            first.orientation,
            obliquity
        )));
    }
    let mut notes = Vec::new();

    // Order along the plane normal.
    let mut order: Vec<(f64, usize)> = slices
        .iter()
        .enumerate()
        .map(|(i, s)| (dot(s.position, normal), i))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Same position twice: drop exact copies, refuse different images.
    let mut kept: Vec<(f64, usize)> = Vec::with_capacity(order.len());
    let mut dropped = Vec::new();
    for &(d, i) in &order {
        if let Some(&(d_prev, p)) = kept.last() {
            if (d - d_prev).abs() < DUPLICATE_TOL_MM {
                let (a, b) = (&slices[p], &slices[i]);
                let same_place = norm(sub(a.position, b.position)) < DUPLICATE_TOL_MM;
                if same_place && a.hu == b.hu {
                    dropped.push((b.source.clone(), a.source.clone()));
                    continue;
                }
                return Err(Error::Series(format!(
                    "duplicate slice position {d:.2} mm with different images: {} and {} \
                     (two acquisitions or series mixed together?)",
                    a.source, b.source
                )));
            }
        }
        kept.push((d, i));
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "dropped {} identical duplicate slice(s) (same position and pixels), e.g. {} = {}",
            dropped.len(),
            dropped[0].0,
            dropped[0].1
        ));
    }
    let n = kept.len();
    if n < 2 {
        return Err(Error::Series(format!(
            "all {n_in} slices are copies of one image at {:.2} mm",
            kept[0].0
        )));
    }

    let spacing = check_spacing(&kept, &slices)?;
    let d0 = kept[0].0;
    let d_last = kept[n - 1].0;

    // Slice direction from the positions themselves; differs from the normal under gantry tilt.
    let p0 = slices[kept[0].1].position;
    let p_last = slices[kept[n - 1].1].position;
    let step = sub(p_last, p0).map(|c| c / (n - 1) as f64);
    let pixel = [first.pixel_spacing[1], first.pixel_spacing[0]];
    let line_tol = LINE_TOL_MM.max(0.1 * pixel[0].min(pixel[1]));
    for (k, &(_, i)) in kept.iter().enumerate() {
        let expect = add(p0, step.map(|c| c * k as f64));
        let off = norm(sub(slices[i].position, expect));
        if off > line_tol {
            return Err(Error::Series(format!(
                "slice positions do not lie on one line: {} is {off:.2} mm away from where the \
                 others put it (table shift or different fields of view mixed?)",
                slices[i].source
            )));
        }
    }
    let along = dot(step, normal);
    let tangential = sub(step, normal.map(|c| c * along));
    let tilt_deg = norm(tangential).atan2(along).to_degrees();
    if tilt_deg > MAX_GANTRY_TILT_DEG {
        return Err(Error::Series(format!(
            "slices advance {tilt_deg:.1} degrees away from the plane normal; gantry tilts above \
             {MAX_GANTRY_TILT_DEG} degrees are not corrected"
        )));
    }
    // Per-slice in-plane shift in voxels (i along rows' direction, j along columns').
    let shift = [
        dot(tangential, row_dir) / pixel[0],
        dot(tangential, col_dir) / pixel[1],
    ];
    let max_shift = shift[0].hypot(shift[1]) * (n - 1) as f64;
    let tilt_corrected = max_shift > NEGLIGIBLE_SHIFT_VOXELS;
    if tilt_corrected {
        notes.push(format!(
            "gantry tilt {tilt_deg:.2} degrees corrected: slices shifted in-plane by up to \
             {max_shift:.1} voxels (bilinear) onto a grid orthogonal to the image plane; \
             voxels shifted in from outside the field of view are {OUTSIDE_FOV_HU} HU"
        ));
    } else if tilt_deg > 1e-3 {
        notes.push(format!(
            "gantry tilt {tilt_deg:.3} degrees ignored: it moves the last slice by only \
             {max_shift:.3} voxels"
        ));
    }
    if obliquity > 0.5 {
        notes.push(format!(
            "image plane is {obliquity:.1} degrees oblique to true axial"
        ));
    }

    // Thickness and overlap.
    let mut thick: Vec<f64> = kept
        .iter()
        .filter_map(|&(_, i)| slices[i].slice_thickness)
        .filter(|t| t.is_finite() && *t > 0.0)
        .collect();
    thick.sort_by(f64::total_cmp);
    let slice_thickness_mm = (!thick.is_empty()).then(|| thick[thick.len() / 2]);
    if let (Some(lo), Some(hi)) = (thick.first(), thick.last()) {
        if hi - lo > 0.01 {
            notes.push(format!("slice thickness varies: {lo} .. {hi} mm"));
        }
    }
    match slice_thickness_mm {
        None => notes.push("SliceThickness missing; slice spacing used instead".into()),
        Some(t) if t > spacing * 1.01 => notes.push(format!(
            "slices overlap: {} mm spacing, {} mm thickness",
            round3(spacing),
            round3(t)
        )),
        Some(t) if t < spacing * 0.99 => notes.push(format!(
            "slices leave gaps: {} mm spacing, {} mm thickness",
            round3(spacing),
            round3(t)
        )),
        _ => {}
    }
    if let Some(note) = instance_order_note(&kept, &slices) {
        notes.push(note);
    }

    let input_index: Vec<usize> = kept.iter().map(|&(_, i)| i).collect();
    let geometry = Geometry {
        dims: [first.cols, first.rows, n],
        origin: p0,
        spacing: [pixel[0], pixel[1], spacing],
        axes: [row_dir, col_dir, normal],
    };
    let (cols, rows) = (first.cols, first.rows);
    let plane = rows * cols;
    let mut slices: Vec<Option<SliceInput>> = slices.into_iter().map(Some).collect();
    let mut hu = Vec::with_capacity(plane * n);
    for (k, &i) in input_index.iter().enumerate() {
        let s = slices[i].take().ok_or_else(|| {
            Error::Series(format!("slice {i} used twice (internal ordering error)"))
        })?;
        if tilt_corrected {
            let di = -shift[0] * k as f64;
            let dj = -shift[1] * k as f64;
            hu.extend(shift_slice(&s.hu, cols, rows, di, dj));
        } else {
            hu.extend_from_slice(&s.hu);
        }
    }
    let volume = Volume::new(geometry, hu)?;
    let layout = SeriesLayout {
        n_slices: n,
        slice_spacing_mm: spacing,
        slice_thickness_mm,
        first_position_mm: d0,
        last_position_mm: d_last,
        gantry_tilt_deg: tilt_deg,
        tilt_corrected,
        input_index,
        notes,
    };
    Ok((volume, layout))
}

/// Positions closer than this along the normal are the same slice position.
const DUPLICATE_TOL_MM: f64 = 0.01;
/// Floor of the tolerance for positions off the line of the stack (DS rounding in headers).
const LINE_TOL_MM: f64 = 0.05;
/// Tilt shifts smaller than this over the whole stack are left uncorrected.
const NEGLIGIBLE_SHIFT_VOXELS: f64 = 0.05;

/// Tolerance on one step between slices: header rounding, not scanner variation.
fn step_tol(spacing: f64) -> f64 {
    (0.02 * spacing).max(0.005)
}

fn check_slice(s: &SliceInput) -> Result<()> {
    if s.rows == 0 || s.cols == 0 {
        return Err(Error::Series(format!(
            "{}: empty image {}x{}",
            s.source, s.cols, s.rows
        )));
    }
    if s.hu.len() != s.rows * s.cols {
        return Err(Error::Series(format!(
            "{}: {} pixels decoded for a {}x{} image",
            s.source,
            s.hu.len(),
            s.cols,
            s.rows
        )));
    }
    if !s.pixel_spacing.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(Error::Series(format!(
            "{}: invalid PixelSpacing {:?}",
            s.source, s.pixel_spacing
        )));
    }
    if !s
        .position
        .iter()
        .chain(&s.orientation)
        .all(|v| v.is_finite())
    {
        return Err(Error::Series(format!(
            "{}: non-numeric ImagePositionPatient or ImageOrientationPatient",
            s.source
        )));
    }
    unit_orientation(&s.orientation, &s.source).map(|_| ())
}

/// Row and column direction cosines, normalised; refuses ones that are not (near) orthonormal.
fn unit_orientation(o: &[f64; 6], source: &str) -> Result<([f64; 3], [f64; 3])> {
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    let (nr, nc) = (norm(r), norm(c));
    if (nr - 1.0).abs() > 0.01 || (nc - 1.0).abs() > 0.01 || dot(r, c).abs() > 0.01 {
        return Err(Error::Series(format!(
            "{source}: ImageOrientationPatient {o:?} is not two orthogonal unit vectors"
        )));
    }
    let r = r.map(|v| v / nr);
    // Gram-Schmidt removes the rounding of 6-digit cosines so the grid axes are exactly orthogonal.
    let c = sub(c, r.map(|v| v * dot(r, c)));
    let l = norm(c);
    Ok((r, c.map(|v| v / l)))
}

/// All slices must share size, pixel spacing and orientation; lists what differs.
fn check_consistent(slices: &[SliceInput]) -> Result<()> {
    fn groups<K: PartialEq + Clone>(
        slices: &[SliceInput],
        key: impl Fn(&SliceInput) -> K,
    ) -> Vec<(K, usize, String)> {
        let mut g: Vec<(K, usize, String)> = Vec::new();
        for s in slices {
            let k = key(s);
            match g.iter_mut().find(|(gk, _, _)| *gk == k) {
                Some(e) => e.1 += 1,
                None => g.push((k, 1, s.source.clone())),
            }
        }
        g
    }
    fn describe<K>(g: &[(K, usize, String)], show: impl Fn(&K) -> String) -> String {
        g.iter()
            .map(|(k, n, src)| format!("{} ({n} slice(s), e.g. {src})", show(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let size = groups(slices, |s| (s.cols, s.rows));
    if size.len() > 1 {
        return Err(Error::Series(format!(
            "slices differ in size (columns x rows): {}",
            describe(&size, |(c, r)| format!("{c}x{r}"))
        )));
    }
    // Spacing and orientation compare within header rounding.
    let q = |v: f64, step: f64| (v / step).round() as i64;
    let spacing = groups(slices, |s| s.pixel_spacing.map(|v| q(v, 1e-4)));
    if spacing.len() > 1 {
        return Err(Error::Series(format!(
            "slices differ in PixelSpacing: {}",
            describe(&spacing, |k| format!("{:?} mm", k.map(|v| v as f64 * 1e-4)))
        )));
    }
    let first = slices[0].orientation;
    if let Some(odd) = slices.iter().find(|s| {
        s.orientation
            .iter()
            .zip(first.iter())
            .any(|(a, b)| (a - b).abs() > 1e-3)
    }) {
        let orient = groups(slices, |s| s.orientation.map(|v| q(v, 1e-3)));
        return Err(Error::Series(format!(
            "slices differ in ImageOrientationPatient (e.g. {} has {:?}, {} has {:?}): {} groups",
            slices[0].source,
            first,
            odd.source,
            odd.orientation,
            orient.len().max(2)
        )));
    }
    Ok(())
}

/// Verifies equal steps between sorted positions; names gaps and irregular steps.
fn check_spacing(kept: &[(f64, usize)], slices: &[SliceInput]) -> Result<f64> {
    let steps: Vec<f64> = kept.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let tol = step_tol(median);
    let mut problems = Vec::new();
    for (k, &st) in steps.iter().enumerate() {
        if (st - median).abs() <= tol {
            continue;
        }
        let (a, b) = (kept[k].0, kept[k + 1].0);
        let m = (st / median).round();
        if m >= 2.0 && (st - m * median).abs() <= tol * m {
            problems.push(format!(
                "{} missing slice(s) between {a:.2} and {b:.2} mm ({} .. {})",
                m as usize - 1,
                slices[kept[k].1].source,
                slices[kept[k + 1].1].source
            ));
        } else {
            problems.push(format!(
                "step of {st:.3} mm between {a:.2} and {b:.2} mm ({} .. {})",
                slices[kept[k].1].source,
                slices[kept[k + 1].1].source
            ));
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(5);
        return Err(Error::Series(format!(
            "slice spacing is not regular (usual step {median:.3} mm); {total} problem(s): {}",
            problems.join("; ")
        )));
    }
    let n = kept.len();
    // Averaged over the stack; rounding to 1e-9 mm strips float noise (5.000000000000001).
    let spacing = ((kept[n - 1].0 - kept[0].0) / (n - 1) as f64 * 1e9).round() / 1e9;
    // Small steps within tolerance could still add up to a drift; the grid must hold everywhere.
    for (k, &(d, i)) in kept.iter().enumerate() {
        let off = d - (kept[0].0 + k as f64 * spacing);
        if off.abs() > tol.max(0.1 * spacing) {
            return Err(Error::Series(format!(
                "slice positions drift from a regular grid: {} is {off:.3} mm off",
                slices[i].source
            )));
        }
    }
    Ok(spacing)
}

fn instance_order_note(kept: &[(f64, usize)], slices: &[SliceInput]) -> Option<String> {
    let nums: Vec<i32> = kept
        .iter()
        .filter_map(|&(_, i)| slices[i].instance_number)
        .collect();
    if nums.len() < kept.len() {
        return Some(format!(
            "{} of {} slices have no InstanceNumber",
            kept.len() - nums.len(),
            kept.len()
        ));
    }
    let up = nums.windows(2).all(|w| w[1] > w[0]);
    let down = nums.windows(2).all(|w| w[1] < w[0]);
    if up {
        None
    } else if down {
        Some("instance numbers run against position (they decrease as the position along the normal increases)".into())
    } else {
        Some("instance numbers are not in position order; slices were ordered by position".into())
    }
}

/// Resamples a slice at (i + di, j + dj) bilinearly; outside the image gives [`OUTSIDE_FOV_HU`].
fn shift_slice(src: &[i16], cols: usize, rows: usize, di: f64, dj: f64) -> Vec<i16> {
    let mut out = vec![OUTSIDE_FOV_HU; cols * rows];
    let sample = |x: f64, y: f64| -> Option<f64> {
        let max_x = (cols - 1) as f64;
        let max_y = (rows - 1) as f64;
        if !(x >= -1e-9 && x <= max_x + 1e-9 && y >= -1e-9 && y <= max_y + 1e-9) {
            return None;
        }
        let (x, y) = (x.clamp(0.0, max_x), y.clamp(0.0, max_y));
        let x0 = (x.floor() as usize).min(cols.saturating_sub(2));
        let y0 = (y.floor() as usize).min(rows.saturating_sub(2));
        let (fx, fy) = (
            if cols == 1 { 0.0 } else { x - x0 as f64 },
            if rows == 1 { 0.0 } else { y - y0 as f64 },
        );
        let x1 = (x0 + 1).min(cols - 1);
        let y1 = (y0 + 1).min(rows - 1);
        let v = |xx: usize, yy: usize| f64::from(src[yy * cols + xx]);
        Some(
            (1.0 - fy) * ((1.0 - fx) * v(x0, y0) + fx * v(x1, y0))
                + fy * ((1.0 - fx) * v(x0, y1) + fx * v(x1, y1)),
        )
    };
    for j in 0..rows {
        for i in 0..cols {
            if let Some(v) = sample(i as f64 + di, j as f64 + dj) {
                out[j * cols + i] = v.round().clamp(-32768.0, 32767.0) as i16;
            }
        }
    }
    out
}

/// Names the anatomical plane an image-plane normal belongs to, for refusals.
fn plane_name(normal: [f64; 3]) -> &'static str {
    let a = normal.map(f64::abs);
    if a[2] >= a[0] && a[2] >= a[1] {
        "oblique axial"
    } else if a[1] >= a[0] {
        if a[1] > 0.97 {
            "coronal"
        } else {
            "oblique coronal"
        }
    } else if a[0] > 0.97 {
        "sagittal"
    } else {
        "oblique sagittal"
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    /// Slice k of a 4x3 series at z = z0 + k*dz; pixel values encode (k, i, j).
    fn slice(k: usize, z: f64) -> SliceInput {
        SliceInput {
            position: [-10.0, 20.0, z],
            orientation: AXIAL,
            pixel_spacing: [0.5, 0.75],
            rows: 3,
            cols: 4,
            hu: (0..12).map(|p| (k * 100 + p) as i16).collect(),
            instance_number: Some(k as i32 + 1),
            slice_thickness: Some(2.0),
            source: format!("s{k}"),
        }
    }

    fn series(n: usize, dz: f64) -> Vec<SliceInput> {
        (0..n).map(|k| slice(k, -100.0 + k as f64 * dz)).collect()
    }

    fn err(slices: Vec<SliceInput>) -> String {
        match assemble(slices) {
            Err(Error::Series(m)) => m,
            Err(e) => panic!("wrong error kind: {e}"),
            Ok(_) => panic!("malformed series was accepted"),
        }
    }

    #[test]
    fn series_sorted_by_position_not_instance_number() {
        let mut s = series(5, 2.0);
        s.reverse();
        // Instance numbers now follow file order, i.e. run against position after sorting.
        for (n, sl) in s.iter_mut().enumerate() {
            sl.instance_number = Some(n as i32 + 1);
        }
        let (v, layout) = assemble(s).unwrap();
        let g = &v.geometry;
        assert_eq!(g.dims, [4, 3, 5]);
        assert_eq!(g.origin, [-10.0, 20.0, -100.0]);
        assert_eq!(g.spacing, [0.75, 0.5, 2.0]);
        assert_eq!(g.axes, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        for k in 0..5 {
            assert_eq!(v.get(1, 2, k), Some((k * 100 + 2 * 4 + 1) as i16));
        }
        assert_eq!(layout.input_index, vec![4, 3, 2, 1, 0]);
        assert_eq!(layout.slice_spacing_mm, 2.0);
        assert!(
            layout
                .notes
                .iter()
                .any(|n| n.contains("run against position")),
            "{:?}",
            layout.notes
        );
        assert!(!layout.tilt_corrected);
    }

    #[test]
    fn overlap_and_missing_thickness_are_reported() {
        let mut s = series(4, 2.0);
        for sl in &mut s {
            sl.slice_thickness = Some(3.0);
        }
        let (_, layout) = assemble(s).unwrap();
        assert_eq!(layout.slice_thickness_mm, Some(3.0));
        assert!(
            layout
                .notes
                .contains(&"slices overlap: 2 mm spacing, 3 mm thickness".to_string()),
            "{:?}",
            layout.notes
        );
        let mut s = series(4, 2.0);
        for sl in &mut s {
            sl.slice_thickness = None;
            sl.instance_number = None;
        }
        let (_, layout) = assemble(s).unwrap();
        assert_eq!(layout.slice_thickness_mm, None);
        assert!(layout
            .notes
            .iter()
            .any(|n| n.contains("SliceThickness missing")));
        assert!(layout.notes.iter().any(|n| n.contains("no InstanceNumber")));
    }

    #[test]
    fn feet_first_orientation_sorts_along_the_normal() {
        // Row direction flipped: normal points to -z, so slices are ordered by decreasing z.
        let mut s = series(3, 2.0);
        for sl in &mut s {
            sl.orientation = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        }
        let (v, layout) = assemble(s).unwrap();
        assert_eq!(v.geometry.axes[2], [0.0, 0.0, -1.0]);
        assert_eq!(v.geometry.origin[2], -96.0);
        assert_eq!(v.geometry.voxel_to_patient([0.0, 0.0, 2.0])[2], -100.0);
        assert_eq!(layout.input_index, vec![2, 1, 0]);
    }

    #[test]
    fn refuses_a_gap_and_names_it() {
        let mut s = series(6, 2.0);
        s.remove(3);
        let m = err(s);
        assert!(
            m.contains("1 missing slice(s) between -96.00 and -92.00 mm"),
            "{m}"
        );
        assert!(m.contains("s2") && m.contains("s4"), "{m}");
    }

    #[test]
    fn refuses_irregular_steps_and_drift() {
        let mut s = series(6, 2.0);
        s[3].position[2] += 0.7;
        assert!(err(s).contains("not regular"));
        // Each step within header rounding, but together they bend the stack by 0.22 mm.
        let mut z = -100.0;
        let s: Vec<SliceInput> = (0..30)
            .map(|k| {
                let sl = slice(k, z);
                z += if k < 15 { 2.03 } else { 2.0 };
                sl
            })
            .collect();
        let m = err(s);
        assert!(m.contains("drift"), "{m}");
    }

    #[test]
    fn identical_duplicates_are_dropped_different_ones_refused() {
        let mut s = series(4, 2.0);
        let mut copy = s[2].clone();
        copy.source = "copy".into();
        s.push(copy);
        let (v, layout) = assemble(s).unwrap();
        assert_eq!(v.geometry.dims[2], 4);
        assert!(layout
            .notes
            .iter()
            .any(|n| n.contains("identical duplicate")));

        let mut s = series(4, 2.0);
        let mut other = s[2].clone();
        other.hu[0] += 1;
        other.source = "other".into();
        s.push(other);
        let m = err(s);
        assert!(m.contains("duplicate slice position -96.00 mm"), "{m}");
        assert!(m.contains("other"), "{m}");
    }

    #[test]
    fn refuses_inconsistent_size_spacing_orientation() {
        let mut s = series(4, 2.0);
        s[1].rows = 2;
        s[1].hu.truncate(8);
        let m = err(s);
        assert!(
            m.contains("differ in size") && m.contains("4x2") && m.contains("s1"),
            "{m}"
        );

        let mut s = series(4, 2.0);
        s[2].pixel_spacing = [0.5, 0.8];
        assert!(err(s).contains("PixelSpacing"));

        let mut s = series(4, 2.0);
        let (c, sn) = (10f64.to_radians().cos(), 10f64.to_radians().sin());
        s[3].orientation = [c, sn, 0.0, -sn, c, 0.0];
        let m = err(s);
        assert!(
            m.contains("ImageOrientationPatient") && m.contains("s3"),
            "{m}"
        );
    }

    #[test]
    fn refuses_pixel_count_mismatch_and_bad_orientation() {
        let mut s = series(3, 2.0);
        s[0].hu.pop();
        assert!(err(s).contains("11 pixels decoded"));
        let mut s = series(3, 2.0);
        for sl in &mut s {
            sl.orientation = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        }
        assert!(err(s).contains("not two orthogonal unit vectors"));
        assert!(err(series(1, 2.0)).contains("at least 2 slices"));
    }

    #[test]
    fn refuses_non_axial() {
        let mut s = series(3, 2.0);
        for (k, sl) in s.iter_mut().enumerate() {
            sl.orientation = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0];
            sl.position = [-10.0, -50.0 + 2.0 * k as f64, 30.0];
        }
        let m = err(s);
        assert!(m.contains("coronal") && m.contains("only axial"), "{m}");
    }

    #[test]
    fn refuses_positions_off_the_line() {
        let mut s = series(5, 2.0);
        s[2].position[0] += 3.0;
        let m = err(s);
        assert!(
            m.contains("do not lie on one line") && m.contains("s2"),
            "{m}"
        );
    }

    /// Gantry tilt: the image plane is tilted about the x axis, slices advance along the table (z).
    #[test]
    fn gantry_tilt_is_corrected_onto_an_orthogonal_grid() {
        let t = 15f64.to_radians();
        let (rows, cols) = (40usize, 8usize);
        let dz = 2.0;
        let py = 0.5;
        // A structure fixed in patient space: HU = 10 * y_mm, which the tilt smears across rows.
        let field = |p: [f64; 3]| 10.0 * p[1];
        let orientation = [1.0, 0.0, 0.0, 0.0, t.cos(), t.sin()];
        let s: Vec<SliceInput> = (0..5)
            .map(|k| {
                let pos = [0.0, -10.0, k as f64 * dz];
                let mut hu = Vec::new();
                for j in 0..rows {
                    for _i in 0..cols {
                        let p = [
                            pos[0],
                            pos[1] + j as f64 * py * t.cos(),
                            pos[2] + j as f64 * py * t.sin(),
                        ];
                        hu.push(field(p).round() as i16);
                    }
                }
                SliceInput {
                    position: pos,
                    orientation,
                    pixel_spacing: [py, 1.0],
                    rows,
                    cols,
                    hu,
                    instance_number: Some(k),
                    slice_thickness: Some(dz),
                    source: format!("t{k}"),
                }
            })
            .collect();
        let (v, layout) = assemble(s).unwrap();
        assert!(
            (layout.gantry_tilt_deg - 15.0).abs() < 1e-9,
            "{}",
            layout.gantry_tilt_deg
        );
        assert!(layout.tilt_corrected);
        let g = &v.geometry;
        assert!(g.tilt_deg() < 1e-9);
        assert!((g.spacing[2] - dz * t.cos()).abs() < 1e-9);
        // Every voxel the correction filled from inside the field sits where the field says.
        let mut checked = 0;
        for k in 0..5 {
            for j in 0..rows {
                let val = v.get(3, j, k).unwrap();
                if val == OUTSIDE_FOV_HU {
                    continue;
                }
                let p = g.voxel_to_patient([3.0, j as f64, k as f64]);
                assert!(
                    (f64::from(val) - field(p)).abs() <= 1.0,
                    "k{k} j{j}: {val} vs {}",
                    field(p)
                );
                checked += 1;
            }
        }
        assert!(checked > 150, "{checked}");
        assert!(layout
            .notes
            .iter()
            .any(|n| n.contains("gantry tilt 15.00 degrees corrected")));
    }

    #[test]
    fn refuses_extreme_tilt() {
        let mut s = series(4, 2.0);
        for (k, sl) in s.iter_mut().enumerate() {
            sl.position[1] += 4.0 * k as f64;
        }
        let m = err(s);
        assert!(m.contains("gantry tilts above"), "{m}");
    }
}
