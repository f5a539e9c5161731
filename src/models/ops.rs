//! The plain layers every runner needs: linear (through the `gemm` crate), RMSNorm,
//! LayerNorm and the scalar activations. f32 on the CPU; rows are contiguous.

use crate::models::Weights;
use crate::{Error, Result};

/// `y = x · Wᵀ + b` with `W` stored `[out, in]` as checkpoints store it.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl Linear {
    /// Reads `{prefix}.weight` `[out_dim, in_dim]` and, when `bias`, `{prefix}.bias` `[out_dim]`.
    pub fn load(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.f32(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.f32(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Self::from_parts(weight, bias, in_dim, out_dim)
    }

    /// Builds a layer from a `[out_dim, in_dim]` weight and an optional `[out_dim]` bias.
    pub fn from_parts(weight: Vec<f32>, bias: Option<Vec<f32>>, in_dim: usize, out_dim: usize) -> Result<Self> {
        let n = in_dim
            .checked_mul(out_dim)
            .ok_or_else(|| Error::Overflow(format!("linear {out_dim} x {in_dim}")))?;
        if weight.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "linear weight has {} elements, expected {out_dim} x {in_dim}",
                weight.len()
            )));
        }
        if let Some(b) = &bias {
            if b.len() != out_dim {
                return Err(Error::ShapeMismatch(format!(
                    "linear bias has {} elements, expected {out_dim}",
                    b.len()
                )));
            }
        }
        Ok(Linear {
            weight,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// `x` is `[rows, in_dim]`; returns `[rows, out_dim]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let need = rows
            .checked_mul(self.in_dim)
            .ok_or_else(|| Error::Overflow(format!("{rows} rows x {}", self.in_dim)))?;
        if x.len() != need {
            return Err(Error::ShapeMismatch(format!(
                "linear input has {} elements, expected {rows} rows x {}",
                x.len(),
                self.in_dim
            )));
        }
        let out_len = rows
            .checked_mul(self.out_dim)
            .ok_or_else(|| Error::Overflow(format!("{rows} rows x {}", self.out_dim)))?;
        let mut out = vec![0f32; out_len];
        gemm_xwt(x, rows, self.in_dim, &self.weight, self.out_dim, &mut out);
        if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(self.out_dim) {
                for (o, &bv) in row.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
        Ok(out)
    }
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ`; sizes already checked by the caller.
fn gemm_xwt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: x is m x k row-major, out is m x n row-major, w is n x k row-major (so its
    // transpose has row stride 1 and column stride k); lengths were checked by the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn check_rows(what: &str, len: usize, dim: usize) -> Result<()> {
    if dim == 0 || len % dim != 0 {
        return Err(Error::ShapeMismatch(format!(
            "{what}: {len} elements is not a whole number of rows of {dim}"
        )));
    }
    Ok(())
}

/// In-place RMSNorm over rows of `weight.len()`: `x / sqrt(mean(x²) + eps) · weight`.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) -> Result<()> {
    check_rows("rms_norm", x.len(), weight.len())?;
    for row in x.chunks_exact_mut(weight.len()) {
        let ms = row.iter().map(|&v| v * v).sum::<f32>() / row.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(weight) {
            *v = *v * inv * g;
        }
    }
    Ok(())
}

/// In-place LayerNorm over rows of `weight.len()` (biased variance, as torch).
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) -> Result<()> {
    check_rows("layer_norm", x.len(), weight.len())?;
    if bias.len() != weight.len() {
        return Err(Error::ShapeMismatch(format!(
            "layer_norm bias has {} elements, weight {}",
            bias.len(),
            weight.len()
        )));
    }
    for row in x.chunks_exact_mut(weight.len()) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * g + b;
        }
    }
    Ok(())
}

/// SiLU, `x · sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// Exact GELU, `x · Φ(x)`, with erf evaluated in f64.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    let xd = x as f64;
    (0.5 * xd * (1.0 + erf(xd / std::f64::consts::SQRT_2))) as f32
}

/// erf to ~1e-15 relative (series for small |x|, continued fraction for large).
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: 2/sqrt(pi) Σ (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc continued fraction (Lentz), converges fast for |x| >= 2.5.
        let x2 = ax * ax;
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for k in 1..200 {
            let a = k as f64 * 0.5;
            d = ax + a * d;
            d = 1.0 / d;
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2), erf(3) from tables.
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-13);
        }
    }
}
