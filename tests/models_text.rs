//! The text decoders against transformers on the tiny fixture models in
//! tests/fixtures/models/ (tools/gen_text_model_fixtures.py for the Qwen3 / Qwen3-MoE
//! models, tools/gen_vl_model_fixtures.py for the VL models, whose language models are
//! fed here with the stored vision embeddings and DeepStack features).

mod common;
use common::{expect_vlk_error, vlk};
use std::path::{Path, PathBuf};

use vlkernels::models::{
    generate_greedy, DecoderInput, DeepStack, GenerateOptions, Positions, Prompt, TextArch, TextConfig, TextModel,
    Weights,
};
use vlkernels::npy::read_npy;
use vlkernels::DType;

const TOL: f32 = 1e-4;
const TEXT_MODELS: [&str; 5] = ["qwen3_tied", "qwen3_untied", "qwen3_moe", "qwen3_v5", "qwen3_moe_v5"];
const VL_MODELS: [&str; 3] = ["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn f32s(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.dtype, DType::F32, "{}", path.display());
    (bytemuck::pod_collect_to_vec(&a.data), a.shape)
}

fn i64s(path: &Path) -> (Vec<i64>, Vec<usize>) {
    let a = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.dtype, DType::I64, "{}", path.display());
    (bytemuck::pod_collect_to_vec(&a.data), a.shape)
}

fn ids(path: &Path) -> Vec<u32> {
    i64s(path).0.iter().map(|&x| u32::try_from(x).unwrap()).collect()
}

/// Max abs difference within `TOL`; top-1 equal at every row whose reference top-1
/// margin exceeds `TOL` (a smaller margin is a tie at this precision). Returns the max diff.
fn check_logits(what: &str, got: &[f32], want: &[f32], vocab: usize) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= TOL, "{what}: max abs diff {diff:e} > {TOL:e}");
    for (r, (g, w)) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)).enumerate() {
        let top = |x: &[f32]| (0..vocab).fold(0, |b, i| if x[i] > x[b] { i } else { b });
        let (tg, tw) = (top(g), top(w));
        let mut sorted = w.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > TOL {
            assert_eq!(tg, tw, "{what}: top-1 differs at row {r}");
        }
    }
    diff
}

#[test]
fn text_models_match_transformers_logits() {
    for name in TEXT_MODELS {
        let dir = fixture(name);
        let model = TextModel::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vocab = model.config().vocab_size;
        for case in 0..3 {
            let tokens = ids(&dir.join(format!("case{case}_ids.npy")));
            let (want, shape) = f32s(&dir.join(format!("case{case}_logits.npy")));
            assert_eq!(shape, vec![tokens.len(), vocab]);
            let mut cache = model.new_cache().unwrap();
            let mut out = model
                .forward(DecoderInput::Ids(&tokens), Positions::Sequential, &mut cache, None)
                .unwrap();
            let what = format!("{name} case{case} ({} tokens)", tokens.len());
            let diff = check_logits(&what, &out.logits, &want, vocab);
            eprintln!("{what}: max abs diff {diff:.2e}");
            out.logits.fill(f32::NAN);
        }
    }
}

#[test]
fn moe_router_choices_match_transformers() {
    for name in ["qwen3_moe", "qwen3_moe_v5"] {
        let dir = fixture(name);
        let model = TextModel::open(&dir).unwrap();
        let tokens = ids(&dir.join("case2_ids.npy"));
        let (want, shape) = i64s(&dir.join("router_ids.npy"));
        let (layers, _) = i64s(&dir.join("router_layers.npy"));
        let mut cache = model.new_cache().unwrap();
        let out = model
            .forward(DecoderInput::Ids(&tokens), Positions::Sequential, &mut cache, None)
            .unwrap();
        let got_layers: Vec<i64> = out.router.iter().map(|t| t.layer as i64).collect();
        assert_eq!(got_layers, layers, "{name}: MoE layers (layer 1 is dense)");
        assert_eq!(shape, vec![layers.len(), tokens.len(), out.router[0].top_k]);
        let got: Vec<i64> = out
            .router
            .iter()
            .flat_map(|t| t.ids.iter().map(|&i| i as i64))
            .collect();
        assert_eq!(got, want, "{name}: router top-k ids");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in TEXT_MODELS {
        let dir = fixture(name);
        let model = TextModel::open(&dir).unwrap();
        let prompt = ids(&dir.join("gen_prompt.npy"));
        let want = ids(&dir.join("gen_output.npy"));
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            eos_token_ids: vec![],
        };
        let mut streamed = Vec::new();
        let g = generate_greedy(&model, Prompt::ids(&prompt), &opts, |t| streamed.push(t)).unwrap();
        assert_eq!(g.tokens, want, "{name}: greedy ids");
        assert_eq!(streamed, want);
        assert_eq!(g.prompt_tokens, prompt.len());
    }
}

