//! MoE weights from named tensors, in any of the three checkpoint layouts:
//!
//! - fused, as published for Qwen3-VL-MoE (transformers 4.57):
//!   `experts.gate_up_proj [E, H, 2I]`, `experts.down_proj [E, I, H]` (`[in, out]`);
//! - fused and transposed, as transformers 5.x writes every MoE:
//!   `experts.gate_up_proj [E, 2I, H]`, `experts.down_proj [E, H, I]` (`[out, in]`);
//! - per expert (Qwen3-MoE, Qwen3-Next): `experts.{e}.{gate,up}_proj.weight [I, H]`,
//!   `experts.{e}.down_proj.weight [H, I]`.
//!
//! In both fused layouts the gate is the first half of the `2I` axis. The two
//! fused layouts are told apart by the pair of shapes (`[E, H, 2I]` + `[E, I, H]`
//! vs `[E, 2I, H]` + `[E, H, I]`), which can never both fit. Tensors are converted to f32 once (f32, bf16 and f16 accepted);
//! the experts are then read in place through strided views.

use std::collections::HashMap;

use super::expert::{ExpertRef, MatRef};
use super::router::MAX_EXPERTS;
use crate::tensor::checked_numel;
use crate::{DType, Error, Result};

/// One named tensor as found in a checkpoint: dtype, shape, little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// The layout the experts were found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertLayout {
    /// `gate_up_proj [E, H, 2I]`, `down_proj [E, I, H]` (transformers 4.57, Qwen3-VL-MoE).
    FusedInOut,
    /// `gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]` (transformers 5.x).
    FusedOutIn,
    /// `experts.{e}.{gate,up,down}_proj.weight` (Qwen3-MoE, Qwen3-Next).
    PerExpert,
}

/// The sigmoid-gated shared expert of Qwen3-Next / Qwen3.5.
#[derive(Clone, Debug)]
pub struct SharedExpert {
    pub intermediate: usize,
    /// gate rows then up rows, `[2 * intermediate, hidden]` (`[out, in]`).
    gate_up: Vec<f32>,
    /// `[hidden, intermediate]` (`[out, in]`).
    down: Vec<f32>,
    /// `shared_expert_gate.weight`, `[hidden]`.
    pub gate: Vec<f32>,
}

impl SharedExpert {
    /// `(gate_up [2I, H], down [H, I], gate [H])`, all `[out, in]`.
    pub fn storage(&self) -> (&[f32], &[f32], &[f32]) {
        (&self.gate_up, &self.down, &self.gate)
    }
}

/// Router, experts and optional shared expert of one MoE block, as f32.
#[derive(Clone, Debug)]
pub struct MoeWeights {
    pub hidden: usize,
    pub intermediate: usize,
    pub num_experts: usize,
    /// The layout found in the tensors (per-expert tensors are stored like 5.x).
    pub layout: ExpertLayout,
    /// `gate.weight`, `[E, hidden]`.
    pub router: Vec<f32>,
    gate_up: Vec<f32>,
    down: Vec<f32>,
    in_out: bool,
    pub shared: Option<SharedExpert>,
}

/// Converts a tensor's bytes to f32, naming the tensor on failure.
pub fn tensor_to_f32(name: &str, t: &TensorRef<'_>) -> Result<Vec<f32>> {
    let n = checked_numel(t.shape)?;
    let want = n
        .checked_mul(t.dtype.size())
        .ok_or_else(|| Error::Overflow(format!("{name}: {n} elements")))?;
    if t.data.len() != want {
        return Err(Error::ShapeMismatch(format!(
            "{name}: {} bytes for shape {:?} of {} ({want} bytes)",
            t.data.len(),
            t.shape,
            t.dtype
        )));
    }
    let out = match t.dtype {
        DType::F32 => t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::BF16 => t
            .data
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        DType::F16 => t
            .data
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => {
            return Err(Error::UnsupportedDType(format!(
                "{name} is {other}; MoE weights must be f32, bf16 or f16"
            )))
        }
    };
    Ok(out)
}

