//! Valgrind client requests (feature `valgrind`, x86-64 only; no-ops otherwise and when the
//! program does not run under Valgrind).
//!
//! Without them memcheck sees only the heap's mappings, all of it addressable and defined, so a
//! clean run would prove nothing. With them each heap is a memcheck *mempool*: every block handed
//! out is a pool piece (addressable, undefined unless zeroed), every block given back is
//! freed (no access), a reset or drop destroys the pool. The heap's own bookkeeping inside free
//! memory (index nodes, footers, quick-list links, poison) is reclaimed (`defined`) just before
//! the heap writes it; so memcheck reports a program's use after free, out-of-bounds access into
//! free memory and reads of uninitialised block bytes, at the instruction that does it.

#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
mod imp {
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    const MALLOCLIKE_BASE: usize = 0x1300;
    const CREATE_MEMPOOL: usize = MALLOCLIKE_BASE + 3;
    const DESTROY_MEMPOOL: usize = MALLOCLIKE_BASE + 4;
    const MEMPOOL_ALLOC: usize = MALLOCLIKE_BASE + 5;
    const MEMPOOL_FREE: usize = MALLOCLIKE_BASE + 6;
    const MEMPOOL_CHANGE: usize = MALLOCLIKE_BASE + 9;
    /// memcheck's requests: `VG_USERREQ_TOOL_BASE('M', 'C')`.
    const MC: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
    const MAKE_MEM_NOACCESS: usize = MC;
    const MAKE_MEM_UNDEFINED: usize = MC + 1;
    const MAKE_MEM_DEFINED: usize = MC + 2;

    /// One client request: Valgrind recognises the rotate sequence (a no-op on the real CPU:
    /// the rotations add up to 128 bits) and reads the request from the block at `rax`.
    #[inline(always)]
    fn request(args: [usize; 6]) -> usize {
        let mut result = 0usize;
        // SAFETY: the instructions only rotate rdi by a multiple of 64 bits (leaving it as it
        // was, declared clobbered anyway) and exchange rbx with itself; `args` lives across the
        // asm and is only read (by Valgrind, when present).
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                inout("rdx") result,
                in("rax") args.as_ptr(),
                out("rdi") _,
                options(nostack),
            );
        }
        result
    }

    /// A key for a new pool (memcheck only uses it as an identity).
    fn next_pool() -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        0x7ff0_0000_0000 | NEXT.fetch_add(1, Relaxed) << 4
    }

    pub(crate) fn mark(req: u8, p: *const u8, len: usize) {
        let code = [MAKE_MEM_NOACCESS, MAKE_MEM_UNDEFINED, MAKE_MEM_DEFINED][req as usize];
        if len > 0 {
            request([code, p.addr(), len, 0, 0, 0]);
        }
    }

    pub(crate) fn alloc(pool: &mut usize, p: *const u8, size: usize) {
        if *pool == 0 {
            *pool = next_pool();
            request([CREATE_MEMPOOL, *pool, 0, 0, 0, 0]);
        }
        request([MEMPOOL_ALLOC, *pool, p.addr(), size, 0, 0]);
    }

    pub(crate) fn free(pool: usize, p: *const u8) {
        if pool != 0 {
            request([MEMPOOL_FREE, pool, p.addr(), 0, 0, 0]);
        }
    }

    pub(crate) fn change(pool: usize, p: *const u8, size: usize) {
        if pool != 0 {
            request([MEMPOOL_CHANGE, pool, p.addr(), p.addr(), size, 0]);
        }
    }

    pub(crate) fn destroy(pool: &mut usize) {
        if *pool != 0 {
            request([DESTROY_MEMPOOL, *pool, 0, 0, 0, 0]);
            *pool = 0;
        }
    }
}

#[cfg(not(all(feature = "valgrind", target_arch = "x86_64")))]
mod imp {
    #[inline(always)]
    pub(crate) fn mark(_req: u8, _p: *const u8, _len: usize) {}
    #[inline(always)]
    pub(crate) fn alloc(_pool: &mut usize, _p: *const u8, _size: usize) {}
    #[inline(always)]
    pub(crate) fn free(_pool: usize, _p: *const u8) {}
    #[inline(always)]
    pub(crate) fn change(_pool: usize, _p: *const u8, _size: usize) {}
    #[inline(always)]
    pub(crate) fn destroy(_pool: &mut usize) {}
}

/// The heap is about to write its own bookkeeping (or poison) at `p..p + len`.
#[inline(always)]
pub(crate) fn defined(p: *const u8, len: usize) {
    imp::mark(2, p, len);
}

/// `p..p + len` holds nothing anybody may read (freed memory after poisoning).
#[inline(always)]
pub(crate) fn noaccess(p: *const u8, len: usize) {
    imp::mark(0, p, len);
}

/// `p..p + len` is the caller's, with contents not yet written.
#[inline(always)]
pub(crate) fn undefined(p: *const u8, len: usize) {
    imp::mark(1, p, len);
}

/// A block of `size` bytes at `p` is handed out by the heap whose pool key is `pool` (created on
/// first use); `zeroed` blocks read as defined zeroes.
#[inline(always)]
pub(crate) fn give(pool: &mut usize, p: *const u8, size: usize, zeroed: bool) {
    imp::alloc(pool, p, size);
    if zeroed {
        defined(p, size);
    }
}

/// The block at `p` was given back.
#[inline(always)]
pub(crate) fn take(pool: usize, p: *const u8) {
    imp::free(pool, p);
}

/// The block at `p` was resized in place from `old` to `new` bytes (`zeroed`: the new bytes
/// read as zero).
#[inline(always)]
pub(crate) fn resize(pool: usize, p: *const u8, old: usize, new: usize, zeroed: bool) {
    imp::change(pool, p, new);
    if new > old {
        // Only an address computation; the block spans `new` bytes.
        let tail = p.wrapping_add(old);
        if zeroed {
            defined(tail, new - old);
        } else {
            undefined(tail, new - old);
        }
    }
}

/// Every block of the pool is gone (reset or drop).
#[inline(always)]
pub(crate) fn forget_all(pool: &mut usize) {
    imp::destroy(pool);
}
