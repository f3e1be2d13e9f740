//! Getting memory and giving it back: the only place that talks to the OS. Everything the heap
//! reads or writes is reached from a pointer returned here (the provenance root).

pub(crate) mod buffer;
#[cfg(feature = "mmap")]
pub(crate) mod cache;
#[cfg(feature = "mmap")]
pub(crate) mod mmap;
#[cfg(feature = "mmap")]
pub(crate) mod pagemap;

/// Gives the pages of `ptr..ptr + len` back to the OS; they stay mapped and read as zero
/// afterwards. Returns whether that happened (not under Miri, not without `mmap`, not where
/// the OS does not promise zero pages).
///
/// # Safety
/// The range is page-aligned, inside one live mapping of this crate, and holds nothing anyone
/// needs.
pub(crate) unsafe fn decommit(ptr: core::ptr::NonNull<u8>, len: usize) -> bool {
    #[cfg(all(feature = "mmap", target_os = "linux", not(miri)))]
    {
        // SAFETY: forwarded contract; MADV_DONTNEED on private anonymous memory only drops
        // page contents (later reads see zero pages).
        unsafe { mmap::dont_need(ptr, len) }
    }
    #[cfg(not(all(feature = "mmap", target_os = "linux", not(miri))))]
    {
        let _ = (ptr, len);
        false
    }
}

#[cfg(all(feature = "mmap", not(unix)))]
compile_error!(
    "isoheap's `mmap` feature needs a Unix target (anonymous mmap); on this target build with \
     `default-features = false` and give the heap a buffer instead"
);
