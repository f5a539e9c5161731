//! Benchmark suites for the permutation engine (row-major, NumPy order).
//!
//! `hptt`: the 57 transpositions of the HPTT/TTC benchmark (2-D to 6-D, f32,
//! about 200 MiB each). HPTT states them column-major as `perm` and `sizes`;
//! row-major they are the reversed sizes with `q[m] = d-1-perm[d-1-m]`.
//! `models`: permutations that Qwen vision-language models perform.
//! `random`: 40 problems drawn from a fixed seed (ranks 2 to 6, u8, bf16, f32
//! and f64, odd extents): shapes no benchmark was tuned on, where short groups
//! and unaligned rows show up.

use crate::tensor::checked_numel;
use crate::DType;

/// One benchmark case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub suite: &'static str,
    pub name: String,
    pub shape: Vec<usize>,
    pub perm: Vec<usize>,
    pub dtype: DType,
}

impl Case {
    /// Bytes of one tensor (source or destination).
    pub fn bytes(&self) -> usize {
        checked_numel(&self.shape)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.dtype.size())
    }
}

/// Problem sizes: `Full` as published, `Small` scaled to about 16 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteSize {
    Full,
    Small,
}

/// (column-major permutation, column-major sizes) of the HPTT benchmark.
const HPTT_COLUMN_MAJOR: [(&[usize], &[usize]); 57] = [
    (&[1, 0], &[7264, 7264]),
    (&[1, 0], &[43408, 1216]),
    (&[1, 0], &[1216, 43408]),
    (&[0, 2, 1], &[368, 384, 384]),
    (&[0, 2, 1], &[2144, 64, 384]),
    (&[0, 2, 1], &[368, 64, 2307]),
    (&[1, 0, 2], &[384, 384, 355]),
    (&[1, 0, 2], &[2320, 384, 59]),
    (&[1, 0, 2], &[384, 2320, 59]),
    (&[2, 1, 0], &[384, 355, 384]),
    (&[2, 1, 0], &[2320, 59, 384]),
    (&[2, 1, 0], &[384, 59, 2320]),
    (&[0, 3, 2, 1], &[80, 96, 75, 96]),
    (&[0, 3, 2, 1], &[464, 16, 75, 96]),
    (&[0, 3, 2, 1], &[80, 16, 75, 582]),
    (&[2, 1, 3, 0], &[96, 75, 96, 75]),
    (&[2, 1, 3, 0], &[608, 12, 96, 75]),
    (&[2, 1, 3, 0], &[96, 12, 608, 75]),
    (&[2, 0, 3, 1], &[96, 75, 96, 75]),
    (&[2, 0, 3, 1], &[608, 12, 96, 75]),
    (&[2, 0, 3, 1], &[96, 12, 608, 75]),
    (&[1, 0, 3, 2], &[96, 96, 75, 75]),
    (&[1, 0, 3, 2], &[608, 96, 12, 75]),
    (&[1, 0, 3, 2], &[96, 608, 12, 75]),
    (&[3, 2, 1, 0], &[96, 75, 75, 96]),
    (&[3, 2, 1, 0], &[608, 12, 75, 96]),
    (&[3, 2, 1, 0], &[96, 12, 75, 608]),
    (&[0, 4, 2, 1, 3], &[32, 48, 28, 28, 48]),
    (&[0, 4, 2, 1, 3], &[176, 8, 28, 28, 48]),
    (&[0, 4, 2, 1, 3], &[32, 8, 28, 28, 298]),
    (&[3, 2, 1, 4, 0], &[48, 28, 28, 48, 28]),
    (&[3, 2, 1, 4, 0], &[352, 4, 28, 48, 28]),
    (&[3, 2, 1, 4, 0], &[48, 4, 28, 352, 28]),
    (&[2, 0, 4, 1, 3], &[48, 28, 48, 28, 28]),
    (&[2, 0, 4, 1, 3], &[352, 4, 48, 28, 28]),
    (&[2, 0, 4, 1, 3], &[48, 4, 352, 28, 28]),
    (&[1, 3, 0, 4, 2], &[48, 48, 28, 28, 28]),
    (&[1, 3, 0, 4, 2], &[352, 48, 4, 28, 28]),
    (&[1, 3, 0, 4, 2], &[48, 352, 4, 28, 28]),
    (&[4, 3, 2, 1, 0], &[48, 28, 28, 28, 48]),
    (&[4, 3, 2, 1, 0], &[352, 4, 28, 28, 48]),
    (&[4, 3, 2, 1, 0], &[48, 4, 28, 28, 352]),
    (&[0, 3, 2, 5, 4, 1], &[16, 32, 15, 32, 15, 15]),
    (&[0, 3, 2, 5, 4, 1], &[48, 10, 15, 32, 15, 15]),
    (&[0, 3, 2, 5, 4, 1], &[16, 10, 15, 103, 15, 15]),
    (&[3, 2, 0, 5, 1, 4], &[32, 15, 15, 32, 15, 15]),
    (&[3, 2, 0, 5, 1, 4], &[112, 5, 15, 32, 15, 15]),
    (&[3, 2, 0, 5, 1, 4], &[32, 5, 15, 112, 15, 15]),
    (&[2, 0, 4, 1, 5, 3], &[32, 15, 32, 15, 15, 15]),
    (&[2, 0, 4, 1, 5, 3], &[112, 5, 32, 15, 15, 15]),
    (&[2, 0, 4, 1, 5, 3], &[32, 5, 112, 15, 15, 15]),
    (&[3, 2, 5, 1, 0, 4], &[32, 15, 15, 32, 15, 15]),
    (&[3, 2, 5, 1, 0, 4], &[112, 5, 15, 32, 15, 15]),
    (&[3, 2, 5, 1, 0, 4], &[32, 5, 15, 112, 15, 15]),
    (&[5, 4, 3, 2, 1, 0], &[32, 15, 15, 15, 15, 32]),
    (&[5, 4, 3, 2, 1, 0], &[112, 5, 15, 15, 15, 32]),
    (&[5, 4, 3, 2, 1, 0], &[32, 5, 15, 15, 15, 112]),
];

