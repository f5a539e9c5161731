//! Shared code for the MoE tests: random data and named-tensor builders.
#![allow(dead_code)]

use std::collections::HashMap;

use vlkernels::DType;

/// Deterministic uniform floats in [lo, hi) (splitmix64).
pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = vlkernels::rng::SplitMix64::new(seed);
    (0..n).map(|_| lo + (hi - lo) * rng.next_unit_f32()).collect()
}

/// Deterministic integers in [0, n).
pub fn ids(count: usize, n: u32, seed: u64) -> Vec<u32> {
    uniform(count, seed, 0.0, 1.0)
        .into_iter()
        .map(|v| ((v * n as f32) as u32).min(n - 1))
        .collect()
}

/// An owned tensor (dtype, shape, bytes) for building loader inputs.
#[derive(Clone, Debug)]
pub struct Owned {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Owned {
    pub fn f32(shape: &[usize], v: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Owned {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn bf16(shape: &[usize], v: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Owned {
            dtype: DType::BF16,
            shape: shape.to_vec(),
            data: v
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
                .collect(),
        }
    }
}

/// Borrowed view map for `MoeWeights::from_tensors`.
pub fn view(map: &HashMap<String, Owned>) -> HashMap<String, vlkernels::moe::TensorRef<'_>> {
    map.iter()
        .map(|(k, t)| {
            (
                k.clone(),
                vlkernels::moe::TensorRef {
                    dtype: t.dtype,
                    shape: &t.shape,
                    data: &t.data,
                },
            )
        })
        .collect()
}

/// `[rows, cols]` row-major → `[cols, rows]`.
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Per-expert weights in HF `nn.Linear` form (`[out, in]`).
pub struct Experts {
    pub hidden: usize,
    pub inter: usize,
    pub gate: Vec<Vec<f32>>,
    pub up: Vec<Vec<f32>>,
    pub down: Vec<Vec<f32>>,
}

impl Experts {
    pub fn random(e: usize, hidden: usize, inter: usize, seed: u64) -> Self {
        let s = 1.0 / (hidden as f32).sqrt();
        let gen = |i: usize, n: usize, off: u64| uniform(n, seed + off * 1000 + i as u64, -s, s);
        Experts {
            hidden,
            inter,
            gate: (0..e).map(|i| gen(i, inter * hidden, 1)).collect(),
            up: (0..e).map(|i| gen(i, inter * hidden, 2)).collect(),
            down: (0..e).map(|i| gen(i, inter * hidden, 3)).collect(),
        }
    }

    /// Tensors named `{prefix}experts.{e}.{gate,up,down}_proj.weight`.
    pub fn per_expert(&self, prefix: &str, make: fn(&[usize], &[f32]) -> Owned) -> HashMap<String, Owned> {
        let (h, i) = (self.hidden, self.inter);
        let mut m = HashMap::new();
        for e in 0..self.gate.len() {
            m.insert(
                format!("{prefix}experts.{e}.gate_proj.weight"),
                make(&[i, h], &self.gate[e]),
            );
            m.insert(
                format!("{prefix}experts.{e}.up_proj.weight"),
                make(&[i, h], &self.up[e]),
            );
            m.insert(
                format!("{prefix}experts.{e}.down_proj.weight"),
                make(&[h, i], &self.down[e]),
            );
        }
        m
    }

    /// transformers 4.57 fused layout: gate_up [E, H, 2I], down [E, I, H].
    pub fn fused_in_out(&self, prefix: &str, make: fn(&[usize], &[f32]) -> Owned) -> HashMap<String, Owned> {
        let (h, i, e) = (self.hidden, self.inter, self.gate.len());
        let mut gu = Vec::new();
        let mut dn = Vec::new();
        for x in 0..e {
            let (g, u) = (transpose(&self.gate[x], i, h), transpose(&self.up[x], i, h));
            for r in 0..h {
                gu.extend_from_slice(&g[r * i..(r + 1) * i]);
                gu.extend_from_slice(&u[r * i..(r + 1) * i]);
            }
            dn.extend(transpose(&self.down[x], h, i));
        }
        let mut m = HashMap::new();
        m.insert(format!("{prefix}experts.gate_up_proj"), make(&[e, h, 2 * i], &gu));
        m.insert(format!("{prefix}experts.down_proj"), make(&[e, i, h], &dn));
        m
    }

    /// transformers 5.x fused layout: gate_up [E, 2I, H], down [E, H, I].
    pub fn fused_out_in(&self, prefix: &str, make: fn(&[usize], &[f32]) -> Owned) -> HashMap<String, Owned> {
        let (h, i, e) = (self.hidden, self.inter, self.gate.len());
        let mut gu = Vec::new();
        let mut dn = Vec::new();
        for x in 0..e {
            gu.extend_from_slice(&self.gate[x]);
            gu.extend_from_slice(&self.up[x]);
            dn.extend_from_slice(&self.down[x]);
        }
        let mut m = HashMap::new();
        m.insert(format!("{prefix}experts.gate_up_proj"), make(&[e, 2 * i, h], &gu));
        m.insert(format!("{prefix}experts.down_proj"), make(&[e, h, i], &dn));
        m
    }
}

/// `|a - b| <= atol + rtol * |b|` for every element, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (atol {atol}, rtol {rtol})"
        );
    }
}
