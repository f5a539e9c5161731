//! Per-layer key/value cache of the text decoder: `[tokens, kv_heads, head_dim]` f32
//! rows, appended by each forward call (prefill, then one token per decode step).

use crate::{Error, Result};

/// Keys and values of one decoder layer.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The cache of a whole decoder, for one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    row: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of `kv_heads × head_dim` rows.
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let row = kv_heads
            .checked_mul(head_dim)
            .filter(|&r| r > 0)
            .ok_or_else(|| Error::invalid(format!("kv cache row {kv_heads} heads x {head_dim}")))?;
        Ok(KvCache {
            layers: vec![LayerCache::default(); layers],
            row,
            len: 0,
        })
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layers the cache was made for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Elements per cached token (`kv_heads × head_dim`).
    pub fn row(&self) -> usize {
        self.row
    }

    /// Appends `k` and `v` (`[n, row]` each) to layer `layer`; returns its full cache.
    /// Every layer must receive the same number of tokens in one forward call;
    /// [`commit`](Self::commit) then advances the length.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<&LayerCache> {
        let row = self.row;
        let want_len = self.len;
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::invalid(format!("kv cache layer {layer}")))?;
        if k.len() != v.len() || k.len() % row != 0 || l.k.len() != want_len * row {
            return Err(Error::ShapeMismatch(format!(
                "kv cache layer {layer}: k {} / v {} elements for rows of {row}, cache holds {} rows",
                k.len(),
                v.len(),
                l.k.len() / row
            )));
        }
        l.k.extend_from_slice(k);
        l.v.extend_from_slice(v);
        Ok(l)
    }

    /// Records that `n` tokens were appended to every layer.
    pub(crate) fn commit(&mut self, n: usize) -> Result<()> {
        let new_len = self.len + n;
        if let Some((i, _)) = self
            .layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.k.len() != new_len * self.row)
        {
            return Err(Error::ShapeMismatch(format!(
                "kv cache layer {i} was not given the {n} new tokens"
            )));
        }
        self.len = new_len;
        Ok(())
    }

    /// Drops everything after the first `len` tokens (e.g. to reuse a prefix).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.len);
        for l in &mut self.layers {
            l.k.truncate(len * self.row);
            l.v.truncate(len * self.row);
        }
        self.len = len;
    }
}
