//! MoE blocks against HF transformers 4.57.1 (fixtures from tools/gen_moe_goldens.py):
//! Qwen3MoeSparseMoeBlock (per-expert tensors, with and without norm_topk_prob),
//! the Qwen3-VL-MoE text block (fused [E, H, 2I]) and Qwen3-Next (shared expert).

#[path = "common/moe.rs"]
mod moe_common;

use std::collections::HashMap;

use moe_common::{assert_close, transpose, Owned};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use vlkernels::moe::{moe_block, moe_block_reference, ExpertLayout, MoeWeights, RouterConfig, TensorRef};
use vlkernels::DType;

const CASES: [&str; 4] = [
    "qwen3_moe_e12_k4",
    "qwen3_moe_e8_k2_nonorm",
    "qwen3_vl_moe_e16_k4",
    "qwen3_next_e10_k2_shared",
];

struct Golden {
    bytes: Vec<u8>,
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture lacks {name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn tensor_map<'a>(views: &'a [(String, TensorView<'a>)]) -> HashMap<String, TensorRef<'a>> {
    views
        .iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32)
        .map(|(name, v)| {
            (
                name.clone(),
                TensorRef {
                    dtype: DType::F32,
                    shape: v.shape(),
                    data: v.data(),
                },
            )
        })
        .collect()
}

fn load(case: &str) -> Golden {
    let path = format!("{}/{case}.safetensors", fixtures_dir());
    Golden {
        bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    }
}

fn config(bytes: &[u8]) -> serde_json::Value {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .expect("config metadata")
        .clone();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn blocks_match_transformers() {
    for case in CASES {
        let g = load(case);
        let st = SafeTensors::deserialize(&g.bytes).unwrap();
        let cfg_json = config(&g.bytes);
        let num = |k: &str| cfg_json[k].as_u64().unwrap_or_else(|| panic!("{case}: {k}")) as usize;
        let prefix = cfg_json["prefix"].as_str().unwrap();
        let cfg = RouterConfig::new(
            num("num_experts"),
            num("num_experts_per_tok"),
            cfg_json["norm_topk_prob"].as_bool().unwrap(),
        )
        .unwrap();
        let views = st.tensors();
        let map = tensor_map(&views);
        let w = MoeWeights::from_tensors(&map, prefix).unwrap();
        let want_layout = if case.starts_with("qwen3_vl") {
            ExpertLayout::FusedInOut
        } else {
            ExpertLayout::PerExpert
        };
        assert_eq!(w.layout, want_layout, "{case}");
        assert_eq!(w.shared.is_some(), case.contains("shared"), "{case}");

        let x = f32s(&st, "x");
        let want_ids: Vec<u32> = st
            .tensor("topk_ids")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        let (logits, weights, out) = (f32s(&st, "logits"), f32s(&st, "topk_weights"), f32s(&st, "out"));
        for (path, got) in [
            ("fast", moe_block(&x, &w, &cfg).unwrap()),
            ("reference", moe_block_reference(&x, &w, &cfg).unwrap()),
        ] {
            let what = format!("{case} {path}");
            assert_eq!(got.ids, want_ids, "{what} ids");
            assert_close(&format!("{what} logits"), &got.logits, &logits, 1e-5, 1e-5);
            assert_close(&format!("{what} weights"), &got.weights, &weights, 1e-6, 1e-5);
            assert_close(&format!("{what} out"), &got.out, &out, 1e-5, 1e-4);
        }
    }
}

/// The same block written the way transformers 5.x stores experts
/// (gate_up [E, 2I, H], down [E, H, I]) gives the same output.
#[test]
fn transposed_fused_layout_matches() {
    let g = load("qwen3_vl_moe_e16_k4");
    let st = SafeTensors::deserialize(&g.bytes).unwrap();
    let cfg_json = config(&g.bytes);
    let prefix = cfg_json["prefix"].as_str().unwrap();
    let (e, h, i) = (16usize, 32usize, 16usize);
    let gu = f32s(&st, &format!("{prefix}experts.gate_up_proj"));
    let dn = f32s(&st, &format!("{prefix}experts.down_proj"));
    let mut gu_t = Vec::new();
    let mut dn_t = Vec::new();
    for x in 0..e {
        gu_t.extend(transpose(&gu[x * h * 2 * i..(x + 1) * h * 2 * i], h, 2 * i));
        dn_t.extend(transpose(&dn[x * i * h..(x + 1) * i * h], i, h));
    }
    let mut owned = HashMap::new();
    owned.insert(
        format!("{prefix}experts.gate_up_proj"),
        Owned::f32(&[e, 2 * i, h], &gu_t),
    );
    owned.insert(format!("{prefix}experts.down_proj"), Owned::f32(&[e, h, i], &dn_t));
    owned.insert(
        format!("{prefix}gate.weight"),
        Owned::f32(&[e, h], &f32s(&st, &format!("{prefix}gate.weight"))),
    );
    let w = MoeWeights::from_tensors(&moe_common::view(&owned), prefix).unwrap();
    assert_eq!(w.layout, ExpertLayout::FusedOutIn);
    let cfg = RouterConfig::new(e, 4, true).unwrap();
    let got = moe_block(&f32s(&st, "x"), &w, &cfg).unwrap();
    assert_close("5.x layout out", &got.out, &f32s(&st, "out"), 1e-5, 1e-4);
}

/// `VLK_MOE_FIXTURES` (for a test binary run away from its source tree) or tests/fixtures/moe.
fn fixtures_dir() -> String {
    std::env::var("VLK_MOE_FIXTURES").unwrap_or_else(|_| format!("{}/tests/fixtures/moe", env!("CARGO_MANIFEST_DIR")))
}
