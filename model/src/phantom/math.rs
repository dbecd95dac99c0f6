//! Small 3D helpers for the phantom: vectors, rotations, rigid frames, soft edges, keyframe curves.

pub(crate) type V3 = [f64; 3];

#[inline]
pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline]
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[inline]
pub(crate) fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

#[inline]
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline]
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

#[inline]
pub(crate) fn normalize(a: V3) -> V3 {
    let n = norm(a);
    if n > 0.0 {
        scale(a, 1.0 / n)
    } else {
        [0.0, 0.0, 1.0]
    }
}

#[inline]
pub(crate) fn lerp3(a: V3, b: V3, t: f64) -> V3 {
    add(a, scale(sub(b, a), t))
}

#[inline]
pub(crate) fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

#[inline]
pub(crate) fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

/// Cubic ease between `e0` and `e1` (0 below, 1 above).
#[inline]
pub(crate) fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = clamp01((x - e0) / (e1 - e0));
    t * t * (3.0 - 2.0 * t)
}

/// Fraction of a voxel of width `w` (along the surface normal) lying inside a surface at signed
/// distance `d` (negative inside): the box-filtered edge that gives partial-volume voxels.
#[inline]
pub(crate) fn coverage(d: f64, w: f64) -> f64 {
    clamp01(0.5 - d / w)
}

/// Polynomial smooth minimum: unions of signed distances with a fillet of size `k`, so joined
/// bones and vessels get organic junctions instead of creases.
#[inline]
pub(crate) fn smin(a: f64, b: f64, k: f64) -> f64 {
    if k <= 0.0 || (a - b).abs() >= k {
        return a.min(b);
    }
    let h = clamp01(0.5 + 0.5 * (b - a) / k);
    lerp(b, a, h) - k * h * (1.0 - h)
}

/// Rotation matrix; columns are the local axes expressed in patient (LPS) coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Mat3 {
    pub m: [[f64; 3]; 3],
}

impl Mat3 {
    pub(crate) const IDENTITY: Mat3 = Mat3 {
        m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };

