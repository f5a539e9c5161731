//! `vlk bench kernels`: in-cache throughput of every generated micro-kernel
//! this CPU runs. Each kernel transposes one tile that stays in L1 (the same
//! tile, called many times), beside an 8 KiB copy repeated in L1 (the
//! physical limit for moving bytes through the core), with a self-check of
//! every kernel first.
//!
//! Cycles come from a calibration loop: a chain of dependent integer adds
//! (one cycle each on every x86-64 and AArch64 core) timed against the wall
//! clock gives the core clock under the same load, so bytes per cycle are per
//! core cycle, not per TSC tick.

use std::hint::black_box;
use std::time::Instant;

use vlkernels::permute::kernels::{available, generated_tables, KernelFamily, TileFn};
use vlkernels::permute::simd::GenKernel;
use vlkernels::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct KernelsBenchArgs {
    /// Measurements per kernel; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Minimum wall time of one measurement, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub min_ms: u64,
    /// Only kernels whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

/// Dependent adds per calibration loop trip.
const CHAIN: u64 = 8;

/// Runs `trips` trips of a chain of `CHAIN` dependent adds (latency bound: one cycle per add).
#[inline(never)]
fn add_chain(trips: u64) -> u64 {
    let mut x = 0u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: register-only arithmetic and a counted loop; no memory is touched.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "dec {n}",
            "jnz 2b",
            x = inout(reg) x,
            n = inout(reg) trips => _,
            options(nomem, nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: register-only arithmetic and a counted loop; no memory is touched.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, {x}, #1", "add {x}, {x}, #1", "add {x}, {x}, #1", "add {x}, {x}, #1",
            "add {x}, {x}, #1", "add {x}, {x}, #1", "add {x}, {x}, #1", "add {x}, {x}, #1",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            x = inout(reg) x,
            n = inout(reg) trips => _,
            options(nomem, nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for _ in 0..trips * CHAIN {
        x = black_box(x + 1);
    }
    x
}

/// Core clock in Hz from the add chain (best of five 20 ms runs).
fn core_hz() -> f64 {
    let trips = 2_000_000u64;
    black_box(add_chain(trips)); // wake the core up to its working clock
    (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(add_chain(black_box(trips)));
            (trips * CHAIN) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds per call of `f`, median over `repeats` measurements of at least `min_ms` each.
fn time_per_call(repeats: usize, min_ms: u64, mut f: impl FnMut()) -> f64 {
    // Calibrate the call count to the minimum time.
    let mut calls = 64usize;
    loop {
        let t = Instant::now();
        for _ in 0..calls {
            f();
        }
        if t.elapsed().as_millis() as u64 >= min_ms / 4 || calls > 1 << 30 {
            break;
        }
        calls *= 2;
    }
    calls *= 4;
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..calls {
                    f();
                }
                t.elapsed().as_secs_f64() / calls as f64
            })
            .collect(),
    )
}

struct Row {
    family: &'static str,
    name: String,
    shuffles: usize,
    bytes: usize,
    ns_per_call: f64,
    gibs: f64,
    bytes_per_cycle: f64,
}

/// One tile with rows back to back on both sides (every kernel's fast path).
struct Tile {
    src: Vec<u8>,
    dst: Vec<u8>,
    src_rows: Vec<usize>,
    dst_rows: Vec<usize>,
}

impl Tile {
    fn new(k: &GenKernel) -> Tile {
        let es = k.elem_bytes;
        let bytes = k.na * k.nb * es;
        let mut rng = vlkernels::rng::SplitMix64::new(bytes as u64);
        Tile {
            src: (0..bytes).map(|_| rng.next_u64() as u8).collect(),
            dst: vec![0xA5; bytes],
            src_rows: (0..k.nb).map(|j| j * k.na * es).collect(),
            dst_rows: (0..k.na).map(|i| i * k.nb * es).collect(),
        }
    }

    /// # Safety
    /// The kernel's ISA must be available on this CPU.
    unsafe fn run(&mut self, func: TileFn) {
        func(
            self.src.as_ptr(),
            self.src_rows.as_ptr(),
            self.dst.as_mut_ptr(),
            self.dst_rows.as_ptr(),
        );
    }

    /// Whether the destination is the transpose of the source.
    fn is_transposed(&self, k: &GenKernel) -> bool {
        let es = k.elem_bytes;
        (0..k.na).all(|i| {
            (0..k.nb).all(|j| {
                let s = self.src_rows[j] + i * es;
                let d = self.dst_rows[i] + j * es;
                self.src[s..s + es] == self.dst[d..d + es]
            })
        })
    }
}

pub fn run(args: KernelsBenchArgs) -> Result<()> {
    if args.repeats == 0 {
        return Err(Error::invalid("--repeats 0: need at least one measurement"));
    }
    if args.min_ms == 0 {
        return Err(Error::invalid("--min-ms 0: a measurement needs a positive duration"));
    }
    let families: Vec<KernelFamily> = [KernelFamily::Avx2, KernelFamily::Avx512, KernelFamily::Neon]
        .into_iter()
        .filter(|&f| available(f))
        .collect();
    for f in [KernelFamily::Avx2, KernelFamily::Avx512, KernelFamily::Neon] {
        if !families.contains(&f) {
            eprintln!("note: this CPU cannot run {} kernels: not measured", f.name());
        }
    }
    let hz = core_hz();
    let copy_gibs = l1_copy_gibs(args.repeats, args.min_ms);
    println!(
        "core clock {:.2} GHz (from a chain of dependent adds, one cycle each); tiles in L1, rows back to back",
        hz / 1e9
    );
    println!(
        "L1 copy limit: {copy_gibs:.1} GiB/s read+write = {:.1} B/cycle ({L1_COPY_BYTES}-byte memcpy repeated in L1)",
        copy_gibs * (1u64 << 30) as f64 / hz
    );
    let mut rows = Vec::new();
    for f in families {
        // The family's own table only (AVX-512 CPUs also list the AVX2 table under Avx2).
        let table = generated_tables(f)[0];
        for k in table {
            if args.filter.as_deref().is_some_and(|s| !k.name.contains(s)) {
                continue;
            }
            // The checked entry point, and the unchecked one where the kernel has it.
            let variants = std::iter::once((k.name.to_string(), k.func))
                .chain(k.trusted.map(|t| (format!("{}_trusted", k.name), t)));
            for (name, func) in variants {
                let mut tile = Tile::new(k);
                // SAFETY: the family is available on this CPU and every row lies inside the tile,
                // back to back on both sides.
                unsafe { tile.run(func) };
                if !tile.is_transposed(k) {
                    return Err(Error::invalid(format!("self-check failed: {name} is wrong")));
                }
                let bytes = 2 * k.na * k.nb * k.elem_bytes;
                // SAFETY: as above.
                let t = time_per_call(args.repeats, args.min_ms, || unsafe { tile.run(black_box(func)) });
                let gib = (1u64 << 30) as f64;
                rows.push(Row {
                    family: f.name(),
                    name,
                    shuffles: k.shuffles,
                    bytes,
                    ns_per_call: t * 1e9,
                    gibs: bytes as f64 / t / gib,
                    bytes_per_cycle: bytes as f64 / (t * hz),
                });
            }
        }
    }
    print_rows(&rows, copy_gibs, args.markdown);
    Ok(())
}

/// Bytes of the L1 copy that stands for the physical limit (source and destination fit in L1 together).
const L1_COPY_BYTES: usize = 8192;

/// Read+write GiB/s of a memcpy of [`L1_COPY_BYTES`] repeated in L1.
fn l1_copy_gibs(repeats: usize, min_ms: u64) -> f64 {
    let src = vec![0x5Au8; L1_COPY_BYTES];
    let mut dst = vec![0u8; L1_COPY_BYTES];
    let t = time_per_call(repeats, min_ms, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    });
    (2 * L1_COPY_BYTES) as f64 / t / (1u64 << 30) as f64
}

fn print_rows(rows: &[Row], copy_gibs: f64, markdown: bool) {
    let head = [
        "isa",
        "kernel",
        "shuffles",
        "bytes rd+wr",
        "ns/call",
        "GiB/s",
        "B/cycle",
        "vs L1 copy",
    ];
    if markdown {
        println!("| {} |", head.join(" | "));
        println!("|{}", "---|".repeat(head.len()));
    } else {
        println!(
            "{:<7} {:<30} {:>8} {:>11} {:>8} {:>8} {:>8} {:>10}",
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]
        );
    }
    for r in rows {
        let cells = [
            r.family.to_string(),
            r.name.to_string(),
            r.shuffles.to_string(),
            r.bytes.to_string(),
            format!("{:.1}", r.ns_per_call),
            format!("{:.1}", r.gibs),
            format!("{:.1}", r.bytes_per_cycle),
            format!("{:.2}", r.gibs / copy_gibs),
        ];
        if markdown {
            println!("| {} |", cells.join(" | "));
        } else {
            println!(
                "{:<7} {:<30} {:>8} {:>11} {:>8} {:>8} {:>8} {:>10}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
            );
        }
    }
}
