//! CT volume: HU voxels on a grid placed in DICOM patient space (LPS, mm).

use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Placement of a voxel grid in patient space.
///
/// Voxel `(i, j, k)` (column, row, slice) has its centre at
/// `origin + i*spacing[0]*axes[0] + j*spacing[1]*axes[1] + k*spacing[2]*axes[2]`.
/// `axes[0]` is DICOM's row direction cosine, `axes[1]` the column direction cosine and
/// `axes[2]` the direction in which slices advance (not necessarily orthogonal: gantry tilt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Voxel counts along i (columns), j (rows), k (slices).
    pub dims: [usize; 3],
    /// Centre of voxel (0, 0, 0) in LPS mm.
    pub origin: [f64; 3],
    /// Distance between voxel centres along i, j, k in mm.
    pub spacing: [f64; 3],
    /// Unit vectors of the i, j, k axes in LPS.
    pub axes: [[f64; 3]; 3],
}

impl Geometry {
    /// An axis-aligned grid (identity orientation), as an axial CT in HFS position has.
    pub fn axial(dims: [usize; 3], origin: [f64; 3], spacing: [f64; 3]) -> Self {
        Self {
            dims,
            origin,
            spacing,
            axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    /// Checks what every consumer assumes: positive sizes and spacings, unit, independent axes.
    pub fn validate(&self) -> Result<()> {
        if self.dims.contains(&0) {
            return Err(Error::Geometry(format!("empty grid {:?}", self.dims)));
        }
        if self.spacing.iter().any(|&s| !(s.is_finite() && s > 1e-6)) {
            return Err(Error::Geometry(format!(
                "spacing must be positive, got {:?}",
                self.spacing
            )));
        }
        for a in &self.axes {
            let n = norm(*a);
            if (n - 1.0).abs() > 1e-3 {
                return Err(Error::Geometry(format!("axis {a:?} is not a unit vector")));
            }
        }
        if det3(self.matrix()).abs() < 1e-9 {
            return Err(Error::Geometry("axes are linearly dependent".into()));
        }
        Ok(())
    }

    /// Total number of voxels.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// True when the grid holds no voxel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Linear index of voxel (i, j, k); slices are outermost, columns innermost.
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (k * self.dims[1] + j) * self.dims[0] + i
    }

    /// Column-major matrix whose columns are the scaled axes (voxel -> offset in mm).
    fn matrix(&self) -> [[f64; 3]; 3] {
        let mut m = [[0.0; 3]; 3];
        for (c, axis) in self.axes.iter().enumerate() {
            for r in 0..3 {
                m[r][c] = axis[r] * self.spacing[c];
            }
        }
        m
    }

    /// Continuous voxel index -> LPS mm.
    pub fn voxel_to_patient(&self, ijk: [f64; 3]) -> [f64; 3] {
        let m = self.matrix();
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            *pr += m[r][0] * ijk[0] + m[r][1] * ijk[1] + m[r][2] * ijk[2];
        }
        p
    }

    /// LPS mm -> continuous voxel index (exact inverse of [`Self::voxel_to_patient`]).
    pub fn patient_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let inv = inv3(self.matrix());
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let mut v = [0.0; 3];
        for (r, vr) in v.iter_mut().enumerate() {
            *vr = inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2];
        }
        v
    }

    /// Extent of the grid along each axis in mm (centre of first to centre of last voxel).
    pub fn extent_mm(&self) -> [f64; 3] {
        [0, 1, 2].map(|a| (self.dims[a].saturating_sub(1)) as f64 * self.spacing[a])
    }

    /// Angle in degrees between the slice direction and the slice plane's normal (gantry tilt).
    pub fn tilt_deg(&self) -> f64 {
        let n = cross(self.axes[0], self.axes[1]);
        let c = dot(n, self.axes[2]).abs() / (norm(n) * norm(self.axes[2]));
        c.clamp(-1.0, 1.0).acos().to_degrees()
    }
}

/// A CT volume in Hounsfield units.
///
/// HU are kept as `i16` (the range CT produces) so a 512x512x400 study needs 200 MiB, which
/// keeps the whole analysis inside the appliance's 1 GiB budget.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Where the voxels are.
    pub geometry: Geometry,
    /// HU values, indexed by [`Geometry::index`].
    pub hu: Vec<i16>,
}

