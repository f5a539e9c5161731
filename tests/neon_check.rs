//! Single-threaded check of every generated kernel this CPU runs, and a
//! permutation sweep with each forced ISA family. Built as a plain binary
//! (`harness = false`) that never spawns a thread, so it runs under
//! qemu-aarch64 for NEON (tools/ci/neon.sh) as well as natively.

#[path = "simd_check/mod.rs"]
mod simd_check;

fn main() {
    let families = simd_check::isa_families();
    println!(
        "ISA families on this CPU: {:?}",
        families.iter().map(|f| f.name()).collect::<Vec<_>>()
    );
    simd_check::report_missing();
    let mut failed = false;
    match simd_check::check_all_kernels() {
        Ok(runs) => println!("kernels: {runs} runs match the reference"),
        Err(e) => {
            eprintln!("FAIL kernel: {e}");
            failed = true;
        }
    }
    for f in &families {
        match simd_check::permute_sweep(*f) {
            Ok(runs) => println!("permute sweep {}: {runs} cases match the reference", f.name()),
            Err(e) => {
                eprintln!("FAIL permute: {e}");
                failed = true;
            }
        }
        match simd_check::streamed_sweep(*f) {
            Ok((_, 0, _)) | Ok((_, _, 0)) => {
                eprintln!(
                    "FAIL streamed: no case ran as line bands, or none walked across, with {}",
                    f.name()
                );
                failed = true;
            }
            Ok((runs, banded, across)) => println!(
                "streamed sweep {}: {runs} cases ({banded} as line bands, {across} walked across) match the reference",
                f.name()
            ),
            Err(e) => {
                eprintln!("FAIL streamed: {e}");
                failed = true;
            }
        }
    }
    if families.is_empty() {
        eprintln!("NOTE: no ISA family on this CPU; only the portable path ran");
    }
    if failed {
        std::process::exit(1);
    }
    println!("neon_check: ok");
}
