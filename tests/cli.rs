//! `vlk permute` on .npy fixtures written by NumPy (tools/make_npy_fixtures.py).

mod common;
use common::{expect_vlk_error, vlk};
use std::path::{Path, PathBuf};

use vlkernels::npy::{read_npy, write_npy, NpyArray};
use vlkernels::DType;

const DTYPES: [&str; 11] = ["u1", "i1", "u2", "i2", "f2", "u4", "i4", "f4", "u8", "i8", "f8"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

#[test]
fn permute_matches_numpy_for_every_dtype_and_order() {
    let dir = tempfile::tempdir().unwrap();
    for d in DTYPES {
        let expect = read_npy(fixture(&format!("expect_{d}.npy"))).unwrap();
        assert_eq!(expect.shape, vec![5, 3, 4]);
        for input in [format!("in_{d}.npy"), format!("in_{d}_fortran.npy")] {
            let out = dir.path().join(format!("out_{input}"));
            let o = vlk(&[
                "permute",
                fixture(&input).to_str().unwrap(),
                out.to_str().unwrap(),
                "--perm",
                "2,0,1",
            ]);
            assert!(o.status.success(), "{input}: {}", String::from_utf8_lossy(&o.stderr));
            let got = read_npy(&out).unwrap();
            assert_eq!(got, expect, "{input}");
        }
    }
}

#[test]
fn written_files_round_trip_and_keep_numpy_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let a = NpyArray::from_slice(DType::F64, &[2, 3], &[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let p = dir.path().join("a.npy");
    write_npy(&p, &a).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header = String::from_utf8_lossy(&bytes[10..80]);
    assert!(
        header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    assert_eq!(read_npy(&p).unwrap(), a);
}

#[test]
fn cli_errors_name_the_bad_value_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.npy");
    let out = out.to_str().unwrap();
    let input = fixture("in_f4.npy");
    let input = input.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["permute", input, out, "--perm", "2,0,0"], "repeats axis 0"),
        (vec!["permute", input, out, "--perm", "2,0"], "rank 3"),
        (vec!["permute", input, out, "--perm", "2,x,1"], "'x'"),
        (
            vec!["permute", input, out, "--perm", "0,1,2", "--threads", "0"],
            "--threads 0",
        ),
        (
            vec!["permute", "/nonexistent/in.npy", out, "--perm", "0"],
            "/nonexistent/in.npy",
        ),
        (vec!["bench", "memory", "--mib", "4"], "--mib 4"),
        (vec!["bench", "memory", "--threads", "0"], "--threads 0"),
    ];
    let unsupported = fixture("unsupported_c8.npy");
    let mut cases = cases;
    cases.push((
        vec!["permute", unsupported.to_str().unwrap(), out, "--perm", "1,0"],
        "c8",
    ));
    // A truncated copy of a valid file.
    let bytes = std::fs::read(fixture("in_f8.npy")).unwrap();
    let truncated = dir.path().join("truncated.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() - 17]).unwrap();
    cases.push((
        vec!["permute", truncated.to_str().unwrap(), out, "--perm", "2,0,1"],
        "truncated",
    ));
    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"not an npy file at all").unwrap();
    cases.push((vec!["permute", garbage.to_str().unwrap(), out, "--perm", "0"], "header"));
    for (args, needle) in cases {
        expect_vlk_error(&args, needle);
    }
}

#[test]
fn bench_self_check_runs_on_a_custom_case() {
    let o = vlk(&[
        "bench",
        "permute",
        "--shape",
        "37,29,3",
        "--perm",
        "2,0,1",
        "--dtype",
        "u8",
        "--reps",
        "1",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("(37,29,3)→(2,0,1)") && table.contains(" ok"), "{table}");
}

#[test]
fn bench_memory_prints_every_pattern_on_one_and_two_threads() {
    // The smallest buffers it accepts; timings are not checked, only that every
    // pattern ran and printed a row (the band and tile walkers split rows by thread).
    for threads in ["1", "2"] {
        let o = vlk(&["bench", "memory", "--mib", "8", "--reps", "1", "--threads", threads]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let table = String::from_utf8_lossy(&o.stdout);
        for row in [
            "transpose traffic, no shuffles: tiles 4096 B × 64 rows",
            "transpose traffic, unstaged: bands of 64 whole rows",
            "transpose (vlkernels::permute, f32)",
            "transpose traffic, no shuffles: tiles 2048 B × 128 rows, bf16",
            "transpose (vlkernels::permute, bf16)",
        ] {
            assert!(table.contains(row), "{threads} thread(s): no row {row:?} in\n{table}");
        }
        assert_eq!(table.contains("read, sequential"), threads == "1", "{table}");
        // The block rows run on one thread where the CPU has AVX2, and say so where not.
        let skipped = String::from_utf8_lossy(&o.stderr).contains("block rows need AVX2");
        for row in [
            "96×96 f32 blocks: copied front to back (streamed)",
            "96×96 f32 blocks: a transpose's lines, no shuffles",
            "96×96 f32 blocks: the band's half lines, no shuffles",
            "96×96 f32 blocks: transposed in registers (streamed)",
            "96×96 f32 blocks: transposed (vlkernels::permute)",
        ] {
            assert_eq!(
                table.contains(row),
                threads == "1" && !skipped,
                "{threads} thread(s), {row:?}:\n{table}"
            );
        }
        assert_eq!(
            table.contains("copy with ordinary stores, sequential"),
            threads == "1",
            "{table}"
        );
    }
}
