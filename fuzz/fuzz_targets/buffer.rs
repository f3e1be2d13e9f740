//! `Heap::from_buffer` over a buffer of 0..1 MiB at any start (misaligned via sub-slicing),
//! prefilled with a nonzero byte so that zeroing is really tested; the bytes around the buffer
//! are guarded, and every block must lie inside it. Errors of `from_buffer` (empty, too small)
//! are checked against their documentation.
#![no_main]

use allocator_api2::alloc::Allocator as A;
use arbitrary::Arbitrary;
use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use isoheap::{BufferHeap, Heap, HeapError, Stats};
use isoheap_fuzz::{Block, Caps, Front, GUARD, Op, run};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Setup {
    len: u32,
    tiny: bool,
    skew: u8,
    fill: u8,
}

struct BufferFront<'a> {
    heap: BufferHeap<'a>,
    pre: &'a [MaybeUninit<u8>],
    post: &'a [MaybeUninit<u8>],
    fill: u8,
    range: (usize, usize),
}

impl Front for BufferFront<'_> {
    fn caps(&self) -> Caps {
        Caps {
            checked: self.heap.is_checked(),
            ..Caps::ALLOCATOR
        }
    }
    fn allocate(&self, l: Layout, zero: bool) -> Result<Block, ()> {
        let a: &Heap = &self.heap;
        if zero {
            A::allocate_zeroed(&a, l)
        } else {
            A::allocate(&a, l)
        }
        .map_err(drop)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        let a: &Heap = &self.heap;
        // SAFETY: forwarded contract.
        unsafe { A::deallocate(&a, p, l) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Block, ()> {
        let a: &Heap = &self.heap;
        // SAFETY: forwarded contract.
        unsafe {
            if zero {
                A::grow_zeroed(&a, p, old, new)
            } else {
                A::grow(&a, p, old, new)
            }
        }
        .map_err(drop)
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<Block, ()> {
        let a: &Heap = &self.heap;
        // SAFETY: forwarded contract.
        unsafe { A::shrink(&a, p, old, new) }.map_err(drop)
    }
    fn check(&self) -> Result<(), String> {
        self.heap.check().map_err(|e| e.to_string())?;
        for (side, g) in [("before", self.pre), ("after", self.post)] {
            // SAFETY: the guards were initialised with `fill` and are not the heap's.
            if let Some(i) = g
                .iter()
                .position(|b| unsafe { b.assume_init() } != self.fill)
            {
                return Err(format!("guard byte {i} {side} the buffer was overwritten"));
            }
        }
        Ok(())
    }
    fn stats(&self) -> Stats {
        self.heap.stats()
    }
    fn heap(&self) -> Option<&Heap> {
        Some(&self.heap)
    }
    fn limit(&self) -> Option<usize> {
        Some(self.range.1 - self.range.0)
    }
    fn reset(&mut self, _renew: bool) -> Option<bool> {
        // The buffer stays borrowed by the heap: no renewing, only `BufferHeap::reset`.
        self.heap.reset();
        Some(false)
    }
    fn range(&self) -> Option<(usize, usize)> {
        Some(self.range)
    }
}

fuzz_target!(|input: (Setup, bool, Vec<Op>)| {
    let (s, free_at_end, ops) = input;
    let len = if s.tiny {
        s.len as usize % 257
    } else {
        s.len as usize % ((1 << 20) + 1)
    };
    let skew = s.skew as usize % 16;
    let fill = s.fill.wrapping_add(0xA5);
    let mut backing = vec![MaybeUninit::new(fill); GUARD + skew + len + GUARD];
    let (pre, rest) = backing.split_at_mut(GUARD + skew);
    let (mid, post) = rest.split_at_mut(len);
    let start = mid.as_ptr().addr();
    let pad = start.wrapping_neg() & (isoheap::GRANULE - 1);
    let heap = match Heap::from_buffer(mid) {
        Ok(h) => h,
        Err(HeapError::ZeroSize) if len == 0 => return,
        Err(HeapError::TooSmall { requested, minimum })
            if len > 0
                && requested == len
                && minimum == pad + BufferHeap::MIN_LEN
                && len < minimum =>
        {
            return;
        }
        Err(e) => panic!("from_buffer({len} bytes at {start:#x}): unexpected {e:?}"),
    };
    assert!(
        len >= pad + BufferHeap::MIN_LEN,
        "from_buffer accepted {len} bytes at {start:#x}"
    );
    let st = heap.stats();
    let usable = (len - pad) & !(isoheap::GRANULE - 1);
    assert!(
        st.mapped == usable && st.in_use == 0 && st.chunks == 1,
        "fresh buffer heap of {len} bytes at {start:#x}: {st:?}"
    );
    let mut f = BufferFront {
        heap,
        pre,
        post,
        fill,
        range: (start, start + len),
    };
    run(&mut f, &ops, free_at_end);
    drop(f);
    let ok = |g: &[MaybeUninit<u8>]| g.iter().all(|b| unsafe { b.assume_init() } == fill);
    assert!(
        ok(&backing[..GUARD + skew]) && ok(&backing[GUARD + skew + len..]),
        "guard overwritten"
    );
});
