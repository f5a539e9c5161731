//! The argument struct shared by the reference, the CPU fast path and the CUDA path,
//! its validation, and the per-pair tables every fast path runs from.

use crate::{Error, Result};

/// Which elements of a head form a rotation pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// GPT-NeoX / HF `rotate_half`: pair j is (j, j + R/2).
    Neox,
    /// GPT-J: pair j is (2j, 2j + 1).
    GptJ,
}

/// What position each rotation pair (or head) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeVariant {
    /// Plain RoPE; positions `[N]`.
    Plain,
    /// Sectioned MRoPE (Qwen2/2.5-VL); positions `[3, N]` (t, h, w). Pair j uses t if
    /// j < s_t, h if j < s_t + s_h, else w. Sections sum to R/2.
    Sectioned { sections: [usize; 3] },
    /// Interleaved MRoPE-I (Qwen3-VL); positions `[3, N]`. Pair j uses h if j % 3 == 1 and
    /// j < 3 s_h, w if j % 3 == 2 and j < 3 s_w, else t. Sections sum to R/2.
    Interleaved { sections: [usize; 3] },
    /// Multi-head MHRoPE; positions `[3, N]`. Sections count KV heads per axis: KV head g
    /// rotates all its pairs by the t position if g < s_t, h if g < s_t + s_h, w if
    /// g < s_t + s_h + s_w, and is left unchanged otherwise. Query head i follows KV head
    /// i / (Hq / Hkv).
    MultiHead { sections: [usize; 3] },
    /// The ViT's 2-D RoPE; positions `[2, N]` (row, column). Frequencies are those of a
    /// rotary dimension R/2 (R/4 of them); pair j < R/4 uses the row position with
    /// frequency j, the others the column position with frequency j - R/4.
    Vision2d,
}

impl RopeVariant {
    /// Rows of the positions array: 1, 3 or 2.
    pub fn position_rows(self) -> usize {
        match self {
            RopeVariant::Plain => 1,
            RopeVariant::Vision2d => 2,
            _ => 3,
        }
    }

    /// Short name for reports (`rope`, `mrope`, `mrope_i`, `mhrope`, `vision2d`).
    pub fn name(self) -> &'static str {
        match self {
            RopeVariant::Plain => "rope",
            RopeVariant::Sectioned { .. } => "mrope",
            RopeVariant::Interleaved { .. } => "mrope_i",
            RopeVariant::MultiHead { .. } => "mhrope",
            RopeVariant::Vision2d => "vision2d",
        }
    }
}

/// Everything a rotary embedding call needs besides the data.
///
/// Angles are computed in f32 as `(position as f32) * inv_freq[j]`, exactly as HF
/// transformers does; cos and sin are multiplied by `attention_scaling`.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    /// D: elements per head row.
    pub head_dim: usize,
    /// R: leading elements of each head that are rotated (even, R <= D).
    pub rotary_dim: usize,
    /// θ, the frequency base.
    pub theta: f64,
    pub pairing: Pairing,
    /// Factor applied to cos and sin (YaRN's mscale; 1 otherwise).
    pub attention_scaling: f32,
    /// Overrides the θ-derived inverse frequencies (YaRN, linear, dynamic ...): R/2
    /// values, or R/4 for [`RopeVariant::Vision2d`].
    pub inv_freq: Option<Vec<f32>>,
    pub variant: RopeVariant,
}

impl RopeParams {
    /// Full rotary dimension, θ = 10000, neox pairing, no scaling, no override.
    pub fn new(head_dim: usize, variant: RopeVariant) -> Self {
        RopeParams {
            head_dim,
            rotary_dim: head_dim,
            theta: 10000.0,
            pairing: Pairing::Neox,
            attention_scaling: 1.0,
            inv_freq: None,
            variant,
        }
    }

    /// Qwen2.5-VL text decoder: D = 128, θ = 1e6, sectioned MRoPE [16, 24, 24].
    pub fn qwen2_5_vl() -> Self {
        RopeParams::new(128, RopeVariant::Sectioned { sections: [16, 24, 24] }).with_theta(1_000_000.0)
    }

