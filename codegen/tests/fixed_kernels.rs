//! `vlk-codegen kernel`: the generated fixed-problem functions are written
//! into a throw-away crate (no dependencies), built with the same cargo and
//! run against an index-walking reference on random input with a poisoned
//! output. Every ISA this host executes runs; AVX-512 runs only where the CPU
//! has it (said loudly otherwise); NEON is compile-checked for aarch64 when a
//! rustc with that target is installed (said loudly otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

const GENERATOR: &str = env!("CARGO_BIN_EXE_vlk-codegen");

/// (dtype, Rust type, shape, perm): the problems every ISA is generated for.
const PROBLEMS: &[(&str, &str, &[usize], &[usize])] = &[
    // HWC -> CHW with 3 f32 channels: the 3-wide block.
    ("f32", "f32", &[64, 48, 3], &[2, 0, 1]),
    // The same for bytes with prime H, W: edges on both sides.
    ("u8", "u8", &[37, 41, 3], &[2, 0, 1]),
    // A 2-D transpose of f64 with prime extents.
    ("f64", "f64", &[13, 17], &[1, 0]),
    // 4-D bf16 with the reversed permutation (square 16-bit blocks, outer loops, edges).
    ("bf16", "u16", &[20, 3, 5, 17], &[3, 2, 1, 0]),
    // Size-1 axis moved: a pure copy.
    ("i16", "i16", &[6, 1, 7], &[1, 0, 2]),
    // Shared innermost axis of 20 bytes: run copies.
    ("u32", "u32", &[4, 6, 5], &[1, 0, 2]),
    // Shared innermost axis of 8 bytes: one 64-bit element, transposed.
    ("u16", "u16", &[33, 17, 4], &[1, 0, 2]),
    // CHW -> HWC: the destination side is 3 wide.
    ("i32", "i32", &[3, 19, 23], &[1, 2, 0]),
    // Bytes, square block, many blocks (loops with unrolled bodies) and edges.
    ("i8", "i8", &[70, 45], &[1, 0]),
    // Rank 1.
    ("u64", "u64", &[11], &[0]),
];

fn generate(isa: &str, dtype: &str, shape: &[usize], perm: &[usize]) -> String {
    let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(GENERATOR)
        .args(["kernel", "--isa", isa, "--dtype", dtype])
        .args(["--shape", &list(shape), "--perm", &list(perm)])
        .output()
        .expect("run vlk-codegen");
    assert!(
        out.status.success(),
        "vlk-codegen kernel {isa} {dtype} {shape:?} {perm:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 source")
}

/// The function name the generator uses (checked against its output).
fn fn_name(isa: &str, dtype: &str, shape: &[usize], perm: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(|x| x.to_string()).collect();
    let p: Vec<String> = perm.iter().map(|x| x.to_string()).collect();
    format!("permute_{}_p{}_{dtype}_{isa}", s.join("x"), p.join(""))
}

const CHECK_MAIN: &str = r#"
#![allow(dead_code, unused_unsafe)]
mod kernels;

fn random<T: Copy>(n: usize, seed: u64) -> Vec<T> {
    let bytes = n * std::mem::size_of::<T>();
    let mut state = seed;
    let mut raw: Vec<u8> = (0..bytes)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect();
    raw.resize(bytes, 0);
    filled(n, &raw)
}

/// A vector of `n` elements holding `raw` bytes.
fn filled<T: Copy>(n: usize, raw: &[u8]) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    // SAFETY: the plain integer and float element types take any bit pattern.
    unsafe {
        std::ptr::copy_nonoverlapping(raw.as_ptr(), v.as_mut_ptr() as *mut u8, raw.len());
        v.set_len(n);
    }
    v
}