/// Target bytes of a `Small` case.
const SMALL_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// Converts a column-major (perm, sizes) pair to row-major (shape, perm).
pub fn column_major_to_row_major(perm: &[usize], sizes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let d = perm.len();
    let shape: Vec<usize> = sizes.iter().rev().copied().collect();
    let q: Vec<usize> = (0..d).map(|m| d - 1 - perm[d - 1 - m]).collect();
    (shape, q)
}

/// Scales every extent by the same factor so the tensor holds about `target` bytes.
fn scale_to(shape: &[usize], elem: usize, target: f64) -> Vec<usize> {
    let bytes = shape.iter().product::<usize>() as f64 * elem as f64;
    if bytes <= target {
        return shape.to_vec();
    }
    let f = (target / bytes).powf(1.0 / shape.len() as f64);
    shape
        .iter()
        .map(|&e| ((e as f64 * f).round() as usize).max(1))
        .collect()
}

fn fmt_list(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// The HPTT suite in row-major form, in `dtype` (HPTT uses f32).
pub fn hptt(size: SuiteSize, dtype: DType) -> Vec<Case> {
    HPTT_COLUMN_MAJOR
        .iter()
        .map(|(perm, sizes)| {
            let (mut shape, perm) = column_major_to_row_major(perm, sizes);
            // Keep the published byte size when a different dtype is asked for.
            let target = match size {
                SuiteSize::Full => shape.iter().product::<usize>() as f64 * 4.0,
                SuiteSize::Small => SMALL_BYTES,
            };
            if size == SuiteSize::Small || dtype.size() != 4 {
                shape = scale_to(&shape, dtype.size(), target);
            }
            Case {
                suite: "hptt",
                name: format!("({})→({})", fmt_list(&shape), fmt_list(&perm)),
                shape,
                perm,
                dtype,
            }
        })
        .collect()
}

/// A case named by its description and its problem.
fn named(suite: &'static str, name: &str, shape: Vec<usize>, perm: Vec<usize>, dtype: DType) -> Case {
    Case {
        suite,
        name: format!("{name} ({})→({})", fmt_list(&shape), fmt_list(&perm)),
        shape,
        perm,
        dtype,
    }
}

/// Qwen vision-language model permutations.
pub fn models(size: SuiteSize) -> Vec<Case> {
    let small = size == SuiteSize::Small;
    let mut cases = Vec::new();
    let mut add = |name: &str, shape, perm, dtype| cases.push(named("models", name, shape, perm, dtype));
    let patch_perm = vec![0, 3, 6, 4, 7, 2, 1, 5, 8];
    add(
        "qwen2.5-vl patchify f32",
        vec![1, 2, 3, 35, 2, 14, 35, 2, 14],
        patch_perm.clone(),
        DType::F32,
    );
    add(
        "qwen3-vl patchify f32",
        vec![1, 2, 3, 32, 2, 16, 32, 2, 16],
        patch_perm,
        DType::F32,
    );
    let b = if small { 1 } else { 8 };
    let s = if small { 1024 } else { 2048 };
    add(
        "attention BSHD→BHSD bf16",
        vec![b, s, 32, 128],
        vec![0, 2, 1, 3],
        DType::BF16,
    );
    let (h, w) = if small { (1824, 2736) } else { (3648, 5472) };
    add("HWC→CHW u8", vec![h, w, 3], vec![2, 0, 1], DType::U8);
    let (r, c) = if small { (2048, 4096) } else { (8192, 8192) };
    add("transpose bf16", vec![r, c], vec![1, 0], DType::BF16);
    let rank = if small { 22 } else { 24 };
    add(
        "all-2 reversal f32",
        vec![2; rank],
        (0..rank).rev().collect(),
        DType::F32,
    );
    let shape = if small {
        vec![31, 29, 33, 37]
    } else {
        vec![61, 59, 63, 57]
    };
    add("reversal f64", shape, vec![3, 2, 1, 0], DType::F64);
    cases
}

/// Per-layer permutations of a Qwen-family forward pass at batch 1, at the sizes
/// an inference engine meets them (0.5–8 MiB, in cache): head split and merge,
/// the key transpose, one image's patchify, channel-last moves, a weight
/// transpose. `Small` halves the sequence lengths (and the weight).
pub fn layers(size: SuiteSize) -> Vec<Case> {
    let half = usize::from(size == SuiteSize::Small) + 1;
    let s = 1024 / half;
    let mut cases = Vec::new();
    let mut add = |name: &str, shape, perm, dtype| cases.push(named("layers", name, shape, perm, dtype));
    add("q head split bf16", vec![1, s, 16, 128], vec![0, 2, 1, 3], DType::BF16);
    add("kv head split bf16", vec![1, s, 8, 128], vec![0, 2, 1, 3], DType::BF16);
    add("key transpose bf16", vec![1, 16, s, 128], vec![0, 1, 3, 2], DType::BF16);
    add("head merge bf16", vec![1, 16, s, 128], vec![0, 2, 1, 3], DType::BF16);
    add("vision head split bf16", vec![s, 16, 80], vec![1, 0, 2], DType::BF16);
    let g = 16 / half;
    add(
        "qwen2.5-vl patchify f32",
        vec![1, 2, 3, g, 2, 14, g, 2, 14],
        vec![0, 3, 6, 4, 7, 2, 1, 5, 8],
        DType::F32,
    );
    let px = 448 / half;
    add("CHW→HWC u8", vec![3, px, px], vec![1, 2, 0], DType::U8);
    add("NCHW→NHWC f32", vec![1, 64, 56, 56], vec![0, 2, 3, 1], DType::F32);
    add("NHWC→NCHW f32", vec![1, 56, 56, 64], vec![0, 3, 1, 2], DType::F32);
    let w = 2048 / half;
    add("weight transpose bf16", vec![w, 2048], vec![1, 0], DType::BF16);
    cases
}

/// Cases of the `random` suite: [`RANDOM_CASES`] problems from a fixed seed, each
/// a random rank (2 to 6), element type, permutation (never the identity) and
/// extents whose product is 16 to 64 MiB (`Full`) or 2 to 8 MiB (`Small`).
pub fn random(size: SuiteSize) -> Vec<Case> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: fixed and portable, so every machine benchmarks the same cases.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (lo_mib, hi_mib) = match size {
        SuiteSize::Full => (16u64, 64u64),
        SuiteSize::Small => (2, 8),
    };
    let dtypes = [DType::U8, DType::BF16, DType::F32, DType::F64];
    let mut cases = Vec::with_capacity(RANDOM_CASES);
    while cases.len() < RANDOM_CASES {
        let rank = 2 + (next() % 5) as usize;
        let dtype = dtypes[(next() % 4) as usize];
        let bytes = (lo_mib + next() % (hi_mib - lo_mib + 1)) << 20;
        let mut left = (bytes / dtype.size() as u64) as f64;
        let mut shape = Vec::with_capacity(rank);
        for i in 0..rank {
            let extent = if i + 1 == rank {
                left.round()
            } else {
                // About the geometric mean of what is left, times 0.4–1.8.
                let mean = left.powf(1.0 / (rank - i) as f64);
                (mean * (0.4 + (next() % 1400) as f64 / 1000.0)).round()
            };
            let extent = (extent as usize).max(2);
            left /= extent as f64;
            shape.push(extent);
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            perm.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            continue;
        }
        cases.push(Case {
            suite: "random",
            name: format!("({})→({}) {}", fmt_list(&shape), fmt_list(&perm), dtype.name()),
            shape,
            perm,
            dtype,
        });
    }
    cases
}

