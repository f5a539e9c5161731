//! Fixed-problem kernels (`vlk-codegen kernel`): one Rust function
//! specialised to one shape, permutation, element type and ISA, in the
//! manner of TTC. The row-major source of `shape` becomes
//! `source.transpose(perm)` (NumPy semantics), row-major.
//!
//! How a problem becomes code:
//! 1. Canonicalise like the run-time planner: drop size-1 axes and fuse axes
//!    that are adjacent in both source and destination.
//! 2. Classify: one contiguous run is a copy; a shared innermost axis is a
//!    loop of run copies, unless the run is 2, 4, 8 or 16 bytes, in which case
//!    the run becomes one wider element and the rest is a transpose.
//! 3. A transpose tiles the plane of the source-contiguous axis `a` and the
//!    destination-contiguous axis `b` with the block of a synthesised network
//!    (a 2/3/4-wide block when that side is exactly 2, 3 or 4 and its rows
//!    are back to back, else the square block); other axes become loops.
//!
//! Unrolling rule: the network of one block is always straight-line code (an
//! inner `block` function). A plane of at most [`FULL_UNROLL_BLOCKS`] blocks is
//! called block by block with constant offsets; a larger plane loops over the
//! blocks along `a`, and along `b` runs a `for` over constant bounds whose
//! body holds [`UNROLL`] block calls, then the leftover calls. Axes outside
//! the plane are `for` loops over their constant extents. Edges (the part of
//! the plane the blocks do not cover) are element copies in `for` loops over
//! constant ranges.

use std::fmt::Write;
use std::sync::OnceLock;

use crate::emit::{self, Addressing};
use crate::isa::IsaKind;
use crate::network::{parse_listing, verify, Network, Problem, Rows};
use crate::{catalogue, square_problem, synth, SMALL_EXTENTS};

/// Planes with at most this many blocks are unrolled completely.
pub const FULL_UNROLL_BLOCKS: usize = 16;

/// Block calls per loop trip along the destination-contiguous axis.
pub const UNROLL: usize = 4;

/// Scalar block side (elements).
const SCALAR_BLOCK: usize = 8;

/// An element type: its name on the command line, the Rust type the
/// function takes (f16/bf16 travel as their `u16` bits), and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DType {
    pub name: &'static str,
    pub rust: &'static str,
    pub bytes: usize,
}

pub const DTYPES: [DType; 12] = [
    DType {
        name: "u8",
        rust: "u8",
        bytes: 1,
    },
    DType {
        name: "i8",
        rust: "i8",
        bytes: 1,
    },
    DType {
        name: "u16",
        rust: "u16",
        bytes: 2,
    },
    DType {
        name: "i16",
        rust: "i16",
        bytes: 2,
    },
    DType {
        name: "f16",
        rust: "u16",
        bytes: 2,
    },
    DType {
        name: "bf16",
        rust: "u16",
        bytes: 2,
    },
    DType {
        name: "f32",
        rust: "f32",
        bytes: 4,
    },
    DType {
        name: "i32",
        rust: "i32",
        bytes: 4,
    },
    DType {
        name: "u32",
        rust: "u32",
        bytes: 4,
    },
    DType {
        name: "f64",
        rust: "f64",
        bytes: 8,
    },
    DType {
        name: "i64",
        rust: "i64",
        bytes: 8,
    },
    DType {
        name: "u64",
        rust: "u64",
        bytes: 8,
    },
];

impl DType {
    pub fn parse(s: &str) -> Result<DType, String> {
        DTYPES.iter().copied().find(|d| d.name == s).ok_or_else(|| {
            let names: Vec<&str> = DTYPES.iter().map(|d| d.name).collect();
            format!("unknown dtype '{s}' (expected one of {})", names.join(", "))
        })
    }
}

