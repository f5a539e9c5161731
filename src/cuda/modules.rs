//! The kernel modules embedded by build.rs and how they are turned into loadable images.

use crate::{Error, Result};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// One `cuda/<name>.cu` file as embedded by build.rs.
pub(crate) struct KernelModule {
    pub name: &'static str,
    /// Source with its includes inlined (for NVRTC).
    pub source: &'static str,
    /// nvcc fatbin (sm_80, sm_90a SASS + compute_80 PTX) when nvcc was found at build time.
    pub fatbin: Option<&'static [u8]>,
    /// ptxas -v output for the fatbin build.
    pub ptxas_report: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/cuda_modules.rs"));

/// How a module's code reaches the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderKind {
    /// The fatbin nvcc built at compile time.
    Fatbin,
    /// The embedded source compiled by NVRTC at first use.
    Nvrtc,
}

/// Names of the embedded kernel modules (`cuda/<name>.cu`).
pub fn module_names() -> Vec<&'static str> {
    MODULES.iter().map(|m| m.name).collect()
}

/// True when build.rs found nvcc and embedded fatbins.
pub fn built_with_nvcc() -> bool {
    NVCC.is_some()
}

/// ptxas's register/spill report for a module (fatbin builds only).
pub fn ptxas_report(module: &str) -> Option<&'static str> {
    find(module).ok().and_then(|m| m.ptxas_report)
}

/// Whether libnvrtc can be loaded (cudarc panics if asked to use it when absent).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

pub(crate) fn find(module: &str) -> Result<&'static KernelModule> {
    MODULES
        .iter()
        .find(|m| m.name == module)
        .ok_or_else(|| Error::invalid(format!("CUDA module '{module}' (embedded: {:?})", module_names())))
}

/// Loader chosen by `VLK_CUDA_LOADER` (`auto`, `fatbin`, `nvrtc`); auto prefers the fatbin.
pub(crate) fn loader_for(module: &KernelModule) -> Result<LoaderKind> {
    let choice = std::env::var("VLK_CUDA_LOADER").unwrap_or_default();
    match choice.as_str() {
        "" | "auto" => Ok(if module.fatbin.is_some() {
            LoaderKind::Fatbin
        } else {
            LoaderKind::Nvrtc
        }),
        "nvrtc" => Ok(LoaderKind::Nvrtc),
        "fatbin" if module.fatbin.is_some() => Ok(LoaderKind::Fatbin),
        "fatbin" => Err(Error::Unavailable(format!(
            "VLK_CUDA_LOADER=fatbin but module '{}' was built without nvcc",
            module.name
        ))),
        other => Err(Error::invalid(format!(
            "VLK_CUDA_LOADER='{other}' (expected auto, fatbin or nvrtc)"
        ))),
    }
}

/// Compiles a module's embedded source to PTX with NVRTC for `arch` (e.g. `compute_90`).
/// Works without a GPU; needs libnvrtc.
pub fn nvrtc_compile(module: &str, arch: &str) -> Result<String> {
    let m = find(module)?;
    if !arch.starts_with("compute_") && !arch.starts_with("sm_") {
        return Err(Error::invalid(format!(
            "NVRTC arch '{arch}' (expected compute_XY or sm_XY)"
        )));
    }
    if !nvrtc_available() {
        return Err(Error::Unavailable(
            "libnvrtc not found (install nvidia-cuda-nvrtc or a CUDA toolkit and add its lib dir to LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()],
        name: Some(format!("{}.cu", m.name)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(m.source, opts)
        .map_err(|e| Error::Cuda(format!("NVRTC compile of module '{module}' for {arch}: {e}")))?;
    Ok(ptx.to_src())
}

/// The image handed to the driver for `module`.
pub(crate) fn image(module: &KernelModule, kind: LoaderKind, cc: (i32, i32)) -> Result<Ptx> {
    match kind {
        LoaderKind::Fatbin => Ok(Ptx::from_binary(module.fatbin.expect("checked by loader_for").to_vec())),
        LoaderKind::Nvrtc => Ok(Ptx::from_src(nvrtc_compile(
            module.name,
            &format!("compute_{}{}", cc.0, cc.1),
        )?)),
    }
}