fn bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: reading initialised elements as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// `src.transpose(perm)` by walking destination indices.
fn reference<T: Copy>(src: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut idx = vec![0usize; rank];
    let mut out = Vec::with_capacity(src.len());
    for _ in 0..src.len() {
        let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.push(src[off]);
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

type Checked<T> = fn(&[T], &mut [T]) -> Result<(), String>;

fn check<T: Copy>(name: &str, shape: &[usize], perm: &[usize], f: Checked<T>) -> bool {
    let n: usize = shape.iter().product();
    let es = std::mem::size_of::<T>();
    let src: Vec<T> = random(n, n as u64 * 7 + es as u64);
    let want = reference(&src, shape, perm);
    for poison in [0xA5u8, 0x5A] {
        let mut dst: Vec<T> = filled(n, &vec![poison; n * es]);
        if let Err(e) = f(&src, &mut dst) {
            println!("FAIL {name}: {e}");
            return false;
        }
        if let Some(k) = bytes(&dst).iter().zip(bytes(&want)).position(|(a, b)| a != b) {
            println!("FAIL {name} (poison {poison:#x}): element {} differs from the reference", k / es);
            return false;
        }
    }
    let mut short: Vec<T> = filled(n - 1, &vec![0u8; (n - 1) * es]);
    if f(&src, &mut short).is_ok() || f(&src[..n - 1], &mut short).is_ok() {
        println!("FAIL {name}: a wrong length was accepted");
        return false;
    }
    println!("ok {name}");
    true
}

fn main() {
    let mut ran = 0usize;
    let mut failed = 0usize;
    let mut skipped = 0usize;
    let mut run = |ok: Option<bool>| match ok {
        Some(true) => ran += 1,
        Some(false) => {
            ran += 1;
            failed += 1
        }
        None => skipped += 1,
    };
    // CALLS
    let _ = &mut run;
    println!("checked {ran}, failed {failed}, skipped {skipped}");
    if failed > 0 || ran == 0 {
        std::process::exit(1);
    }
}
"#;

/// One `run(...)` statement for a kernel, gated on its architecture and CPU features.
fn call(isa: &str, rust: &str, shape: &[usize], perm: &[usize], name: &str) -> String {
    let body = format!("check::<{rust}>(\"{name}\", &{shape:?}, &{perm:?}, kernels::{name}_checked)");
    match isa {
        "scalar" => format!("    run(Some({body}));\n"),
        "neon" => format!(
            "    #[cfg(target_arch = \"aarch64\")]\n    run(std::arch::is_aarch64_feature_detected!(\"neon\").then(|| {body}));\n"
        ),
        "avx2" => format!(
            "    #[cfg(target_arch = \"x86_64\")]\n    run(std::arch::is_x86_feature_detected!(\"avx2\").then(|| {body}));\n"
        ),
        _ => format!(
            "    #[cfg(target_arch = \"x86_64\")]\n    run((std::arch::is_x86_feature_detected!(\"avx512f\") && std::arch::is_x86_feature_detected!(\"avx512bw\")).then(|| {body}));\n"
        ),
    }
}

/// Writes the check crate holding every problem for `isas`.
fn write_crate(dir: &Path, isas: &[&str]) {
    let mut kernels = String::new();
    let mut calls = String::new();
    for &isa in isas {
        for &(dtype, rust, shape, perm) in PROBLEMS {
            let name = fn_name(isa, dtype, shape, perm);
            let text = generate(isa, dtype, shape, perm);
            assert!(
                text.contains(&format!("pub unsafe fn {name}(src: *const {rust}, dst: *mut {rust})")),
                "{name} not in the output:\n{text}"
            );
            kernels.push_str(&text);
            kernels.push('\n');
            calls.push_str(&call(isa, rust, shape, perm, &name));
        }
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"fixed-kernel-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\n\n[profile.dev]\nopt-level = 1\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/kernels.rs"), kernels).unwrap();
    std::fs::write(dir.join("src/main.rs"), CHECK_MAIN.replace("    // CALLS\n", &calls)).unwrap();
}

fn target_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(name)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[test]
fn generated_kernels_match_the_reference_on_this_host() {
    let mut isas = vec!["scalar"];
    #[cfg(target_arch = "x86_64")]
    {
        isas.push("avx2");
        isas.push("avx512");
        if !(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")) {
            eprintln!("NOTE: this CPU has no AVX-512 F+BW: the avx512 kernels are built but not run here");
        }
        assert!(
            std::arch::is_x86_feature_detected!("avx2"),
            "an x86-64 host without AVX2 cannot run the avx2 kernels"
        );
    }
    #[cfg(target_arch = "aarch64")]
    isas.push("neon");
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), &isas);
    let out = Command::new(cargo())
        .args(["run", "--quiet"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", target_dir("fixed-kernel-check"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "check crate failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every kernel this host can execute ran: scalar always, plus the ISAs detected.
    #[cfg(target_arch = "x86_64")]
    {
        let expect_ran = PROBLEMS.len()
            * (2 + usize::from(
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw"),
            ));
        assert!(
            stdout.contains(&format!("checked {expect_ran}, failed 0")),
            "expected {expect_ran} kernels to run"
        );
    }
}

/// A rustc that has the aarch64 standard library (rustup target or Debian's rustc).
fn aarch64_rustc() -> Option<String> {
    let mut cands: Vec<String> = std::env::var("RUSTC").into_iter().collect();
    cands.push("rustc".into());
    cands.push("/usr/bin/rustc".into());
    cands.into_iter().find(|rustc| {
        let Ok(o) = Command::new(rustc)
            .args(["--print", "target-libdir", "--target", "aarch64-unknown-linux-gnu"])
            .output()
        else {
            return false;
        };
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        o.status.success()
            && std::fs::read_dir(&dir)
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-"))))
    })
}

#[test]
fn neon_kernels_compile_for_aarch64() {
    let Some(rustc) = aarch64_rustc() else {
        eprintln!(
            "SKIPPED: no rustc with the aarch64-unknown-linux-gnu standard library here \
             (tools/ci/neon.sh installs one); NEON fixed kernels were not compile-checked"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), &["scalar", "neon"]);
    let out = Command::new(cargo())
        .args(["check", "--quiet", "--target", "aarch64-unknown-linux-gnu"])
        .current_dir(dir.path())
        .env("RUSTC", &rustc)
        .env("CARGO_TARGET_DIR", target_dir("fixed-kernel-check-aarch64"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "NEON kernels do not compile with {rustc}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("NEON fixed kernels compile for aarch64 with {rustc}");
}

fn generator_error(args: &[&str]) -> String {
    let out = Command::new(GENERATOR).arg("kernel").args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_is_refused_naming_the_value() {
    let base = |isa: &str, dtype: &str, shape: &str, perm: &str| -> Vec<String> {
        ["--isa", isa, "--dtype", dtype, "--shape", shape, "--perm", perm]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let cases: &[(Vec<String>, &str)] = &[
        (base("avx3", "f32", "4,4", "1,0"), "avx3"),
        (base("avx2", "f128", "4,4", "1,0"), "f128"),
        (base("avx2", "f32", "4,0", "1,0"), "extent 0"),
        (base("avx2", "f32", "4,4", "0,0"), "appears twice"),
        (base("avx2", "f32", "4,4", "2,0"), "axis 2"),
        (base("avx2", "f32", "4,4", "1,0,2"), "3 axes"),
        (base("avx2", "f32", "4,x", "1,0"), "'x'"),
        (base("avx2", "f32", "", ""), "empty"),
        (base("avx2", "f32", "4294967296,4294967296,2", "2,1,0"), "overflows"),
        (base("avx2", "f32", "4611686018427387904", "0"), "exceed"),
    ];
    for (args, needle) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let msg = generator_error(&a);
        assert!(msg.contains(needle), "{a:?}: message '{msg}' does not name '{needle}'");
    }
    assert!(generator_error(&["--isa", "avx2"]).contains("missing --dtype"));
    assert!(generator_error(&["--isa", "avx2", "--isa", "neon"]).contains("twice"));
    assert!(generator_error(&["--bogus", "1"]).contains("--bogus"));
}

#[test]
fn plans_classify_like_the_planner() {
    use vlkernels_codegen::fixed::{plan, DType, Plan, Spec, Target};
    use vlkernels_codegen::isa::IsaKind;
    let f32t = DType::parse("f32").unwrap();
    let spec = |shape: &[usize], perm: &[usize]| Spec::new(Target::Simd(IsaKind::Avx2), f32t, shape, perm).unwrap();
    // Size-1 axes moved: one copy of every element.
    assert!(matches!(plan(&spec(&[6, 1, 7], &[1, 0, 2])), Plan::Copy { n: 42 }));
    // A shared innermost run of 20 bytes: run copies.
    assert!(matches!(plan(&spec(&[4, 6, 5], &[1, 0, 2])), Plan::Runs { run: 5, .. }));
    // A shared run of 8 bytes: one 64-bit element of a 2-D transpose.
    match plan(&spec(&[9, 10, 2], &[1, 0, 2])) {
        Plan::Transpose { outer, a, b, unit } => {
            assert_eq!(unit, 2);
            assert!(outer.is_empty());
            assert_eq!((a.extent, a.ss, b.extent, b.ds), (10, 2, 9, 2));
        }
        other => panic!("{other:?}"),
    }
    // HWC -> CHW: H and W fuse; the plane is 3 (source-contiguous) x H*W.
    match plan(&spec(&[64, 48, 3], &[2, 0, 1])) {
        Plan::Transpose { outer, a, b, unit } => {
            assert_eq!(unit, 1);
            assert!(outer.is_empty());
            assert_eq!((a.extent, b.extent, b.ss), (3, 64 * 48, 3));
        }
        other => panic!("{other:?}"),
    }
    // The generated name spells shape, permutation, dtype and ISA.
    assert_eq!(
        spec(&[64, 48, 3], &[2, 0, 1]).fn_name(),
        "permute_64x48x3_p201_f32_avx2"
    );
}
