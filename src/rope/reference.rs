//! Scalar reference: each variant written out from its definition, cos/sin and the
//! rotation in f64 (the angle itself in f32, as specified), one rounding at the end.
//! Slow and clear; the fast paths are tested against it.

use super::params::{check_call, HeadsLayout, Pairing, RopeParams, RopeVariant};
use crate::{FloatElem, Result};

/// Rotates q and k (separate buffers) in place with the reference arithmetic.
pub fn reference<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    q: &mut [T],
    q_layout: &HeadsLayout,
    k: &mut [T],
    k_layout: &HeadsLayout,
) -> Result<()> {
    check_call(p, positions.len(), q_layout, q.len(), k_layout, k.len(), false)?;
    rotate_view(p, positions, q, q_layout, false, q_layout.heads / k_layout.heads);
    rotate_view(p, positions, k, k_layout, true, 1);
    Ok(())
}

/// As [`reference`], for q and k views inside one buffer (a fused qkv tensor).
pub fn reference_fused<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    qkv: &mut [T],
    q_layout: &HeadsLayout,
    k_layout: &HeadsLayout,
) -> Result<()> {
    check_call(p, positions.len(), q_layout, qkv.len(), k_layout, qkv.len(), true)?;
    rotate_view(p, positions, qkv, q_layout, false, q_layout.heads / k_layout.heads);
    rotate_view(p, positions, qkv, k_layout, true, 1);
    Ok(())
}

/// The angle of pair `j` of KV head `g` at token `n`, or `None` when that head is not
/// rotated (MHRoPE heads beyond the sections).
pub fn angle(
    p: &RopeParams,
    inv_freq: &[f32],
    positions: &[i64],
    n_tokens: usize,
    n: usize,
    g: usize,
    j: usize,
) -> Option<f32> {
    let half = p.rotary_dim / 2;
    let pos = |row: usize| positions[row * n_tokens + n] as f32;
    let (row, freq) = match p.variant {
        RopeVariant::Plain => (0, inv_freq[j]),
        RopeVariant::Sectioned { sections: [st, sh, _] } => {
            let row = if j < st {
                0
            } else if j < st + sh {
                1
            } else {
                2
            };
            (row, inv_freq[j])
        }
        RopeVariant::Interleaved { sections: [_, sh, sw] } => {
            let row = match j % 3 {
                1 if j < 3 * sh => 1,
                2 if j < 3 * sw => 2,
                _ => 0,
            };
            (row, inv_freq[j])
        }
        RopeVariant::MultiHead { sections: [st, sh, sw] } => {
            let row = if g < st {
                0
            } else if g < st + sh {
                1
            } else if g < st + sh + sw {
                2
            } else {
                return None;
            };
            (row, inv_freq[j])
        }
        RopeVariant::Vision2d => {
            let quarter = half / 2;
            if j < quarter {
                (0, inv_freq[j])
            } else {
                (1, inv_freq[j - quarter])
            }
        }
    };
    Some(pos(row) * freq)
}

fn rotate_view<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    buf: &mut [T],
    v: &HeadsLayout,
    is_key: bool,
    group: usize,
) {
    let inv_freq = p.inv_freq();
    let half = p.rotary_dim / 2;
    let scale = p.attention_scaling as f64;
    for n in 0..v.tokens {
        for h in 0..v.heads {
            let g = if is_key { h } else { h / group };
            let base = v.offset + n * v.token_stride + h * v.head_stride;
            for j in 0..half {
                let Some(theta) = angle(p, &inv_freq, positions, v.tokens, n, g, j) else {
                    continue;
                };
                let (s, c) = (theta as f64).sin_cos();
                let (c, s) = (c * scale, s * scale);
                let (i1, i2) = match p.pairing {
                    Pairing::Neox => (base + j, base + j + half),
                    Pairing::GptJ => (base + 2 * j, base + 2 * j + 1),
                };
                let (x1, x2) = (buf[i1].to_f32() as f64, buf[i2].to_f32() as f64);
                buf[i1] = T::from_f64(x1 * c - x2 * s);
                buf[i2] = T::from_f64(x2 * c + x1 * s);
            }
        }
    }
}
