//! Floating-point element types the kernels compute on (f32, f16, bf16), all converted
//! to f32 for arithmetic.

use crate::tensor::DType;
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type with f32 arithmetic: `f32`, `half::f16` or `half::bf16`.
pub trait FloatElem:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + cudarc::driver::DeviceRepr + 'static
{
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    /// Round to nearest even from f32.
    fn from_f32(x: f32) -> Self;
    /// Round to nearest even from f64 (one rounding, for references).
    fn from_f64(x: f64) -> Self;
    /// Widens a slice into `dst` (same length).
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// Narrows `src` into a slice (same length).
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(*s);
        }
    }
}

impl FloatElem for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl FloatElem for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
}

impl FloatElem for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        // A shift per element: written on bits so it vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        // Round to nearest even; NaN becomes a quiet NaN. Branch-free so it vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            let u = s.to_bits();
            let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16;
            let nan = ((u >> 16) as u16) | 0x40;
            *d = bf16::from_bits(if (u & 0x7fff_ffff) > 0x7f80_0000 { nan } else { rounded });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_slice_conversion_matches_scalar_rounding() {
        let mut xs: Vec<f32> = (0..4096u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9)))
            .collect();
        xs.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0 + f32::EPSILON,
            f32::MAX,
        ]);
        let mut fast = vec![bf16::ZERO; xs.len()];
        bf16::store_f32(&xs, &mut fast);
        for (x, f) in xs.iter().zip(&fast) {
            let s = bf16::from_f32(*x);
            if x.is_nan() {
                assert!(f.is_nan());
            } else {
                assert_eq!(f.to_bits(), s.to_bits(), "{x:e}");
            }
        }
        let mut back = vec![f32::NAN; xs.len()];
        bf16::load_f32(&fast, &mut back);
        for (b, f) in back.iter().zip(&fast) {
            assert!(b.to_bits() == f.to_f32().to_bits() || b.is_nan());
        }
    }
}
