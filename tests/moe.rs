//! MoE CPU paths: each fast path against its scalar reference, plus the
//! properties of routing and dispatch.

#[path = "common/moe.rs"]
mod moe_common;

use std::collections::HashMap;

use moe_common::{assert_close, ids, uniform, view, Experts, Owned};
use vlkernels::moe::*;
use vlkernels::Error;

const EXPERT_COUNTS: [usize; 10] = [1, 2, 3, 7, 8, 31, 128, 129, 257, 512];
const KS: [usize; 6] = [1, 2, 3, 8, 10, 16];

/// Ids and weights of one routing call.
type Routed = (Vec<u32>, Vec<f32>);

/// (reference, fast) on the same logits, outputs poisoned first.
fn route_both(logits: &[f32], cfg: &RouterConfig) -> (Routed, Routed) {
    let n = logits.len() / cfg.num_experts * cfg.top_k;
    let mut out = Vec::new();
    for fast in [false, true] {
        let mut id = vec![u32::MAX; n];
        let mut w = vec![f32::NAN; n];
        if fast {
            route(logits, cfg, &mut id, &mut w).unwrap();
        } else {
            route_reference(logits, cfg, &mut id, &mut w).unwrap();
        }
        assert!(id.iter().all(|&i| (i as usize) < cfg.num_experts), "unwritten id");
        assert!(w.iter().all(|v| v.is_finite()), "unwritten weight");
        out.push((id, w));
    }
    let fast = out.pop().unwrap();
    (out.pop().unwrap(), fast)
}