/// Where the function runs: plain Rust, or one SIMD instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Scalar,
    Simd(IsaKind),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        if s == "scalar" {
            return Ok(Target::Scalar);
        }
        IsaKind::parse(s)
            .map(Target::Simd)
            .ok_or_else(|| format!("unknown isa '{s}' (expected avx2, avx512, neon or scalar)"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Scalar => "scalar",
            Target::Simd(i) => i.name(),
        }
    }
}

/// One fixed problem, validated.
#[derive(Clone, Debug)]
pub struct Spec {
    pub target: Target,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub perm: Vec<usize>,
    /// Elements on each side.
    pub numel: usize,
}

impl Spec {
    /// Validates a problem; every error names the bad value.
    pub fn new(target: Target, dtype: DType, shape: &[usize], perm: &[usize]) -> Result<Spec, String> {
        if shape.is_empty() {
            return Err("shape is empty: a rank of at least 1 is needed".into());
        }
        if let Some(k) = shape.iter().position(|&e| e == 0) {
            return Err(format!(
                "shape {shape:?}: extent 0 at axis {k} (a fixed kernel needs at least one element)"
            ));
        }
        if perm.len() != shape.len() {
            return Err(format!(
                "perm {perm:?} has {} axes but shape {shape:?} has {}",
                perm.len(),
                shape.len()
            ));
        }
        let mut seen = vec![false; shape.len()];
        for &p in perm {
            if p >= shape.len() {
                return Err(format!(
                    "perm {perm:?}: axis {p} is out of range for rank {}",
                    shape.len()
                ));
            }
            if seen[p] {
                return Err(format!("perm {perm:?}: axis {p} appears twice (not a permutation)"));
            }
            seen[p] = true;
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &e| acc.checked_mul(e))
            .ok_or_else(|| format!("shape {shape:?}: element count overflows usize"))?;
        match numel.checked_mul(dtype.bytes) {
            Some(b) if b <= isize::MAX as usize => {}
            _ => {
                return Err(format!(
                    "shape {shape:?}: {numel} elements of {} bytes exceed isize::MAX bytes",
                    dtype.bytes
                ))
            }
        }
        Ok(Spec {
            target,
            dtype,
            shape: shape.to_vec(),
            perm: perm.to_vec(),
            numel,
        })
    }

    /// E.g. `permute_64x48x3_p201_f32_avx512`.
    pub fn fn_name(&self) -> String {
        let shape: Vec<String> = self.shape.iter().map(|e| e.to_string()).collect();
        let sep = if self.perm.len() > 10 { "_" } else { "" };
        let perm: Vec<String> = self.perm.iter().map(|p| p.to_string()).collect();
        format!(
            "permute_{}_p{}_{}_{}",
            shape.join("x"),
            perm.join(sep),
            self.dtype.name,
            self.target.name()
        )
    }

    pub fn out_shape(&self) -> Vec<usize> {
        self.perm.iter().map(|&p| self.shape[p]).collect()
    }
}

/// One canonical axis, in destination order; strides in elements of the dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim {
    pub extent: usize,
    pub ss: usize,
    pub ds: usize,
}

/// Destination-order axes without size-1 axes; neighbours fused where both
/// sides are contiguous across them.
pub fn canonical(shape: &[usize], perm: &[usize]) -> Vec<Dim> {
    let rank = shape.len();
    let mut src_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        src_strides[i] = src_strides[i + 1] * shape[i + 1];
    }
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut dst_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        dst_strides[i] = dst_strides[i + 1] * out[i + 1];
    }
    let mut fused: Vec<Dim> = Vec::new();
    for i in (0..rank).rev() {
        let d = Dim {
            extent: out[i],
            ss: src_strides[perm[i]],
            ds: dst_strides[i],
        };
        if d.extent == 1 {
            continue;
        }
        match fused.last_mut() {
            Some(inner) if d.ss == inner.extent * inner.ss && d.ds == inner.extent * inner.ds => {
                inner.extent *= d.extent;
            }
            _ => fused.push(d),
        }
    }
    fused.reverse();
    fused
}

