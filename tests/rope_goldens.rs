//! The RoPE family against HF transformers 4.57.1 (fixtures written by
//! tools/gen_rope_goldens.py): inverse frequencies, cos/sin, rotated q/k in f32 and bf16
//! for the Qwen2.5-VL and Qwen3-VL decoders and the ViT, and get_rope_index position ids.
//!
//! Tolerances: f32 outputs within 2e-5 normwise of HF (both round the same f32 angle;
//! HF keeps cos/sin in f32); bf16 outputs within 2 bf16 ulps (HF rounds cos, sin and each
//! product to bf16, this crate rounds once).

use half::bf16;
use std::path::PathBuf;
use vlkernels::rope::positions::{
    mrope_positions, segments_from_tokens, vision_positions, MropeOptions, PositionStyle,
};
use vlkernels::rope::{angle, HeadsLayout, RopeParams, RopeVariant};

fn dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rope")
        .join(case)
}

fn load<T: bytemuck::Pod>(case: &str, name: &str) -> (Vec<T>, Vec<usize>) {
    let a = vlkernels::npy::read_npy(dir(case).join(format!("{name}.npy"))).unwrap();
    (bytemuck::pod_collect_to_vec(&a.data), a.shape)
}

/// Largest |got - want| / max(|want|, 0.5).
fn err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| ((g - w).abs() / w.abs().max(0.5)) as f64)
        .fold(0.0, f64::max)
}

fn text_case(case: &str, p: &RopeParams) {
    let (inv, _) = load::<f32>(case, "inv_freq");
    let ours = p.inv_freq();
    let inv_err = ours
        .iter()
        .zip(&inv)
        .map(|(a, b)| ((a - b) / b).abs())
        .fold(0f32, f32::max);
    assert!(inv_err <= 1.2e-7, "{case}: inv_freq differs from HF by {inv_err:e}");
    let (pos, shape) = load::<i64>(case, "positions");
    let n = shape[1];
    let (cos, _) = load::<f32>(case, "cos");
    let (sin, _) = load::<f32>(case, "sin");
    let (d, half) = (p.head_dim, p.head_dim / 2);
    let mut worst = 0f64;
    for t in 0..n {
        for j in 0..half {
            let a = angle(p, &ours, &pos, n, t, 0, j).unwrap() as f64;
            for jj in [j, j + half] {
                worst = worst.max((a.cos() - cos[t * d + jj] as f64).abs());
                worst = worst.max((a.sin() - sin[t * d + jj] as f64).abs());
            }
        }
    }
    assert!(worst < 2e-6, "{case}: cos/sin differ from HF by {worst:e}");

    let (q_in, qs) = load::<f32>(case, "q_in");
    let (k_in, ks) = load::<f32>(case, "k_in");
    let (ql, kl) = (
        HeadsLayout::contiguous(n, qs[1], d),
        HeadsLayout::contiguous(n, ks[1], d),
    );
    let (q_want, _) = load::<f32>(case, "q_out_f32");
    let (k_want, _) = load::<f32>(case, "k_out_f32");
    let (mut q, mut k) = (q_in.clone(), k_in.clone());
    vlkernels::rope::reference(p, &pos, &mut q, &ql, &mut k, &kl).unwrap();
    let e = err(&q, &q_want).max(err(&k, &k_want));
    assert!(e < 2e-5, "{case}: reference f32 differs from HF by {e:e}");
    let (mut q, mut k) = (q_in, k_in);
    vlkernels::rope::apply(p, &pos, &mut q, &ql, &mut k, &kl).unwrap();
    let e = err(&q, &q_want).max(err(&k, &k_want));
    assert!(e < 2e-5, "{case}: fast f32 differs from HF by {e:e}");

    let bits = |name: &str| -> Vec<bf16> { load::<u16>(case, name).0.into_iter().map(bf16::from_bits).collect() };
    let (mut q, mut k) = (bits("q_in_bf16"), bits("k_in_bf16"));
    vlkernels::rope::apply(p, &pos, &mut q, &ql, &mut k, &kl).unwrap();
    let f = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let e = err(&f(&q), &f(&bits("q_out_bf16"))).max(err(&f(&k), &f(&bits("k_out_bf16"))));
    assert!(e <= 2.0 * 2f64.powi(-7), "{case}: bf16 differs from HF by {e:e}");
    eprintln!("{case}: inv_freq {inv_err:e}, cos/sin {worst:e}, bf16 {e:e}");
}