struct Lookup<'m, 'a> {
    tensors: &'m HashMap<String, TensorRef<'a>>,
    prefix: &'m str,
}

impl<'a> Lookup<'_, 'a> {
    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn get(&self, rel: &str) -> Result<(String, TensorRef<'a>)> {
        let name = self.name(rel);
        match self.tensors.get(&name) {
            Some(t) => Ok((name, *t)),
            None => Err(Error::Format(format!("missing tensor '{name}'"))),
        }
    }

    /// Loads `rel` after checking its shape against `want`.
    fn load(&self, rel: &str, want: &[usize]) -> Result<Vec<f32>> {
        let (name, t) = self.get(rel)?;
        if t.shape != want {
            return Err(Error::ShapeMismatch(format!(
                "tensor '{name}' has shape {:?}, expected {want:?}",
                t.shape
            )));
        }
        tensor_to_f32(&name, &t)
    }
}

impl MoeWeights {
    /// Recognises the layout of the MoE block whose tensors start with `prefix`
    /// (e.g. `model.layers.0.mlp.`), checks every shape and converts to f32.
    /// A shared expert is loaded when `shared_expert_gate.weight` is present.
    pub fn from_tensors(tensors: &HashMap<String, TensorRef<'_>>, prefix: &str) -> Result<Self> {
        let lk = Lookup { tensors, prefix };
        let (router_name, router_t) = lk.get("gate.weight")?;
        let [num_experts, hidden] = *router_t.shape else {
            return Err(Error::ShapeMismatch(format!(
                "tensor '{router_name}' has shape {:?}, expected [num_experts, hidden]",
                router_t.shape
            )));
        };
        if num_experts == 0 || num_experts > MAX_EXPERTS || hidden == 0 {
            return Err(Error::invalid(format!(
                "tensor '{router_name}' has shape {:?}: need 1..={MAX_EXPERTS} experts and hidden > 0",
                router_t.shape
            )));
        }
        let router = tensor_to_f32(&router_name, &router_t)?;
        let fused = tensors.contains_key(&lk.name("experts.gate_up_proj"));
        let (layout, intermediate, gate_up, down) = if fused {
            Self::load_fused(&lk, num_experts, hidden)?
        } else {
            Self::load_per_expert(&lk, num_experts, hidden)?
        };
        let shared = if tensors.contains_key(&lk.name("shared_expert_gate.weight")) {
            Some(Self::load_shared(&lk, hidden)?)
        } else {
            None
        };
        Ok(MoeWeights {
            hidden,
            intermediate,
            num_experts,
            layout,
            router,
            gate_up,
            down,
            in_out: layout == ExpertLayout::FusedInOut,
            shared,
        })
    }

    fn load_fused(lk: &Lookup<'_, '_>, e: usize, h: usize) -> Result<(ExpertLayout, usize, Vec<f32>, Vec<f32>)> {
        let (gu_name, gu) = lk.get("experts.gate_up_proj")?;
        let (dn_name, dn) = lk.get("experts.down_proj")?;
        let bad = || {
            Error::ShapeMismatch(format!(
                "'{gu_name}' {:?} and '{dn_name}' {:?} match neither [E, H, 2I] + [E, I, H] nor \
                 [E, 2I, H] + [E, H, I] with E = {e}, H = {h}",
                gu.shape, dn.shape
            ))
        };
        // The two readings cannot both hold: that would need I == H and 2I == H.
        let (layout, inter) = match *dn.shape {
            [de, i, dh] if de == e && dh == h && gu.shape == [e, h, 2 * i] => (ExpertLayout::FusedInOut, i),
            [de, dh, i] if de == e && dh == h && gu.shape == [e, 2 * i, h] => (ExpertLayout::FusedOutIn, i),
            _ => return Err(bad()),
        };
        if inter == 0 {
            return Err(bad());
        }
        let gate_up = tensor_to_f32(&gu_name, &gu)?;
        let down = tensor_to_f32(&dn_name, &dn)?;
        Ok((layout, inter, gate_up, down))
    }