impl Volume {
    /// Wraps a voxel buffer, refusing one that does not match its geometry.
    pub fn new(geometry: Geometry, hu: Vec<i16>) -> Result<Self> {
        geometry.validate()?;
        if hu.len() != geometry.len() {
            return Err(Error::VoxelCount {
                dims: geometry.dims,
                expected: geometry.len(),
                actual: hu.len(),
            });
        }
        Ok(Self { geometry, hu })
    }

    /// A volume filled with one value.
    pub fn filled(geometry: Geometry, value: i16) -> Result<Self> {
        let n = geometry.len();
        Self::new(geometry, vec![value; n])
    }

    /// HU at an integer voxel, `None` outside the grid.
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<i16> {
        let d = self.geometry.dims;
        (i < d[0] && j < d[1] && k < d[2]).then(|| self.hu[self.geometry.index(i, j, k)])
    }

    /// Trilinear interpolation at a continuous voxel index; `None` outside the grid.
    pub fn sample_voxel(&self, ijk: [f64; 3]) -> Option<f32> {
        let d = self.geometry.dims;
        let mut base = [0usize; 3];
        let mut frac = [0.0f64; 3];
        for a in 0..3 {
            let x = ijk[a];
            let max = (d[a] - 1) as f64;
            if !(x >= -1e-9 && x <= max + 1e-9) {
                return None;
            }
            let x = x.clamp(0.0, max);
            let b = (x.floor() as usize).min(d[a].saturating_sub(2));
            base[a] = b;
            frac[a] = if d[a] == 1 { 0.0 } else { x - b as f64 };
        }
        let step = |a: usize| usize::from(d[a] > 1);
        let mut acc = 0.0f64;
        for dk in 0..=step(2) {
            let wk = if dk == 1 { frac[2] } else { 1.0 - frac[2] };
            for dj in 0..=step(1) {
                let wj = if dj == 1 { frac[1] } else { 1.0 - frac[1] };
                for di in 0..=step(0) {
                    let wi = if di == 1 { frac[0] } else { 1.0 - frac[0] };
                    let v = self.hu[self
                        .geometry
                        .index(base[0] + di, base[1] + dj, base[2] + dk)];
                    acc += wi * wj * wk * f64::from(v);
                }
            }
        }
        Some(acc as f32)
    }

    /// Trilinear interpolation at a point in LPS mm; `None` outside the grid.
    pub fn sample_patient(&self, p: [f64; 3]) -> Option<f32> {
        self.sample_voxel(self.geometry.patient_to_voxel(p))
    }

    /// Smallest and largest HU present.
    pub fn hu_range(&self) -> (i16, i16) {
        self.hu
            .par_iter()
            .fold(
                || (i16::MAX, i16::MIN),
                |(lo, hi), &v| (lo.min(v), hi.max(v)),
            )
            .reduce(|| (i16::MAX, i16::MIN), |a, b| (a.0.min(b.0), a.1.max(b.1)))
    }