#[test]
fn qwen2_5_vl_decoder_matches_hf() {
    text_case("qwen2_5_vl", &RopeParams::qwen2_5_vl());
}

#[test]
fn qwen3_vl_decoder_matches_hf() {
    text_case("qwen3_vl", &RopeParams::qwen3_vl());
}

#[test]
fn vision_2d_rope_matches_hf() {
    let p = RopeParams::new(80, RopeVariant::Vision2d);
    let (inv, _) = load::<f32>("vision", "inv_freq");
    assert_eq!(p.inv_freq().len(), inv.len());
    let (pos, shape) = load::<i64>("vision", "positions");
    assert_eq!(pos, vision_positions(&[[1, 4, 6]], 2).unwrap(), "merge-block order");
    let n = shape[1];
    let (mut q, qs) = load::<f32>("vision", "q_in");
    let (mut k, _) = load::<f32>("vision", "k_in");
    let l = HeadsLayout::contiguous(n, qs[1], 80);
    vlkernels::rope::apply(&p, &pos, &mut q, &l, &mut k, &l).unwrap();
    let e = err(&q, &load::<f32>("vision", "q_out_f32").0).max(err(&k, &load::<f32>("vision", "k_out_f32").0));
    assert!(e < 2e-5, "vision f32 differs from HF by {e:e}");
}

#[test]
fn position_ids_match_hf_get_rope_index() {
    let text = std::fs::read_to_string(dir("positions.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (image, video) = (
        doc["image_token_id"].as_i64().unwrap(),
        doc["video_token_id"].as_i64().unwrap(),
    );
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let name = format!("{} {}", c["model"], c["name"]);
        let ids: Vec<i64> = serde_json::from_value(c["input_ids"].clone()).unwrap();
        let ig: Vec<[usize; 3]> = serde_json::from_value(c["image_grid_thw"].clone()).unwrap();
        let vg: Vec<[usize; 3]> = serde_json::from_value(c["video_grid_thw"].clone()).unwrap();
        let spg: Vec<f64> = serde_json::from_value(c["second_per_grid_ts"].clone()).unwrap_or_default();
        let videos: Vec<([usize; 3], f64)> = vg
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, spg.get(i).copied().unwrap_or(1.0)))
            .collect();
        let opts = if c["model"] == "qwen2_5_vl" {
            MropeOptions {
                style: PositionStyle::Qwen2_5Vl {
                    tokens_per_second: c["tokens_per_second"].as_i64().unwrap(),
                },
                ..MropeOptions::qwen2_5_vl()
            }
        } else {
            MropeOptions::qwen3_vl()
        };
        let segs = segments_from_tokens(&ids, image, video, &ig, &videos, &opts).unwrap();
        let got = mrope_positions(&segs, &opts).unwrap();
        let want: Vec<Vec<i64>> = serde_json::from_value(c["positions"].clone()).unwrap();
        assert_eq!(got.tokens, ids.len(), "{name}");
        assert_eq!(got.ids, want.concat(), "{name}: position ids");
        assert_eq!(got.delta, c["delta"].as_i64().unwrap(), "{name}: rope delta");
    }
}

#[test]
fn spatial_reset_restarts_h_and_w() {
    use vlkernels::rope::positions::Segment;
    let opts = MropeOptions {
        spatial_reset: true,
        ..MropeOptions::qwen3_vl()
    };
    let p = mrope_positions(
        &[Segment::Text(3), Segment::Image { t: 1, h: 4, w: 4 }, Segment::Text(2)],
        &opts,
    )
    .unwrap();
    let n = p.tokens;
    assert_eq!(n, 9);
    assert_eq!(&p.ids[..n], &[0, 1, 2, 3, 3, 3, 3, 4, 5]);
    assert_eq!(&p.ids[n..2 * n], &[0, 1, 2, 0, 0, 1, 1, 4, 5]);
    assert_eq!(&p.ids[2 * n..], &[0, 1, 2, 0, 1, 0, 1, 4, 5]);
    assert_eq!(p.delta, 6 - 9);
}