#[test]
fn prefill_then_decode_equals_one_prefill() {
    for name in ["qwen3_untied", "qwen3_moe"] {
        let dir = fixture(name);
        let model = TextModel::open(&dir).unwrap();
        let vocab = model.config().vocab_size;
        let tokens = ids(&dir.join("case2_ids.npy"));
        let (want, _) = f32s(&dir.join("case2_logits.npy"));
        for k in [1, 5, tokens.len() - 1] {
            let mut cache = model.new_cache().unwrap();
            let mut got = model
                .forward(DecoderInput::Ids(&tokens[..k]), Positions::Sequential, &mut cache, None)
                .unwrap()
                .logits;
            for t in &tokens[k..] {
                let step = model
                    .forward(DecoderInput::Ids(&[*t]), Positions::Sequential, &mut cache, None)
                    .unwrap();
                got.extend(step.logits);
            }
            assert_eq!(cache.len(), tokens.len());
            check_logits(&format!("{name} prefill {k} + decode"), &got, &want, vocab);
        }
    }
}

/// The VL case's prompt as the decoder takes it: text embeddings with the stored vision
/// embeddings at image-token positions, `[3, N]` positions and DeepStack features.
struct VlCase {
    tokens: Vec<u32>,
    embeds: Vec<f32>,
    positions: Vec<i64>,
    visual: Vec<usize>,
    deepstack: Vec<Vec<f32>>,
    rope_delta: i64,
}

fn vl_case(model: &TextModel, dir: &Path) -> VlCase {
    let tokens = ids(&dir.join("input_ids.npy"));
    let h = model.config().hidden_size;
    let image_token = model.config().image_token_id.expect("VL config has image_token_id") as u32;
    let mut embeds = model.embed(&tokens).unwrap();
    let visual: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i] == image_token).collect();
    if !visual.is_empty() {
        let (vis, shape) = f32s(&dir.join("vision_embeds.npy"));
        assert_eq!(
            shape,
            vec![visual.len(), h],
            "{}: one vision row per image token",
            dir.display()
        );
        for (j, &p) in visual.iter().enumerate() {
            embeds[p * h..(p + 1) * h].copy_from_slice(&vis[j * h..(j + 1) * h]);
        }
    }
    let deepstack = (0..)
        .map(|i| dir.join(format!("deepstack_{i}.npy")))
        .take_while(|p| p.is_file())
        .map(|p| f32s(&p).0)
        .collect();
    let (positions, shape) = i64s(&dir.join("position_ids.npy"));
    assert_eq!(shape, vec![3, tokens.len()]);
    VlCase {
        embeds,
        positions,
        visual,
        deepstack,
        rope_delta: i64s(&dir.join("rope_deltas.npy")).0[0],
        tokens,
    }
}

#[test]
fn vl_language_models_match_transformers() {
    let mut checked = 0;
    for name in VL_MODELS {
        let model = TextModel::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(model.config().arch.is_vision_language());
        let vocab = model.config().vocab_size;
        for case in ["text", "one_image", "two_images"] {
            let dir = fixture(name).join("cases").join(case);
            let c = vl_case(&model, &dir);
            let ds = (!c.deepstack.is_empty()).then(|| DeepStack {
                visual_positions: &c.visual,
                features: &c.deepstack,
            });
            let mut cache = model.new_cache().unwrap();
            let out = model
                .forward(
                    DecoderInput::Embeds(&c.embeds),
                    Positions::Mrope(&c.positions),
                    &mut cache,
                    ds,
                )
                .unwrap();
            let (want, _) = f32s(&dir.join("logits.npy"));
            let what = format!("{name}/{case} ({} tokens, {} visual)", c.tokens.len(), c.visual.len());
            let diff = check_logits(&what, &out.logits, &want, vocab);
            eprintln!("{what}: max abs diff {diff:.2e}");
            if !c.visual.is_empty() {
                // Controls: the image positions and the DeepStack features both matter here.
                let run = |pos: Positions<'_>, ds: Option<DeepStack<'_>>| {
                    let mut cache = model.new_cache().unwrap();
                    let l = model
                        .forward(DecoderInput::Embeds(&c.embeds), pos, &mut cache, ds)
                        .unwrap()
                        .logits;
                    l.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
                };
                assert!(
                    run(Positions::Sequential, ds) > 10.0 * TOL,
                    "{what}: positions had no effect"
                );
                if ds.is_some() {
                    assert!(
                        run(Positions::Mrope(&c.positions), None) > 10.0 * TOL,
                        "{what}: DeepStack had no effect"
                    );
                }
            }
            let want_gen = ids(&dir.join("generated_ids.npy"));
            let prompt = Prompt {
                input: DecoderInput::Embeds(&c.embeds),
                positions: Positions::Mrope(&c.positions),
                deepstack: ds,
                rope_delta: c.rope_delta,
            };
            let opts = GenerateOptions {
                max_new_tokens: want_gen.len(),
                eos_token_ids: vec![],
            };
            let g = generate_greedy(&model, prompt, &opts, |_| {}).unwrap();
            assert_eq!(g.tokens, want_gen, "{what}: greedy ids (rope delta {})", c.rope_delta);
            checked += 1;
        }
    }
    assert_eq!(checked, 9, "every VL model and case was checked");
}