    /// Qwen3-VL text decoder: D = 128, θ = 5e6, interleaved MRoPE-I [24, 20, 20].
    pub fn qwen3_vl() -> Self {
        RopeParams::new(128, RopeVariant::Interleaved { sections: [24, 20, 20] }).with_theta(5_000_000.0)
    }

    pub fn with_rotary_dim(mut self, r: usize) -> Self {
        self.rotary_dim = r;
        self
    }
    pub fn with_theta(mut self, theta: f64) -> Self {
        self.theta = theta;
        self
    }
    pub fn with_pairing(mut self, pairing: Pairing) -> Self {
        self.pairing = pairing;
        self
    }
    pub fn with_attention_scaling(mut self, s: f32) -> Self {
        self.attention_scaling = s;
        self
    }
    pub fn with_inv_freq(mut self, inv_freq: Vec<f32>) -> Self {
        self.inv_freq = Some(inv_freq);
        self
    }

    /// Number of rotation pairs per head, R/2.
    pub fn half(&self) -> usize {
        self.rotary_dim / 2
    }

    /// Checks every field, naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let (d, r) = (self.head_dim, self.rotary_dim);
        if r == 0 || r % 2 != 0 || r > d {
            return Err(Error::invalid(format!(
                "rotary_dim {r}: must be even, at least 2 and at most head_dim {d}"
            )));
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(Error::invalid(format!("theta {}: must be finite and > 0", self.theta)));
        }
        if !self.attention_scaling.is_finite() {
            return Err(Error::invalid(format!(
                "attention_scaling {}: must be finite",
                self.attention_scaling
            )));
        }
        let half = r / 2;
        match self.variant {
            RopeVariant::Sectioned { sections } | RopeVariant::Interleaved { sections } => {
                let sum = sections.iter().try_fold(0usize, |a, &s| a.checked_add(s));
                if sum != Some(half) {
                    return Err(Error::invalid(format!(
                        "{} sections {sections:?} must sum to rotary_dim/2 = {half}",
                        self.variant.name()
                    )));
                }
            }
            RopeVariant::Vision2d if r % 4 != 0 => {
                return Err(Error::invalid(format!(
                    "vision2d rotary_dim {r}: must be a multiple of 4"
                )));
            }
            _ => {}
        }
        if let Some(f) = &self.inv_freq {
            if f.len() != self.freq_count() {
                return Err(Error::invalid(format!(
                    "inv_freq has {} values, expected {} for rotary_dim {r} ({})",
                    f.len(),
                    self.freq_count(),
                    self.variant.name()
                )));
            }
            if let Some((i, v)) = f.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::invalid(format!("inv_freq[{i}] = {v} is not finite")));
            }
        }
        Ok(())
    }

    /// Distinct frequencies: R/2, or R/4 for the ViT's 2-D RoPE.
    pub fn freq_count(&self) -> usize {
        match self.variant {
            RopeVariant::Vision2d => self.rotary_dim / 4,
            _ => self.rotary_dim / 2,
        }
    }

    /// Inverse frequencies as HF computes them in f32:
    /// `1 / θ^(2i / dim)` with dim = R (R/2 for the ViT), or the override.
    pub fn inv_freq(&self) -> Vec<f32> {
        if let Some(f) = &self.inv_freq {
            return f.clone();
        }
        let dim = (2 * self.freq_count()) as f32;
        (0..self.freq_count())
            .map(|i| {
                let exponent = (2 * i) as f32 / dim;
                1.0f32 / (self.theta.powf(exponent as f64) as f32)
            })
            .collect()
    }

    /// Per-pair tables for head counts `hq`/`hkv` (validated here too).
    pub(crate) fn plan(&self, hq: usize, hkv: usize) -> Result<RopePlan> {
        self.validate()?;
        if hkv == 0 || hq % hkv != 0 {
            return Err(Error::invalid(format!(
                "head counts q {hq} / kv {hkv}: kv must be at least 1 and divide q"
            )));
        }
        let half = self.half();
        let base = self.inv_freq();
        let mut freq = base.clone();
        let mut pair_axis = vec![0u8; half];
        let mut head_axis = None;
        match self.variant {
            RopeVariant::Plain => {}
            RopeVariant::Sectioned { sections: [st, sh, _] } => {
                for (j, a) in pair_axis.iter_mut().enumerate() {
                    *a = if j < st {
                        0
                    } else if j < st + sh {
                        1
                    } else {
                        2
                    };
                }
            }
            RopeVariant::Interleaved { sections: [_, sh, sw] } => {
                for (j, a) in pair_axis.iter_mut().enumerate() {
                    *a = if j % 3 == 1 && j < 3 * sh {
                        1
                    } else if j % 3 == 2 && j < 3 * sw {
                        2
                    } else {
                        0
                    };
                }
            }
            RopeVariant::MultiHead { sections } => {
                let total = sections.iter().try_fold(0usize, |a, &s| a.checked_add(s));
                if total.is_none_or(|t| t > hkv) {
                    return Err(Error::invalid(format!(
                        "mhrope sections {sections:?} count more KV heads than the {hkv} given"
                    )));
                }
                let [st, sh, sw] = sections;
                head_axis = Some(
                    (0..hkv)
                        .map(|g| {
                            if g < st {
                                0
                            } else if g < st + sh {
                                1
                            } else if g < st + sh + sw {
                                2
                            } else {
                                -1
                            }
                        })
                        .collect(),
                );
            }
            RopeVariant::Vision2d => {
                let quarter = half / 2;
                freq = (0..half).map(|j| base[j % quarter]).collect();
                for (j, a) in pair_axis.iter_mut().enumerate() {
                    *a = u8::from(j >= quarter);
                }
            }
        }
        Ok(RopePlan {
            half,
            freq,
            pair_axis,
            head_axis,
            rows: self.variant.position_rows(),
            scale: self.attention_scaling,
            gptj: self.pairing == Pairing::GptJ,
            group: hq / hkv,
        })
    }
}