/// The execution shape of a fixed problem.
#[derive(Clone, Debug)]
pub enum Plan {
    /// One contiguous run of `n` elements.
    Copy { n: usize },
    /// Runs of `run` elements under a loop nest over `outer`.
    Runs { outer: Vec<Dim>, run: usize },
    /// Transpose of the `a` × `b` plane (`a`: source-contiguous, `b`:
    /// destination-contiguous) of `unit`-element groups, under `outer`.
    Transpose {
        outer: Vec<Dim>,
        a: Dim,
        b: Dim,
        unit: usize,
    },
}

pub fn plan(spec: &Spec) -> Plan {
    let mut dims = canonical(&spec.shape, &spec.perm);
    if dims.len() <= 1 {
        return Plan::Copy { n: spec.numel };
    }
    let mut unit = 1;
    let last = *dims.last().unwrap();
    if last.ss == 1 {
        let run_bytes = last.extent * spec.dtype.bytes;
        if ![2, 4, 8, 16].contains(&run_bytes) {
            dims.pop();
            return Plan::Runs {
                outer: dims,
                run: last.extent,
            };
        }
        // A short shared run is one wider element of a transpose.
        dims.pop();
        unit = last.extent;
    }
    let ia = dims
        .iter()
        .position(|d| d.ss == unit)
        .expect("a source-contiguous axis");
    let ib = dims
        .iter()
        .position(|d| d.ds == unit)
        .expect("a destination-contiguous axis");
    let (a, b) = (dims[ia], dims[ib]);
    let outer = dims
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != ia && k != ib)
        .map(|(_, d)| *d)
        .collect();
    Plan::Transpose { outer, a, b, unit }
}

/// The block chosen for a transpose plane: the network problem, or a scalar
/// block of `na` × `nb` units.
enum Block {
    Network(Problem, Network),
    Scalar { na: usize, nb: usize },
}

impl Block {
    fn na(&self) -> usize {
        match self {
            Block::Network(p, _) => p.na,
            Block::Scalar { na, .. } => *na,
        }
    }
    fn nb(&self) -> usize {
        match self {
            Block::Network(p, _) => p.nb,
            Block::Scalar { nb, .. } => *nb,
        }
    }
}

/// The first catalogue block that fits the plane and has a network: a
/// small-extent block when `a` (or `b`) is exactly 2, 3 or 4 with rows back
/// to back, else the square block of the element width.
fn choose_block(isa: IsaKind, elem_bits: usize, a: Dim, b: Dim, unit: usize) -> Option<(Problem, Network)> {
    let lanes = isa.vector_bits() / elem_bits;
    let mut cands = Vec::new();
    if SMALL_EXTENTS.contains(&a.extent) && b.ss == a.extent * unit {
        cands.push(Problem {
            isa,
            elem_bits,
            na: a.extent,
            nb: lanes,
            src: Rows::Contiguous,
            dst: Rows::Separate,
        });
    }
    if SMALL_EXTENTS.contains(&b.extent) && a.ds == b.extent * unit {
        cands.push(Problem {
            isa,
            elem_bits,
            na: lanes,
            nb: b.extent,
            src: Rows::Separate,
            dst: Rows::Contiguous,
        });
    }
    cands.push(square_problem(isa, elem_bits));
    let known = catalogue();
    cands
        .into_iter()
        .filter(|p| known.contains(p) && a.extent >= p.na && b.extent >= p.nb)
        .find_map(|p| network_for(&p).map(|n| (p, n)))
}

/// The network of a catalogue block: the one in the committed listing
/// (simd/networks.txt, embedded at build time, written by `emit` from the
/// same search) once the interpreter has proved it for this block. A block
/// the listing lacks had no network within the model when it was emitted;
/// only a listing that does not parse (or a stale entry) searches afresh.
fn network_for(p: &Problem) -> Option<Network> {
    static LISTING: OnceLock<Option<Vec<(Problem, Network)>>> = OnceLock::new();
    let listed = LISTING.get_or_init(|| parse_listing(include_str!("../../simd/networks.txt")).ok());
    match listed.as_ref().and_then(|l| l.iter().find(|(q, _)| q == p)) {
        Some((_, n)) if verify(p, n).is_ok() => Some(n.clone()),
        None if listed.is_some() => None,
        _ => synth::synthesize(p),
    }
}

