//! Checkpoint loading: single and sharded safetensors, dtype conversion, and the errors
//! that name a missing or mis-shaped tensor.

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{serialize_to_file, Dtype, View};
use vlkernels::models::{read_json, JsonView, WeightDType, Weights};

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 3.0).collect()
}

fn raw(dtype: Dtype, shape: &[usize], v: &[f32]) -> Raw {
    let data = match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        Dtype::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        _ => unreachable!(),
    };
    Raw {
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

fn write(path: &Path, tensors: &[(&str, &Raw)]) {
    let map: HashMap<String, &Raw> = tensors.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    serialize_to_file(map, None, path).unwrap();
}

#[test]
fn single_file_converts_every_float_type() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(6 * 5, 0.5);
    let a = raw(Dtype::F32, &[6, 5], &v);
    let b = raw(Dtype::F16, &[30], &v);
    let c = raw(Dtype::BF16, &[5, 6], &v);
    write(
        &dir.path().join("model.safetensors"),
        &[("a", &a), ("b", &b), ("c", &c)],
    );
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.names().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(w.info("b").unwrap().dtype, WeightDType::F16);
    assert_eq!(w.f32("a", &[6, 5]).unwrap(), v);
    let b = w.f32("b", &[30]).unwrap();
    let c = w.f32("c", &[5, 6]).unwrap();
    for i in 0..v.len() {
        assert_eq!(b[i], f16::from_f32(v[i]).to_f32());
        assert_eq!(c[i], bf16::from_f32(v[i]).to_f32());
    }
    assert!(w.f32_opt("absent", &[1]).unwrap().is_none());
}

#[test]
fn errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let a = raw(Dtype::F32, &[4, 3], &values(12, 1.0));
    write(&dir.path().join("model.safetensors"), &[("layer.weight", &a)]);
    let w = Weights::open(dir.path()).unwrap();
    let e = w.f32("layer.bias", &[3]).unwrap_err().to_string();
    assert!(e.contains("layer.bias"), "{e}");
    let e = w.f32("layer.weight", &[3, 4]).unwrap_err().to_string();
    assert!(
        e.contains("layer.weight") && e.contains("[4, 3]") && e.contains("[3, 4]"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = Weights::open(empty.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");

    std::fs::write(empty.path().join("model.safetensors"), b"not a checkpoint").unwrap();
    let e = Weights::open(empty.path()).err().unwrap().to_string();
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn sharded_index_joins_files_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let x = raw(Dtype::BF16, &[2, 2], &values(4, 2.0));
    let y = raw(Dtype::F32, &[3], &values(3, 3.0));
    write(&dir.path().join("model-00001-of-00002.safetensors"), &[("x", &x)]);
    write(&dir.path().join("model-00002-of-00002.safetensors"), &[("y", &y)]);
    let index = r#"{"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
        "y": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.f32("y", &[3]).unwrap(), values(3, 3.0));
    assert_eq!(w.f32_any("x").unwrap().1, vec![2, 2]);

    write(&dir.path().join("model-00002-of-00002.safetensors"), &[("x", &x)]);
    let e = Weights::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tensor x appears in both"), "{e}");

    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "../x"}}"#,
    )
    .unwrap();
    let e = Weights::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("leaves the model directory"), "{e}");
}

#[test]
fn json_view_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"hidden_size": 64, "rope_theta": 1e6, "text_config": {"mrope_section": [2, 3, 3]}, "bad": -1}"#,
    )
    .unwrap();
    let v = read_json(dir.path(), "config.json").unwrap();
    let c = JsonView::new("config.json", &v).unwrap();
    assert_eq!(c.usize("hidden_size").unwrap(), 64);
    assert_eq!(c.f64("rope_theta").unwrap(), 1e6);
    assert_eq!(c.usize_or("absent", 7).unwrap(), 7);
    assert_eq!(
        c.sub("text_config").unwrap().usize_list("mrope_section").unwrap(),
        [2, 3, 3]
    );
    let e = c.usize("bad").unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("\"bad\"") && e.contains("-1"),
        "{e}"
    );
    let e = c
        .sub("text_config")
        .unwrap()
        .usize("vocab_size")
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json:text_config") && e.contains("vocab_size"), "{e}");
    let e = read_json(dir.path(), "missing.json").unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
}
