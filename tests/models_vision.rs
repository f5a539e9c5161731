//! The vision towers against transformers 4.57.1 on the tiny fixture models
//! (tests/fixtures/models, see its README): merged embeddings and DeepStack features
//! within 1e-4 max abs for one image and two images (grids whose windows pad), plus
//! argument and checkpoint errors.

use std::path::PathBuf;

use vlkernels::models::{read_json, JsonView, VisionTower, Weights};
use vlkernels::npy::read_npy;
use vlkernels::DType;

const TOL: f32 = 1e-4;

fn model_dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(model)
}

fn load(model: &str) -> VisionTower {
    let dir = model_dir(model);
    let weights = Weights::open(&dir).unwrap();
    let cfg = read_json(&dir, "config.json").unwrap();
    VisionTower::load(&weights, &JsonView::new("config.json", &cfg).unwrap()).unwrap()
}

fn f32s(path: PathBuf) -> Vec<f32> {
    let a = read_npy(&path).unwrap();
    assert_eq!(a.dtype, DType::F32, "{}", path.display());
    bytemuck::pod_collect_to_vec(&a.data)
}

fn grids(path: PathBuf) -> Vec<[usize; 3]> {
    let a = read_npy(&path).unwrap();
    let v: Vec<i64> = bytemuck::pod_collect_to_vec(&a.data);
    v.chunks(3)
        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

fn check_model(model: &str, deepstack_layers: usize) {
    let tower = load(model);
    for case in ["one_image", "two_images"] {
        let dir = model_dir(model).join("cases").join(case);
        let pv = f32s(dir.join("pixel_values.npy"));
        let grid = grids(dir.join("grid_thw.npy"));
        let out = tower.forward(&pv, &grid).unwrap();
        let expect = f32s(dir.join("vision_embeds.npy"));
        let err = max_abs(&out.embeds, &expect);
        eprintln!("{model}/{case}: grids {grid:?}: embeds max abs {err:.2e}");
        assert!(err <= TOL, "{model}/{case}: embeds max abs {err}");
        assert_eq!(out.deepstack.len(), deepstack_layers, "{model}/{case}");
        for (j, feat) in out.deepstack.iter().enumerate() {
            let expect = f32s(dir.join(format!("deepstack_{j}.npy")));
            let err = max_abs(feat, &expect);
            eprintln!("{model}/{case}: deepstack {j} max abs {err:.2e}");
            assert!(err <= TOL, "{model}/{case}: deepstack {j} max abs {err}");
        }
    }
}

#[test]
fn qwen2_5_vl_tower_matches_transformers() {
    check_model("qwen2_5_vl", 0);
}

#[test]
fn qwen3_vl_tower_matches_transformers() {
    check_model("qwen3_vl", 2);
}

#[test]
fn qwen3_vl_moe_tower_matches_transformers() {
    check_model("qwen3_vl_moe", 2);
}

#[test]
fn bad_inputs_name_their_values() {
    let tower = load("qwen3_vl");
    let dim = tower.config().patch_dim();
    // Pixel rows that do not match the grid.
    let err = tower
        .forward(&vec![0.0; 10 * dim], &[[1, 4, 4]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[[1, 4, 4]]") && err.contains(&(10 * dim).to_string()),
        "{err}"
    );
    // A grid side that the merge size does not divide.
    let err = tower
        .forward(&vec![0.0; 12 * dim], &[[1, 4, 3]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 4, 3]"), "{err}");
    // No image.
    assert!(tower.forward(&[], &[]).is_err());
}

#[test]
fn missing_or_misshaped_tensors_are_named() {
    let dir = model_dir("qwen2_5_vl");
    let cfg_value = read_json(&dir, "config.json").unwrap();
    let weights = Weights::open(&dir).unwrap();
    // A model whose config says the ViT is deeper than the checkpoint.
    let mut deeper = cfg_value.clone();
    deeper["vision_config"]["depth"] = serde_json::json!(5);
    deeper["vision_config"]["fullatt_block_indexes"] = serde_json::json!([1, 3]);
    let err = VisionTower::load(&weights, &JsonView::new("config.json", &deeper).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("visual.blocks.4"), "{err}");
    // A wider hidden size than the tensors have.
    let mut wider = cfg_value.clone();
    wider["vision_config"]["hidden_size"] = serde_json::json!(64);
    let err = VisionTower::load(&weights, &JsonView::new("config.json", &wider).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("visual.blocks.0.norm1.weight") && err.contains("[64]"),
        "{err}"
    );
    // Config errors name the key.
    let mut bad = cfg_value.clone();
    bad["vision_config"]["num_heads"] = serde_json::json!(3);
    let err = VisionTower::load(&weights, &JsonView::new("config.json", &bad).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("num_heads"), "{err}");
}

#[test]
fn cli_runs_the_tower_and_writes_deepstack() {
    let case = model_dir("qwen3_vl").join("cases/two_images");
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("emb.npy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(["vision", "--model"])
        .arg(model_dir("qwen3_vl"))
        .arg("--pixel-values")
        .arg(case.join("pixel_values.npy"))
        .args(["--grid-thw", "1,6,10", "--grid-thw", "1,8,4", "--output"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = max_abs(&f32s(out_path.clone()), &f32s(case.join("vision_embeds.npy")));
    assert!(err <= TOL, "CLI embeds max abs {err}");
    for j in 0..2 {
        let got = f32s(out_path.with_extension(format!("deepstack_{j}.npy")));
        let err = max_abs(&got, &f32s(case.join(format!("deepstack_{j}.npy"))));
        assert!(err <= TOL, "CLI deepstack {j} max abs {err}");
    }
    // A grid that does not match the pixel rows is refused with both named.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(["vision", "--model"])
        .arg(model_dir("qwen3_vl"))
        .arg("--pixel-values")
        .arg(case.join("pixel_values.npy"))
        .args(["--grid-thw", "1,6,10", "--output"])
        .arg(dir.path().join("x.npy"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("[[1, 6, 10]]"), "{msg}");
}

/// The processor and the towers compose: the committed photograph, preprocessed with each
/// tiny model's own preprocessor_config.json, runs through its tower to one finite row per
/// merged token (the values themselves are checked against transformers above).
#[test]
fn preprocessed_photo_runs_through_each_tower() {
    use vlkernels::models::processor::{preprocess, ProcessorConfig, ProcessorFlavor, RgbImage};
    let photo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/chelsea_crop_131x97.png");
    let img = RgbImage::open(photo).unwrap();
    for model in ["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"] {
        let tower = load(model);
        let cfg = ProcessorConfig::from_model_dir(model_dir(model), ProcessorFlavor::Fast).unwrap();
        let p = preprocess(&img, &cfg).unwrap();
        assert_eq!(p.patch_dim, tower.config().patch_dim(), "{model}");
        let out = tower.forward(&p.pixel_values, &[p.grid_thw]).unwrap();
        let [t, h, w] = p.grid_thw;
        assert_eq!(
            out.embeds.len(),
            t * h * w / 4 * out.out_hidden,
            "{model}: grid {:?}",
            p.grid_thw
        );
        assert!(out.embeds.iter().all(|v| v.is_finite()), "{model}");
    }
}
