//! Coverage and acquisition: enough vertebral bodies, thin enough slices, the column inside the
//! field of view, gantry tilt.
//!
//! Thresholds: fewer than 4 bodies cannot show a height loss against neighbours (a 20-slice
//! 2 mm stack like `totalseg-j2k-20`, 40 mm of z, gets this flag, correctly). Slices thicker
//! than 3 mm are flagged (a 3 mm reconstruction such as `totalseg-abdomen-3mm` is not); 5 mm and
//! more is Critical because the endplate is then uncertain by half a slice, the size of a
//! grade-1 height loss. The effective thickness is the larger of thickness and spacing (gaps
//! between slices lose endplates the same way).

use super::{flag, r1, QualityOptions};
use crate::analysis::ScanInfo;
use crate::findings::{QualityFlag, Severity, VertebraFinding};
use crate::spine::Centreline;
use crate::volume::Volume;
use serde_json::json;

/// Smallest distance (mm) from the in-plane image border to any body centre.
pub fn fov_margin_mm(volume: &Volume, points: &[[f64; 3]]) -> Option<f64> {
    let g = &volume.geometry;
    points
        .iter()
        .map(|&p| {
            let v = g.patient_to_voxel(p);
            let dx = v[0].min(g.dims[0] as f64 - 1.0 - v[0]) * g.spacing[0];
            let dy = v[1].min(g.dims[1] as f64 - 1.0 - v[1]) * g.spacing[1];
            dx.min(dy)
        })
        .min_by(f64::total_cmp)
}

/// Coverage, slice thickness, field-of-view truncation and gantry tilt flags.
pub fn check(
    volume: &Volume,
    scan: &ScanInfo,
    centreline: Option<&Centreline>,
    vertebrae: &[VertebraFinding],
    opts: &QualityOptions,
) -> Vec<QualityFlag> {
    let mut out = Vec::new();
    let g = &volume.geometry;
    let z_extent = g.extent_mm()[2];
    if vertebrae.len() < opts.min_vertebrae {
        out.push(flag(
            "coverage",
            Severity::Critical,
            vec![
                ("vertebrae", json!(vertebrae.len())),
                ("min_vertebrae", json!(opts.min_vertebrae)),
                ("slice_extent_mm", r1(z_extent)),
            ],
            if vertebrae.is_empty() {
                format!(
                    "No vertebral body found in {z_extent:.0} mm of scan: no fracture assessment."
                )
            } else {
                format!(
                    "Only {} vertebral bodies in view ({z_extent:.0} mm of scan): too few to \
                     compare heights, no reliable fracture assessment.",
                    vertebrae.len()
                )
            },
        ));
    }
    let spacing = if scan.slice_spacing_mm > 0.0 {
        scan.slice_spacing_mm
    } else {
        g.spacing[2]
    };
    let thickness = scan.slice_thickness_mm.unwrap_or(spacing);
    let effective = thickness.max(spacing);
    // 1e-3 mm of slack: a stated 3.0 mm must not be flagged by a rounding of positions.
    if effective > opts.max_slice_thickness_mm + 1e-3 {
        let critical = effective >= opts.critical_slice_thickness_mm - 1e-3;
        out.push(flag(
            "thick_slices",
            if critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            vec![
                ("slice_thickness_mm", r1(thickness)),
                ("slice_spacing_mm", r1(spacing)),
                ("max_mm", r1(opts.max_slice_thickness_mm)),
            ],
            format!(
                "Slices of {effective:.1} mm are thicker than {:.0} mm: endplates are blurred, \
                 {}; reconstruct thin slices (<= {:.0} mm).",
                opts.max_slice_thickness_mm,
                if critical {
                    "mild fractures cannot be graded"
                } else {
                    "mild fractures may be missed"
                },
                opts.max_slice_thickness_mm
            ),
        ));
    }
    let mut centres: Vec<[f64; 3]> = vertebrae.iter().map(|v| v.center_mm).collect();
    if let Some(l) = centreline {
        centres.extend(l.points_mm.iter().copied());
    }
    if let Some(m) = fov_margin_mm(volume, &centres) {
        if m < opts.fov_margin_mm {
            out.push(flag(
                "truncated",
                Severity::Critical,
                vec![
                    ("margin_mm", r1(m)),
                    ("min_margin_mm", r1(opts.fov_margin_mm)),
                ],
                format!(
                    "The spine reaches to {m:.0} mm of the image border: vertebral bodies are \
                     cut by the field of view; reconstruct with a larger or re-centred field."
                ),
            ));
        }
    }
    let tilt = scan.gantry_tilt_deg.abs().max(g.tilt_deg());
    if tilt > opts.gantry_tilt_flag_deg {
        out.push(flag(
            "gantry_tilt",
            Severity::Info,
            vec![("tilt_deg", r1(tilt))],
            format!("Gantry tilt of {tilt:.1} degrees (corrected in the reformat)."),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn scan(t: f64) -> ScanInfo {
        ScanInfo {
            slice_thickness_mm: Some(t),
            slice_spacing_mm: t,
            gantry_tilt_deg: 0.0,
            recon_center_mm: None,
        }
    }

    #[test]
    fn thresholds_of_thickness_truncation_and_tilt() {
        let g = Geometry::axial([100, 100, 10], [0.0; 3], [2.0, 2.0, 3.0]);
        let v = Volume::filled(g, 0).unwrap();
        let o = QualityOptions::default();
        let kinds = |f: &[QualityFlag]| f.iter().map(|x| x.kind.clone()).collect::<Vec<_>>();
        // No vertebrae: only coverage; 3 mm is not thick.
        assert_eq!(kinds(&check(&v, &scan(3.0), None, &[], &o)), ["coverage"]);
        let f = check(&v, &scan(4.0), None, &[], &o);
        assert_eq!(f[1].kind, "thick_slices");
        assert_eq!(f[1].severity, Severity::Warning);
        let f = check(&v, &scan(5.0), None, &[], &o);
        assert_eq!(f[1].severity, Severity::Critical);
        // A centreline 10 mm from the left border is cut off; one in the middle is not.
        let line = |x: f64| Centreline {
            points_mm: vec![[x, 100.0, 3.0], [x, 100.0, 9.0]],
            score: vec![1.0, 1.0],
        };
        let f = check(&v, &scan(3.0), Some(&line(10.0)), &[], &o);
        assert!(f.iter().any(|x| x.kind == "truncated"));
        let f = check(&v, &scan(3.0), Some(&line(100.0)), &[], &o);
        assert!(!f.iter().any(|x| x.kind == "truncated"));
        let mut s = scan(3.0);
        s.gantry_tilt_deg = 12.0;
        let f = check(&v, &s, None, &[], &o);
        assert!(f
            .iter()
            .any(|x| x.kind == "gantry_tilt" && x.severity == Severity::Info));
    }
}
