//! `vlk-codegen`: regenerate simd/ (`emit`), check that simd/ is current
//! (`check`), print every network with its instruction count (`report`),
//! print one function specialised to a fixed problem (`kernel`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vlkernels_codegen::fixed::{self, DType, Spec, Target};
use vlkernels_codegen::isa::Isa;
use vlkernels_codegen::{generated_files, synthesize_all};

fn repo_root() -> PathBuf {
    // codegen/ sits in the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("codegen has a parent")
        .to_path_buf()
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vlk-codegen emit | check | report\n       \
         vlk-codegen kernel --isa avx2|avx512|neon|scalar --dtype DTYPE --shape D0,D1,.. --perm P0,P1,.."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { return usage() };
    match cmd.as_str() {
        "emit" | "check" => {
            let (found, missing) = synthesize_all();
            let root = repo_root();
            let mut stale = Vec::new();
            for (path, text) in generated_files(&found) {
                let full = root.join(&path);
                let current = std::fs::read_to_string(&full).unwrap_or_default();
                if current != text {
                    stale.push(path.clone());
                    if cmd == "emit" {
                        std::fs::create_dir_all(full.parent().unwrap()).expect("create simd/");
                        std::fs::write(&full, text).expect("write generated file");
                    }
                }
            }
            for p in &missing {
                eprintln!(
                    "no network within the model for {} (falls back to the square kernel)",
                    p.fn_name()
                );
            }
            if cmd == "check" && !stale.is_empty() {
                eprintln!("stale generated files (run `cargo run --release -p vlkernels-codegen -- emit`): {stale:?}");
                return ExitCode::FAILURE;
            }
            println!(
                "{} kernels; {} files {}",
                found.len(),
                if stale.is_empty() { "all" } else { "some" },
                if cmd == "emit" { "written" } else { "up to date" }
            );
            ExitCode::SUCCESS
        }
        "report" => {
            let (found, missing) = synthesize_all();
            println!("| kernel | shuffles | model cost |\n|---|---|---|");
            for (p, n) in &found {
                println!("| {} | {} | {} |", p.fn_name(), n.len(), n.cost(&Isa::new(p.isa)));
            }
            for p in &missing {
                println!("| {} | none found | - |", p.fn_name());
            }
            ExitCode::SUCCESS
        }
        "kernel" => match kernel(&args[1..]) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vlk-codegen kernel: {e}");
                ExitCode::from(2)
            }
        },
        _ => usage(),
    }
}

/// Parses `a,b,c` into numbers, naming the bad item.
fn parse_list(what: &str, s: &str) -> Result<Vec<usize>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{what} '{s}': '{t}' is not a non-negative integer"))
        })
        .collect()
}

/// `kernel --isa .. --dtype .. --shape .. --perm ..`: the generated source.
fn kernel(args: &[String]) -> Result<String, String> {
    let mut isa = None;
    let mut dtype = None;
    let mut shape = None;
    let mut perm = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--isa" => &mut isa,
            "--dtype" => &mut dtype,
            "--shape" => &mut shape,
            "--perm" => &mut perm,
            other => return Err(format!("unknown argument '{other}'")),
        };
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if slot.replace(value.clone()).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let need = |v: Option<String>, flag: &str| v.ok_or_else(|| format!("missing {flag}"));
    let target = Target::parse(&need(isa, "--isa")?)?;
    let dtype = DType::parse(&need(dtype, "--dtype")?)?;
    let shape = parse_list("--shape", &need(shape, "--shape")?)?;
    let perm = parse_list("--perm", &need(perm, "--perm")?)?;
    let spec = Spec::new(target, dtype, &shape, &perm)?;
    Ok(fixed::generate(&spec))
}
