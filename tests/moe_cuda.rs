//! MoE on CUDA against the CPU path: identical routing ids (ties to the lower index),
//! identical dispatch plans, permute/unpermute and the whole block within tolerance,
//! and the HF goldens. Without a GPU each test says so and returns (fails under
//! VLK_REQUIRE_GPU=1).

mod common;
#[path = "common/moe.rs"]
mod moe_common;

use std::collections::HashMap;

use half::bf16;
use moe_common::{assert_close, ids as random_ids, uniform, view, Experts, Owned};
use vlkernels::moe::cuda::*;
use vlkernels::moe::*;

const POISON_ID: i32 = i32::MIN + 7;

fn gpu_route(
    dev: &vlkernels::cuda::CudaDevice,
    logits: &[f32],
    cfg: &RouterConfig,
    as_bf16: bool,
) -> (Vec<u32>, Vec<f32>) {
    let n = logits.len() / cfg.num_experts * cfg.top_k;
    let mut ids = dev.upload(&vec![POISON_ID; n]).unwrap();
    let mut w = dev.upload(&vec![f32::NAN; n]).unwrap();
    if as_bf16 {
        let l: Vec<bf16> = logits.iter().map(|&v| bf16::from_f32(v)).collect();
        route_cuda(dev, &dev.upload(&l).unwrap(), cfg, &mut ids, &mut w).unwrap();
    } else {
        route_cuda(dev, &dev.upload(logits).unwrap(), cfg, &mut ids, &mut w).unwrap();
    }
    let ids = dev.download(&ids).unwrap();
    assert!(ids.iter().all(|&i| i != POISON_ID), "unwritten id");
    (ids.into_iter().map(|i| i as u32).collect(), dev.download(&w).unwrap())
}