    /// Right-handed rotation about x: positive angles turn +z towards -y (anterior in LPS).
    pub(crate) fn rot_x(a: f64) -> Mat3 {
        let (s, c) = a.sin_cos();
        Mat3 {
            m: [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        }
    }

    /// Right-handed rotation about y: positive angles turn +z towards +x (patient's left).
    pub(crate) fn rot_y(a: f64) -> Mat3 {
        let (s, c) = a.sin_cos();
        Mat3 {
            m: [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        }
    }

    /// Right-handed rotation about z: positive angles turn -y (anterior) towards +x (left).
    pub(crate) fn rot_z(a: f64) -> Mat3 {
        let (s, c) = a.sin_cos();
        Mat3 {
            m: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    pub(crate) fn mul(&self, o: &Mat3) -> Mat3 {
        let mut r = [[0.0; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| self.m[i][k] * o.m[k][j]).sum();
            }
        }
        Mat3 { m: r }
    }

    /// Local direction -> patient direction.
    #[inline]
    pub(crate) fn apply(&self, v: V3) -> V3 {
        let m = &self.m;
        [
            m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
        ]
    }

    /// Patient direction -> local direction (transpose of an orthonormal matrix).
    #[inline]
    pub(crate) fn apply_t(&self, v: V3) -> V3 {
        let m = &self.m;
        [
            m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
            m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
            m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
        ]
    }

    #[inline]
    pub(crate) fn col(&self, c: usize) -> V3 {
        [self.m[0][c], self.m[1][c], self.m[2][c]]
    }

    /// Re-orthonormalises (Gram-Schmidt on z, then x) so long chains of products stay rigid.
    pub(crate) fn orthonormalized(&self) -> Mat3 {
        let z = normalize(self.col(2));
        let x0 = self.col(0);
        let x = normalize(sub(x0, scale(z, dot(x0, z))));
        let y = cross(z, x);
        Mat3 {
            m: [[x[0], y[0], z[0]], [x[1], y[1], z[1]], [x[2], y[2], z[2]]],
        }
    }
}

#[inline]
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// A rigid placement: local coordinates -> patient coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Frame {
    pub origin: V3,
    pub rot: Mat3,
}

impl Frame {
    #[inline]
    pub(crate) fn to_local(self, p: V3) -> V3 {
        self.rot.apply_t(sub(p, self.origin))
    }

    #[inline]
    pub(crate) fn to_global(self, l: V3) -> V3 {
        add(self.origin, self.rot.apply(l))
    }
}

/// A smooth function of one variable through keyframes (monotone cubic Hermite, so radii and
/// HU never overshoot between keys); constant beyond the ends.
#[derive(Clone, Debug)]
pub(crate) struct Curve {
    xs: Vec<f64>,
    ys: Vec<f64>,
    ms: Vec<f64>,
}

impl Curve {
    /// Keys must be sorted by x (they are sorted here to be safe); duplicates keep the last.
    pub(crate) fn new(mut keys: Vec<(f64, f64)>) -> Curve {
        keys.sort_by(|a, b| a.0.total_cmp(&b.0));
        keys.dedup_by(|b, a| (a.0 - b.0).abs() < 1e-9);
        let xs: Vec<f64> = keys.iter().map(|k| k.0).collect();
        let ys: Vec<f64> = keys.iter().map(|k| k.1).collect();
        let n = xs.len();
        let mut ms = vec![0.0; n];
        if n >= 2 {
            let d: Vec<f64> = (0..n - 1)
                .map(|i| (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]))
                .collect();
            ms[0] = d[0];
            ms[n - 1] = d[n - 2];
            for i in 1..n - 1 {
                ms[i] = if d[i - 1] * d[i] <= 0.0 {
                    0.0
                } else {
                    // Fritsch-Carlson harmonic mean keeps the interpolant monotone per interval.
                    2.0 / (1.0 / d[i - 1] + 1.0 / d[i])
                };
            }
            // End slopes: flat so shapes taper smoothly into their ends.
            ms[0] = 0.0;
            ms[n - 1] = 0.0;
        }
        Curve { xs, ys, ms }
    }

    pub(crate) fn constant(y: f64) -> Curve {
        Curve {
            xs: vec![0.0],
            ys: vec![y],
            ms: vec![0.0],
        }
    }

    pub(crate) fn at(&self, x: f64) -> f64 {
        let n = self.xs.len();
        if n == 0 {
            return 0.0;
        }
        if n == 1 || x <= self.xs[0] {
            return self.ys[0];
        }
        if x >= self.xs[n - 1] {
            return self.ys[n - 1];
        }
        let i = match self.xs.binary_search_by(|v| v.total_cmp(&x)) {
            Ok(i) => return self.ys[i],
            Err(i) => i - 1,
        };
        let h = self.xs[i + 1] - self.xs[i];
        let t = (x - self.xs[i]) / h;
        let (t2, t3) = (t * t, t * t * t);
        let h00 = 2.0 * t3 - 3.0 * t2 + 1.0;
        let h10 = t3 - 2.0 * t2 + t;
        let h01 = -2.0 * t3 + 3.0 * t2;
        let h11 = t3 - t2;
        h00 * self.ys[i] + h10 * h * self.ms[i] + h01 * self.ys[i + 1] + h11 * h * self.ms[i + 1]
    }

    pub(crate) fn first_x(&self) -> f64 {
        self.xs.first().copied().unwrap_or(0.0)
    }

    pub(crate) fn last_x(&self) -> f64 {
        self.xs.last().copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_follow_lps_conventions() {
        let z = [0.0, 0.0, 1.0];
        let a = 0.3f64;
        // rot_x tilts the axis anteriorly (towards -y).
        let r = Mat3::rot_x(a).apply(z);
        assert!((r[1] + a.sin()).abs() < 1e-12 && r[1] < 0.0);
        // rot_y tilts towards the patient's left (+x).
        assert!(Mat3::rot_y(a).apply(z)[0] > 0.0);
        // rot_z turns the anterior direction towards the left.
        assert!(Mat3::rot_z(a).apply([0.0, -1.0, 0.0])[0] > 0.0);
        let f = Frame {
            origin: [1.0, 2.0, 3.0],
            rot: Mat3::rot_x(0.2).mul(&Mat3::rot_z(-0.7)),
        };
        let p = [4.0, -5.0, 6.5];
        let back = f.to_global(f.to_local(p));
        assert!(norm(sub(back, p)) < 1e-12);
    }

    #[test]
    fn curve_is_monotone_between_keys_and_hits_them() {
        let c = Curve::new(vec![(0.0, 0.0), (10.0, 5.0), (20.0, 5.5), (30.0, 0.0)]);
        assert_eq!(c.at(10.0), 5.0);
        assert_eq!(c.at(-5.0), 0.0);
        assert_eq!(c.at(35.0), 0.0);
        let mut prev = c.at(0.0);
        for i in 1..=200 {
            let v = c.at(i as f64 * 0.1);
            assert!(v >= prev - 1e-12, "not monotone at {i}");
            prev = v;
        }
        assert!((0..300).all(|i| c.at(i as f64 * 0.1) <= 5.5 + 1e-12));
    }

    #[test]
    fn smooth_min_is_below_both_and_exact_far_apart() {
        assert_eq!(smin(1.0, 5.0, 2.0), 1.0);
        assert!(smin(1.0, 1.0, 2.0) < 1.0);
        assert_eq!(coverage(0.0, 1.0), 0.5);
        assert_eq!(coverage(-2.0, 1.0), 1.0);
    }
}
