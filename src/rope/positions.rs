//! Position ids: the `[3, N]` (t, h, w) rows of the multimodal decoders, the `[2, N]`
//! (row, column) rows of the ViT, and the decoding offsets ("rope deltas").
//!
//! The LM builders follow HF transformers 4.57.1 `get_rope_index` of Qwen2.5-VL and
//! Qwen3-VL: text advances all three rows together; a visual block starts at the next
//! free index `s` and gives token (t, i, j) of the merged grid the ids
//! (s + T(t), s + i, s + j); the text after it resumes at the block's maximum + 1.

use crate::{Error, Result};

/// A run of the token sequence, in order. Grids are in patches, as in `image_grid_thw`
/// and `video_grid_thw` (before the spatial merge).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Segment {
    /// `n` text tokens.
    Text(usize),
    /// One image: `t * (h / m) * (w / m)` tokens for merge size m.
    Image { t: usize, h: usize, w: usize },
    /// One video of `t` temporal patches; `second_per_grid_t` is its time step.
    Video {
        t: usize,
        h: usize,
        w: usize,
        second_per_grid_t: f64,
    },
}

/// Which model's rules place visual tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PositionStyle {
    /// Qwen2.5-VL: a video's temporal id is `t * second_per_grid_t * tokens_per_second`,
    /// with `second_per_grid_t` truncated to an integer first (HF 4.57.1 converts it to the
    /// integer dtype of the index tensor before multiplying).
    Qwen2_5Vl { tokens_per_second: i64 },
    /// Qwen3-VL: each video frame is its own block with a temporal extent of 1 (the
    /// timestamps are text tokens between frames).
    Qwen3Vl,
}

/// Options of the LM position builder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MropeOptions {
    pub style: PositionStyle,
    /// ViT patches merged per side into one LM token (2 for Qwen2.5-VL and Qwen3-VL).
    pub spatial_merge_size: usize,
    /// Spatial reset (MHRoPE / MRoPE-I paper): a visual block's h and w ids restart at 0
    /// (row and column index in the merged grid) instead of starting at `s`; its t ids still
    /// start at `s`, and the following text resumes at the block's maximum + 1.
    pub spatial_reset: bool,
}

impl MropeOptions {
    pub fn qwen2_5_vl() -> Self {
        MropeOptions {
            style: PositionStyle::Qwen2_5Vl { tokens_per_second: 2 },
            spatial_merge_size: 2,
            spatial_reset: false,
        }
    }
    pub fn qwen3_vl() -> Self {
        MropeOptions {
            style: PositionStyle::Qwen3Vl,
            spatial_merge_size: 2,
            spatial_reset: false,
        }
    }
}

/// `[3, tokens]` position ids and the decoding offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MropePositions {
    pub tokens: usize,
    /// Row-major `[3, tokens]`: t row, h row, w row.
    pub ids: Vec<i64>,
    /// `max id + 1 - tokens`: token `n >= tokens` generated later has all three ids equal
    /// to `n + delta` (HF's `rope_deltas`).
    pub delta: i64,
}

impl MropePositions {
    /// `[3, count]` ids of `count` decoded tokens starting at sequence index `start`.
    pub fn decode(&self, start: usize, count: usize) -> Result<Vec<i64>> {
        decode_positions(self.delta, start, count)
    }
}

/// `[3, count]` ids of decoded tokens at sequence indices `start..start+count`.
pub fn decode_positions(delta: i64, start: usize, count: usize) -> Result<Vec<i64>> {
    let row: Vec<i64> = (0..count)
        .map(|i| {
            i64::try_from(start + i)
                .ok()
                .and_then(|n| n.checked_add(delta))
                .ok_or_else(|| Error::Overflow(format!("decode position {} + delta {delta}", start + i)))
        })
        .collect::<Result<_>>()?;
    Ok([row.clone(), row.clone(), row].concat())
}

fn merged(what: &str, h: usize, w: usize, m: usize) -> Result<(usize, usize)> {
    if m == 0 {
        return Err(Error::invalid("spatial_merge_size 0"));
    }
    if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "{what} grid h {h} x w {w}: must be positive multiples of spatial_merge_size {m}"
        )));
    }
    Ok((h / m, w / m))
}

