//! Qwen2.5-VL window attention bookkeeping, computed exactly as transformers
//! 4.57.1 does (`Qwen2_5_VisionTransformerPretrainedModel.get_window_index` and
//! `forward`):
//!
//! - the ViT works on groups of `merge²` patches ("units", one per merged token);
//!   each frame's `(h/merge) × (w/merge)` units are cut into windows of
//!   `window_size / merge / patch` units a side, after padding the grid up to the
//!   next multiple; a grid that the window already divides still gets a whole
//!   extra row and column of empty windows (transformers' padding quirk), whose
//!   repeated boundaries are removed (`torch.unique_consecutive`) before use;
//! - hidden states and rotary angles are reordered into window order (and the
//!   output back) unit by unit; full-attention layers (`fullatt_block_indexes`)
//!   use one segment per frame instead.

use crate::permute::permute;
use crate::{Error, Result};
use bytemuck::Pod;

/// Window order and window boundaries for a batch of images/videos.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowIndex {
    /// Unit (merged token) index in original order for each position in window order.
    pub window_index: Vec<usize>,
    /// Window boundaries in patches as `get_window_index` returns them (with repeats).
    pub cu_window_seqlens_raw: Vec<usize>,
    /// The same with consecutive repeats removed: the `cu_seqlens` of windowed layers.
    pub cu_window_seqlens: Vec<usize>,
    /// Units per side of a window: `window_size / spatial_merge_size / patch_size`.
    pub window_units: usize,
    /// Patches per unit: `spatial_merge_size²`.
    pub merge_unit: usize,
    /// Patches per unit side.
    pub spatial_merge_size: usize,
}

/// Geometry of the vision tower (Qwen2.5-VL: window 112, patch 14, merge 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    pub window_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
}

impl WindowConfig {
    /// Qwen2.5-VL's vision tower.
    pub const QWEN25_VL: WindowConfig = WindowConfig {
        window_size: 112,
        patch_size: 14,
        spatial_merge_size: 2,
    };

    fn window_units(&self) -> Result<usize> {
        if self.patch_size == 0 || self.spatial_merge_size == 0 {
            return Err(Error::invalid(format!(
                "patch_size {} and spatial_merge_size {} must be positive",
                self.patch_size, self.spatial_merge_size
            )));
        }
        let units = self.window_size / self.spatial_merge_size / self.patch_size;
        if units == 0 {
            return Err(Error::invalid(format!(
                "window_size {} is smaller than spatial_merge_size {} × patch_size {}",
                self.window_size, self.spatial_merge_size, self.patch_size
            )));
        }
        Ok(units)
    }
}

fn frame_patches(thw: [usize; 3]) -> Result<usize> {
    thw[1]
        .checked_mul(thw[2])
        .ok_or_else(|| Error::Overflow(format!("grid {thw:?}: h·w overflows")))
}

fn grid_units(thw: [usize; 3], merge: usize) -> Result<usize> {
    (thw[1] / merge)
        .checked_mul(thw[2] / merge)
        .and_then(|x| x.checked_mul(thw[0]))
        .ok_or_else(|| Error::Overflow(format!("grid {thw:?}: unit count overflows")))
}

/// `get_window_index(grid_thw)` for grids `[t, h, w]` in patches.
pub fn get_window_index(grid_thw: &[[usize; 3]], cfg: &WindowConfig) -> Result<WindowIndex> {
    let ws = cfg.window_units()?;
    let merge = cfg.spatial_merge_size;
    let merge_unit = merge * merge;
    let mut window_index = Vec::new();
    let mut cu = vec![0usize];
    let mut base = 0usize;
    for &thw in grid_thw {
        let [t, h, w] = thw;
        let (lh, lw) = (h / merge, w / merge);
        let units = grid_units(thw, merge)?;
        // transformers pads by `ws - n % ws`: a full extra window when ws divides n.
        let nwh = (lh + ws - lh % ws) / ws;
        let nww = (lw + ws - lw % ws) / ws;
        for f in 0..t {
            for wy in 0..nwh {
                for wx in 0..nww {
                    let mut count = 0usize;
                    for y in wy * ws..((wy + 1) * ws).min(lh) {
                        for x in wx * ws..((wx + 1) * ws).min(lw) {
                            window_index.push(base + (f * lh + y) * lw + x);
                            count += 1;
                        }
                    }
                    let last = *cu.last().unwrap_or(&0);
                    let next = count
                        .checked_mul(merge_unit)
                        .and_then(|c| c.checked_add(last))
                        .ok_or_else(|| Error::Overflow(format!("cu_window_seqlens overflows at grid {thw:?}")))?;
                    cu.push(next);
                }
            }
        }
        base = base
            .checked_add(units)
            .ok_or_else(|| Error::Overflow("total unit count overflows".into()))?;
    }
    let mut dedup = cu.clone();
    dedup.dedup();
    Ok(WindowIndex {
        window_index,
        cu_window_seqlens_raw: cu,
        cu_window_seqlens: dedup,
        window_units: ws,
        merge_unit,
        spatial_merge_size: merge,
    })
}

