//! Options that steer planning and execution.

use super::kernels::KernelFamily;

/// Whether stores bypass the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NonTemporal {
    /// Streaming stores when the output is larger than [`NON_TEMPORAL_AUTO_BYTES`].
    #[default]
    Auto,
    /// Streaming stores wherever a plan's writes can take them; pieces of partial
    /// lines, and channel strips (whose kernels store 32-byte blocks along a few
    /// sequential streams), keep ordinary stores.
    On,
    /// No streaming stores of the engine's own (a plain copy goes through
    /// `memcpy`, which picks its stores by size).
    Off,
}

/// Output size from which `NonTemporal::Auto` streams stores.
pub const NON_TEMPORAL_AUTO_BYTES: usize = 32 << 20;

/// Problems smaller than this run on one thread: waking a pool costs more.
/// Measured on the 2-core EPYC (`vlk bench permute --shape ... --threads 1|2`):
/// at 512 KiB two threads were slower (a (1,256,16,64)→(0,2,1,3) bf16 head
/// split 39.5 GiB/s on one, 30.5 on two), at 1 MiB faster (38.6 against 42.3;
/// 512² f32 22.5 against 30.7).
pub const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Options for [`PermutePlan::new`](super::PermutePlan::new).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermuteOptions {
    /// Threads to split the work over. `None`: rayon's pool size (one thread
    /// for small problems). `Some(1)`: run inline on the calling thread.
    pub threads: Option<usize>,
    /// Force a kernel family (tests and benchmarks); `Auto` picks the best available.
    pub kernel: KernelFamily,
    /// Non-temporal stores.
    pub non_temporal: NonTemporal,
    /// Apply the autotuner's stored choice for this problem when the tuning
    /// cache has one (see [`tune`](super::tune)); otherwise the default plan.
    pub tuned: bool,
}

impl PermuteOptions {
    /// Options with a fixed thread count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Options with a forced kernel family.
    pub fn with_kernel(mut self, kernel: KernelFamily) -> Self {
        self.kernel = kernel;
        self
    }

    /// Options with a non-temporal store policy.
    pub fn with_non_temporal(mut self, nt: NonTemporal) -> Self {
        self.non_temporal = nt;
        self
    }

    /// Options that consult the tuning cache.
    pub fn with_tuned(mut self, tuned: bool) -> Self {
        self.tuned = tuned;
        self
    }

    pub(crate) fn resolved_threads(&self, bytes: usize) -> usize {
        match self.threads {
            Some(n) => n.max(1),
            None if bytes < PARALLEL_MIN_BYTES => 1,
            None => rayon::current_num_threads().max(1),
        }
    }
}
