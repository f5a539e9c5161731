//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Independent reference: walk every output index and read the source
/// element it names (row-major output, arbitrary source strides).
pub fn reference_permute<T: Copy>(src: &[T], shape: &[usize], strides: &[usize], perm: &[usize]) -> Vec<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; perm.len()];
    for _ in 0..n {
        let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.push(src[off]);
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// Row-major strides.
pub fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Deterministic pseudo-random bytes (splitmix64), distinct per position.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = vlkernels::rng::SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Byte value written into outputs before a call, so unwritten elements show.
pub const POISON: u8 = 0xA5;

/// The CUDA device for GPU tests, or `None` after a loud message when there is none.
/// With `VLK_REQUIRE_GPU=1` a missing device fails the test instead.
pub fn gpu_or_skip(test: &str) -> Option<std::sync::Arc<vlkernels::cuda::CudaDevice>> {
    match vlkernels::cuda::CudaDevice::get(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            if std::env::var("VLK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: VLK_REQUIRE_GPU=1 but no CUDA device: {e}");
            }
            eprintln!("SKIPPED {test}: no CUDA device ({e}); set VLK_REQUIRE_GPU=1 to make this a failure");
            None
        }
    }
}

/// Runs the `vlk` binary built for these tests.
pub fn vlk(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(args)
        .output()
        .expect("run vlk")
}

/// Runs `vlk` with `args` and checks that it fails with an error mentioning `want`.
pub fn expect_vlk_error(args: &[&str], want: &str) {
    let o = vlk(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(err.contains(want), "{args:?}: stderr '{err}' does not mention '{want}'");
}