#[test]
fn configs_of_every_fixture_parse() {
    let want = [
        ("qwen3_tied", TextArch::Qwen3, true),
        ("qwen3_untied", TextArch::Qwen3, false),
        ("qwen3_moe", TextArch::Qwen3Moe, false),
        ("qwen3_v5", TextArch::Qwen3, false),
        ("qwen3_moe_v5", TextArch::Qwen3Moe, false),
    ];
    for (name, arch, tied) in want {
        let c = TextConfig::from_dir(fixture(name)).unwrap();
        assert_eq!((c.arch, c.tie_word_embeddings), (arch, tied), "{name}");
    }
    let moe = TextConfig::from_dir(fixture("qwen3_moe")).unwrap();
    let v5 = TextConfig::from_dir(fixture("qwen3_moe_v5")).unwrap();
    assert_eq!(moe.moe, v5.moe, "4.57 num_experts and 5.x num_local_experts");
    assert_eq!(v5.rope, moe.rope, "5.x rope_parameters and 4.57 rope_theta");
    assert!((0..3).map(|i| moe.is_moe_layer(i)).eq([true, false, true]));
}

/// Copies a fixture into a temp dir, dropping `drop` from its safetensors file.
fn fixture_without(name: &str, drop: &str) -> tempfile::TempDir {
    let src = fixture(name);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let w = Weights::open(&src).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = w
        .names()
        .filter(|n| *n != drop)
        .map(|n| {
            let info = w.info(n).unwrap();
            assert_eq!(info.dtype, vlkernels::models::WeightDType::F32);
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, info.shape.clone(), w.bytes(n).unwrap())
                    .unwrap();
            (n.to_string(), view)
        })
        .collect();
    assert!(kept.len() + 1 == w.names().count(), "{drop} is in {name}");
    safetensors::serialize_to_file(kept, None, &tmp.path().join("model.safetensors")).unwrap();
    tmp
}

