//! Antialiased bicubic resampling of 8-bit RGB images, in the two flavours the
//! Qwen2-VL image processors of transformers 4.57.1 use:
//!
//! - [`ResizeFlavor::Pil`]: Pillow's `Image.resize(..., BICUBIC)` (the slow
//!   `Qwen2VLImageProcessor`): Keys cubic with `a = -0.5`, the filter support widened
//!   by the scale when shrinking, weights normalised per output pixel then turned into
//!   22-bit fixed point, a horizontal pass then a vertical pass, each rounded and
//!   clipped to `u8`;
//! - [`ResizeFlavor::Torchvision`]: torchvision's `resize(uint8 tensor, BICUBIC,
//!   antialias=True)` (the fast `Qwen2VLImageProcessorFast`), which on x86 CPUs with
//!   AVX2 runs ATen's native uint8 kernel: the same f64 weights, but scaled to `i16`
//!   with the largest precision that keeps the biggest weight of that axis below
//!   2¹⁵, and the same two passes rounded to `u8`. (Without AVX2, or on a GPU,
//!   torchvision interpolates in f32 instead and may differ by one level.)
//!
//! Images are interleaved `[height, width, 3]` `u8`.

use rayon::prelude::*;

use crate::{Error, Result};

/// Which reference implementation to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeFlavor {
    /// Pillow (slow processor).
    #[default]
    Pil,
    /// torchvision on float (fast processor).
    Torchvision,
}

const CHANNELS: usize = 3;
/// Pillow's fixed-point precision for 8-bit images (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Taps of one output pixel: first source index and normalised weights.
struct Taps {
    start: usize,
    weights: Vec<f64>,
}

/// Pillow's `precompute_coeffs` for a full-image box (f64, normalised).
fn coefficients(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; both values are >= -0.5 + 0.5 here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps { start: xmin, weights }
        })
        .collect()
}

/// ATen's `_compute_index_ranges_int16_weights`: the largest precision (below 22 bits)
/// at which the axis' biggest weight still rounds below 2¹⁵.
fn int16_precision(taps: &[Taps]) -> u32 {
    let w_max = taps
        .iter()
        .flat_map(|t| t.weights.iter().copied())
        .fold(0.0f64, f64::max);
    let mut precision = 0;
    while precision < 22 {
        let next = (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    precision
}

/// Weights in fixed point with `precision` fractional bits, rounded half away from zero.
fn fixed_point(taps: &[Taps], precision: u32) -> Vec<(usize, Vec<i64>)> {
    let one = (1u64 << precision) as f64;
    taps.iter()
        .map(|t| {
            let k = t
                .weights
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i64
                    } else {
                        (0.5 + w * one) as i64
                    }
                })
                .collect();
            (t.start, k)
        })
        .collect()
}

fn clip8(v: i64, precision: u32) -> u8 {
    (v >> precision).clamp(0, 255) as u8
}

/// Resizes `src` (`[in_h, in_w, 3]` u8) to `[out_h, out_w, 3]`.
pub fn resize_bicubic_rgb8(
    src: &[u8],
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    flavor: ResizeFlavor,
) -> Result<Vec<u8>> {
    if in_h == 0 || in_w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::invalid(format!(
            "resize from {in_h}x{in_w} to {out_h}x{out_w}: every size must be positive"
        )));
    }
    let expected = in_h
        .checked_mul(in_w)
        .and_then(|n| n.checked_mul(CHANNELS))
        .ok_or_else(|| Error::Overflow(format!("image {in_h}x{in_w}x3")))?;
    if src.len() != expected {
        return Err(Error::ShapeMismatch(format!(
            "image buffer of {} bytes for {in_h}x{in_w}x3 ({expected} bytes)",
            src.len()
        )));
    }
    out_h
        .checked_mul(out_w)
        .and_then(|n| n.checked_mul(CHANNELS))
        .ok_or_else(|| Error::Overflow(format!("resized image {out_h}x{out_w}x3")))?;
    let (horiz, vert) = (coefficients(in_w, out_w), coefficients(in_h, out_h));
    let (ph, pv) = match flavor {
        ResizeFlavor::Pil => (PRECISION_BITS, PRECISION_BITS),
        ResizeFlavor::Torchvision => (int16_precision(&horiz), int16_precision(&vert)),
    };
    Ok(resize_fixed(
        src,
        (in_h, in_w),
        (out_h, out_w),
        (&fixed_point(&horiz, ph), ph),
        (&fixed_point(&vert, pv), pv),
    ))
}

type FixedTaps<'a> = (&'a [(usize, Vec<i64>)], u32);