    fn load_per_expert(lk: &Lookup<'_, '_>, e: usize, h: usize) -> Result<(ExpertLayout, usize, Vec<f32>, Vec<f32>)> {
        let (first_name, first) = lk.get("experts.0.gate_proj.weight")?;
        let inter = match *first.shape {
            [i, hh] if hh == h && i > 0 => i,
            _ => {
                return Err(Error::ShapeMismatch(format!(
                    "tensor '{first_name}' has shape {:?}, expected [intermediate, {h}]",
                    first.shape
                )))
            }
        };
        let per = inter * h;
        let mut gate_up = Vec::with_capacity(e * 2 * per);
        let mut down = Vec::with_capacity(e * per);
        for x in 0..e {
            gate_up.extend(lk.load(&format!("experts.{x}.gate_proj.weight"), &[inter, h])?);
            gate_up.extend(lk.load(&format!("experts.{x}.up_proj.weight"), &[inter, h])?);
            down.extend(lk.load(&format!("experts.{x}.down_proj.weight"), &[h, inter])?);
        }
        Ok((ExpertLayout::PerExpert, inter, gate_up, down))
    }

    fn load_shared(lk: &Lookup<'_, '_>, h: usize) -> Result<SharedExpert> {
        let (first_name, first) = lk.get("shared_expert.gate_proj.weight")?;
        let inter = match *first.shape {
            [i, hh] if hh == h && i > 0 => i,
            _ => {
                return Err(Error::ShapeMismatch(format!(
                    "tensor '{first_name}' has shape {:?}, expected [intermediate, {h}]",
                    first.shape
                )))
            }
        };
        let mut gate_up = lk.load("shared_expert.gate_proj.weight", &[inter, h])?;
        gate_up.extend(lk.load("shared_expert.up_proj.weight", &[inter, h])?);
        let down = lk.load("shared_expert.down_proj.weight", &[h, inter])?;
        let gate = lk.load("shared_expert_gate.weight", &[1, h])?;
        Ok(SharedExpert {
            intermediate: inter,
            gate_up,
            down,
            gate,
        })
    }

    /// Views of expert `e`'s projections.
    pub fn expert(&self, e: usize) -> Result<ExpertRef<'_>> {
        if e >= self.num_experts {
            return Err(Error::invalid(format!("expert {e} of {}", self.num_experts)));
        }
        let (h, i) = (self.hidden, self.intermediate);
        let base_gu = e * h * 2 * i;
        let base_dn = e * h * i;
        if self.in_out {
            Ok(ExpertRef {
                gate: MatRef::new(&self.gate_up, base_gu, h, i, 2 * i, 1)?,
                up: MatRef::new(&self.gate_up, base_gu + i, h, i, 2 * i, 1)?,
                down: MatRef::new(&self.down, base_dn, i, h, h, 1)?,
            })
        } else {
            Ok(ExpertRef {
                gate: MatRef::new(&self.gate_up, base_gu, h, i, 1, h)?,
                up: MatRef::new(&self.gate_up, base_gu + i * h, h, i, 1, h)?,
                down: MatRef::new(&self.down, base_dn, i, h, 1, i)?,
            })
        }
    }

    /// The fused expert buffers as stored: `(gate_up, down, in_out)`, where `in_out`
    /// means `[E, H, 2I]` + `[E, I, H]` and otherwise `[E, 2I, H]` + `[E, H, I]`.
    pub fn fused_storage(&self) -> (&[f32], &[f32], bool) {
        (&self.gate_up, &self.down, self.in_out)
    }

    /// Views of the shared expert, if any.
    pub fn shared_expert(&self) -> Result<Option<ExpertRef<'_>>> {
        let Some(s) = &self.shared else { return Ok(None) };
        let (h, i) = (self.hidden, s.intermediate);
        Ok(Some(ExpertRef {
            gate: MatRef::new(&s.gate_up, 0, h, i, 1, h)?,
            up: MatRef::new(&s.gate_up, i * h, h, i, 1, h)?,
            down: MatRef::new(&s.down, 0, i, h, 1, i)?,
        }))
    }
}