/// `cu_seqlens` of the full-attention layers: one segment of `h·w` patches per frame.
pub fn frame_cu_seqlens(grid_thw: &[[usize; 3]]) -> Result<Vec<usize>> {
    let mut cu = vec![0usize];
    for &thw in grid_thw {
        let hw = frame_patches(thw)?;
        for _ in 0..thw[0] {
            let next = cu.last().unwrap_or(&0).checked_add(hw);
            cu.push(next.ok_or_else(|| Error::Overflow(format!("frame_cu_seqlens overflows at grid {thw:?}")))?);
        }
    }
    Ok(cu)
}

/// The `cu_seqlens` layer `layer` uses: per frame for the layers listed in
/// `fullatt_block_indexes`, per window otherwise.
pub fn layer_cu_seqlens<'a>(
    layer: usize,
    fullatt_block_indexes: &[usize],
    frame_cu: &'a [usize],
    window_cu: &'a [usize],
) -> &'a [usize] {
    if fullatt_block_indexes.contains(&layer) {
        frame_cu
    } else {
        window_cu
    }
}

/// Inverse permutation of `window_index` (transformers' `argsort(window_index)`).
pub fn reverse_index(window_index: &[usize]) -> Result<Vec<usize>> {
    let n = window_index.len();
    let mut inv = vec![usize::MAX; n];
    for (pos, &u) in window_index.iter().enumerate() {
        if u >= n || inv[u] != usize::MAX {
            return Err(Error::invalid(format!(
                "window_index is not a permutation of 0..{n}: entry {u} at position {pos}"
            )));
        }
        inv[u] = pos;
    }
    Ok(inv)
}

/// Direction of a reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Original (row-major frames) order → window order.
    ToWindows,
    /// Window order → original order.
    FromWindows,
}

/// Reorders `x` (`[seq, row_len]`, `seq` patches) between original and window order,
/// moving whole units of `merge²` rows. Images whose merged grid the window divides
/// are an axis permutation (`[t, nh, ws, nw, ws, unit·row]` ↔ `[t, nh, nw, ws, ws, unit·row]`)
/// run by the permutation engine; others are gathered unit by unit. `index` must come
/// from [`get_window_index`] for the same `grid_thw`.
pub fn reorder<T: Pod>(
    x: &[T],
    row_len: usize,
    grid_thw: &[[usize; 3]],
    index: &WindowIndex,
    order: Order,
    out: &mut [T],
) -> Result<()> {
    let unit_len = index
        .merge_unit
        .checked_mul(row_len)
        .ok_or_else(|| Error::Overflow(format!("merge_unit {} · row_len {row_len}", index.merge_unit)))?;
    let units = index.window_index.len();
    let total = units
        .checked_mul(unit_len)
        .ok_or_else(|| Error::Overflow(format!("{units} units of {unit_len} elements")))?;
    if x.len() != total || out.len() != total {
        return Err(Error::ShapeMismatch(format!(
            "reorder: input {} and output {} elements, but {units} units of {} rows × {row_len} need {total}",
            x.len(),
            out.len(),
            index.merge_unit
        )));
    }
    let merge = index.spatial_merge_size;
    let ws = index.window_units;
    let mut start = 0usize; // first unit of the current image
    for &thw in grid_thw {
        let [t, h, w] = thw;
        if h % merge != 0 || w % merge != 0 {
            return Err(Error::invalid(format!(
                "grid {thw:?}: h and w must be multiples of spatial_merge_size {merge} to reorder"
            )));
        }
        let n = grid_units(thw, merge)?;
        if start + n > units {
            return Err(Error::ShapeMismatch(format!(
                "grid_thw has more units than window_index ({units}) at grid {thw:?}"
            )));
        }
        let (lh, lw) = (h / merge, w / merge);
        let span = start * unit_len..(start + n) * unit_len;
        if n > 0 && lh % ws == 0 && lw % ws == 0 {
            let (nh, nw) = (lh / ws, lw / ws);
            let shape = match order {
                Order::ToWindows => [t, nh, ws, nw, ws, unit_len],
                Order::FromWindows => [t, nh, nw, ws, ws, unit_len],
            };
            permute(&x[span.clone()], &shape, &[0, 1, 3, 2, 4, 5], &mut out[span])?;
        } else {
            for pos in start..start + n {
                let u = index.window_index[pos];
                if u < start || u >= start + n {
                    return Err(Error::invalid(format!(
                        "window_index[{pos}] = {u} leaves image units {start}..{}",
                        start + n
                    )));
                }
                let (src, dst) = match order {
                    Order::ToWindows => (u, pos),
                    Order::FromWindows => (pos, u),
                };
                out[dst * unit_len..(dst + 1) * unit_len].copy_from_slice(&x[src * unit_len..(src + 1) * unit_len]);
            }
        }
        start += n;
    }
    if start != units {
        return Err(Error::ShapeMismatch(format!(
            "grid_thw covers {start} units but window_index has {units}"
        )));
    }
    Ok(())
}