/// `base + c` with the trivial cases folded.
fn plus(base: &str, c: usize) -> String {
    match (base, c) {
        ("0", c) => c.to_string(),
        (b, 0) => b.to_string(),
        (b, c) => format!("{b} + {c}"),
    }
}

/// `base + var * c` with a zero base left out.
fn scaled(base: &str, var: &str, c: usize) -> String {
    let term = if c == 1 {
        var.to_string()
    } else {
        format!("{var} * {c}")
    };
    if base == "0" {
        term
    } else {
        format!("{base} + {term}")
    }
}

fn indent(n: usize) -> String {
    "    ".repeat(n)
}

/// Opens `for` loops over `outer` (outermost first); returns the source and
/// destination offset names inside them and the nesting depth.
fn open_loops(outer: &[Dim], depth0: usize, out: &mut String) -> (String, String, usize) {
    let (mut s, mut d) = ("0".to_string(), "0".to_string());
    for (k, dim) in outer.iter().enumerate() {
        let ind = indent(depth0 + k);
        let _ = writeln!(out, "{ind}for x{k} in 0..{}usize {{", dim.extent);
        let sx = scaled(&s, &format!("x{k}"), dim.ss);
        let dx = scaled(&d, &format!("x{k}"), dim.ds);
        let _ = writeln!(out, "{ind}    let s{k} = {sx};");
        let _ = writeln!(out, "{ind}    let d{k} = {dx};");
        s = format!("s{k}");
        d = format!("d{k}");
    }
    (s, d, depth0 + outer.len())
}

fn close_loops(n: usize, depth0: usize, out: &mut String) {
    for k in (0..n).rev() {
        let _ = writeln!(out, "{}}}", indent(depth0 + k));
    }
}

/// One unit copy (`E` is the unit type declared in the function).
fn copy_unit(s: &str, d: &str) -> String {
    format!("(dst.add({d}) as *mut E).write_unaligned((src.add({s}) as *const E).read_unaligned());")
}