#[test]
fn errors_name_what_is_wrong() {
    for (model, drop) in [
        ("qwen3_tied", "model.layers.1.self_attn.k_norm.weight"),
        ("qwen3_moe", "model.layers.2.mlp.experts.5.up_proj.weight"),
        ("qwen3_untied", "lm_head.weight"),
    ] {
        let tmp = fixture_without(model, drop);
        let e = TextModel::open(tmp.path()).err().expect("load must fail").to_string();
        assert!(e.contains(drop), "{model} without {drop}: {e}");
    }
    let model = TextModel::open(fixture("qwen3_tied")).unwrap();
    let mut cache = model.new_cache().unwrap();
    let e = model
        .forward(DecoderInput::Ids(&[3, 512, 4]), Positions::Sequential, &mut cache, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 512"), "{e}");
    assert_eq!(cache.len(), 0, "a failed call leaves the cache as it was");
    let e = model
        .forward(DecoderInput::Ids(&[]), Positions::Sequential, &mut cache, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let e = model
        .forward(DecoderInput::Ids(&[1, 2]), Positions::Linear(&[0]), &mut cache, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 values for 2 tokens"), "{e}");
    let e = model
        .forward(DecoderInput::Ids(&[1]), Positions::Mrope(&[0, 0, 0]), &mut cache, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1-D positions"), "{e}");
    // A config of an unknown architecture.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen3_tied").join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "gpt2".into();
    cfg["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let e = TextConfig::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("gpt2") && e.contains("GPT2LMHeadModel"), "{e}");
}

#[test]
fn cli_logits_and_run() {
    let dir = fixture("qwen3_moe");
    let tokens = ids(&dir.join("case1_ids.npy"));
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("logits.npy");
    let o = vlk(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        &list.join(","),
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (got, shape) = f32s(&out_path);
    let (want, _) = f32s(&dir.join("case1_logits.npy"));
    assert_eq!(shape, vec![tokens.len(), 512]);
    check_logits("vlk logits", &got, &want, 512);

    let prompt = ids(&dir.join("gen_prompt.npy"));
    let want = ids(&dir.join("gen_output.npy"));
    let plist: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let n = want.len().to_string();
    let o = vlk(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        &plist.join(","),
        "--max-new-tokens",
        &n,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let want_line: Vec<String> = want.iter().map(u32::to_string).collect();
    assert!(stdout.contains(&format!("ids: {}", want_line.join(","))), "{stdout}");
    assert!(stdout.contains("TTFT") && stdout.contains("tokens/s"), "{stdout}");

    // Text in and out through tokenizer.json.
    let tied = fixture("qwen3_tied");
    let o = vlk(&[
        "run",
        "--model",
        tied.to_str().unwrap(),
        "--prompt",
        "hello world",
        "--max-new-tokens",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("prompt ids: 12,31") && stdout.contains("text:"),
        "{stdout}"
    );

    // Errors: bad id, missing model, unsupported flags.
    let o = vlk(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        "1,9999",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("token id 9999"));
    let o = vlk(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        "1,x",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"x\""));
    let o = vlk(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        "1",
        "--grid-thw",
        "1,4,4",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--grid-thw"), "{e}");
    let o = vlk(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokenizer.json"));
    let m = dir.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "run",
                "--model",
                m,
                "--input-ids",
                "1",
                "--max-new-tokens",
                "2",
                "--device",
                "cuda",
            ],
            "--device cuda",
        ),
        (
            vec![
                "run",
                "--model",
                m,
                "--input-ids",
                "1",
                "--max-new-tokens",
                "2",
                "--image",
                "x.png",
            ],
            "--image",
        ),
        (
            vec!["run", "--model", m, "--input-ids", "1", "--max-new-tokens", "0"],
            "--max-new-tokens 0",
        ),
        (
            vec![
                "run",
                "--model",
                "/nonexistent/model",
                "--input-ids",
                "1",
                "--max-new-tokens",
                "2",
            ],
            "/nonexistent/model",
        ),
    ] {
        expect_vlk_error(&args, want);
    }
}

#[test]
fn sharded_checkpoint_gives_the_same_logits() {
    let src = fixture("qwen3_moe");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let w = Weights::open(&src).unwrap();
    let names: Vec<&str> = w.names().collect();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|&n| {
                let shape = w.info(n).unwrap().shape.clone();
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, w.bytes(n).unwrap());
                (n.to_string(), view.unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &tmp.path().join(&file)).unwrap();
        for &n in part {
            weight_map.insert(n.to_string(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(tmp.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = TextModel::open(tmp.path()).unwrap();
    let tokens = ids(&src.join("case2_ids.npy"));
    let (want, _) = f32s(&src.join("case2_logits.npy"));
    let mut cache = model.new_cache().unwrap();
    let out = model
        .forward(DecoderInput::Ids(&tokens), Positions::Sequential, &mut cache, None)
        .unwrap();
    check_logits("qwen3_moe in two shards", &out.logits, &want, 512);
}

/// Rewrites qwen3_moe's per-expert tensors into the fused `[E, 2I, H]` + `[E, H, I]`
/// layout (transformers 5.x in memory) and checks the logits are unchanged.
#[test]
fn fused_expert_layout_gives_the_same_logits() {
    let src = fixture("qwen3_moe");
    let w = Weights::open(&src).unwrap();
    let cfg = TextConfig::from_dir(&src).unwrap();
    let moe = cfg.moe.clone().unwrap();
    let (e, i, h) = (moe.num_experts, moe.moe_intermediate_size, cfg.hidden_size);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for n in w.names().filter(|n| !n.contains(".mlp.experts.")) {
        owned.push((
            n.to_string(),
            w.info(n).unwrap().shape.clone(),
            w.bytes(n).unwrap().to_vec(),
        ));
    }
    let mut fused_layers = 0;
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}.mlp.experts");
        if !w.contains(&format!("{p}.0.gate_proj.weight")) {
            continue;
        }
        let (mut gate_up, mut down) = (Vec::new(), Vec::new());
        for x in 0..e {
            gate_up.extend_from_slice(w.bytes(&format!("{p}.{x}.gate_proj.weight")).unwrap());
            gate_up.extend_from_slice(w.bytes(&format!("{p}.{x}.up_proj.weight")).unwrap());
            down.extend_from_slice(w.bytes(&format!("{p}.{x}.down_proj.weight")).unwrap());
        }
        owned.push((format!("{p}.gate_up_proj"), vec![e, 2 * i, h], gate_up));
        owned.push((format!("{p}.down_proj"), vec![e, h, i], down));
        fused_layers += 1;
    }
    assert_eq!(fused_layers, 2);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();
    let model = TextModel::open(tmp.path()).unwrap();
    let tokens = ids(&src.join("case2_ids.npy"));
    let (want, _) = f32s(&src.join("case2_logits.npy"));
    let mut cache = model.new_cache().unwrap();
    let out = model
        .forward(DecoderInput::Ids(&tokens), Positions::Sequential, &mut cache, None)
        .unwrap();
    check_logits("qwen3_moe with fused [E, 2I, H] experts", &out.logits, &want, 512);
}