/// How many problems the `random` suite holds.
pub const RANDOM_CASES: usize = 40;

/// Cases of a suite by name: `hptt`, `models`, `layers`, `random` or `all` (hptt and models).
pub fn suite(name: &str, size: SuiteSize, hptt_dtype: DType) -> crate::Result<Vec<Case>> {
    match name {
        "hptt" => Ok(hptt(size, hptt_dtype)),
        "models" => Ok(models(size)),
        "layers" => Ok(layers(size)),
        "random" => Ok(random(size)),
        "all" => Ok(hptt(size, hptt_dtype).into_iter().chain(models(size)).collect()),
        other => Err(crate::Error::invalid(format!(
            "suite '{other}' (expected hptt, models, layers, random or all)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hptt_suite_has_57_cases_of_about_200_mib() {
        let cases = hptt(SuiteSize::Full, DType::F32);
        assert_eq!(cases.len(), 57);
        for c in &cases {
            let mib = c.bytes() as f64 / (1 << 20) as f64;
            assert!((150.0..260.0).contains(&mib), "{} is {mib} MiB", c.name);
            crate::tensor::validate_perm(&c.perm, c.shape.len()).unwrap();
        }
        // Column-major 7264×43408 → row-major 43408… reversed; perm (1,0) stays (1,0).
        assert_eq!(
            column_major_to_row_major(&[0, 2, 1], &[368, 384, 384]),
            (vec![384, 384, 368], vec![1, 0, 2])
        );
        for c in hptt(SuiteSize::Small, DType::F32) {
            let mib = c.bytes() as f64 / (1 << 20) as f64;
            assert!((12.0..20.0).contains(&mib), "{} is {mib} MiB", c.name);
        }
    }

    #[test]
    fn layers_suite_stays_in_cache_sizes() {
        for (size, lo, hi) in [(SuiteSize::Full, 0.5, 8.5), (SuiteSize::Small, 0.1, 4.5)] {
            let cases = layers(size);
            assert_eq!(cases.len(), 10);
            for c in &cases {
                let mib = c.bytes() as f64 / (1 << 20) as f64;
                assert!((lo..hi).contains(&mib), "{} is {mib} MiB", c.name);
                crate::tensor::validate_perm(&c.perm, c.shape.len()).unwrap();
            }
        }
        assert!(suite("layers", SuiteSize::Full, DType::F32).is_ok());
        let err = suite("nope", SuiteSize::Full, DType::F32).unwrap_err().to_string();
        assert!(err.contains("'nope'") && err.contains("layers"), "{err}");
    }

    #[test]
    fn random_suite_is_fixed_and_sized() {
        for (size, lo, hi) in [(SuiteSize::Full, 12.0, 80.0), (SuiteSize::Small, 1.5, 10.0)] {
            let cases = random(size);
            assert_eq!(cases, random(size), "the same cases on every call");
            assert_eq!(cases.len(), RANDOM_CASES);
            for c in &cases {
                let mib = c.bytes() as f64 / (1 << 20) as f64;
                assert!((lo..hi).contains(&mib), "{} is {mib} MiB", c.name);
                crate::tensor::validate_perm(&c.perm, c.shape.len()).unwrap();
                assert!((2..=6).contains(&c.shape.len()), "{}", c.name);
                assert!(c.perm.iter().enumerate().any(|(i, &p)| i != p), "{}", c.name);
            }
            // Every element type appears.
            for d in [DType::U8, DType::BF16, DType::F32, DType::F64] {
                assert!(cases.iter().any(|c| c.dtype == d), "{d:?} missing");
            }
        }
    }
}