/// Horizontal pass then vertical pass, each rounded to `u8`.
fn resize_fixed(
    src: &[u8],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    (horiz, ph): FixedTaps,
    (vert, pv): FixedTaps,
) -> Vec<u8> {
    // Both implementations skip a pass whose size does not change. Rows are
    // independent within a pass, so each pass runs its output rows in parallel.
    let tmp: Vec<u8> = if out_w != in_w {
        let mut tmp = vec![0u8; in_h * out_w * CHANNELS];
        tmp.par_chunks_mut(out_w * CHANNELS).enumerate().for_each(|(y, dst)| {
            let row = &src[y * in_w * CHANNELS..(y + 1) * in_w * CHANNELS];
            for (x, (start, k)) in horiz.iter().enumerate() {
                for c in 0..CHANNELS {
                    let mut acc: i64 = 1 << ph >> 1;
                    for (i, &w) in k.iter().enumerate() {
                        acc += row[(start + i) * CHANNELS + c] as i64 * w;
                    }
                    dst[x * CHANNELS + c] = clip8(acc, ph);
                }
            }
        });
        tmp
    } else {
        src.to_vec()
    };
    if out_h == in_h {
        return tmp;
    }
    let stride = out_w * CHANNELS;
    let mut out = vec![0u8; out_h * stride];
    out.par_chunks_mut(stride)
        .zip(vert.par_iter())
        .for_each(|(dst, (start, k))| {
            let mut acc = vec![1i64 << pv >> 1; stride];
            for (i, &w) in k.iter().enumerate() {
                let src_row = &tmp[(start + i) * stride..(start + i + 1) * stride];
                acc.iter_mut().zip(src_row).for_each(|(a, &v)| *a += v as i64 * w);
            }
            dst.iter_mut().zip(&acc).for_each(|(d, &a)| *d = clip8(a, pv));
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        for flavor in [ResizeFlavor::Pil, ResizeFlavor::Torchvision] {
            assert_eq!(resize_bicubic_rgb8(&src, 5, 7, 5, 7, flavor).unwrap(), src);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![200u8; 13 * 17 * 3];
        for flavor in [ResizeFlavor::Pil, ResizeFlavor::Torchvision] {
            for (h, w) in [(4, 5), (31, 29), (13, 40)] {
                let out = resize_bicubic_rgb8(&src, 13, 17, h, w, flavor).unwrap();
                assert_eq!(out.len(), h * w * 3);
                assert!(out.iter().all(|&v| v == 200), "{flavor:?} {h}x{w}");
            }
        }
    }

    /// The same filter in f64 with no rounding between passes: the fixed-point paths stay
    /// within one level of it per pass (two levels in all) on random images of prime,
    /// tiny and tile-edge sizes, shrinking and enlarging.
    #[test]
    fn fixed_point_paths_follow_a_float_reference() {
        let mut rng = crate::rng::SplitMix64::new(7);
        for &(ih, iw, oh, ow) in &[
            (1, 1, 3, 2),
            (2, 3, 1, 1),
            (7, 13, 5, 29),
            (31, 17, 8, 64),
            (97, 131, 84, 140),
            (64, 64, 63, 65),
        ] {
            let src: Vec<u8> = (0..ih * iw * 3).map(|_| (rng.next_u64() % 256) as u8).collect();
            let expect = float_reference(&src, (ih, iw), (oh, ow));
            for flavor in [ResizeFlavor::Pil, ResizeFlavor::Torchvision] {
                let out = resize_bicubic_rgb8(&src, ih, iw, oh, ow, flavor).unwrap();
                assert_eq!(out.len(), oh * ow * 3);
                for (i, (&got, &want)) in out.iter().zip(&expect).enumerate() {
                    let want = want.clamp(0.0, 255.0);
                    assert!(
                        (got as f64 - want).abs() <= 2.0,
                        "{flavor:?} {ih}x{iw}->{oh}x{ow} element {i}: {got} vs {want}"
                    );
                }
            }
        }
    }

    fn float_reference(src: &[u8], (ih, iw): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f64> {
        let (cw, ch) = (coefficients(iw, ow), coefficients(ih, oh));
        let mut tmp = vec![0f64; ih * ow * 3];
        for y in 0..ih {
            for (x, t) in cw.iter().enumerate() {
                for c in 0..3 {
                    tmp[(y * ow + x) * 3 + c] = t
                        .weights
                        .iter()
                        .enumerate()
                        .map(|(i, w)| src[(y * iw + t.start + i) * 3 + c] as f64 * w)
                        .sum::<f64>()
                        .clamp(0.0, 255.0);
                }
            }
        }
        let mut out = vec![0f64; oh * ow * 3];
        for (y, t) in ch.iter().enumerate() {
            for x in 0..ow * 3 {
                out[y * ow * 3 + x] = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| tmp[(t.start + i) * ow * 3 + x] * w)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(resize_bicubic_rgb8(&[0; 3], 1, 1, 0, 4, ResizeFlavor::Pil).is_err());
        assert!(resize_bicubic_rgb8(&[0; 5], 1, 2, 2, 2, ResizeFlavor::Pil).is_err());
    }
}
