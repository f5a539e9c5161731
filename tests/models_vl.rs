//! Whole VL models ([`VlModel`]: vision tower + scatter + MRoPE positions + decoder) against
//! transformers 4.57.1 on the tiny fixtures (tests/fixtures/models, see its README): logits
//! from pixel values, position ids, greedy generation, the photograph through the
//! processor, argument errors, and the `vlk logits` / `vlk run` image paths.

mod common;
use common::{expect_vlk_error, vlk};
use std::path::{Path, PathBuf};

use vlkernels::models::processor::{ProcessorConfig, ProcessorFlavor, RgbImage};
use vlkernels::models::{GenerateOptions, Images, VlModel};
use vlkernels::npy::{read_npy, write_npy, NpyArray};
use vlkernels::DType;

const TOL: f32 = 1e-4;
const MODELS: [&str; 3] = ["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"];
const CASES: [&str; 4] = ["text", "one_image", "two_images", "photo"];
const VOCAB: usize = 512;

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn photo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/chelsea_crop_131x97.png")
}

fn f32s(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.dtype, DType::F32, "{}", path.display());
    (bytemuck::pod_collect_to_vec(&a.data), a.shape)
}

fn i64s(path: &Path) -> Vec<i64> {
    let a = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.dtype, DType::I64, "{}", path.display());
    bytemuck::pod_collect_to_vec(&a.data)
}

fn ids(path: &Path) -> Vec<u32> {
    i64s(path).iter().map(|&x| u32::try_from(x).unwrap()).collect()
}

/// A case's prompt and, for image cases, its pixel values and grids.
struct Case {
    ids: Vec<u32>,
    pixels: Option<(Vec<f32>, usize, Vec<[usize; 3]>)>,
}

impl Case {
    fn load(dir: &Path) -> Self {
        let pv = dir.join("pixel_values.npy");
        let pixels = pv.is_file().then(|| {
            let (values, shape) = f32s(&pv);
            let grids = i64s(&dir.join("grid_thw.npy"))
                .chunks(3)
                .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
                .collect();
            (values, shape[1], grids)
        });
        Case {
            ids: ids(&dir.join("input_ids.npy")),
            pixels,
        }
    }

    fn images(&self) -> Option<Images<'_>> {
        self.pixels.as_ref().map(|(values, width, grids)| Images {
            pixel_values: values,
            row_width: *width,
            grid_thw: grids,
        })
    }
}

/// Max abs difference within `TOL`; top-1 equal at every row whose reference top-1 margin
/// exceeds `TOL` (a smaller margin is a tie at this precision). Returns the max diff.
fn check_logits(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    let diff =
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
    assert!(diff <= TOL, "{what}: max abs diff {diff:e} > {TOL:e}");
    for (r, (g, w)) in got.chunks_exact(VOCAB).zip(want.chunks_exact(VOCAB)).enumerate() {
        let top = |x: &[f32]| (0..VOCAB).fold(0, |b, i| if x[i] > x[b] { i } else { b });
        let mut sorted = w.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > TOL {
            assert_eq!(top(g), top(w), "{what}: top-1 differs at row {r}");
        }
    }
    diff
}

