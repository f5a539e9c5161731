//! The runners' plain layers against f64 references on odd sizes, and their errors.

use vlkernels::models::ops::{gelu_erf, gelu_tanh, layer_norm, rms_norm, silu};
use vlkernels::models::Linear;
use vlkernels::rng::SplitMix64;

fn randn(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_unit_f32() * 2.0 - 1.0).collect()
}

#[test]
fn linear_matches_f64_reference_on_odd_sizes() {
    let mut rng = SplitMix64::new(7);
    for &(rows, inp, out) in &[(0, 3, 5), (1, 1, 1), (3, 7, 5), (17, 64, 33), (65, 129, 97), (2, 0, 3)] {
        let x = randn(&mut rng, rows * inp);
        let w = randn(&mut rng, out * inp);
        let b = randn(&mut rng, out);
        for bias in [false, true] {
            let lin = Linear::from_parts(w.clone(), bias.then(|| b.clone()), inp, out).unwrap();
            let y = lin.forward(&x, rows).unwrap();
            assert_eq!(y.len(), rows * out);
            for r in 0..rows {
                for o in 0..out {
                    let mut acc: f64 = if bias { b[o] as f64 } else { 0.0 };
                    for i in 0..inp {
                        acc += x[r * inp + i] as f64 * w[o * inp + i] as f64;
                    }
                    let got = y[r * out + o] as f64;
                    assert!(
                        (got - acc).abs() < 1e-4,
                        "({rows},{inp},{out}) [{r},{o}] {got} vs {acc}"
                    );
                }
            }
        }
    }
}

#[test]
fn linear_rejects_bad_shapes() {
    let e = Linear::from_parts(vec![0.0; 5], None, 2, 3).unwrap_err().to_string();
    assert!(e.contains("5 elements") && e.contains("3 x 2"), "{e}");
    let e = Linear::from_parts(vec![0.0; 6], Some(vec![0.0; 2]), 2, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias has 2"), "{e}");
    let lin = Linear::from_parts(vec![0.0; 6], None, 2, 3).unwrap();
    let e = lin.forward(&[0.0; 5], 3).unwrap_err().to_string();
    assert!(e.contains("5 elements"), "{e}");
}

#[test]
fn norms_match_f64_reference() {
    let mut rng = SplitMix64::new(11);
    for &(rows, dim) in &[(1, 1), (3, 7), (5, 64), (2, 129)] {
        let x = randn(&mut rng, rows * dim);
        let g = randn(&mut rng, dim);
        let b = randn(&mut rng, dim);
        let mut rms = x.clone();
        rms_norm(&mut rms, &g, 1e-6).unwrap();
        let mut ln = x.clone();
        layer_norm(&mut ln, &g, &b, 1e-5).unwrap();
        for r in 0..rows {
            let row: Vec<f64> = x[r * dim..(r + 1) * dim].iter().map(|&v| v as f64).collect();
            let ms = row.iter().map(|v| v * v).sum::<f64>() / dim as f64;
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                let want = row[i] / (ms + 1e-6).sqrt() * g[i] as f64;
                assert!((rms[r * dim + i] as f64 - want).abs() < 1e-4, "rms ({rows},{dim})");
                let want = (row[i] - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64;
                assert!((ln[r * dim + i] as f64 - want).abs() < 1e-4, "ln ({rows},{dim})");
            }
        }
    }
    let e = rms_norm(&mut [0.0; 5], &[1.0; 2], 1e-6).unwrap_err().to_string();
    assert!(e.contains("5 elements") && e.contains("rows of 2"), "{e}");
    let e = layer_norm(&mut [0.0; 4], &[1.0; 2], &[0.0; 3], 1e-6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias has 3"), "{e}");
}

#[test]
fn activations_match_closed_forms() {
    for i in -60..=60 {
        let x = i as f32 * 0.1;
        let xd = x as f64;
        assert!((silu(x) as f64 - xd / (1.0 + (-xd).exp())).abs() < 1e-6);
        let t = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
        assert!((gelu_tanh(x) as f64 - t).abs() < 1e-5, "gelu_tanh({x})");
        // Exact GELU is within 1e-3 of the tanh form everywhere and equals x for large x.
        assert!((gelu_erf(x) as f64 - t).abs() < 1e-3, "gelu_erf({x})");
    }
    assert_eq!(gelu_erf(0.0), 0.0);
    assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6, "{}", gelu_erf(1.0));
    assert!((gelu_erf(-3.0) - -0.004_049_8).abs() < 1e-6, "{}", gelu_erf(-3.0));
}
