//! `CudaDevice`: one context, one stream and a cache of loaded modules per GPU.

use super::driver_err;
use super::modules::{self, LoaderKind};
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// True when the CUDA driver library can be loaded (says nothing about devices).
pub fn cuda_available() -> bool {
    // SAFETY: only tries to dlopen the driver library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices; [`Error::Unavailable`] when the driver library is absent.
pub fn device_count() -> Result<usize> {
    if !cuda_available() {
        return Err(Error::Unavailable("CUDA driver library (libcuda) not found".into()));
    }
    cudarc::driver::result::init().map_err(driver_err("cuInit"))?;
    let n = CudaContext::device_count().map_err(driver_err("cuDeviceGetCount"))?;
    Ok(n.max(0) as usize)
}

/// A GPU ready for launches: primary context, one stream, modules loaded on first use.
pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    cc: (i32, i32),
    modules: Mutex<HashMap<&'static str, (Arc<CudaModule>, LoaderKind)>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaDevice(cuda:{} {} sm_{}{})",
            self.ordinal, self.name, self.cc.0, self.cc.1
        )
    }
}

impl CudaDevice {
    /// The shared handle for device `ordinal` (created once per process).
    pub fn get(ordinal: usize) -> Result<Arc<CudaDevice>> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
        let mut map = DEVICES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&ordinal) {
            return Ok(d.clone());
        }
        let d = Arc::new(Self::open(ordinal)?);
        map.insert(ordinal, d.clone());
        Ok(d)
    }

    fn open(ordinal: usize) -> Result<CudaDevice> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Unavailable(format!(
                "CUDA device {ordinal} requested but {count} device(s) found"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err(format!("creating a context on device {ordinal}")))?;
        let stream = ctx.default_stream();
        let name = ctx.name().map_err(driver_err("cuDeviceGetName"))?;
        let cc = ctx.compute_capability().map_err(driver_err("compute capability"))?;
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            name,
            cc,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this crate goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Loads (once) and returns a module with the loader that was used.
    pub fn module(&self, name: &str) -> Result<(Arc<CudaModule>, LoaderKind)> {
        let m = modules::find(name)?;
        let mut cache = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(m.name) {
            return Ok(hit.clone());
        }
        let kind = modules::loader_for(m)?;
        let image = modules::image(m, kind, self.cc)?;
        let module = self
            .ctx
            .load_module(image)
            .map_err(driver_err(format!("loading module '{name}' ({kind:?}) on {self:?}")))?;
        cache.insert(m.name, (module.clone(), kind));
        Ok((module, kind))
    }

    /// A kernel function of a module (cached).
    pub fn function(&self, module: &str, kernel: &str) -> Result<CudaFunction> {
        let m = modules::find(module)?;
        let key = (m.name, kernel.to_string());
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let (module_handle, _) = self.module(module)?;
        let f = module_handle
            .load_function(kernel)
            .map_err(driver_err(format!("kernel '{kernel}' in module '{module}'")))?;
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(driver_err(format!("upload of {} elements", host.len())))
    }

    /// Copies a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(dev)
            .map_err(driver_err(format!("download of {} elements", dev.len())))
    }

    /// Overwrites a device buffer from a host slice of the same length.
    pub fn copy_to_device<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<()> {
        if host.len() != dev.len() {
            return Err(Error::ShapeMismatch(format!(
                "host slice of {} elements copied to a device buffer of {}",
                host.len(),
                dev.len()
            )));
        }
        self.stream
            .memcpy_htod(host, dev)
            .map_err(driver_err("host-to-device copy"))
    }

    /// A zero-filled device buffer.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(driver_err(format!("allocation of {len} elements")))
    }

    /// Waits for all work queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("stream synchronize"))
    }
}
