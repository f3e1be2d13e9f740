//! The OS layer: every call into libc the crate makes is here (anonymous mappings, `madvise`,
//! the page size, `errno`, writing to stderr and aborting, `pthread_atfork`).
//!
//! Mappings are anonymous and private.
//! Miri supports exactly `MAP_PRIVATE | MAP_ANONYMOUS` with read/write protection, so that is
//! all this module uses; it zero-fills, which matches what the kernel gives us. Miri's leak
//! checker does not see mappings, so the crate counts maps and unmaps itself ([`os_counters`]).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static MAPS: AtomicUsize = AtomicUsize::new(0);
static UNMAPS: AtomicUsize = AtomicUsize::new(0);
static MAPPED_NOW: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// The OS page size (cached after the first call).
pub(crate) fn page_size() -> usize {
    let cached = PAGE.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if raw > 0 && (raw as usize).is_power_of_two() {
        raw as usize
    } else {
        4096
    };
    PAGE.store(page, Relaxed);
    page
}

/// Maps `len` bytes (a multiple of the page size) of zeroed read/write memory.
///
/// Returns the OS error number on failure.
pub(crate) fn map(len: usize) -> Result<NonNull<u8>, i32> {
    debug_assert!(
        len > 0 && len.is_multiple_of(page_size()),
        "map of {len} bytes is not whole pages"
    );
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; all arguments are valid for that request.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    MAPS.fetch_add(1, Relaxed);
    MAPPED_NOW.fetch_add(len, Relaxed);
    NonNull::new(p.cast::<u8>()).ok_or(libc::ENOMEM)
}

/// Maps `len` bytes (whole pages) whose start is a multiple of `align` (a power of two above
/// the page size). Returns the aligned start, the bytes of the mapping before it, and the
/// mapping's length, for [`unmap`] of the whole later (`unmap(start - off, map_len)`).
///
/// Outside Miri the excess head and tail are unmapped at once, so the mapping is exactly
/// `start..start + len`; Miri cannot unmap part of a mapping, so there the excess stays.
pub(crate) fn map_aligned(len: usize, align: usize) -> Result<(NonNull<u8>, usize, usize), i32> {
    let total = len.checked_add(align).ok_or(libc::ENOMEM)?;
    let p = map(total)?;
    let off = p.addr().get().next_multiple_of(align) - p.addr().get();
    // SAFETY: off < align, so the aligned start and its len bytes lie inside the mapping.
    let start = unsafe { p.add(off) };
    #[cfg(not(miri))]
    {
        let tail = total - off - len;
        // SAFETY: head and tail are whole pages of our fresh mapping that nothing uses.
        unsafe {
            if off > 0 {
                libc::munmap(p.as_ptr().cast(), off);
            }
            if tail > 0 {
                libc::munmap(start.add(len).as_ptr().cast(), tail);
            }
        }
        MAPPED_NOW.fetch_sub(off + tail, Relaxed);
        Ok((start, 0, len))
    }
    #[cfg(miri)]
    Ok((start, off, total))
}

/// Returns a whole mapping to the OS.
///
/// # Safety
/// `ptr` and `len` are exactly a mapping returned by [`map`] that has not been unmapped, and
/// nothing reads or writes it afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a whole live mapping that nothing uses any more.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    debug_assert_eq!(rc, 0, "munmap({:p}, {len}) failed", ptr.as_ptr());
    UNMAPS.fetch_add(1, Relaxed);
    MAPPED_NOW.fetch_sub(len, Relaxed);
}

static DECOMMITS: AtomicUsize = AtomicUsize::new(0);

/// `madvise(MADV_DONTNEED)` over whole pages; returns whether it succeeded.
///
/// # Safety
/// 1. The range is page-aligned;
/// 2. it lies inside one live private anonymous mapping;
/// 3. it holds nothing anyone needs.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) unsafe fn dont_need(ptr: NonNull<u8>, len: usize) -> bool {
    // SAFETY: madvise needs a page-aligned start (item 1); the range is mapped memory of our
    // own (item 2), so no other object is affected; MADV_DONTNEED drops the pages' contents
    // (later reads see zero pages), which nobody needs (item 3).
    let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    DECOMMITS.fetch_add(1, Relaxed);
    rc == 0
}

/// The calling thread's `errno` (on targets without a known errno slot, `ENOMEM`).
pub(crate) fn errno() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid to read.
    let e = unsafe { *libc::__errno_location() };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let e = libc::ENOMEM;
    e
}

/// Writes `bytes` to stderr with one `write(2)` (no allocation, no buffering; errors ignored:
/// this is the last word before an abort).
pub(crate) fn write_stderr(bytes: &[u8]) {
    // SAFETY: the pointer and length describe a live, readable slice.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Aborts the process (no unwinding, no allocation).
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Registers fork handlers with `pthread_atfork`: `prepare` runs in the parent before `fork`,
/// `parent` and `child` after it in each process. Returns whether they were registered.
pub(crate) fn atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are plain functions; pthread_atfork only records them.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Process-wide counts of the mappings every heap in this process made and returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsCounters {
    /// Successful `mmap` calls.
    pub maps: usize,
    /// `munmap` calls.
    pub unmaps: usize,
    /// Bytes currently mapped by all heaps, including mappings kept in the process cache.
    pub mapped_bytes: usize,
    /// Chunk requests served from the process cache of mappings dropped heaps left behind,
    /// instead of by `mmap`.
    pub cache_hits: usize,
    /// `madvise(MADV_DONTNEED)` calls that gave free memory back to the OS.
    pub decommits: usize,
    /// Segments the chunk provider has mapped now (heaps' chunks up to half a segment are
    /// carved from them; see [`set_idle_limit`](crate::set_idle_limit)).
    pub segments: usize,
    /// Bytes of free, still committed memory the chunk provider keeps (at most the idle limit
    /// after the next chunk it takes back).
    pub idle_bytes: usize,
}

/// Reads the process-wide mapping counters (tests use them to prove maps and unmaps balance;
/// Miri's own leak checker cannot see mappings).
///
/// # Examples
///
/// ```
/// let before = isoheap::os_counters();
/// let heap = isoheap::Heap::with_capacity(8 << 20).unwrap(); // a mapping of its own
/// assert!(isoheap::os_counters().mapped_bytes >= before.mapped_bytes + (8 << 20));
/// # drop(heap);
/// ```
pub fn os_counters() -> OsCounters {
    let (segments, idle_bytes) = super::provider::counters();
    OsCounters {
        segments,
        idle_bytes,
        maps: MAPS.load(Relaxed),
        unmaps: UNMAPS.load(Relaxed),
        mapped_bytes: MAPPED_NOW.load(Relaxed),
        cache_hits: super::cache::hits(),
        decommits: DECOMMITS.load(Relaxed),
    }
}