/// The variant reduced to tables: per-pair frequency and position row, or (MHRoPE) a
/// position row per KV head (-1: not rotated). Shared by the CPU fast path and CUDA.
#[derive(Clone, Debug)]
pub(crate) struct RopePlan {
    pub half: usize,
    pub freq: Vec<f32>,
    pub pair_axis: Vec<u8>,
    pub head_axis: Option<Vec<i32>>,
    pub rows: usize,
    pub scale: f32,
    pub gptj: bool,
    /// Query heads per KV head.
    pub group: usize,
}

/// One set of heads (q or k) inside a buffer, in elements: head `h` of token `n` starts
/// at `offset + n * token_stride + h * head_stride` and holds `head_dim` contiguous
/// elements. Views of a fused qkv tensor are expressed with the qkv row as token stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadsLayout {
    pub tokens: usize,
    pub heads: usize,
    pub offset: usize,
    pub token_stride: usize,
    pub head_stride: usize,
}

impl HeadsLayout {
    /// A contiguous `[tokens, heads, head_dim]` tensor.
    pub fn contiguous(tokens: usize, heads: usize, head_dim: usize) -> Self {
        HeadsLayout {
            tokens,
            heads,
            offset: 0,
            token_stride: heads.saturating_mul(head_dim),
            head_stride: head_dim,
        }
    }

    /// The q and k views of a fused `[tokens, hq + 2 hkv, head_dim]` qkv tensor.
    pub fn fused_qkv(tokens: usize, hq: usize, hkv: usize, head_dim: usize) -> (Self, Self) {
        let row = hq.saturating_add(hkv.saturating_mul(2)).saturating_mul(head_dim);
        let q = HeadsLayout {
            tokens,
            heads: hq,
            offset: 0,
            token_stride: row,
            head_stride: head_dim,
        };
        let k = HeadsLayout {
            offset: hq.saturating_mul(head_dim),
            heads: hkv,
            ..q
        };
        (q, k)
    }

