//! Element types, shapes and checked size arithmetic shared by all kernels.

use crate::{Error, Result};

/// Element data types known to the library (file formats, CLI, kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    U8,
    I8,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Lower-case name as used on the command line (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::F32 => "f32",
            DType::U64 => "u64",
            DType::I64 => "i64",
            DType::F64 => "f64",
        }
    }

    /// Every dtype, in a stable order.
    pub const ALL: [DType; 12] = [
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::F16,
        DType::BF16,
        DType::U32,
        DType::I32,
        DType::F32,
        DType::U64,
        DType::I64,
        DType::F64,
    ];
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DType::ALL.iter().copied().find(|d| d.name() == s).ok_or_else(|| {
            Error::UnsupportedDType(format!(
                "'{s}' (expected one of u8 i8 u16 i16 f16 bf16 u32 i32 f32 u64 i64 f64)"
            ))
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Product of `shape`, or an [`Error::Overflow`] naming the shape.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Overflow(format!("element count of shape {shape:?} overflows usize")))
}

/// Row-major (C-order) strides in elements for `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Checks that `perm` is a permutation of `0..rank`, naming the fault.
pub fn validate_perm(perm: &[usize], rank: usize) -> Result<()> {
    if perm.len() != rank {
        return Err(Error::invalid(format!(
            "permutation {perm:?} has {} axes but the shape has rank {rank}",
            perm.len()
        )));
    }
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank {
            return Err(Error::invalid(format!(
                "permutation {perm:?} names axis {p}, out of range for rank {rank}"
            )));
        }
        if seen[p] {
            return Err(Error::invalid(format!("permutation {perm:?} repeats axis {p}")));
        }
        seen[p] = true;
    }
    Ok(())
}