/// Independent top-k: sort (−logit, index) and take k.
fn top_k_by_sort(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[test]
fn router_fast_matches_reference_and_sort() {
    let mut seed = 1;
    for &e in &EXPERT_COUNTS {
        for &k in KS.iter().filter(|&&k| k <= e) {
            for &t in &[0usize, 1, 5, 17] {
                for norm in [false, true] {
                    seed += 1;
                    let cfg = RouterConfig::new(e, k, norm).unwrap();
                    let logits = uniform(t * e, seed, -4.0, 4.0);
                    let ((rid, rw), (fid, fw)) = route_both(&logits, &cfg);
                    assert_eq!(rid, fid, "ids E={e} k={k} T={t} norm={norm}");
                    assert_close(&format!("weights E={e} k={k} T={t}"), &fw, &rw, 1e-6, 2e-5);
                    for tok in 0..t {
                        let want = top_k_by_sort(&logits[tok * e..(tok + 1) * e], k);
                        assert_eq!(&fid[tok * k..(tok + 1) * k], &want[..], "token {tok}");
                        if norm {
                            let s: f32 = fw[tok * k..(tok + 1) * k].iter().sum();
                            assert!((s - 1.0).abs() < 1e-5, "weights of token {tok} sum to {s}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn router_ties_go_to_lower_index() {
    let cfg = RouterConfig::new(6, 3, true).unwrap();
    let logits = [1.0, 3.0, 3.0, 2.0, 3.0, 0.0];
    let ((rid, _), (fid, fw)) = route_both(&logits, &cfg);
    assert_eq!(rid, vec![1, 2, 4]);
    assert_eq!(fid, vec![1, 2, 4]);
    assert_close("equal weights", &fw, &[1.0 / 3.0; 3], 1e-7, 1e-6);

    // All equal: the first k experts, weight 1/k, for any E.
    for &e in &[5usize, 128, 512] {
        let cfg = RouterConfig::new(e, 8.min(e), true).unwrap();
        let ((rid, _), (fid, _)) = route_both(&vec![0.25; e], &cfg);
        let want: Vec<u32> = (0..cfg.top_k as u32).collect();
        assert_eq!(rid, want);
        assert_eq!(fid, want);
    }

    // Near ties one ulp apart: the larger wins even at a higher index.
    let base = 0.7f32;
    let up = f32::from_bits(base.to_bits() + 1);
    let cfg = RouterConfig::new(4, 1, false).unwrap();
    let ((rid, _), (fid, _)) = route_both(&[base, base, up, base], &cfg);
    assert_eq!((rid[0], fid[0]), (2, 2));

    // Many ties on quantised logits, against the independent sort.
    let cfg = RouterConfig::new(129, 10, true).unwrap();
    let logits: Vec<f32> = uniform(129 * 33, 77, 0.0, 4.0).iter().map(|v| v.floor()).collect();
    let (_, (fid, _)) = route_both(&logits, &cfg);
    for t in 0..33 {
        assert_eq!(
            &fid[t * 10..(t + 1) * 10],
            &top_k_by_sort(&logits[t * 129..(t + 1) * 129], 10)[..]
        );
    }
}

#[test]
fn router_rejects_bad_arguments() {
    for (e, k) in [(0, 1), (513, 1), (8, 0), (8, 17), (4, 5)] {
        let err = RouterConfig::new(e, k, true).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    let cfg = RouterConfig::new(8, 2, true).unwrap();
    let (mut id, mut w) = (vec![0u32; 4], vec![0f32; 4]);
    assert!(
        route(&[0.0; 15], &cfg, &mut id, &mut w).is_err(),
        "15 logits is not whole rows"
    );
    assert!(
        route(&[0.0; 8], &cfg, &mut id, &mut w).is_err(),
        "one token needs 2 ids"
    );
    let mut logits = vec![0.0f32; 16];
    logits[13] = f32::NAN;
    for fast in [false, true] {
        let r = if fast {
            route(&logits, &cfg, &mut id, &mut w)
        } else {
            route_reference(&logits, &cfg, &mut id, &mut w)
        };
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("token 1, expert 5"), "{msg}");
    }
}

#[test]
fn router_logits_gemm_matches_reference() {
    for &(t, h, e) in &[
        (0usize, 8usize, 4usize),
        (1, 1, 1),
        (7, 33, 129),
        (64, 64, 128),
        (5, 17, 512),
    ] {
        let x = uniform(t * h, 3 + t as u64, -1.0, 1.0);
        let g = uniform(e * h, 5 + e as u64, -1.0, 1.0);
        let mut want = vec![f32::NAN; t * e];
        let mut got = vec![f32::NAN; t * e];
        router_logits_reference(&x, h, &g, &mut want).unwrap();
        router_logits(&x, h, &g, &mut got).unwrap();
        assert_close(&format!("logits T={t} H={h} E={e}"), &got, &want, 1e-5, 1e-5);
    }
    let mut out = vec![0f32; 4];
    assert!(router_logits(&[0.0; 6], 4, &[0.0; 8], &mut out).is_err());
}

fn check_plan_properties(plan: &DispatchPlan, ids: &[u32]) {
    let (e, k, n) = (plan.num_experts, plan.top_k, ids.len());
    assert_eq!(plan.sorted.len(), n);
    let mut seen = vec![0usize; plan.tokens];
    for p in 0..n {
        seen[plan.token_at(p)] += 1;
        assert_eq!(plan.inverse[plan.sorted[p] as usize] as usize, p);
    }
    assert!(seen.iter().all(|&c| c == k), "every token appears exactly k times");
    for x in 0..e {
        let seg = &plan.sorted[plan.offsets[x]..plan.offsets[x + 1]];
        assert_eq!(seg.len(), plan.counts[x] as usize);
        assert!(
            seg.iter().all(|&a| ids[a as usize] as usize == x),
            "segment of expert {x}"
        );
        assert!(seg.windows(2).all(|w| w[0] < w[1]), "stable order in expert {x}");
        let (ps, pe) = (plan.padded_offsets[x], plan.padded_offsets[x + 1]);
        assert_eq!(ps % plan.block_size, 0);
        assert_eq!(pe - ps, seg.len().div_ceil(plan.block_size) * plan.block_size);
        assert_eq!(&plan.padded_sorted[ps..ps + seg.len()], seg);
        assert!(plan.padded_sorted[ps + seg.len()..pe]
            .iter()
            .all(|&v| v == plan.pad_value()));
        assert!(plan.block_experts[ps / plan.block_size..pe / plan.block_size]
            .iter()
            .all(|&b| b as usize == x));
    }
}

#[test]
fn dispatch_fast_matches_reference() {
    let mut seed = 100;
    for &(t, e, k) in &[
        (0usize, 8usize, 2usize),
        (1, 128, 8),
        (13, 7, 3),
        (31, 512, 10),
        (4099, 128, 8),
        (2003, 257, 16),
    ] {
        for &block in &[1usize, 4, 7, 16, 64] {
            seed += 1;
            let id = ids(t * k, e as u32, seed);
            let fast = plan_dispatch(&id, e, k, block).unwrap();
            let reference = plan_dispatch_reference(&id, e, k, block).unwrap();
            assert_eq!(fast, reference, "T={t} E={e} k={k} block={block}");
            check_plan_properties(&fast, &id);
        }
    }
    // Skew: everything on expert 5 of 9, others empty.
    let id = vec![5u32; 3 * 1000];
    let plan = plan_dispatch(&id, 9, 3, 16).unwrap();
    assert_eq!(plan, plan_dispatch_reference(&id, 9, 3, 16).unwrap());
    check_plan_properties(&plan, &id);
    assert_eq!(plan.block_experts.len(), 3000usize.div_ceil(16));
}

#[test]
fn dispatch_rejects_bad_arguments() {
    let msg = plan_dispatch(&[0, 1, 9, 2], 8, 2, 1).unwrap_err().to_string();
    assert!(msg.contains("expert id 9 at token 1, slot 0"), "{msg}");
    assert!(plan_dispatch(&[0, 1, 2], 8, 2, 1).is_err(), "3 ids for k = 2");
    assert!(plan_dispatch(&[0, 1], 8, 2, 0).is_err(), "block 0");
    assert!(plan_dispatch(&[0, 1], 0, 2, 1).is_err(), "no experts");
    assert!(plan_dispatch(&[0, 1], 513, 2, 1).is_err(), "513 experts");
}

#[test]
fn permute_unpermute_match_reference_and_sum_k_times() {
    let mut seed = 500;
    for &(t, e, k) in &[(0usize, 4usize, 2usize), (1, 8, 8), (13, 7, 3), (97, 128, 8)] {
        for &h in &[1usize, 3, 64, 127] {
            seed += 1;
            let plan = plan_dispatch(&ids(t * k, e as u32, seed), e, k, 1).unwrap();
            let x = uniform(t * h, seed, -2.0, 2.0);
            let mut xs = vec![f32::NAN; t * k * h];
            let mut xs_ref = vec![f32::NAN; t * k * h];
            permute_tokens(&x, h, &plan, &mut xs).unwrap();
            permute_tokens_reference(&x, h, &plan, &mut xs_ref).unwrap();
            assert_eq!(xs.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), {
                xs_ref.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            });

            let w = uniform(t * k, seed + 9, 0.0, 1.0);
            let y = uniform(t * k * h, seed + 7, -1.0, 1.0);
            let mut out = vec![f32::NAN; t * h];
            let mut out_ref = vec![f32::NAN; t * h];
            unpermute_tokens(&y, h, &plan, &w, &mut out).unwrap();
            unpermute_tokens_reference(&y, h, &plan, &w, &mut out_ref).unwrap();
            assert_close("unpermute", &out, &out_ref, 1e-6, 1e-5);

            let ones = vec![1.0f32; t * k];
            unpermute_tokens(&xs, h, &plan, &ones, &mut out).unwrap();
            let kx: Vec<f32> = x.iter().map(|v| v * k as f32).collect();
            assert_close("unpermute(permute(x)) = k x", &out, &kx, 1e-6, 1e-6);
        }
    }
    let plan = plan_dispatch(&[0, 1], 2, 2, 1).unwrap();
    assert!(permute_tokens(&[0.0f32; 3], 4, &plan, &mut [0.0; 8]).is_err());
    assert!(unpermute_tokens(&[0.0; 8], 4, &plan, &[1.0; 3], &mut [0.0; 4]).is_err());
}

const PREFIX: &str = "model.layers.3.mlp.";

fn block_tensors(
    experts: &Experts,
    e: usize,
    layout: ExpertLayout,
    shared: bool,
    make: fn(&[usize], &[f32]) -> Owned,
) -> HashMap<String, Owned> {
    let h = experts.hidden;
    let mut m = match layout {
        ExpertLayout::PerExpert => experts.per_expert(PREFIX, make),
        ExpertLayout::FusedInOut => experts.fused_in_out(PREFIX, make),
        ExpertLayout::FusedOutIn => experts.fused_out_in(PREFIX, make),
    };
    m.insert(
        format!("{PREFIX}gate.weight"),
        make(&[e, h], &uniform(e * h, 42, -1.0, 1.0)),
    );
    if shared {
        let s = Experts::random(1, h, 19, 900);
        for (name, t) in s.per_expert("", make) {
            let name = name.replace("experts.0.", "shared_expert.");
            m.insert(format!("{PREFIX}{name}"), t);
        }
        m.insert(
            format!("{PREFIX}shared_expert_gate.weight"),
            make(&[1, h], &uniform(h, 43, -0.5, 0.5)),
        );
    }
    m
}

#[test]
fn block_fast_matches_reference_in_every_layout() {
    let (e, h, i) = (7usize, 33usize, 17usize);
    let experts = Experts::random(e, h, i, 7);
    for shared in [false, true] {
        for make in [Owned::f32 as fn(&[usize], &[f32]) -> Owned, Owned::bf16] {
            let mut first: Option<MoeOutput> = None;
            for layout in [
                ExpertLayout::PerExpert,
                ExpertLayout::FusedInOut,
                ExpertLayout::FusedOutIn,
            ] {
                let owned = block_tensors(&experts, e, layout, shared, make);
                let w = MoeWeights::from_tensors(&view(&owned), PREFIX).unwrap();
                assert_eq!((w.layout, w.hidden, w.intermediate, w.num_experts), (layout, h, i, e));
                assert_eq!(w.shared.is_some(), shared);
                for &(t, k, norm) in &[(1usize, 3usize, true), (2, 1, false), (29, 3, true), (64, 7, false)] {
                    let cfg = RouterConfig::new(e, k, norm).unwrap();
                    let x = uniform(t * h, t as u64, -1.0, 1.0);
                    let fast = moe_block(&x, &w, &cfg).unwrap();
                    let reference = moe_block_reference(&x, &w, &cfg).unwrap();
                    let what = format!("{layout:?} shared={shared} T={t} k={k}");
                    assert_eq!(fast.ids, reference.ids, "{what}");
                    assert_close(&format!("{what} logits"), &fast.logits, &reference.logits, 1e-5, 1e-5);
                    assert_close(
                        &format!("{what} weights"),
                        &fast.weights,
                        &reference.weights,
                        1e-6,
                        1e-5,
                    );
                    assert_close(&format!("{what} out"), &fast.out, &reference.out, 1e-5, 1e-4);
                    if t == 29 {
                        // All layouts hold the same numbers: identical results.
                        match &first {
                            None => first = Some(fast),
                            Some(f) => {
                                assert_eq!(f.ids, fast.ids, "{what}");
                                assert_close(&what, &fast.out, &f.out, 1e-6, 1e-5);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn expert_segments_at_gemm_edges() {
    // Segments of 0, 1 and many rows, with odd hidden and intermediate sizes.
    let (e, h, i) = (5usize, 67usize, 45usize);
    let experts = Experts::random(e, h, i, 11);
    let owned = block_tensors(&experts, e, ExpertLayout::FusedInOut, false, Owned::f32);
    let w = MoeWeights::from_tensors(&view(&owned), PREFIX).unwrap();
    let mut id = vec![3u32; 2 * 131];
    id[7] = 1;
    id[100] = 0;
    let plan = plan_dispatch(&id, e, 2, 1).unwrap();
    let xs = uniform(id.len() * h, 3, -1.0, 1.0);
    let ys = run_experts(&xs, &w, &plan).unwrap();
    let mut want = vec![f32::NAN; h];
    for p in 0..id.len() {
        let ex = id[plan.sorted[p] as usize] as usize;
        expert_ffn_reference(&xs[p * h..(p + 1) * h], &w.expert(ex).unwrap(), &mut want).unwrap();
        assert_close(
            &format!("row {p} (expert {ex})"),
            &ys[p * h..(p + 1) * h],
            &want,
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn bf16_weights_are_rounded_once() {
    let (e, h, i) = (3usize, 8usize, 4usize);
    let experts = Experts::random(e, h, i, 5);
    let w16 = MoeWeights::from_tensors(
        &view(&block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::bf16)),
        PREFIX,
    )
    .unwrap();
    let g = w16.expert(1).unwrap().gate;
    for r in 0..i {
        for c in 0..h {
            let want = half::bf16::from_f32(experts.gate[1][r * h + c]).to_f32();
            assert_eq!(g.at(c, r).to_bits(), want.to_bits());
        }
    }
}

#[test]
fn loader_names_missing_and_misshapen_tensors() {
    let (e, h, i) = (4usize, 8usize, 6usize);
    let experts = Experts::random(e, h, i, 1);
    let load = |m: &HashMap<String, Owned>| MoeWeights::from_tensors(&view(m), PREFIX).map(|_| ());

    let mut m = block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::f32);
    m.remove(&format!("{PREFIX}experts.2.up_proj.weight"));
    let msg = load(&m).unwrap_err().to_string();
    assert!(
        msg.contains("missing tensor 'model.layers.3.mlp.experts.2.up_proj.weight'"),
        "{msg}"
    );

    let mut m = block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::f32);
    m.insert(
        format!("{PREFIX}experts.3.down_proj.weight"),
        Owned::f32(&[i, h], &vec![0.0; i * h]),
    );
    let msg = load(&m).unwrap_err().to_string();
    assert!(
        msg.contains("experts.3.down_proj.weight' has shape [6, 8], expected [8, 6]"),
        "{msg}"
    );

    let mut m = block_tensors(&experts, e, ExpertLayout::FusedInOut, false, Owned::f32);
    m.insert(
        format!("{PREFIX}experts.down_proj"),
        Owned::f32(&[e, i + 1, h], &vec![0.0; e * (i + 1) * h]),
    );
    let msg = load(&m).unwrap_err().to_string();
    assert!(
        msg.contains("experts.gate_up_proj") && msg.contains("[4, 7, 8]"),
        "{msg}"
    );

    let mut m = block_tensors(&experts, e, ExpertLayout::FusedOutIn, true, Owned::f32);
    m.remove(&format!("{PREFIX}shared_expert.down_proj.weight"));
    let msg = load(&m).unwrap_err().to_string();
    assert!(msg.contains("shared_expert.down_proj.weight"), "{msg}");

    let mut m = block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::f32);
    m.remove(&format!("{PREFIX}gate.weight"));
    let msg = load(&m).unwrap_err().to_string();
    assert!(msg.contains("gate.weight"), "{msg}");

    let mut m = block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::f32);
    let mut bad = Owned::f32(&[e, h], &vec![0.0; e * h]);
    bad.dtype = vlkernels::DType::I32;
    m.insert(format!("{PREFIX}gate.weight"), bad);
    let msg = load(&m).unwrap_err().to_string();
    assert!(msg.contains("gate.weight is i32"), "{msg}");

    // The block itself checks the router config against the weights.
    let w = MoeWeights::from_tensors(
        &view(&block_tensors(&experts, e, ExpertLayout::PerExpert, false, Owned::f32)),
        PREFIX,
    )
    .unwrap();
    assert!(moe_block(&[0.0; 8], &w, &RouterConfig::new(5, 2, true).unwrap()).is_err());
    assert!(moe_block(&[0.0; 9], &w, &RouterConfig::new(4, 2, true).unwrap()).is_err());
}

#[test]
fn views_and_expert_calls_reject_bad_shapes() {
    let data = vec![0f32; 12];
    // A [3, 4] row-major view fits; one more row or a wider stride does not.
    assert!(MatRef::new(&data, 0, 3, 4, 4, 1).is_ok());
    let msg = MatRef::new(&data, 0, 4, 4, 4, 1).unwrap_err().to_string();
    assert!(msg.contains("reaches element 15 of a 12-element buffer"), "{msg}");
    assert!(
        MatRef::new(&data, 1, 3, 4, 4, 1).is_err(),
        "offset pushes the last element out"
    );
    assert!(MatRef::new(&data, 0, 2, 2, usize::MAX, 1).is_err(), "stride overflow");
    assert!(MatRef::new(&data, 0, 0, 4, 4, 1).is_ok(), "an empty view is fine");
    let m = MatRef::new(&data, 0, 3, 4, 4, 1).unwrap();
    assert!(m.cols(2, 3).is_err(), "columns 2..5 of 4");

    let (h, i) = (4usize, 3usize);
    let g = vec![0.5f32; h * i];
    let d = vec![0.25f32; h * i];
    let w = ExpertRef {
        gate: MatRef::new(&g, 0, h, i, i, 1).unwrap(),
        up: MatRef::new(&g, 0, h, i, i, 1).unwrap(),
        down: MatRef::new(&d, 0, i, h, h, 1).unwrap(),
    };
    let mut out = vec![0f32; 2 * h];
    assert!(
        expert_ffn(&[1.0; 7], &w, &mut out, false).is_err(),
        "7 inputs for hidden 4"
    );
    assert!(
        expert_ffn(&[1.0; 8], &w, &mut out[..4], false).is_err(),
        "output of one row for two"
    );
    let bad = ExpertRef {
        down: MatRef::new(&d, 0, h, i, i, 1).unwrap(),
        ..w
    };
    assert!(
        expert_ffn(&[1.0; 8], &bad, &mut out, false).is_err(),
        "down [4, 3] for [3, 4]"
    );
    // Fast and reference agree on this small expert too.
    let mut want = vec![f32::NAN; 2 * h];
    expert_ffn(&[1.0, -2.0, 0.5, 3.0, 0.0, 1.0, 1.0, -1.0], &w, &mut out, false).unwrap();
    expert_ffn_reference(&[1.0, -2.0, 0.5, 3.0, 0.0, 1.0, 1.0, -1.0], &w, &mut want).unwrap();
    assert_close("small expert", &out, &want, 1e-6, 1e-6);
}