    /// Elements from the first element of a token to one past its last head's row.
    fn token_span(&self, head_dim: usize) -> Result<usize> {
        if self.heads == 0 {
            return Ok(0);
        }
        (self.heads - 1)
            .checked_mul(self.head_stride)
            .and_then(|x| x.checked_add(head_dim))
            .ok_or_else(|| Error::Overflow(format!("head span of {self:?}")))
    }

    /// One past the last element the view touches (0 when empty).
    pub(crate) fn extent(&self, head_dim: usize) -> Result<usize> {
        if self.tokens == 0 || self.heads == 0 {
            return Ok(0);
        }
        (self.tokens - 1)
            .checked_mul(self.token_stride)
            .and_then(|x| x.checked_add(self.offset))
            .and_then(|x| x.checked_add(self.token_span(head_dim).ok()?))
            .ok_or_else(|| Error::Overflow(format!("extent of {self:?}")))
    }

    /// Checks that rows do not overlap each other and fit in `len` elements.
    pub(crate) fn check(&self, what: &str, head_dim: usize, len: usize) -> Result<()> {
        if self.heads > 1 && self.head_stride < head_dim {
            return Err(Error::invalid(format!(
                "{what} head_stride {} is less than head_dim {head_dim}: heads would overlap",
                self.head_stride
            )));
        }
        let span = self.token_span(head_dim)?;
        if self.tokens > 1 && self.token_stride < span {
            return Err(Error::invalid(format!(
                "{what} token_stride {} is less than the {span} elements a token's heads span: tokens would overlap",
                self.token_stride
            )));
        }
        let extent = self.extent(head_dim)?;
        if extent > len {
            return Err(Error::ShapeMismatch(format!(
                "{what} view {self:?} reaches element {extent} but the buffer holds {len}"
            )));
        }
        Ok(())
    }
}

/// Validates q and k views and positions for one call; returns the plan.
pub(crate) fn check_call(
    p: &RopeParams,
    positions_len: usize,
    q: &HeadsLayout,
    q_len: usize,
    k: &HeadsLayout,
    k_len: usize,
    same_buffer: bool,
) -> Result<RopePlan> {
    if q.tokens != k.tokens {
        return Err(Error::ShapeMismatch(format!(
            "q has {} tokens but k has {}",
            q.tokens, k.tokens
        )));
    }
    let plan = p.plan(q.heads, k.heads)?;
    q.check("q", p.head_dim, q_len)?;
    k.check("k", p.head_dim, k_len)?;
    let want = q
        .tokens
        .checked_mul(plan.rows)
        .ok_or_else(|| Error::Overflow(format!("positions for {} tokens", q.tokens)))?;
    if positions_len != want {
        return Err(Error::ShapeMismatch(format!(
            "positions has {positions_len} values, expected {} x {} tokens = {want} for {}",
            plan.rows,
            q.tokens,
            p.variant.name()
        )));
    }
    if same_buffer && views_overlap(q, k, p.head_dim)? {
        return Err(Error::invalid(format!(
            "q view {q:?} and k view {k:?} overlap in the shared buffer"
        )));
    }
    Ok(plan)
}

