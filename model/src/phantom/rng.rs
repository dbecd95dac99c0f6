//! Deterministic randomness for the phantom.
//!
//! Every random choice draws from a stream derived from (seed, purpose, index), never from
//! thread order, so a study renders bit-identically however rayon schedules its slices, and
//! adding a new random property to one organ does not reshuffle every other organ.

/// xoshiro256** (Blackman and Vigna): small, fast, and good enough for rendering.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a purpose name: stable across builds and platforms (unlike `DefaultHasher`).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { s }
    }

    /// An independent stream for one purpose (e.g. "noise", slice 17).
    pub fn stream(seed: u64, purpose: &str, index: u64) -> Rng {
        let mut x = seed ^ fnv1a(purpose).rotate_left(17);
        let a = splitmix64(&mut x);
        let mut y = a ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::new(splitmix64(&mut y))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [-1, 1), as f32, for noise fields.
    #[inline]
    pub fn sym_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Normal with the given mean and standard deviation, clamped to [lo, hi].
    pub fn normal_clamped(&mut self, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
        (mean + sd * self.normal()).clamp(lo, hi)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Uniform index in 0..n (n > 0).
    pub fn index(&mut self, n: usize) -> usize {
        ((self.f64() * n as f64) as usize).min(n.saturating_sub(1))
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// Index drawn with the given (non-negative) weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut r = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len().saturating_sub(1)
    }

    pub fn sign(&mut self) -> f64 {
        if self.chance(0.5) {
            1.0
        } else {
            -1.0
        }
    }
}

/// Floor without a libm call (the baseline x86-64 target has no SSE4.1 `roundsd`).
#[inline]
fn fast_floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// Smooth 3D value noise: a tileable 64^3 lattice of random values with cubic-eased trilinear
/// interpolation (period 64 cells; two octaves at incommensurate scales hide the repeat).
///
/// Gives organs, bone marrow and lung parenchyma a texture that is coherent in 3D, so sagittal
/// reformats show the same texture as axial slices. A lookup table instead of hashing keeps it
/// at a few nanoseconds per sample, which matters at 80 million voxels per study.
pub(crate) struct Noise3 {
    vals: Vec<i8>,
}

const NOISE_BITS: i32 = 6;
const NOISE_N: i32 = 1 << NOISE_BITS;
const NOISE_MASK: i32 = NOISE_N - 1;

impl Noise3 {
    pub(crate) fn new(rng: &mut Rng) -> Noise3 {
        let n = (NOISE_N * NOISE_N * NOISE_N) as usize;
        // One byte per lattice value keeps the table (256 KiB) in cache.
        let vals = (0..n)
            .map(|_| (rng.sym_f32() * 127.0).round() as i8)
            .collect();
        Noise3 { vals }
    }

    /// Noise in about [-1, 1] at a point given in lattice units.
    #[inline]
    pub(crate) fn at(&self, x: f64, y: f64, z: f64) -> f32 {
        let (xf, yf, zf) = (fast_floor(x), fast_floor(y), fast_floor(z));
        let (xi, yi, zi) = (xf as i32, yf as i32, zf as i32);
        let s = |t: f64| {
            let t = t as f32;
            t * t * (3.0 - 2.0 * t)
        };
        let (u, v, w) = (s(x - xf), s(y - yf), s(z - zf));
        let m = NOISE_MASK;
        let (x0, x1) = ((xi & m) as usize, ((xi + 1) & m) as usize);
        let (y0, y1) = (
            ((yi & m) as usize) << NOISE_BITS,
            (((yi + 1) & m) as usize) << NOISE_BITS,
        );
        let (z0, z1) = (
            ((zi & m) as usize) << (2 * NOISE_BITS),
            (((zi + 1) & m) as usize) << (2 * NOISE_BITS),
        );
        let t = &self.vals;
        let g = |i: usize| f32::from(t[i]);
        let (a, b) = (z0 + y0, z0 + y1);
        let (c, d) = (z1 + y0, z1 + y1);
        let x00 = g(a + x0) + u * (g(a + x1) - g(a + x0));
        let x10 = g(b + x0) + u * (g(b + x1) - g(b + x0));
        let x01 = g(c + x0) + u * (g(c + x1) - g(c + x0));
        let x11 = g(d + x0) + u * (g(d + x1) - g(d + x0));
        let y0v = x00 + v * (x10 - x00);
        let y1v = x01 + v * (x11 - x01);
        (y0v + w * (y1v - y0v)) * (1.0 / 127.0)
    }

    /// Noise with a feature size of `cell_mm` at a point in mm.
    #[inline]
    pub(crate) fn mm(&self, p: [f64; 3], cell_mm: f64) -> f32 {
        let k = 1.0 / cell_mm;
        self.at(p[0] * k, p[1] * k, p[2] * k)
    }

    /// Smooth 1D noise (a line through the lattice), for slow variation along the body.
    #[inline]
    pub(crate) fn line(&self, t: f64, lane: f64) -> f64 {
        f64::from(self.at(t, lane * 7.31 + 0.5, lane * 3.17 + 0.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::stream(7, "noise", 3).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::stream(7, "noise", 3);
        let mut y = Rng::stream(7, "noise", 4);
        let mut z = Rng::stream(7, "rings", 3);
        let (vx, vy, vz) = (x.next_u64(), y.next_u64(), z.next_u64());
        assert!(vx != vy && vx != vz && vy != vz);
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let v = r.normal();
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        let u: f64 = (0..n).map(|_| r.f64()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.005);
        let su: f64 = (0..n).map(|_| f64::from(r.sym_f32())).sum::<f64>() / n as f64;
        assert!(su.abs() < 0.01);
    }

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let mut r = Rng::new(1);
        let n = Noise3::new(&mut r);
        let mut prev = n.at(0.0, 0.3, 0.7);
        for i in 1..2000 {
            let v = n.at(i as f64 * 0.01, 0.3, 0.7);
            assert!((-1.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.05, "jump at {i}");
            prev = v;
        }
    }
}