/// The whole generated source for `spec`: the `unsafe` kernel and its checked wrapper.
pub fn generate(spec: &Spec) -> String {
    let name = spec.fn_name();
    let t = spec.dtype.rust;
    let n = spec.numel;
    let plan = plan(spec);
    let elem_bits = |unit: usize| unit * spec.dtype.bytes * 8;
    // Pick the block first: the doc comment describes it.
    let block = match (&plan, spec.target) {
        (Plan::Transpose { a, b, unit, .. }, Target::Simd(isa)) => choose_block(isa, elem_bits(*unit), *a, *b, *unit)
            // An AVX-512 CPU runs the AVX2 blocks too (widths the AVX-512 model lacks).
            .or_else(|| {
                (isa == IsaKind::Avx512)
                    .then(|| choose_block(IsaKind::Avx2, elem_bits(*unit), *a, *b, *unit))
                    .flatten()
            })
            .map(|(p, net)| Block::Network(p, net))
            .or(Some(Block::Scalar {
                na: a.extent.min(SCALAR_BLOCK),
                nb: b.extent.min(SCALAR_BLOCK),
            })),
        (Plan::Transpose { a, b, .. }, Target::Scalar) => Some(Block::Scalar {
            na: a.extent.min(SCALAR_BLOCK),
            nb: b.extent.min(SCALAR_BLOCK),
        }),
        _ => None,
    };
    let (features, arch) = match spec.target {
        Target::Scalar => (None, None),
        Target::Simd(isa) => (Some(emit::target_features(isa)), Some(emit::arch_cfg(isa))),
    };

    let mut out = String::new();
    let perm: Vec<String> = spec.perm.iter().map(|p| p.to_string()).collect();
    let shape: Vec<String> = spec.shape.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(
        out,
        "/// `dst = src.transpose({})` for a row-major `{}` source of shape {:?}; the destination",
        perm.join(", "),
        spec.dtype.name,
        spec.shape
    );
    let _ = writeln!(
        out,
        "/// has shape {:?}, row-major ({n} elements each){}.",
        spec.out_shape(),
        if spec.dtype.rust != spec.dtype.name {
            format!("; `{}` values travel as their `{t}` bits", spec.dtype.name)
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "///");
    let _ = writeln!(
        out,
        "/// Generated by `vlk-codegen kernel --isa {} --dtype {} --shape {} --perm {}`.",
        spec.target.name(),
        spec.dtype.name,
        shape.join(","),
        perm.join(",")
    );
    let _ = writeln!(out, "/// {}", describe(&plan, block.as_ref()));
    let _ = writeln!(out, "///");
    let _ = writeln!(out, "/// # Safety");
    let _ = writeln!(
        out,
        "/// `src` must be valid for reading {n} `{t}` and `dst` for writing {n} `{t}`; they must not overlap{}.",
        features.map_or(String::new(), |f| format!(", and the CPU must support `{f}`"))
    );
    if let Some(a) = arch {
        let _ = writeln!(out, "#[cfg(target_arch = \"{a}\")]");
    }
    if let Some(f) = features {
        let _ = writeln!(out, "#[target_feature(enable = \"{f}\")]");
    }
    let _ = writeln!(out, "#[allow(unused_unsafe, clippy::all)]");
    let _ = writeln!(out, "pub unsafe fn {name}(src: *const {t}, dst: *mut {t}) {{");
    match &plan {
        Plan::Copy { n } => {
            let _ = writeln!(out, "    core::ptr::copy_nonoverlapping(src, dst, {n});");
        }
        Plan::Runs { outer, run } => {
            let (s, d, depth) = open_loops(outer, 1, &mut out);
            let _ = writeln!(
                out,
                "{}core::ptr::copy_nonoverlapping(src.add({s}), dst.add({d}), {run});",
                indent(depth)
            );
            close_loops(outer.len(), 1, &mut out);
        }
        Plan::Transpose { outer, a, b, unit } => {
            let block = block.as_ref().expect("a transpose has a block");
            transpose_body(spec, outer, *a, *b, *unit, block, &mut out);
        }
    }
    out.push_str("}\n\n");

    // The checked wrapper.
    let _ = writeln!(
        out,
        "/// Safe entry to [`{name}`]: checks both lengths ({n}){}.",
        features.map_or(String::new(), |f| format!(" and that the CPU supports `{f}`"))
    );
    if let Some(a) = arch {
        let _ = writeln!(out, "#[cfg(target_arch = \"{a}\")]");
    }
    let _ = writeln!(out, "#[allow(clippy::all)]");
    let _ = writeln!(
        out,
        "pub fn {name}_checked(src: &[{t}], dst: &mut [{t}]) -> Result<(), String> {{"
    );
    let _ = writeln!(
        out,
        "    if src.len() != {n} {{\n        return Err(format!(\"source holds {{}} elements, expected {n}\", src.len()));\n    }}"
    );
    let _ = writeln!(
        out,
        "    if dst.len() != {n} {{\n        return Err(format!(\"destination holds {{}} elements, expected {n}\", dst.len()));\n    }}"
    );
    if let (Some(f), Target::Simd(isa)) = (features, spec.target) {
        let mac = if isa == IsaKind::Neon {
            "std::arch::is_aarch64_feature_detected"
        } else {
            "std::arch::is_x86_feature_detected"
        };
        let checks: Vec<String> = f.split(',').map(|x| format!("{mac}!(\"{x}\")")).collect();
        let _ = writeln!(
            out,
            "    if !({}) {{\n        return Err(\"this CPU does not support {f}\".to_string());\n    }}",
            checks.join(" && ")
        );
    }
    let _ = writeln!(
        out,
        "    // SAFETY: both lengths are checked{}; a shared and a mutable borrow cannot overlap.",
        if features.is_some() {
            " and the CPU features detected"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "    unsafe {{ {name}(src.as_ptr(), dst.as_mut_ptr()) }};");
    let _ = writeln!(out, "    Ok(())\n}}");
    out
}

/// One line on how the function works (for its doc comment).
fn describe(plan: &Plan, block: Option<&Block>) -> String {
    let dims = |v: &[Dim]| -> String {
        let parts: Vec<String> = v
            .iter()
            .map(|d| format!("{} (src stride {}, dst stride {})", d.extent, d.ss, d.ds))
            .collect();
        format!("[{}]", parts.join(", "))
    };
    match plan {
        Plan::Copy { n } => format!("Plan: one contiguous copy of {n} elements."),
        Plan::Runs { outer, run } => format!("Plan: runs of {run} elements under loops over {}.", dims(outer)),
        Plan::Transpose { outer, a, b, unit } => {
            let blk = match block {
                Some(Block::Network(p, net)) => {
                    format!("block `{}` ({} shuffles)", p.fn_name(), net.len())
                }
                Some(Block::Scalar { na, nb }) => format!("scalar {nb}x{na} block"),
                None => "no block".into(),
            };
            let loops = if outer.is_empty() {
                "no outer loops".to_string()
            } else {
                format!("outer loops over {}", dims(outer))
            };
            format!(
                "Plan: transpose of the plane a = {} x b = {} in units of {unit} element(s), {blk}; {loops}.",
                dims(&[*a]),
                dims(&[*b]),
            )
        }
    }
}

/// The body of a transpose: unit type, block function, loops, edges.
fn transpose_body(spec: &Spec, outer: &[Dim], a: Dim, b: Dim, unit: usize, block: &Block, out: &mut String) {
    let t = spec.dtype.rust;
    let unit_ty = if unit == 1 {
        t.to_string()
    } else {
        format!("[{t}; {unit}]")
    };
    let head_at = out.len();
    let (na, nb) = (block.na(), block.nb());
    // Source row j of a block starts at j * b.ss; destination row i at i * a.ds.
    match block {
        Block::Network(p, net) => {
            let _ = writeln!(
                out,
                "    use std::arch::{}::*;",
                if p.isa == IsaKind::Neon { "aarch64" } else { "x86_64" }
            );
            let _ = writeln!(
                out,
                "    /// One {}x{} block: `{}`, {} shuffles.",
                p.nb,
                p.na,
                p.fn_name(),
                net.len()
            );
            let _ = writeln!(out, "    #[inline]");
            let _ = writeln!(
                out,
                "    #[target_feature(enable = \"{}\")]",
                emit::target_features(p.isa)
            );
            let _ = writeln!(out, "    unsafe fn block(src: *const {t}, dst: *mut {t}) {{");
            let _ = writeln!(out, "        let src = src as *const u8;");
            let _ = writeln!(out, "        let dst = dst as *mut u8;");
            let es = spec.dtype.bytes;
            let src_at = |j: usize, off: usize| format!("src.add({})", j * b.ss * es + off);
            let dst_at = |i: usize, off: usize| format!("dst.add({})", i * a.ds * es + off);
            let mut body = String::new();
            emit::block_body(
                p,
                net,
                &Addressing {
                    src: &src_at,
                    dst: &dst_at,
                },
                &mut body,
            );
            for line in body.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out, "    }}");
        }
        Block::Scalar { na, nb } => {
            let _ = writeln!(
                out,
                "    /// One {nb}x{na} block: {nb} source rows in, {na} destination rows out."
            );
            let _ = writeln!(out, "    #[inline(always)]");
            let _ = writeln!(out, "    unsafe fn block(src: *const {t}, dst: *mut {t}) {{");
            for j in 0..*nb {
                let _ = writeln!(
                    out,
                    "        let r{j} = (src.add({}) as *const [E; {na}]).read_unaligned();",
                    j * b.ss
                );
            }
            for i in 0..*na {
                let row: Vec<String> = (0..*nb).map(|j| format!("r{j}[{i}]")).collect();
                let _ = writeln!(
                    out,
                    "        (dst.add({}) as *mut [E; {nb}]).write_unaligned([{}]);",
                    i * a.ds,
                    row.join(", ")
                );
            }
            let _ = writeln!(out, "    }}");
        }
    }
    let (s, d, depth) = open_loops(outer, 1, out);
    let nak = a.extent / na;
    let nbk = b.extent / nb;
    // Block (ib, jb): source at ib*na*a.ss + jb*nb*b.ss, destination at ib*na*a.ds + jb*nb*b.ds.
    let call =
        |s: &str, d: &str, cs: usize, cd: usize| format!("block(src.add({}), dst.add({}));", plus(s, cs), plus(d, cd));
    let ind = indent(depth);
    if nak * nbk <= FULL_UNROLL_BLOCKS {
        for ib in 0..nak {
            for jb in 0..nbk {
                let cs = ib * na * a.ss + jb * nb * b.ss;
                let cd = ib * na * a.ds + jb * nb * b.ds;
                let _ = writeln!(out, "{ind}{}", call(&s, &d, cs, cd));
            }
        }
    } else {
        let (si, di, inner) = if nak > 1 {
            let _ = writeln!(out, "{ind}for ib in 0..{nak}usize {{");
            let _ = writeln!(out, "{ind}    let si = {};", scaled(&s, "ib", na * a.ss));
            let _ = writeln!(out, "{ind}    let di = {};", scaled(&d, "ib", na * a.ds));
            ("si".to_string(), "di".to_string(), depth + 1)
        } else {
            (s.clone(), d.clone(), depth)
        };
        let ind2 = indent(inner);
        let trips = nbk / UNROLL;
        if trips > 0 {
            let _ = writeln!(out, "{ind2}for jq in 0..{trips}usize {{");
            let _ = writeln!(out, "{ind2}    let sj = {};", scaled(&si, "jq", UNROLL * nb * b.ss));
            let _ = writeln!(out, "{ind2}    let dj = {};", scaled(&di, "jq", UNROLL * nb * b.ds));
            for u in 0..UNROLL {
                let _ = writeln!(out, "{ind2}    {}", call("sj", "dj", u * nb * b.ss, u * nb * b.ds));
            }
            let _ = writeln!(out, "{ind2}}}");
        }
        for jb in trips * UNROLL..nbk {
            let _ = writeln!(out, "{ind2}{}", call(&si, &di, jb * nb * b.ss, jb * nb * b.ds));
        }
        if nak > 1 {
            let _ = writeln!(out, "{ind}}}");
        }
    }
    // Edges: columns a0.. of every row, then rows b0.. of the covered columns.
    let (a0, b0) = (nak * na, nbk * nb);
    let edge = |out: &mut String, ir: (usize, usize), jr: (usize, usize)| {
        if ir.0 >= ir.1 || jr.0 >= jr.1 {
            return;
        }
        let _ = writeln!(out, "{ind}for i in {}..{}usize {{", ir.0, ir.1);
        let _ = writeln!(out, "{ind}    for j in {}..{}usize {{", jr.0, jr.1);
        let so = scaled(&scaled(&s, "i", a.ss), "j", b.ss);
        let dof = scaled(&scaled(&d, "i", a.ds), "j", b.ds);
        let _ = writeln!(out, "{ind}        {}", copy_unit(&so, &dof));
        let _ = writeln!(out, "{ind}    }}\n{ind}}}");
    };
    edge(out, (a0, a.extent), (0, b.extent));
    edge(out, (0, a0), (b0, b.extent));
    close_loops(outer.len(), 1, out);
    // The unit type, where the scalar block or the edges use it.
    if out[head_at..].contains("E;") || out[head_at..].contains("as *mut E)") {
        out.insert_str(head_at, &format!("    type E = {unit_ty};\n"));
    }
}