/// Conservative overlap test of two valid views in one buffer: exact when both share a
/// token stride (the fused-qkv case), otherwise compares whole extents.
fn views_overlap(q: &HeadsLayout, k: &HeadsLayout, head_dim: usize) -> Result<bool> {
    if q.tokens == 0 || q.heads == 0 || k.heads == 0 {
        return Ok(false);
    }
    let (qs, ks) = (q.token_span(head_dim)?, k.token_span(head_dim)?);
    if q.token_stride == k.token_stride && q.tokens > 1 && qs + ks <= q.token_stride {
        // Compare the two per-token intervals on the circle of one token stride, and
        // make sure neither view starts before the other's tokens cover it.
        let t = q.token_stride;
        let (a, b) = (q.offset % t, k.offset % t);
        let apart = |x: usize, xs: usize, y: usize| (y + t - x) % t >= xs;
        return Ok(!(apart(a, qs, b) && apart(b, ks, a)));
    }
    let (q_end, k_end) = (q.extent(head_dim)?, k.extent(head_dim)?);
    Ok(q.offset < k_end && k.offset < q_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_value() {
        let cases: Vec<(RopeParams, &str)> = vec![
            (
                RopeParams::new(64, RopeVariant::Plain).with_rotary_dim(7),
                "rotary_dim 7",
            ),
            (
                RopeParams::new(64, RopeVariant::Plain).with_rotary_dim(66),
                "rotary_dim 66",
            ),
            (RopeParams::new(64, RopeVariant::Plain).with_theta(-1.0), "theta -1"),
            (
                RopeParams::new(64, RopeVariant::Sectioned { sections: [8, 8, 8] }),
                "sections [8, 8, 8]",
            ),
            (
                RopeParams::new(64, RopeVariant::Vision2d).with_rotary_dim(6),
                "multiple of 4",
            ),
            (
                RopeParams::new(64, RopeVariant::Plain).with_inv_freq(vec![1.0; 3]),
                "inv_freq has 3",
            ),
            (
                RopeParams::new(64, RopeVariant::Plain).with_attention_scaling(f32::NAN),
                "attention_scaling NaN",
            ),
        ];
        for (p, want) in cases {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should name {want}");
        }
        assert!(RopeParams::qwen2_5_vl().validate().is_ok());
        assert!(RopeParams::qwen3_vl().validate().is_ok());
    }

    #[test]
    fn tables_follow_the_variant_rules() {
        let p = RopeParams::qwen3_vl();
        let plan = p.plan(32, 8).unwrap();
        assert_eq!(&plan.pair_axis[..7], &[0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(plan.pair_axis[60], 2 * u8::from(60 % 3 == 2)); // beyond 3*s_w = 60: t
        assert_eq!(plan.pair_axis[61], 0);
        let p = RopeParams::qwen2_5_vl();
        let plan = p.plan(28, 4).unwrap();
        assert_eq!(
            (
                plan.pair_axis[15],
                plan.pair_axis[16],
                plan.pair_axis[39],
                plan.pair_axis[40]
            ),
            (0, 1, 1, 2)
        );
        let p = RopeParams::new(64, RopeVariant::MultiHead { sections: [2, 1, 1] });
        assert_eq!(p.plan(12, 6).unwrap().head_axis.unwrap(), vec![0, 0, 1, 2, -1, -1]);
        assert!(p.plan(6, 3).unwrap_err().to_string().contains("sections [2, 1, 1]"));
        let p = RopeParams::new(16, RopeVariant::Vision2d);
        let plan = p.plan(2, 2).unwrap();
        assert_eq!(plan.freq[0], plan.freq[4]);
        assert_eq!(plan.pair_axis, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert!(RopeParams::new(16, RopeVariant::Plain).plan(6, 4).is_err());
    }

    #[test]
    fn overlap_checks() {
        let (q, k) = HeadsLayout::fused_qkv(5, 4, 2, 8);
        assert!(!views_overlap(&q, &k, 8).unwrap());
        assert!(views_overlap(&q, &q, 8).unwrap());
        let k_bad = HeadsLayout { offset: 3 * 8, ..k };
        assert!(views_overlap(&q, &k_bad, 8).unwrap());
        let a = HeadsLayout::contiguous(3, 2, 8);
        let b = HeadsLayout { offset: 48, ..a };
        assert!(!views_overlap(&a, &b, 8).unwrap());
        assert!(views_overlap(&a, &HeadsLayout { offset: 40, ..a }, 8).unwrap());
        let bad = HeadsLayout { head_stride: 4, ..a };
        assert!(bad
            .check("q", 8, 1000)
            .unwrap_err()
            .to_string()
            .contains("head_stride 4"));
        assert!(a.check("q", 8, 47).unwrap_err().to_string().contains("48"));
    }
}