#[test]
fn gpu_routing_matches_cpu_including_ties() {
    let Some(dev) = common::gpu_or_skip("gpu_routing_matches_cpu_including_ties") else {
        return;
    };
    let mut seed = 10;
    let mut cases = 0;
    for &e in &[1usize, 2, 7, 8, 33, 64, 128, 129, 257, 512] {
        for &k in [1usize, 2, 8, 10, 16].iter().filter(|&&k| k <= e) {
            for &t in &[1usize, 5, 1000] {
                for norm in [true, false] {
                    for quantised in [false, true] {
                        seed += 1;
                        let cfg = RouterConfig::new(e, k, norm).unwrap();
                        let mut logits = uniform(t * e, seed, -4.0, 4.0);
                        if quantised {
                            // Coarse logits: many exact ties, exactly representable in bf16.
                            logits.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
                        }
                        for as_bf16 in [false, true] {
                            let cpu_logits: Vec<f32> = logits
                                .iter()
                                .map(|&v| if as_bf16 { bf16::from_f32(v).to_f32() } else { v })
                                .collect();
                            let mut cid = vec![0u32; t * k];
                            let mut cw = vec![0f32; t * k];
                            route(&cpu_logits, &cfg, &mut cid, &mut cw).unwrap();
                            let (gid, gw) = gpu_route(&dev, &logits, &cfg, as_bf16);
                            let what = format!("E={e} k={k} T={t} norm={norm} quantised={quantised} bf16={as_bf16}");
                            assert_eq!(gid, cid, "{what}");
                            assert_close(&what, &gw, &cw, 1e-6, 1e-5);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // A NaN logit marks the token's ids as -1, which the plan then reports.
    let cfg = RouterConfig::new(8, 2, true).unwrap();
    let mut logits = uniform(3 * 8, 1, -1.0, 1.0);
    logits[8 + 5] = f32::NAN;
    let (gid, _) = gpu_route(&dev, &logits, &cfg, false);
    assert_eq!(&gid[2..4], &[u32::MAX, u32::MAX]);
    let d_ids = dev.upload(&gid.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap();
    let mut plan = CudaDispatchPlan::new(&dev, 3, 8, 2, 1).unwrap();
    plan.compute(&dev, &d_ids).unwrap();
    let msg = plan.to_host(&dev).unwrap_err().to_string();
    assert!(msg.contains("token 1, slot 0"), "{msg}");
    eprintln!("{cases} routing cases identical on GPU and CPU");
}

#[test]
fn gpu_dispatch_plan_matches_cpu() {
    let Some(dev) = common::gpu_or_skip("gpu_dispatch_plan_matches_cpu") else {
        return;
    };
    let mut seed = 300;
    for &(t, e, k) in &[
        (1usize, 8usize, 2usize),
        (13, 7, 3),
        (31, 512, 10),
        (4096, 128, 8),
        (2003, 257, 16),
        (16384, 512, 10),
    ] {
        for &block in &[1usize, 7, 16, 64, 128] {
            seed += 1;
            let ids = random_ids(t * k, e as u32, seed);
            let cpu = plan_dispatch(&ids, e, k, block).unwrap();
            let d_ids = dev.upload(&ids.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap();
            let mut plan = CudaDispatchPlan::new(&dev, t, e, k, block).unwrap();
            plan.compute(&dev, &d_ids).unwrap();
            assert_eq!(plan.to_host(&dev).unwrap(), cpu, "T={t} E={e} k={k} block={block}");
        }
    }
    // Skewed: every assignment on one expert.
    let ids = vec![3u32; 3 * 5000];
    let d_ids = dev.upload(&vec![3i32; 3 * 5000]).unwrap();
    let mut plan = CudaDispatchPlan::new(&dev, 5000, 9, 3, 64).unwrap();
    plan.compute(&dev, &d_ids).unwrap();
    assert_eq!(plan.to_host(&dev).unwrap(), plan_dispatch(&ids, 9, 3, 64).unwrap());
}

#[test]
fn gpu_permute_silu_unpermute_match_cpu() {
    let Some(dev) = common::gpu_or_skip("gpu_permute_silu_unpermute_match_cpu") else {
        return;
    };
    for &(t, e, k) in &[(1usize, 8usize, 8usize), (13, 7, 3), (97, 128, 8)] {
        for &h in &[1usize, 3, 64, 129, 2048] {
            let ids = random_ids(t * k, e as u32, (t * h) as u64);
            let cpu_plan = plan_dispatch(&ids, e, k, 16).unwrap();
            let d_ids = dev.upload(&ids.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap();
            let mut plan = CudaDispatchPlan::new(&dev, t, e, k, 16).unwrap();
            plan.compute(&dev, &d_ids).unwrap();
            let x = uniform(t * h, 5, -2.0, 2.0);
            let n = t * k;
            // f32 gather is an exact copy.
            let mut want = vec![0f32; n * h];
            permute_tokens(&x, h, &cpu_plan, &mut want).unwrap();
            let mut out = dev.upload(&vec![f32::NAN; n * h]).unwrap();
            permute_tokens_cuda(&dev, &dev.upload(&x).unwrap(), h, &plan, false, &mut out).unwrap();
            assert_eq!(dev.download(&out).unwrap(), want, "permute T={t} h={h}");
            // Padded order: padding rows are zero.
            let rows = cpu_plan.padded_sorted.len();
            let mut pout = dev.upload(&vec![f32::NAN; rows * h]).unwrap();
            permute_tokens_cuda(&dev, &dev.upload(&x).unwrap(), h, &plan, true, &mut pout).unwrap();
            let pout = dev.download(&pout).unwrap();
            for (p, &a) in cpu_plan.padded_sorted.iter().enumerate() {
                let row = &pout[p * h..(p + 1) * h];
                if a == cpu_plan.pad_value() {
                    assert!(row.iter().all(|&v| v == 0.0), "padding row {p}");
                } else {
                    let tok = a as usize / k;
                    assert_eq!(row, &x[tok * h..(tok + 1) * h], "padded row {p}");
                }
            }
            // bf16 gather.
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let mut outb = dev.upload(&vec![bf16::NAN; n * h]).unwrap();
            permute_tokens_cuda(&dev, &dev.upload(&xb).unwrap(), h, &plan, false, &mut outb).unwrap();
            let wantb: Vec<bf16> = want.iter().map(|&v| bf16::from_f32(v)).collect();
            assert_eq!(dev.download(&outb).unwrap(), wantb);

            // Weighted unpermute, with and without the shared expert.
            let y = uniform(n * h, 9, -1.0, 1.0);
            let w = uniform(n, 10, 0.0, 1.0);
            let mut cpu_out = vec![0f32; t * h];
            unpermute_tokens(&y, h, &cpu_plan, &w, &mut cpu_out).unwrap();
            let mut gout = dev.upload(&vec![f32::NAN; t * h]).unwrap();
            let (dy, dw) = (dev.upload(&y).unwrap(), dev.upload(&w).unwrap());
            unpermute_tokens_cuda(&dev, &dy, h, &plan, &dw, None, &mut gout).unwrap();
            assert_close("unpermute", &dev.download(&gout).unwrap(), &cpu_out, 1e-5, 1e-5);
            let sy = uniform(t * h, 11, -1.0, 1.0);
            let sg = uniform(t, 12, -3.0, 3.0);
            let with_shared: Vec<f32> = (0..t * h)
                .map(|i| cpu_out[i] + sy[i] / (1.0 + (-sg[i / h]).exp()))
                .collect();
            let (dsy, dsg) = (dev.upload(&sy).unwrap(), dev.upload(&sg).unwrap());
            unpermute_tokens_cuda(&dev, &dy, h, &plan, &dw, Some((&dsy, &dsg)), &mut gout).unwrap();
            assert_close(
                "unpermute + shared",
                &dev.download(&gout).unwrap(),
                &with_shared,
                1e-5,
                1e-5,
            );
        }
    }
    // SiLU-and-multiply against the CPU formula.
    for &(rows, inter) in &[(1usize, 1usize), (7, 45), (300, 768)] {
        let input = uniform(rows * 2 * inter, 3, -6.0, 6.0);
        let want: Vec<f32> = (0..rows * inter)
            .map(|i| {
                let (r, c) = (i / inter, i % inter);
                let g = input[r * 2 * inter + c];
                g / (1.0 + (-g).exp()) * input[r * 2 * inter + inter + c]
            })
            .collect();
        let mut out = dev.upload(&vec![f32::NAN; rows * inter]).unwrap();
        silu_mul_cuda(&dev, &dev.upload(&input).unwrap(), inter, &mut out).unwrap();
        assert_close("silu_mul", &dev.download(&out).unwrap(), &want, 1e-6, 1e-5);
    }
}

const PREFIX: &str = "model.layers.0.mlp.";

fn tensors(experts: &Experts, e: usize, layout: ExpertLayout, shared: bool) -> HashMap<String, Owned> {
    let h = experts.hidden;
    let mut m = match layout {
        ExpertLayout::PerExpert => experts.per_expert(PREFIX, Owned::f32),
        ExpertLayout::FusedInOut => experts.fused_in_out(PREFIX, Owned::f32),
        ExpertLayout::FusedOutIn => experts.fused_out_in(PREFIX, Owned::f32),
    };
    m.insert(
        format!("{PREFIX}gate.weight"),
        Owned::f32(&[e, h], &uniform(e * h, 42, -1.0, 1.0)),
    );
    if shared {
        let s = Experts::random(1, h, 40, 900);
        for (name, t) in s.per_expert("", Owned::f32) {
            m.insert(format!("{PREFIX}{}", name.replace("experts.0.", "shared_expert.")), t);
        }
        m.insert(
            format!("{PREFIX}shared_expert_gate.weight"),
            Owned::f32(&[1, h], &uniform(h, 43, -0.5, 0.5)),
        );
    }
    m
}

#[test]
fn gpu_block_matches_cpu() {
    let Some(dev) = common::gpu_or_skip("gpu_block_matches_cpu") else {
        return;
    };
    let (e, h, i, k) = (33usize, 64usize, 48usize, 4usize);
    let experts = Experts::random(e, h, i, 3);
    for layout in [
        ExpertLayout::PerExpert,
        ExpertLayout::FusedInOut,
        ExpertLayout::FusedOutIn,
    ] {
        for shared in [false, true] {
            let owned = tensors(&experts, e, layout, shared);
            let w = MoeWeights::from_tensors(&view(&owned), PREFIX).unwrap();
            let cfg = RouterConfig::new(e, k, true).unwrap();
            for &t in &[1usize, 7, 300] {
                let x = uniform(t * h, t as u64, -1.0, 1.0);
                let what = format!("{layout:?} shared={shared} T={t}");
                let cpu = moe_block(&x, &w, &cfg).unwrap();

                let g = CudaMoe::<f32>::new(&dev, &w, &cfg).unwrap();
                let out = g.forward(&dev.upload(&x).unwrap()).unwrap();
                let gids: Vec<u32> = dev.download(&out.ids).unwrap().into_iter().map(|v| v as u32).collect();
                assert_eq!(gids, cpu.ids, "{what} ids");
                assert_close(
                    &format!("{what} logits"),
                    &dev.download(&out.logits).unwrap(),
                    &cpu.logits,
                    1e-4,
                    1e-4,
                );
                assert_close(
                    &format!("{what} out"),
                    &dev.download(&out.out).unwrap(),
                    &cpu.out,
                    1e-4,
                    1e-3,
                );

                // bf16: the CPU routes the GPU's bf16 logits (ids must then be identical)
                // and the outputs agree to bf16 precision.
                let gb = CudaMoe::<bf16>::new(&dev, &w, &cfg).unwrap();
                let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let outb = gb.forward(&dev.upload(&xb).unwrap()).unwrap();
                let lb: Vec<f32> = dev.download(&outb.logits).unwrap().iter().map(|v| v.to_f32()).collect();
                let mut cid = vec![0u32; t * k];
                let mut cw = vec![0f32; t * k];
                route(&lb, &cfg, &mut cid, &mut cw).unwrap();
                let gidb: Vec<u32> = dev.download(&outb.ids).unwrap().into_iter().map(|v| v as u32).collect();
                assert_eq!(gidb, cid, "{what} bf16 ids");
                let ob: Vec<f32> = dev.download(&outb.out).unwrap().iter().map(|v| v.to_f32()).collect();
                let same_route: Vec<usize> = (0..t)
                    .filter(|&r| cid[r * k..(r + 1) * k] == cpu.ids[r * k..(r + 1) * k])
                    .collect();
                assert!(
                    same_route.len() * 10 >= t * 9,
                    "{what}: bf16 routing differs on most tokens"
                );
                for r in same_route {
                    assert_close(
                        &format!("{what} bf16 out token {r}"),
                        &ob[r * h..(r + 1) * h],
                        &cpu.out[r * h..(r + 1) * h],
                        3e-2,
                        3e-2,
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_blocks_match_transformers_goldens() {
    let Some(dev) = common::gpu_or_skip("gpu_blocks_match_transformers_goldens") else {
        return;
    };
    use safetensors::{Dtype, SafeTensors};
    for case in [
        "qwen3_moe_e12_k4",
        "qwen3_moe_e8_k2_nonorm",
        "qwen3_vl_moe_e16_k4",
        "qwen3_next_e10_k2_shared",
    ] {
        let path = format!("{}/{case}.safetensors", fixtures_dir());
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let cfg_json: serde_json::Value =
            serde_json::from_str(meta.metadata().as_ref().unwrap().get("config").unwrap()).unwrap();
        let views = st.tensors();
        let map: HashMap<String, TensorRef<'_>> = views
            .iter()
            .filter(|(_, v)| v.dtype() == Dtype::F32)
            .map(|(n, v)| {
                (
                    n.clone(),
                    TensorRef {
                        dtype: vlkernels::DType::F32,
                        shape: v.shape(),
                        data: v.data(),
                    },
                )
            })
            .collect();
        let f32s = |name: &str| -> Vec<f32> {
            map[name]
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let w = MoeWeights::from_tensors(&map, cfg_json["prefix"].as_str().unwrap()).unwrap();
        let cfg = RouterConfig::new(
            cfg_json["num_experts"].as_u64().unwrap() as usize,
            cfg_json["num_experts_per_tok"].as_u64().unwrap() as usize,
            cfg_json["norm_topk_prob"].as_bool().unwrap(),
        )
        .unwrap();
        let g = CudaMoe::<f32>::new(&dev, &w, &cfg).unwrap();
        let out = g.forward(&dev.upload(&f32s("x")).unwrap()).unwrap();
        let want_ids: Vec<i32> = st
            .tensor("topk_ids")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(dev.download(&out.ids).unwrap(), want_ids, "{case}");
        assert_close(case, &dev.download(&out.out).unwrap(), &f32s("out"), 1e-4, 1e-3);
    }
}

/// `VLK_MOE_FIXTURES` (for a test binary run away from its source tree) or tests/fixtures/moe.
fn fixtures_dir() -> String {
    std::env::var("VLK_MOE_FIXTURES").unwrap_or_else(|_| format!("{}/tests/fixtures/moe", env!("CARGO_MANIFEST_DIR")))
}
