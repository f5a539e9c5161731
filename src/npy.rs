//! NumPy `.npy` reading and writing (through the `npyz` crate), with
//! arrays held as C-order little-endian bytes tagged with a [`DType`].

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use bytemuck::Pod;
use npyz::{TypeChar, WriterBuilder};

use crate::tensor::checked_numel;
use crate::{DType, Error, PermuteOptions, PermutePlan, Result};

/// An n-d array: element type, shape, and row-major (C-order) bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl NpyArray {
    /// Wraps typed data; checks that its length matches the shape.
    pub fn from_slice<T: Pod>(dtype: DType, shape: &[usize], data: &[T]) -> Result<Self> {
        if std::mem::size_of::<T>() != dtype.size() {
            return Err(Error::invalid(format!(
                "{}-byte elements for dtype {dtype}",
                std::mem::size_of::<T>()
            )));
        }
        let n = checked_numel(shape)?;
        if n != data.len() {
            return Err(Error::ShapeMismatch(format!(
                "{} elements for shape {shape:?} ({n} elements)",
                data.len()
            )));
        }
        Ok(NpyArray {
            dtype,
            shape: shape.to_vec(),
            data: bytemuck::cast_slice(data).to_vec(),
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }
}

fn dtype_of(ts: &npyz::TypeStr) -> Result<DType> {
    let size = ts.size_field();
    let dt = match (ts.type_char(), size) {
        (TypeChar::Uint, 1) => DType::U8,
        (TypeChar::Int, 1) => DType::I8,
        (TypeChar::Uint, 2) => DType::U16,
        (TypeChar::Int, 2) => DType::I16,
        (TypeChar::Float, 2) => DType::F16,
        (TypeChar::Uint, 4) => DType::U32,
        (TypeChar::Int, 4) => DType::I32,
        (TypeChar::Float, 4) => DType::F32,
        (TypeChar::Uint, 8) => DType::U64,
        (TypeChar::Int, 8) => DType::I64,
        (TypeChar::Float, 8) => DType::F64,
        _ => {
            return Err(Error::UnsupportedDType(format!(
                "npy dtype '{ts}' (supported: u1 i1 u2 i2 f2 u4 i4 f4 u8 i8 f8)"
            )))
        }
    };
    Ok(dt)
}

fn read_typed<T: npyz::Deserialize + Pod, R: std::io::Read>(file: npyz::NpyFile<R>, path: &Path) -> Result<Vec<u8>> {
    let v: Vec<T> = file.into_vec::<T>().map_err(|e| {
        Error::Format(format!(
            "{}: cannot read array data (truncated or corrupt?): {e}",
            path.display()
        ))
    })?;
    Ok(bytemuck::cast_slice(&v).to_vec())
}

/// Reads a `.npy` file; Fortran-order arrays are returned in C order.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let file = npyz::NpyFile::new(BufReader::new(f))
        .map_err(|e| Error::Format(format!("{}: not a valid .npy header: {e}", path.display())))?;
    let dtype = match file.dtype() {
        npyz::DType::Plain(ts) => dtype_of(&ts)?,
        other => {
            return Err(Error::UnsupportedDType(format!(
                "{}: structured npy dtype {other:?}",
                path.display()
            )))
        }
    };
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::Overflow(format!("{}: axis extent {d}", path.display()))))
        .collect::<Result<_>>()?;
    let numel = checked_numel(&shape)?;
    numel
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::Overflow(format!("{}: shape {shape:?}", path.display())))?;
    let fortran = file.order() == npyz::Order::Fortran;
    let data = match dtype {
        DType::U8 => read_typed::<u8, _>(file, path)?,
        DType::I8 => read_typed::<i8, _>(file, path)?,
        DType::U16 => read_typed::<u16, _>(file, path)?,
        DType::I16 => read_typed::<i16, _>(file, path)?,
        DType::F16 => read_typed::<half::f16, _>(file, path)?,
        DType::U32 => read_typed::<u32, _>(file, path)?,
        DType::I32 => read_typed::<i32, _>(file, path)?,
        DType::F32 => read_typed::<f32, _>(file, path)?,
        DType::U64 => read_typed::<u64, _>(file, path)?,
        DType::I64 => read_typed::<i64, _>(file, path)?,
        DType::F64 => read_typed::<f64, _>(file, path)?,
        DType::BF16 => unreachable!("bf16 has no npy type string"),
    };
    if data.len() != numel * dtype.size() {
        return Err(Error::Format(format!(
            "{}: holds {} bytes of data, shape {shape:?} needs {}",
            path.display(),
            data.len(),
            numel * dtype.size()
        )));
    }
    if !fortran || shape.len() < 2 {
        return Ok(NpyArray { dtype, shape, data });
    }
    // Fortran order is C order of the reversed shape; reversing the axes gives C order.
    let rev: Vec<usize> = shape.iter().rev().copied().collect();
    let perm: Vec<usize> = (0..shape.len()).rev().collect();
    let plan = PermutePlan::new(&rev, &perm, dtype.size(), &PermuteOptions::default())?;
    let mut c = vec![0u8; data.len()];
    plan.execute_bytes(&data, &mut c)?;
    Ok(NpyArray { dtype, shape, data: c })
}

fn write_typed<T: npyz::AutoSerialize + Pod>(a: &NpyArray, path: &Path) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
    let values: Vec<T> = bytemuck::pod_collect_to_vec(&a.data);
    let io = |e| Error::io(path, e);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(f))
        .begin_nd()
        .map_err(io)?;
    w.extend(values).map_err(io)?;
    w.finish().map_err(io)
}

/// Writes a C-order `.npy` file.
pub fn write_npy(path: impl AsRef<Path>, a: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    if checked_numel(&a.shape)? * a.dtype.size() != a.data.len() {
        return Err(Error::ShapeMismatch(format!(
            "{} data bytes for shape {:?} of {}",
            a.data.len(),
            a.shape,
            a.dtype
        )));
    }
    match a.dtype {
        DType::U8 => write_typed::<u8>(a, path),
        DType::I8 => write_typed::<i8>(a, path),
        DType::U16 => write_typed::<u16>(a, path),
        DType::I16 => write_typed::<i16>(a, path),
        DType::F16 => write_typed::<half::f16>(a, path),
        DType::U32 => write_typed::<u32>(a, path),
        DType::I32 => write_typed::<i32>(a, path),
        DType::F32 => write_typed::<f32>(a, path),
        DType::U64 => write_typed::<u64>(a, path),
        DType::I64 => write_typed::<i64>(a, path),
        DType::F64 => write_typed::<f64>(a, path),
        DType::BF16 => Err(Error::UnsupportedDType(
            "bf16 cannot be stored in .npy (NumPy has no bfloat16)".into(),
        )),
    }
}
