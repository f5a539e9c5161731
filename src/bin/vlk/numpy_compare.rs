//! Runs tools/bench_numpy.py on the same cases and fills in NumPy's GiB/s.

use std::io::Write;
use std::process::{Command, Stdio};

use vlkernels::permute::suites::Case;
use vlkernels::{Error, Result};

use crate::permute_bench::Row;

/// Path of the NumPy benchmark script (next to the sources).
fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_numpy.py")
}

pub fn add_numpy(cases: &[Case], rows: &mut [Row], threads: usize) -> Result<()> {
    let python = std::env::var("VLK_PYTHON").unwrap_or_else(|_| "python3".into());
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "shape": c.shape, "perm": c.perm, "dtype": c.dtype.name()}))
        .collect();
    eprintln!("timing NumPy with {python} {} ...", script().display());
    let mut child = Command::new(&python)
        .arg(script())
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Unavailable(format!("--compare-numpy needs python3 with numpy ({python}): {e}")))?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(serde_json::Value::Array(input).to_string().as_bytes())
        .map_err(|e| Error::io("python stdin", e))?;
    let out = child.wait_with_output().map_err(|e| Error::io("python", e))?;
    if !out.status.success() {
        return Err(Error::Unavailable(format!(
            "{} failed ({}); is numpy installed?",
            script().display(),
            out.status
        )));
    }
    let results: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Format(format!("bench_numpy.py output: {e}")))?;
    for row in rows.iter_mut() {
        row.numpy_gibs = results.get(&row.case).and_then(|v| v.as_f64());
    }
    Ok(())
}