/// Position ids of a token sequence made of `segments` for the LM's MRoPE.
pub fn mrope_positions(segments: &[Segment], opts: &MropeOptions) -> Result<MropePositions> {
    let m = opts.spatial_merge_size;
    let mut rows: [Vec<i64>; 3] = Default::default();
    let mut next = 0i64; // first free index
    let push_block = |rows: &mut [Vec<i64>; 3], next: &mut i64, ts: &[i64], gh: usize, gw: usize| {
        let s = *next;
        let mut max = s - 1;
        for &t in ts {
            for i in 0..gh as i64 {
                for j in 0..gw as i64 {
                    let (h, w) = if opts.spatial_reset { (i, j) } else { (s + i, s + j) };
                    let ids = [s + t, h, w];
                    for (r, v) in rows.iter_mut().zip(ids) {
                        r.push(v);
                        max = max.max(v);
                    }
                }
            }
        }
        *next = max + 1;
    };
    for (idx, seg) in segments.iter().enumerate() {
        match *seg {
            Segment::Text(n) => {
                for i in 0..n as i64 {
                    for r in rows.iter_mut() {
                        r.push(next + i);
                    }
                }
                next += n as i64;
            }
            Segment::Image { t, h, w } => {
                let (gh, gw) = merged(&format!("image (segment {idx})"), h, w, m)?;
                let ts: Vec<i64> = (0..t as i64).collect();
                push_block(&mut rows, &mut next, &ts, gh, gw);
            }
            Segment::Video {
                t,
                h,
                w,
                second_per_grid_t,
            } => {
                let (gh, gw) = merged(&format!("video (segment {idx})"), h, w, m)?;
                match opts.style {
                    PositionStyle::Qwen2_5Vl { tokens_per_second } => {
                        if !second_per_grid_t.is_finite() || second_per_grid_t < 0.0 {
                            return Err(Error::invalid(format!(
                                "video (segment {idx}) second_per_grid_t {second_per_grid_t}"
                            )));
                        }
                        let step = (second_per_grid_t as i64) * tokens_per_second;
                        let ts: Vec<i64> = (0..t as i64).map(|i| i * step).collect();
                        push_block(&mut rows, &mut next, &ts, gh, gw);
                    }
                    PositionStyle::Qwen3Vl => {
                        for _ in 0..t {
                            push_block(&mut rows, &mut next, &[0], gh, gw);
                        }
                    }
                }
            }
        }
    }
    let tokens = rows[0].len();
    let delta = next - tokens as i64;
    Ok(MropePositions {
        tokens,
        ids: rows.concat(),
        delta,
    })
}

/// Splits a token id sequence into segments: maximal runs of `image_token` /
/// `video_token` take the next grid from `image_grids` / `video_grids` (each `[t, h, w]`)
/// and must have exactly its token count (per frame for Qwen3-VL videos, whose frames
/// are separate runs); everything else is text.
pub fn segments_from_tokens(
    ids: &[i64],
    image_token: i64,
    video_token: i64,
    image_grids: &[[usize; 3]],
    video_grids: &[([usize; 3], f64)],
    opts: &MropeOptions,
) -> Result<Vec<Segment>> {
    let m = opts.spatial_merge_size;
    let mut out = Vec::new();
    let (mut img, mut vid, mut frames_left) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < ids.len() {
        let tok = ids[i];
        let run = ids[i..].iter().take_while(|&&x| x == tok).count();
        if tok == image_token {
            let [t, h, w] = *image_grids.get(img).ok_or_else(|| {
                Error::invalid(format!(
                    "image token run at {i} but only {} image grids",
                    image_grids.len()
                ))
            })?;
            let (gh, gw) = merged("image", h, w, m)?;
            if run != t * gh * gw {
                return Err(Error::ShapeMismatch(format!(
                    "image {img} has {run} tokens at {i}, grid [{t}, {h}, {w}] needs {}",
                    t * gh * gw
                )));
            }
            out.push(Segment::Image { t, h, w });
            img += 1;
        } else if tok == video_token {
            let ([t, h, w], spg) = *video_grids.get(vid).ok_or_else(|| {
                Error::invalid(format!(
                    "video token run at {i} but only {} video grids",
                    video_grids.len()
                ))
            })?;
            let (gh, gw) = merged("video", h, w, m)?;
            match opts.style {
                PositionStyle::Qwen2_5Vl { .. } => {
                    if run != t * gh * gw {
                        return Err(Error::ShapeMismatch(format!(
                            "video {vid} has {run} tokens at {i}, grid [{t}, {h}, {w}] needs {}",
                            t * gh * gw
                        )));
                    }
                    out.push(Segment::Video {
                        t,
                        h,
                        w,
                        second_per_grid_t: spg,
                    });
                    vid += 1;
                }
                PositionStyle::Qwen3Vl => {
                    if frames_left == 0 {
                        frames_left = t;
                    }
                    if run % (gh * gw) != 0 || run / (gh * gw) > frames_left {
                        return Err(Error::ShapeMismatch(format!(
                            "video {vid} run of {run} tokens at {i} is not a whole number of its remaining {frames_left} frames of {} tokens",
                            gh * gw
                        )));
                    }
                    let f = run / (gh * gw);
                    out.push(Segment::Video {
                        t: f,
                        h,
                        w,
                        second_per_grid_t: spg,
                    });
                    frames_left -= f;
                    if frames_left == 0 {
                        vid += 1;
                    }
                }
            }
        } else {
            match out.last_mut() {
                Some(Segment::Text(n)) => *n += run,
                _ => out.push(Segment::Text(run)),
            }
        }
        i += run;
    }
    Ok(out)
}

