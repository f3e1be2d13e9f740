//! Getting memory and giving it back: the mapping policy and the only place that talks to the
//! OS. It knows nothing of blocks, heaps or the API: it hands out runs of memory
//! ([`Mapping`]s) and takes them back. Everything the heap reads or writes is reached from a
//! pointer returned here (the provenance root).
//!
//! - [`acquire`] / [`release`]: a mapping from the process cache of mappings dropped heaps
//!   left (`cache`), else from the OS (`os`); back to the cache if it takes it, else to the OS.
//!   *Paged* mappings are aligned to [`PAGED_ALIGN`] so they can be recorded in the process page
//!   map ([`publish`], [`chunk_of`]): the owner of any address in them is found in O(1).
//! - [`decommit`]: pages of a live mapping go back to the OS and read as zero afterwards.
//! - `os`: every FFI call (mmap, munmap, madvise, sysconf, errno, write, abort,
//!   pthread_atfork).
//!
//! Without the `mmap` feature there is no OS: [`acquire`] finds nothing, and the only memory is
//! a caller's buffer, which never comes here.

#![cfg_attr(not(feature = "mmap"), allow(dead_code, unused_variables))]

#[cfg(feature = "mmap")]
pub(crate) mod cache;
#[cfg(feature = "mmap")]
pub(crate) mod os;
#[cfg(feature = "mmap")]
pub(crate) mod pagemap;
#[cfg(feature = "mmap")]
pub(crate) mod provider;
#[cfg(all(feature = "mmap", feature = "std"))]
pub(crate) mod tcache;

use core::ptr::NonNull;

/// Alignment (and unit) of paged mappings: 4 MiB (1 MiB under Miri).
#[cfg(feature = "mmap")]
pub(crate) const PAGED_ALIGN: usize = pagemap::ALIGN;
#[cfg(not(feature = "mmap"))]
pub(crate) const PAGED_ALIGN: usize = 4 << 20;

/// A run of memory from [`acquire`]: `base..base + len` is the caller's, and bytes at or after
/// `base + dirty` read as zero. `off` and `map_len` describe the underlying OS mapping
/// (`base - off .. base - off + map_len`; it is larger than `len` only under Miri, which
/// cannot unmap part of an over-aligned mapping).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping {
    pub base: NonNull<u8>,
    pub len: usize,
    pub dirty: usize,
    pub off: usize,
    pub map_len: usize,
}

/// A mapping of at least `len` bytes (whole pages) and at most `max` (a cached mapping may be
/// larger than asked; a fresh one is exactly `len`). `paged`: aligned to [`PAGED_ALIGN`], for
/// [`publish`]. `None` when the OS refuses (or there is no OS).
pub(crate) fn acquire(len: usize, max: usize, paged: bool) -> Option<Mapping> {
    #[cfg(feature = "mmap")]
    {
        let align = if paged { PAGED_ALIGN } else { 1 };
        if let Some(m) = cache::take(len, max, align) {
            return Some(Mapping {
                base: m.base,
                len: m.len,
                dirty: m.dirty,
                off: 0,
                map_len: m.len,
            });
        }
        let (base, off, map_len) = if paged {
            os::map_aligned(len, PAGED_ALIGN).ok()?
        } else {
            (os::map(len).ok()?, 0, len)
        };
        Some(Mapping {
            base,
            len,
            dirty: 0,
            off,
            map_len,
        })
    }
    #[cfg(not(feature = "mmap"))]
    None
}

/// Records a paged mapping in the process page map, so [`chunk_of`] finds it. Call it after the
/// mapping's header is written (the page map publishes it with Release ordering). Returns false
/// (recording nothing) if the page map could not grow; the caller then gives the mapping back
/// with [`discard`].
pub(crate) fn publish(base: NonNull<u8>, len: usize, owner: usize) -> bool {
    #[cfg(feature = "mmap")]
    return pagemap::insert(base, len, owner);
    #[cfg(not(feature = "mmap"))]
    false
}

/// The base of the chunk holding `addr` and the owner it was published with, if the process
/// page map knows one (O(1), lock-free, from the tables alone): a paged mapping recorded for
/// the [`PAGED_ALIGN`] window holding `addr` (if `addr` is below its end), or a chunk the
/// provider carved from a segment there. For an address in a block the caller holds (see
/// `provider::resolve`).
#[inline]
pub(crate) fn chunk_of(addr: usize) -> Option<(NonNull<u8>, usize)> {
    #[cfg(feature = "mmap")]
    return provider::resolve(addr);
    #[cfg(not(feature = "mmap"))]
    None
}