#[test]
fn logits_from_pixel_values_match_transformers() {
    let mut checked = 0;
    for name in MODELS {
        let model = VlModel::open(model_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in CASES {
            let dir = model_dir(name).join("cases").join(case);
            let c = Case::load(&dir);
            let images = c.images();
            assert_eq!(images.is_some(), case != "text", "{name}/{case}: pixel values present");
            // Positions and rope delta equal get_rope_index exactly.
            let p = model.prepare(&c.ids, images.as_ref()).unwrap();
            assert_eq!(p.positions.ids, i64s(&dir.join("position_ids.npy")), "{name}/{case}");
            assert_eq!(
                p.positions.delta,
                i64s(&dir.join("rope_deltas.npy"))[0],
                "{name}/{case}"
            );
            let want_ds = if name == "qwen2_5_vl" || case == "text" { 0 } else { 2 };
            assert_eq!(p.deepstack.len(), want_ds, "{name}/{case}: DeepStack feature sets");
            let got = model.logits(&c.ids, images.as_ref()).unwrap();
            let (want, shape) = f32s(&dir.join("logits.npy"));
            assert_eq!(shape, vec![c.ids.len(), VOCAB]);
            let what = format!(
                "{name}/{case} ({} tokens, {} visual)",
                c.ids.len(),
                p.visual_positions.len()
            );
            let diff = check_logits(&what, &got, &want);
            eprintln!("{what}: logits max abs diff {diff:.2e}");
            checked += 1;
        }
    }
    assert_eq!(checked, MODELS.len() * CASES.len());
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in MODELS {
        let model = VlModel::open(model_dir(name)).unwrap();
        for case in CASES {
            let dir = model_dir(name).join("cases").join(case);
            let c = Case::load(&dir);
            let want = ids(&dir.join("generated_ids.npy"));
            let opts = GenerateOptions {
                max_new_tokens: want.len(),
                eos_token_ids: vec![],
            };
            let mut streamed = Vec::new();
            let g = model
                .generate(&c.ids, c.images().as_ref(), &opts, |t| streamed.push(t))
                .unwrap();
            assert_eq!(g.generation.tokens, want, "{name}/{case}: greedy ids");
            assert_eq!(streamed, want, "{name}/{case}: streamed ids");
            assert_eq!(g.generation.prompt_tokens, c.ids.len());
        }
    }
}

/// The photograph through this crate's processor gives transformers' pixel values, and
/// single image pads expand to the stored prompt.
#[test]
fn photograph_through_the_processor_gives_the_same_logits() {
    for name in MODELS {
        let dir = model_dir(name);
        let model = VlModel::open(&dir).unwrap();
        let case = dir.join("cases/photo");
        let cfg = ProcessorConfig::from_model_dir(&dir, ProcessorFlavor::Fast).unwrap();
        let p = model.preprocess(&RgbImage::open(photo()).unwrap(), &cfg).unwrap();
        let (want_pv, _) = f32s(&case.join("pixel_values.npy"));
        let pv_diff = p
            .pixel_values
            .iter()
            .zip(&want_pv)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(p.pixel_values.len(), want_pv.len(), "{name}: pixel values");
        assert!(pv_diff <= 1e-6, "{name}: pixel values max abs {pv_diff:e}");
        let want_ids = ids(&case.join("input_ids.npy"));
        let short = [11, 22, 498, 500, 499, 33, 44, 55];
        let expanded = model.expand_image_pads(&short, &[p.grid_thw]).unwrap();
        assert_eq!(expanded, want_ids, "{name}: expanded prompt");
        assert_eq!(model.expand_image_pads(&want_ids, &[p.grid_thw]).unwrap(), want_ids);
        let span = model.image_span(p.grid_thw).unwrap();
        assert_eq!(span[..], want_ids[2..want_ids.len() - 3], "{name}: image span");
        let images = Images {
            pixel_values: &p.pixel_values,
            row_width: p.patch_dim,
            grid_thw: &[p.grid_thw],
        };
        let got = model.logits(&expanded, Some(&images)).unwrap();
        let (want, _) = f32s(&case.join("logits.npy"));
        let diff = check_logits(&format!("{name}/photo via processor"), &got, &want);
        eprintln!("{name}/photo: pixel values max abs {pv_diff:.2e}, logits max abs {diff:.2e}");
    }
}

fn err_of<T>(r: vlkernels::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_give_errors_naming_the_values() {
    let model = VlModel::open(model_dir("qwen3_vl")).unwrap();
    let two = Case::load(&model_dir("qwen3_vl").join("cases/two_images"));
    let (pv, width, grids) = two.pixels.clone().unwrap();
    let images = two.images().unwrap();
    assert_eq!(grids, vec![[1, 6, 10], [1, 8, 4]]);

    // One image token too few: 22 tokens, 15 + 8 = 23 merged embeddings.
    let pos = two.ids.iter().position(|&t| t == 500).unwrap();
    let mut short = two.ids.clone();
    short.remove(pos);
    let e = err_of(model.logits(&short, Some(&images)));
    assert!(e.contains("22 image tokens") && e.contains("23 merged"), "{e}");

    // Rows of the wrong width.
    let bad = Images {
        row_width: width / 2,
        ..images
    };
    let e = err_of(model.logits(&two.ids, Some(&bad)));
    assert!(
        e.contains(&format!("{} wide", width / 2)) && e.contains(&width.to_string()),
        "{e}"
    );

    // One row missing.
    let bad = Images {
        pixel_values: &pv[..pv.len() - width],
        ..images
    };
    let e = err_of(model.logits(&two.ids, Some(&bad)));
    assert!(e.contains("91 rows") && e.contains("needs 92 rows"), "{e}");

    // One grid covering both spans' tokens and all rows: the span count differs.
    let one_grid = [[1, 2, 46]];
    let bad = Images {
        grid_thw: &one_grid,
        ..images
    };
    let e = err_of(model.logits(&two.ids, Some(&bad)));
    assert!(e.contains("2 image span(s)") && e.contains("1 grid(s)"), "{e}");

    // A grid the merge does not divide.
    let odd = [[1, 6, 10], [1, 7, 4]];
    let bad = Images {
        grid_thw: &odd,
        ..images
    };
    let e = err_of(model.logits(&two.ids, Some(&bad)));
    assert!(e.contains("[1, 7, 4]"), "{e}");

    // Image tokens with no pixel values, a span without vision_start, a video token, bad ids.
    let e = err_of(model.logits(&two.ids, None));
    assert!(e.contains("23 image tokens") && e.contains("no pixel values"), "{e}");
    let mut no_start = two.ids.clone();
    no_start[pos - 1] = 7;
    let e = err_of(model.logits(&no_start, Some(&images)));
    assert!(
        e.contains(&format!("index {pos}")) && e.contains("vision_start_token_id 498"),
        "{e}"
    );
    let e = err_of(model.logits(&[1, 501, 2], None));
    assert!(e.contains("video token 501 at index 1"), "{e}");
    let e = err_of(model.logits(&[1, 512], None));
    assert!(e.contains("token id 512"), "{e}");
    let e = err_of(model.logits(&[], None));
    assert!(e.contains("empty"), "{e}");
    let opts = GenerateOptions {
        max_new_tokens: 0,
        eos_token_ids: vec![],
    };
    let e = err_of(model.generate(&[1, 2], None, &opts, |_| {}));
    assert!(e.contains("max_new_tokens 0"), "{e}");

    // Expanding pads: a run of the wrong length, more spans than grids, fewer spans.
    let e = err_of(model.expand_image_pads(&[498, 500, 500, 499], &[[1, 6, 10]]));
    assert!(e.contains("2 image tokens") && e.contains("needs 15"), "{e}");
    let e = err_of(model.expand_image_pads(&[498, 500, 499, 498, 500, 499], &[[1, 6, 10]]));
    assert!(e.contains("1 grid(s) given"), "{e}");
    let e = err_of(model.expand_image_pads(&[1, 2], &[[1, 6, 10]]));
    assert!(e.contains("0 image span(s)"), "{e}");

    // A text-only checkpoint is not a VL model.
    let e = err_of(VlModel::open(model_dir("qwen3_moe")));
    assert!(e.contains("text-only"), "{e}");
    drop(pv);
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn cli_logits_with_pixel_values_f32_and_f16() {
    let name = "qwen3_vl_moe";
    let dir = model_dir(name);
    let case = dir.join("cases/two_images");
    let c = Case::load(&case);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("logits.npy");
    let m = dir.to_str().unwrap();
    let list = join(&c.ids);
    let run = |pv: &Path| {
        vlk(&[
            "logits",
            "--model",
            m,
            "--input-ids",
            &list,
            "--pixel-values",
            pv.to_str().unwrap(),
            "--grid-thw",
            "1,6,10",
            "--grid-thw",
            "1,8,4",
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let o = run(&case.join("pixel_values.npy"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (got, shape) = f32s(&out);
    assert_eq!(shape, vec![c.ids.len(), VOCAB]);
    let (want, _) = f32s(&case.join("logits.npy"));
    let diff = check_logits("vlk logits --pixel-values (f32)", &got, &want);
    eprintln!("vlk logits {name}/two_images: max abs diff {diff:.2e}");

    // f16 pixel values: the same as the library on the f16-rounded values.
    let (pv, width, grids) = c.pixels.clone().unwrap();
    let halves: Vec<half::f16> = pv.iter().map(|&x| half::f16::from_f32(x)).collect();
    let rounded: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let pv16 = tmp.path().join("pv16.npy");
    write_npy(
        &pv16,
        &NpyArray::from_slice(DType::F16, &[pv.len() / width, width], &halves).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&out).unwrap();
    let o = run(&pv16);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (got16, _) = f32s(&out);
    let model = VlModel::open(&dir).unwrap();
    let images = Images {
        pixel_values: &rounded,
        row_width: width,
        grid_thw: &grids,
    };
    let lib = model.logits(&c.ids, Some(&images)).unwrap();
    let d16 = got16.iter().zip(&lib).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(got16.len(), lib.len());
    assert!(d16 <= 1e-5, "f16 pixel values: CLI and library differ by {d16}");
    assert_ne!(
        got16, got,
        "f16 rounding changed nothing: the f16 file was not read as such"
    );

    // Errors: grid/pixel flags alone, a grid count that does not match the spans, --device cuda.
    let pv = case.join("pixel_values.npy");
    let pvs = pv.to_str().unwrap();
    let o_s = out.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "logits",
                "--model",
                m,
                "--input-ids",
                &list,
                "--pixel-values",
                pvs,
                "--output",
                o_s,
            ],
            "--pixel-values needs --grid-thw",
        ),
        (
            vec![
                "logits",
                "--model",
                m,
                "--input-ids",
                &list,
                "--grid-thw",
                "1,6,10",
                "--output",
                o_s,
            ],
            "--grid-thw needs --pixel-values",
        ),
        (
            vec![
                "logits",
                "--model",
                m,
                "--input-ids",
                &list,
                "--pixel-values",
                pvs,
                "--grid-thw",
                "1,6,10",
                "--output",
                o_s,
            ],
            "needs 60 rows",
        ),
        (
            vec![
                "logits",
                "--model",
                m,
                "--input-ids",
                "1,2",
                "--output",
                o_s,
                "--device",
                "cuda",
            ],
            "--device cuda",
        ),
    ] {
        expect_vlk_error(&args, want);
    }
}

#[test]
fn cli_run_with_the_photograph_matches_transformers() {
    for name in MODELS {
        let dir = model_dir(name);
        let m = dir.to_str().unwrap();
        let want = ids(&dir.join("cases/photo/generated_ids.npy"));
        let prompt = ids(&dir.join("cases/photo/input_ids.npy"));
        let o = vlk(&[
            "run",
            "--model",
            m,
            "--image",
            photo().to_str().unwrap(),
            "--input-ids",
            "11,22,498,500,499,33,44,55",
            "--max-new-tokens",
            &want.len().to_string(),
        ]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains(&format!("prompt ids: {}\n", join(&prompt))),
            "{name}: {stdout}"
        );
        assert!(stdout.contains(&format!("ids: {}\n", join(&want))), "{name}: {stdout}");
        assert!(
            stdout.contains("TTFT") && stdout.contains("vision tower") && stdout.contains("tokens/s"),
            "{stdout}"
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("grid_thw 1,12,18 (54 image tokens)"),
            "{name}: {stderr}"
        );
    }
}

/// `vlk run` with two `--image` flags: both spans expanded in order, and the tokens the
/// library generates from the same two preprocessed images (whose multi-image path is
/// checked against transformers in `two_images`).
#[test]
fn cli_run_takes_several_images_in_prompt_order() {
    let tmp = tempfile::tempdir().unwrap();
    // A second, different image: the photograph with inverted colours.
    let inverted = tmp.path().join("inverted.png");
    let mut img = image::open(photo()).unwrap();
    img.invert();
    img.save(&inverted).unwrap();
    let images = [photo(), inverted];
    let short = [11u32, 498, 500, 499, 22, 498, 500, 499, 33];
    let opts = GenerateOptions {
        max_new_tokens: 8,
        eos_token_ids: Vec::new(),
    };
    for name in MODELS {
        let dir = model_dir(name);
        let model = VlModel::open(&dir).unwrap();
        let cfg = ProcessorConfig::from_model_dir(&dir, ProcessorFlavor::Fast).unwrap();
        let processed: Vec<_> = images
            .iter()
            .map(|p| model.preprocess(&RgbImage::open(p).unwrap(), &cfg).unwrap())
            .collect();
        let grids: Vec<[usize; 3]> = processed.iter().map(|p| p.grid_thw).collect();
        let prompt = model.expand_image_pads(&short, &grids).unwrap();
        let generate = |order: [usize; 2]| {
            let pixels: Vec<f32> = order.iter().flat_map(|&i| processed[i].pixel_values.clone()).collect();
            let imgs = Images {
                pixel_values: &pixels,
                row_width: processed[0].patch_dim,
                grid_thw: &grids,
            };
            model
                .generate(&prompt, Some(&imgs), &opts, |_| {})
                .unwrap()
                .generation
                .tokens
        };
        let want = generate([0, 1]);
        // The order of the images changes the output, so the check below sees it.
        assert_ne!(want, generate([1, 0]), "{name}");
        // `vlk run --model DIR --image A --image B`, then the prompt flags.
        let mut with_images = vec!["run", "--model", dir.to_str().unwrap()];
        for p in &images {
            with_images.extend(["--image", p.to_str().unwrap()]);
        }
        let short_ids = join(&short);
        let mut args = with_images.clone();
        args.extend(["--input-ids", &short_ids, "--max-new-tokens", "8", "--ignore-eos"]);
        let o = vlk(&args);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let span = format!("498,{}499", "500,".repeat(54));
        assert!(
            stdout.contains(&format!("prompt ids: 11,{span},22,{span},33\n")),
            "{name}: {stdout}"
        );
        assert!(stdout.contains(&format!("ids: {}\n", join(&want))), "{name}: {stdout}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            stderr.matches("grid_thw 1,12,18 (54 image tokens)").count(),
            2,
            "{name}: {stderr}"
        );
        // Two images but one span in the ids: an error naming both counts.
        let mut args = with_images;
        args.extend(["--input-ids", "11,498,500,499,33", "--max-new-tokens", "2"]);
        expect_vlk_error(&args, "1 image span(s) (token 500) but 2 grid(s)");
    }
}

#[test]
fn cli_run_with_a_text_prompt_puts_the_image_span_first() {
    // A VL fixture folder plus the WordLevel tokenizer of qwen3_tied (ids < 498).
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir("qwen3_vl");
    for f in ["config.json", "model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(
        model_dir("qwen3_tied").join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let m = tmp.path().to_str().unwrap();
    let img = photo();
    let o = vlk(&[
        "run",
        "--model",
        m,
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "hello world",
        "--max-new-tokens",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let span = format!("498,{}499,", "500,".repeat(54));
    assert!(
        stdout.contains(&format!("prompt ids: {span}12,31\n")) && stdout.contains("text:"),
        "{stdout}"
    );
    // The same prompt given as ids generates the same tokens.
    let ids_line = |s: &str| s.lines().find(|l| l.starts_with("ids: ")).map(str::to_string);
    let o2 = vlk(&[
        "run",
        "--model",
        m,
        "--image",
        img.to_str().unwrap(),
        "--input-ids",
        "498,500,499,12,31",
        "--max-new-tokens",
        "3",
    ]);
    assert!(o2.status.success(), "{}", String::from_utf8_lossy(&o2.stderr));
    assert_eq!(ids_line(&stdout), ids_line(&String::from_utf8_lossy(&o2.stdout)));
    // Two images with a text prompt: both spans, in flag order, then the text.
    let o3 = vlk(&[
        "run",
        "--model",
        m,
        "--image",
        img.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--prompt",
        "hello world",
        "--max-new-tokens",
        "1",
    ]);
    assert!(o3.status.success(), "{}", String::from_utf8_lossy(&o3.stderr));
    let stdout3 = String::from_utf8_lossy(&o3.stdout);
    assert!(
        stdout3.contains(&format!("prompt ids: {span}{span}12,31\n")),
        "{stdout3}"
    );

    // Errors: ids without the image span, an image on a text-only model, a missing image.
    for (args, want) in [
        (
            vec![
                "run",
                "--model",
                m,
                "--image",
                img.to_str().unwrap(),
                "--input-ids",
                "12,31",
                "--max-new-tokens",
                "2",
            ],
            "0 image span(s)",
        ),
        (
            vec![
                "run",
                "--model",
                model_dir("qwen3_tied").to_str().unwrap(),
                "--image",
                img.to_str().unwrap(),
                "--input-ids",
                "1",
                "--max-new-tokens",
                "2",
            ],
            "--image",
        ),
        (
            vec![
                "run",
                "--model",
                m,
                "--image",
                "/nonexistent/cat.png",
                "--input-ids",
                "498,500,499",
                "--max-new-tokens",
                "2",
            ],
            "/nonexistent/cat.png",
        ),
    ] {
        expect_vlk_error(&args, want);
    }
}

/// An image of two temporal patches (grid [2, 4, 4]): Qwen2.5-VL gives every temporal
/// patch the temporal id of the block start, Qwen3-VL counts them (transformers 4.57.1
/// get_rope_index on these fixtures printed the rows below).
#[test]
fn temporal_image_positions_follow_each_architecture() {
    let ids = [1, 498, 500, 500, 500, 500, 500, 500, 500, 500, 499, 2];
    let pixels: Vec<f32> = (0..32 * 96).map(|i| (i as f32 * 0.37).sin()).collect();
    let grid = [[2, 4, 4]];
    let images = Images {
        pixel_values: &pixels,
        row_width: 96,
        grid_thw: &grid,
    };
    let hw = [
        [0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 4, 5],
        [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5],
    ];
    for (name, t_row) in [
        ("qwen2_5_vl", [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 4, 5]),
        ("qwen3_vl", [0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 5]),
    ] {
        let model = VlModel::open(model_dir(name)).unwrap();
        let p = model.prepare(&ids, Some(&images)).unwrap();
        let want: Vec<i64> = [t_row, hw[0], hw[1]].concat();
        assert_eq!(p.positions.ids, want, "{name}");
        assert_eq!(p.positions.delta, -6, "{name}");
        assert!(p.embeds.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let src = model_dir("qwen3_vl");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("vision_start_token_id");
    let mut outside = base.clone();
    outside["image_token_id"] = 600.into();
    let mut wide = base.clone();
    wide["vision_config"]["out_hidden_size"] = 48.into();
    for (cfg, want) in [
        (missing, "missing key \"vision_start_token_id\""),
        (outside, "image_token_id 600 is outside the vocabulary of 512"),
        (wide, "out_hidden_size 48"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let e = err_of(VlModel::open(tmp.path()));
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// Qwen2.5-VL tensors renamed to the `model.visual.*` / `model.language_model.*` layout
/// (as Qwen3-VL is saved) load and give the same logits.
#[test]
fn qwen2_5_vl_in_the_nested_tensor_layout_gives_the_same_logits() {
    use vlkernels::models::Weights;
    let src = model_dir("qwen2_5_vl");
    let w = Weights::open(&src).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = w
        .names()
        .map(|n| {
            let info = w.info(n).unwrap();
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, info.shape.clone(), w.bytes(n).unwrap())
                    .unwrap();
            let new = if let Some(rest) = n.strip_prefix("visual.") {
                format!("model.visual.{rest}")
            } else if let Some(rest) = n.strip_prefix("model.") {
                format!("model.language_model.{rest}")
            } else {
                n.to_string()
            };
            (new, view)
        })
        .collect();
    assert!(renamed.iter().any(|(n, _)| n.starts_with("model.visual.")));
    let tmp = tempfile::tempdir().unwrap();
    safetensors::serialize_to_file(renamed, None, &tmp.path().join("model.safetensors")).unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let model = VlModel::open(tmp.path()).unwrap();
    let case = src.join("cases/one_image");
    let c = Case::load(&case);
    let got = model.logits(&c.ids, c.images().as_ref()).unwrap();
    let (want, _) = f32s(&case.join("logits.npy"));
    check_logits("qwen2_5_vl, nested tensor names", &got, &want);
}