/// `[2, N]` (row, column) patch positions of the ViT for images/videos `grid_thw`, in
/// merge-block order: blocks of `m x m` patches row by row, patches row by row inside a
/// block, the whole pattern repeated for each temporal patch.
pub fn vision_positions(grid_thw: &[[usize; 3]], spatial_merge_size: usize) -> Result<Vec<i64>> {
    let m = spatial_merge_size;
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    for (idx, &[t, h, w]) in grid_thw.iter().enumerate() {
        let (bh, bw) = merged(&format!("vision grid {idx}"), h, w, m)?;
        for _ in 0..t {
            for br in 0..bh {
                for bc in 0..bw {
                    for ir in 0..m {
                        for ic in 0..m {
                            rows.push((br * m + ir) as i64);
                            cols.push((bc * m + ic) as i64);
                        }
                    }
                }
            }
        }
    }
    rows.extend(cols);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_docstring_example() {
        // HF's get_rope_index docstring: 3 temporal patches of 2 x 2 merged tokens, 50 ids
        // per temporal patch, then 5 text tokens.
        let segs = [
            Segment::Video {
                t: 3,
                h: 4,
                w: 4,
                second_per_grid_t: 2.0,
            },
            Segment::Text(5),
        ];
        let opts = MropeOptions {
            style: PositionStyle::Qwen2_5Vl { tokens_per_second: 25 },
            ..MropeOptions::qwen2_5_vl()
        };
        let p = mrope_positions(&segs, &opts).unwrap();
        let t = &p.ids[..17];
        assert_eq!(&t[..12], &[0, 0, 0, 0, 50, 50, 50, 50, 100, 100, 100, 100]);
        assert_eq!(&t[12..], &[101, 102, 103, 104, 105]);
        assert_eq!(&p.ids[17..29], &[0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(&p.ids[34..46], &[0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(p.delta, 106 - 17);
        assert_eq!(p.decode(17, 2).unwrap(), vec![106, 107, 106, 107, 106, 107]);
    }

    #[test]
    fn text_only_has_zero_delta_and_equal_rows() {
        let p = mrope_positions(&[Segment::Text(4)], &MropeOptions::qwen3_vl()).unwrap();
        assert_eq!(p.ids, vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(p.delta, 0);
    }

    #[test]
    fn vision_positions_follow_merge_blocks() {
        let p = vision_positions(&[[1, 2, 4]], 2).unwrap();
        assert_eq!(&p[..8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(&p[8..], &[0, 1, 0, 1, 2, 3, 2, 3]);
        assert!(vision_positions(&[[1, 3, 4]], 2)
            .unwrap_err()
            .to_string()
            .contains("h 3"));
    }
}