/// The owner recorded for the chunk holding `addr` (0: no chunk the page map knows holds it).
/// O(1) and lock-free; reads only the page map and the provider's slice tables, never a chunk
/// (so a foreign pointer, even into a chunk another thread is giving back, is harmless). An
/// answer about a chunk being recorded or forgotten by another thread at the same moment may
/// be the old or the new state; the chunks of a heap the caller holds do not change under it.
#[inline]
pub(crate) fn owner_at(addr: usize) -> usize {
    #[cfg(feature = "mmap")]
    return provider::owner_at(addr);
    #[cfg(not(feature = "mmap"))]
    0
}

/// A fresh identity for the owner of paged mappings (never 0).
pub(crate) fn next_owner() -> usize {
    #[cfg(feature = "mmap")]
    return pagemap::next_owner();
    #[cfg(not(feature = "mmap"))]
    1
}

/// Gives a mapping from [`acquire`] back: out of the page map first if it was published (so
/// nobody finds it there once another heap reuses it), then to the process cache if it is a
/// whole mapping the cache takes, else to the OS. `dirty` is how many bytes from its start may
/// be non-zero now.
///
/// # Safety
/// 1. `m` came from [`acquire`] and was not released before;
/// 2. `published` says whether it went through [`publish`];
/// 3. nothing reads or writes it afterwards.
pub(crate) unsafe fn release(m: Mapping, published: bool) {
    #[cfg(feature = "mmap")]
    {
        if published {
            pagemap::remove(m.base, m.len);
        }
        let whole = m.off == 0 && m.map_len == m.len;
        // SAFETY: (1) a whole mapping from `os::map` that we own, at least a page long (so at
        // least 16 bytes), and `dirty` is clamped to its length; (3) the cache owns it if it
        // takes it.
        if !(whole && unsafe { cache::put(m.base, m.len, m.dirty.min(m.len)) }) {
            // SAFETY: (1) `base - off`, `map_len` is exactly the OS mapping; (3) unused after.
            unsafe { discard(m) };
        }
    }
}

/// Returns a mapping from [`acquire`] straight to the OS (not to the cache).
///
/// # Safety
/// As for [`release`], and it is not published.
pub(crate) unsafe fn discard(m: Mapping) {
    #[cfg(feature = "mmap")]
    // SAFETY: `base - off .. + map_len` is exactly the OS mapping (contract), unused after.
    unsafe {
        os::unmap(m.base.sub(m.off), m.map_len)
    };
}

/// Gives back to the OS the memory this process keeps for the next heap: the mappings dropped
/// heaps left in the process cache, the calling thread's cache of free chunks (up to 128 KiB;
/// another thread's goes back to the provider when that thread exits), and the chunk
/// provider's spare segment and the pages of its free blocks. Returns how many bytes were unmapped (decommitted pages not counted).
///
/// Nothing needs it for correctness; it is for tests that count mappings, and for a program
/// that wants its footprint down after a burst of heaps.
///
/// ```
/// let heap = isoheap::Heap::new();
/// drop(heap.allocate(std::alloc::Layout::new::<[u8; 100]>()).unwrap());
/// drop(heap);
/// isoheap::release_cached();
/// ```
#[cfg(feature = "mmap")]
pub fn release_cached() -> usize {
    #[cfg(feature = "std")]
    tcache::flush();
    cache::release_all() + provider::release_idle()
}

/// The OS page size (4096 without an OS).
#[inline]
pub(crate) fn page() -> usize {
    #[cfg(feature = "mmap")]
    return os::page_size();
    #[cfg(not(feature = "mmap"))]
    4096
}

/// The calling thread's last OS error number, for `HeapError::OsRefused` (0 where it is not
/// known: without an OS, or on Unix systems other than Linux and Android).
pub(crate) fn last_errno() -> i32 {
    #[cfg(all(feature = "mmap", any(target_os = "linux", target_os = "android")))]
    return os::errno();
    #[cfg(not(all(feature = "mmap", any(target_os = "linux", target_os = "android"))))]
    0
}

/// Gives the pages of `ptr..ptr + len` back to the OS; they stay mapped and read as zero
/// afterwards. Returns whether that happened (not under Miri, not without `mmap`, not where
/// the OS does not promise zero pages).
///
/// # Safety
/// 1. The range is page-aligned and inside one live mapping of the region's (from
///    [`acquire`], or a segment of the chunk provider);
/// 2. it holds nothing anyone needs.
pub(crate) unsafe fn decommit(ptr: NonNull<u8>, len: usize) -> bool {
    #[cfg(all(feature = "mmap", target_os = "linux", not(miri)))]
    {
        // SAFETY: `dont_need`: (1) page-aligned (this function's item 1); (2) inside one live
        // mapping of the region's (item 1), and the region maps only private anonymous memory;
        // (3) holds nothing anyone needs (item 2).
        unsafe { os::dont_need(ptr, len) }
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
