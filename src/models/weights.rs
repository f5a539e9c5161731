//! Checkpoint weights: safetensors files (one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`), memory-mapped and read on demand.
//!
//! Only the header of each file is parsed up front; a tensor's bytes are converted to
//! f32 when a runner asks for it, with its shape checked against what the runner expects,
//! so a missing or mis-shaped tensor is reported by name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// Element type of a stored tensor, as far as the runners care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    /// Any other safetensors dtype (kept by name so errors can say what it was).
    Other(&'static str),
}

impl WeightDType {
    fn from_safetensors(d: Dtype) -> Self {
        match d {
            Dtype::F32 => WeightDType::F32,
            Dtype::F16 => WeightDType::F16,
            Dtype::BF16 => WeightDType::BF16,
            Dtype::F64 => WeightDType::Other("F64"),
            Dtype::I64 => WeightDType::Other("I64"),
            Dtype::I32 => WeightDType::Other("I32"),
            Dtype::I16 => WeightDType::Other("I16"),
            Dtype::I8 => WeightDType::Other("I8"),
            Dtype::U8 => WeightDType::Other("U8"),
            Dtype::BOOL => WeightDType::Other("BOOL"),
            _ => WeightDType::Other("unsupported"),
        }
    }

    /// Bytes per element (0 for types the loader does not read).
    pub fn size(self) -> usize {
        match self {
            WeightDType::F32 => 4,
            WeightDType::F16 | WeightDType::BF16 => 2,
            WeightDType::Other(_) => 0,
        }
    }
}

/// Name, dtype and shape of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: WeightDType,
    pub shape: Vec<usize>,
}

struct Entry {
    info: TensorInfo,
    shard: usize,
    /// Absolute byte range inside the shard file.
    start: usize,
    end: usize,
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The tensors of one checkpoint directory.
pub struct Weights {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

impl Weights {
    /// Opens `dir/model.safetensors.index.json` (sharded) or else `dir/model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            let files = shard_files(&index)?;
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            return Self::from_files(&paths);
        }
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::from_files(&[single]);
        }
        Err(Error::invalid(format!(
            "model directory {}: neither model.safetensors nor model.safetensors.index.json exists",
            dir.display()
        )))
    }

    /// Opens the given safetensors files as one checkpoint; a tensor name present in two
    /// files is an error.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        for (si, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only; a checkpoint modified while loaded is the
            // caller's problem, as with every mmap-based loader.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| Error::Format(format!("{}: not a valid safetensors file: {e}", path.display())))?;
            let base = 8 + header_len;
            for (name, ti) in meta.tensors() {
                let (s, e) = ti.data_offsets;
                let entry = Entry {
                    info: TensorInfo {
                        dtype: WeightDType::from_safetensors(ti.dtype),
                        shape: ti.shape.clone(),
                    },
                    shard: si,
                    start: base + s,
                    end: base + e,
                };
                if entry.end > map.len() {
                    return Err(Error::Format(format!(
                        "{}: tensor {name} ends at byte {} past the file end {}",
                        path.display(),
                        entry.end,
                        map.len()
                    )));
                }
                if let Some(prev) = entries.insert(name.clone(), entry) {
                    return Err(Error::Format(format!(
                        "tensor {name} appears in both {} and {}",
                        paths[prev.shard].display(),
                        path.display()
                    )));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                map,
            });
        }
        Ok(Weights { shards, entries })
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.entry(name).map(|e| &e.info)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::invalid(format!("checkpoint has no tensor named {name}")))
    }

    /// The raw little-endian bytes of `name`.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        Ok(&self.shards[e.shard].map[e.start..e.end])
    }

    /// `name` converted to f32, after checking that its shape is exactly `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        self.f32_any(name).map(|(v, _)| v)
    }

    /// `name` converted to f32 if present (shape checked), `None` if absent.
    pub fn f32_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.contains(name) {
            self.f32(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `name` converted to f32 with whatever shape it has.
    pub fn f32_any(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let e = self.entry(name)?;
        let numel = e.info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let numel = numel.ok_or_else(|| Error::Overflow(format!("tensor {name} shape {:?}", e.info.shape)))?;
        let bytes = self.bytes(name)?;
        let width = e.info.dtype.size();
        if width == 0 {
            return Err(Error::UnsupportedDType(format!(
                "tensor {name} is {:?}; runners read f32, f16 and bf16",
                e.info.dtype
            )));
        }
        if bytes.len() != numel * width {
            return Err(Error::Format(format!(
                "tensor {name} in {}: {} bytes for shape {:?} of {:?}",
                self.shards[e.shard].path.display(),
                bytes.len(),
                e.info.shape,
                e.info.dtype
            )));
        }
        Ok((convert_to_f32(bytes, e.info.dtype), e.info.shape.clone()))
    }
}

/// Little-endian bytes of f32/f16/bf16 elements to f32, in parallel chunks for big tensors.
fn convert_to_f32(bytes: &[u8], dtype: WeightDType) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let width = dtype.size();
    let mut out = vec![0f32; bytes.len() / width];
    out.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(CHUNK * width))
        .for_each(|(o, b)| match dtype {
            WeightDType::F32 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                    *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            WeightDType::F16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            WeightDType::BF16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            WeightDType::Other(_) => unreachable!("checked by the caller"),
        });
    out
}

/// The distinct shard file names of an index's `weight_map`, in first-seen order.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Format(format!("{}: no \"weight_map\" object", index.display())))?;
    let mut seen = HashMap::new();
    let mut files = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| Error::Format(format!("{}: weight_map[{name}] is not a file name", index.display())))?;
        if file.contains('/') || file.contains("..") {
            return Err(Error::Format(format!(
                "{}: shard name {file:?} for {name} leaves the model directory",
                index.display()
            )));
        }
        if seen.insert(file.to_string(), ()).is_none() {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err(Error::Format(format!("{}: weight_map is empty", index.display())));
    }
    Ok(files)
}
