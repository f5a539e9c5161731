//! Expert FFN: `down(silu(gate(x)) * up(x))` on one expert's rows, with the
//! weights read in place through strided views (any of the checkpoint layouts).

use crate::{Error, Result};

/// A weight matrix seen as `[in, out]` (K × N): element `(i, o)` is
/// `data[offset + i * in_stride + o * out_stride]`. Validated on creation.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows_in: usize,
    cols_out: usize,
    in_stride: usize,
    out_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A `[rows_in, cols_out]` view; fails when any element lies outside `data`.
    pub fn new(
        data: &'a [f32],
        offset: usize,
        rows_in: usize,
        cols_out: usize,
        in_stride: usize,
        out_stride: usize,
    ) -> Result<Self> {
        if rows_in > 0 && cols_out > 0 {
            let last = (rows_in - 1)
                .checked_mul(in_stride)
                .and_then(|a| (cols_out - 1).checked_mul(out_stride).and_then(|b| a.checked_add(b)))
                .and_then(|a| a.checked_add(offset))
                .ok_or_else(|| Error::Overflow(format!("view [{rows_in}, {cols_out}] at offset {offset}")))?;
            if last >= data.len() {
                return Err(Error::ShapeMismatch(format!(
                    "view [{rows_in}, {cols_out}] (strides {in_stride}, {out_stride}) at offset {offset} \
                     reaches element {last} of a {}-element buffer",
                    data.len()
                )));
            }
            if in_stride > isize::MAX as usize || out_stride > isize::MAX as usize {
                return Err(Error::Overflow(format!("strides {in_stride}, {out_stride}")));
            }
        }
        Ok(MatRef {
            data,
            offset,
            rows_in,
            cols_out,
            in_stride,
            out_stride,
        })
    }

    /// Input size K.
    pub fn rows_in(&self) -> usize {
        self.rows_in
    }

    /// Output size N.
    pub fn cols_out(&self) -> usize {
        self.cols_out
    }

    /// Element `(i, o)`.
    #[inline]
    pub fn at(&self, i: usize, o: usize) -> f32 {
        self.data[self.offset + i * self.in_stride + o * self.out_stride]
    }

    /// Columns `[start, start + n)` of the output dimension.
    pub fn cols(&self, start: usize, n: usize) -> Result<MatRef<'a>> {
        if start.checked_add(n).is_none_or(|end| end > self.cols_out) {
            return Err(Error::invalid(format!(
                "columns {start}..{start}+{n} of a view with {} columns",
                self.cols_out
            )));
        }
        MatRef::new(
            self.data,
            self.offset + start * self.out_stride,
            self.rows_in,
            n,
            self.in_stride,
            self.out_stride,
        )
    }
}

/// One expert's three projections, each `[in, out]`.
#[derive(Clone, Copy, Debug)]
pub struct ExpertRef<'a> {
    /// `[hidden, intermediate]`.
    pub gate: MatRef<'a>,
    /// `[hidden, intermediate]`.
    pub up: MatRef<'a>,
    /// `[intermediate, hidden]`.
    pub down: MatRef<'a>,
}

impl ExpertRef<'_> {
    /// (hidden, intermediate) after checking that the three shapes agree.
    pub fn dims(&self) -> Result<(usize, usize)> {
        let (h, i) = (self.gate.rows_in, self.gate.cols_out);
        if (self.up.rows_in, self.up.cols_out) != (h, i) || (self.down.rows_in, self.down.cols_out) != (i, h) {
            return Err(Error::ShapeMismatch(format!(
                "expert views gate [{h}, {i}], up [{}, {}], down [{}, {}] do not agree",
                self.up.rows_in, self.up.cols_out, self.down.rows_in, self.down.cols_out
            )));
        }
        Ok((h, i))
    }
}

/// `out[m, N] = lhs[m, K] · rhs`, row-major `lhs`/`out`, through the GEMM
/// crate; `threaded` lets it use rayon inside (off when the caller already
/// splits work across experts).
pub fn matmul(lhs: &[f32], m: usize, k: usize, rhs: &MatRef<'_>, out: &mut [f32], threaded: bool) -> Result<()> {
    let n = rhs.cols_out;
    if rhs.rows_in != k {
        return Err(Error::ShapeMismatch(format!(
            "lhs has {k} columns, rhs {} rows",
            rhs.rows_in
        )));
    }
    let lhs_len = m.checked_mul(k).ok_or_else(|| Error::Overflow(format!("{m} x {k}")))?;
    let out_len = m.checked_mul(n).ok_or_else(|| Error::Overflow(format!("{m} x {n}")))?;
    if lhs.len() != lhs_len || out.len() != out_len {
        return Err(Error::ShapeMismatch(format!(
            "lhs has {} elements (need {m} x {k}), out {} (need {m} x {n})",
            lhs.len(),
            out.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let parallelism = if threaded && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every extent and stride was checked above and in MatRef::new:
    // lhs is m x k row-major, out is m x n row-major, rhs elements lie in rhs.data.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.out_stride as isize,
            rhs.in_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// `silu(g) * u`, the gated activation of the Qwen MLPs.
#[inline]
pub fn silu_mul(g: f32, u: f32) -> f32 {
    g / (1.0 + (-g).exp()) * u
}

/// Reference expert FFN on `m` rows (`x [m, H]` → `out [m, H]`), f64 accumulation.
pub fn expert_ffn_reference(x: &[f32], w: &ExpertRef<'_>, out: &mut [f32]) -> Result<()> {
    let (h, inter) = w.dims()?;
    let m = check_rows(x.len(), out.len(), h)?;
    let mut act = vec![0f64; inter];
    for r in 0..m {
        let xr = &x[r * h..(r + 1) * h];
        for (o, a) in act.iter_mut().enumerate() {
            let g: f64 = xr
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * w.gate.at(i, o) as f64)
                .sum();
            let u: f64 = xr
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * w.up.at(i, o) as f64)
                .sum();
            *a = g / (1.0 + (-g).exp()) * u;
        }
        for o in 0..h {
            let y: f64 = act.iter().enumerate().map(|(i, &a)| a * w.down.at(i, o) as f64).sum();
            out[r * h + o] = y as f32;
        }
    }
    Ok(())
}

/// Expert FFN through the GEMM crate: gate and up as two products into one
/// scratch row block, SiLU-and-multiply in place, then down.
pub fn expert_ffn(x: &[f32], w: &ExpertRef<'_>, out: &mut [f32], threaded: bool) -> Result<()> {
    let (h, inter) = w.dims()?;
    let m = check_rows(x.len(), out.len(), h)?;
    let len = m
        .checked_mul(inter)
        .ok_or_else(|| Error::Overflow(format!("{m} x {inter}")))?;
    let mut g = vec![0f32; len];
    let mut u = vec![0f32; len];
    matmul(x, m, h, &w.gate, &mut g, threaded)?;
    matmul(x, m, h, &w.up, &mut u, threaded)?;
    for (gv, &uv) in g.iter_mut().zip(&u) {
        *gv = silu_mul(*gv, uv);
    }
    matmul(&g, m, inter, &w.down, out, threaded)
}

fn check_rows(x_len: usize, out_len: usize, hidden: usize) -> Result<usize> {
    if hidden == 0 {
        return Err(Error::invalid("expert hidden size 0"));
    }
    if x_len % hidden != 0 || out_len != x_len {
        return Err(Error::ShapeMismatch(format!(
            "expert input has {x_len} and output {out_len} elements; both must be the same rows of hidden {hidden}"
        )));
    }
    Ok(x_len / hidden)
}
