//! `vlk-codegen`: regenerate simd/ (`emit`), check that simd/ is current
//! (`check`), print every network with its instruction count (`report`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    eprintln!("usage: vlk-codegen emit | check | report");
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
        _ => usage(),
    }
}
