//! Large byte buffers for benchmarks and tools, backed by transparent huge
//! pages where the OS offers them (as NumPy does for large arrays), so a
//! strided walk over a big tensor is not dominated by TLB misses.

use std::ops::{Deref, DerefMut};

/// A zeroed byte buffer. On Linux, buffers of at least 4 MiB are fresh
/// anonymous mappings, 2 MiB aligned and advised `MADV_HUGEPAGE` before
/// their first touch; elsewhere (or if mapping fails) a plain `Vec`.
pub struct HugeBuffer {
    inner: Inner,
}

enum Inner {
    Vec(Vec<u8>),
    #[cfg(target_os = "linux")]
    Mapped {
        map: *mut u8,
        map_len: usize,
        data: *mut u8,
        len: usize,
    },
}

// SAFETY: the buffer uniquely owns its memory, like a Vec<u8>.
unsafe impl Send for HugeBuffer {}
unsafe impl Sync for HugeBuffer {}

/// A zeroed buffer of `len` bytes (see [`HugeBuffer`]).
pub fn huge_page_buffer(len: usize) -> HugeBuffer {
    #[cfg(target_os = "linux")]
    if len >= 4 << 20 {
        if let Some(b) = linux::map(len) {
            return b;
        }
    }
    HugeBuffer {
        inner: Inner::Vec(vec![0u8; len]),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{HugeBuffer, Inner};

    const HUGE: usize = 2 << 20;

    pub fn map(len: usize) -> Option<HugeBuffer> {
        let map_len = len.checked_add(HUGE)?;
        // SAFETY: a fresh private anonymous mapping; checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let map = map as *mut u8;
        let data = map.wrapping_add(map.align_offset(HUGE));
        // SAFETY: [data, data+len) lies inside the mapping; madvise is only a hint.
        unsafe { libc::madvise(data as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        Some(HugeBuffer {
            inner: Inner::Mapped {
                map,
                map_len,
                data,
                len,
            },
        })
    }

    pub fn unmap(map: *mut u8, map_len: usize) {
        // SAFETY: the mapping was created by `map` with this length.
        unsafe { libc::munmap(map as *mut libc::c_void, map_len) };
    }
}

impl Deref for HugeBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Vec(v) => v,
            // SAFETY: the mapping is readable for len bytes (zero-filled on first touch).
            #[cfg(target_os = "linux")]
            Inner::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts(*data, *len) },
        }
    }
}

impl DerefMut for HugeBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            Inner::Vec(v) => v,
            // SAFETY: as above, and &mut self makes this the only reference.
            #[cfg(target_os = "linux")]
            Inner::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts_mut(*data, *len) },
        }
    }
}

impl Drop for HugeBuffer {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Inner::Mapped { map, map_len, .. } = self.inner {
            linux::unmap(map, map_len);
        }
    }
}
