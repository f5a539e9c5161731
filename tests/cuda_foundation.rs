//! The CUDA foundation: probing never panics, every embedded module compiles with NVRTC
//! and loads on a device (fatbin and NVRTC paths), ptxas reports no spills.

mod common;

use vlkernels::cuda;

#[test]
fn probing_without_cuda_returns_errors_not_panics() {
    let present = cuda::cuda_available();
    match cuda::device_count() {
        Ok(n) => eprintln!("CUDA driver present, {n} device(s)"),
        Err(e) => {
            assert!(!present || e.to_string().contains("CUDA"), "{e}");
            eprintln!("no CUDA driver: {e}");
        }
    }
    if cuda::device_count().unwrap_or(0) == 0 {
        let e = cuda::CudaDevice::get(0).unwrap_err();
        assert!(matches!(e, vlkernels::Error::Unavailable(_)), "{e}");
    }
    let e = cuda::nvrtc_compile("rope", "gfx90").unwrap_err().to_string();
    assert!(e.contains("gfx90"), "{e}");
    assert!(cuda::nvrtc_compile("no_such_module", "compute_80").is_err());
}

#[test]
fn embedded_modules_and_ptxas_reports() {
    let names = cuda::module_names();
    assert!(names.contains(&"rope"), "{names:?}");
    if !cuda::built_with_nvcc() {
        eprintln!("NOTE: built without nvcc: kernels are compiled by NVRTC at first use");
        return;
    }
    for name in names {
        let report = cuda::ptxas_report(name).expect("fatbin builds keep the ptxas report");
        assert!(report.contains("Compiling entry function"), "{name}: {report}");
        for line in report.lines().filter(|l| l.contains("spill")) {
            assert!(
                line.contains(" 0 bytes spill stores, 0 bytes spill loads"),
                "{name} spills: {line}"
            );
        }
    }
}

#[test]
fn nvrtc_compiles_every_module() {
    if !cuda::nvrtc_available() {
        if std::env::var("VLK_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
            panic!("VLK_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
        }
        eprintln!(
            "SKIPPED nvrtc_compiles_every_module: libnvrtc not found; set VLK_REQUIRE_NVRTC=1 to make this a failure"
        );
        let e = cuda::nvrtc_compile("rope", "compute_80").unwrap_err();
        assert!(matches!(e, vlkernels::Error::Unavailable(_)), "{e}");
        return;
    }
    for name in cuda::module_names() {
        for arch in ["compute_80", "compute_90"] {
            let ptx = cuda::nvrtc_compile(name, arch).unwrap_or_else(|e| panic!("{name} for {arch}: {e}"));
            assert!(ptx.contains(".entry"), "{name} for {arch}: no kernels in PTX");
            if name == "rope" {
                for k in [
                    "rope_fused_f32",
                    "rope_fused_f16",
                    "rope_fused_bf16",
                    "rope_fused_bf16_scalar",
                ] {
                    assert!(
                        ptx.contains(&format!(".entry {k}(")),
                        "{k} missing from NVRTC PTX for {arch}"
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_loads_every_module() {
    let Some(dev) = common::gpu_or_skip("gpu_loads_every_module") else {
        return;
    };
    eprintln!("{dev:?}, built with nvcc: {}", cuda::built_with_nvcc());
    for name in cuda::module_names() {
        let (_, kind) = dev.module(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("module {name} loaded via {kind:?}");
    }
    dev.function("rope", "rope_fused_bf16").unwrap();
    let e = dev.function("rope", "no_such_kernel").unwrap_err().to_string();
    assert!(e.contains("no_such_kernel"), "{e}");
    let host: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let d = dev.upload(&host).unwrap();
    assert_eq!(dev.download(&d).unwrap(), host);
}