    /// Resamples onto a grid with the same axes and origin and `spacing_mm` along each axis,
    /// covering the same extent; voxels are trilinear interpolations of the source.
    pub fn resample_isotropic(&self, spacing_mm: f64) -> Result<Volume> {
        if !(spacing_mm.is_finite() && spacing_mm > 0.0) {
            return Err(Error::Geometry(format!(
                "resampling spacing must be positive, got {spacing_mm}"
            )));
        }
        let src = &self.geometry;
        let ext = src.extent_mm();
        let dims = [0, 1, 2].map(|a| (ext[a] / spacing_mm + 1e-6).floor() as usize + 1);
        let geometry = Geometry {
            dims,
            origin: src.origin,
            spacing: [spacing_mm; 3],
            axes: src.axes,
        };
        let scale = [0, 1, 2].map(|a| spacing_mm / src.spacing[a]);
        let plane = dims[0] * dims[1];
        let mut hu = vec![0i16; geometry.len()];
        hu.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let ijk = [
                        i as f64 * scale[0],
                        j as f64 * scale[1],
                        k as f64 * scale[2],
                    ];
                    let v = self.sample_voxel(ijk).unwrap_or(-1024.0);
                    out[j * dims[0] + i] = v.round().clamp(-32768.0, 32767.0) as i16;
                }
            }
        });
        Volume::new(geometry, hu)
    }
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn sub3(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn det3(m: [[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let d = det3(m);
    let c =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 2, 1, 2) / d, -c(0, 2, 1, 2) / d, c(0, 1, 1, 2) / d],
        [-c(1, 2, 0, 2) / d, c(0, 2, 0, 2) / d, -c(0, 1, 0, 2) / d],
        [c(1, 2, 0, 1) / d, -c(0, 2, 0, 1) / d, c(0, 1, 0, 1) / d],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tilted() -> Geometry {
        let t = 12f64.to_radians();
        Geometry {
            dims: [7, 5, 4],
            origin: [-120.5, 33.0, -804.5],
            spacing: [0.9765625, 0.7, 2.0],
            // Oblique in-plane rotation plus a gantry-tilted slice direction.
            axes: [[0.8, 0.6, 0.0], [-0.6, 0.8, 0.0], [0.0, t.sin(), t.cos()]],
        }
    }

    #[test]
    fn voxel_patient_round_trip() {
        let g = tilted();
        g.validate().unwrap();
        for ijk in [
            [0.0, 0.0, 0.0],
            [6.0, 4.0, 3.0],
            [2.25, 1.5, 0.75],
            [-3.0, 10.0, 1.0],
        ] {
            let back = g.patient_to_voxel(g.voxel_to_patient(ijk));
            for a in 0..3 {
                assert!((back[a] - ijk[a]).abs() < 1e-9, "{ijk:?} -> {back:?}");
            }
        }
        let p = [10.0, -20.0, -790.0];
        let q = g.voxel_to_patient(g.patient_to_voxel(p));
        for a in 0..3 {
            assert!((p[a] - q[a]).abs() < 1e-9);
        }
        assert!((g.tilt_deg() - 12.0).abs() < 1e-9);
    }

    #[test]
    fn axial_geometry_places_voxels_along_lps() {
        let g = Geometry::axial([4, 3, 2], [-10.0, -20.0, 100.0], [0.5, 0.5, 3.0]);
        assert_eq!(g.voxel_to_patient([2.0, 1.0, 1.0]), [-9.0, -19.5, 103.0]);
        assert_eq!(g.tilt_deg(), 0.0);
    }

    #[test]
    fn rejects_mismatched_buffer_and_bad_spacing() {
        let g = Geometry::axial([4, 3, 2], [0.0; 3], [1.0; 3]);
        assert!(matches!(
            Volume::new(g.clone(), vec![0; 5]),
            Err(Error::VoxelCount { .. })
        ));
        let mut bad = g;
        bad.spacing[2] = 0.0;
        assert!(Volume::new(bad, vec![0; 24]).is_err());
    }

    #[test]
    fn trilinear_is_exact_on_linear_fields_and_resampling_keeps_positions() {
        let g = Geometry::axial([8, 6, 5], [5.0, -3.0, 40.0], [0.75, 0.75, 2.5]);
        let mut hu = vec![0i16; g.len()];
        // HU = 10 * (z_mm - 40): a linear field is reproduced exactly by trilinear sampling.
        for k in 0..5 {
            for j in 0..6 {
                for i in 0..8 {
                    hu[g.index(i, j, k)] = (10.0 * 2.5 * k as f64) as i16;
                }
            }
        }
        let v = Volume::new(g, hu).unwrap();
        assert_eq!(v.sample_patient([6.0, -2.0, 45.0]), Some(50.0));
        assert_eq!(v.sample_patient([6.0, -2.0, 30.0]), None);
        let r = v.resample_isotropic(1.25).unwrap();
        assert_eq!(r.geometry.spacing, [1.25; 3]);
        assert_eq!(r.geometry.dims[2], 9);
        for k in 0..r.geometry.dims[2] {
            let p = r.geometry.voxel_to_patient([1.0, 1.0, k as f64]);
            let expect = (10.0 * (p[2] - 40.0)).round() as i16;
            assert_eq!(r.get(1, 1, k), Some(expect));
        }
        assert_eq!(v.hu_range(), (0, 100));
    }
}
