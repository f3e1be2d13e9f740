//! `Heap::from_buffer` over a buffer of 0..1 MiB at any start (misaligned via sub-slicing),
//! prefilled with a nonzero byte so that zeroing is really tested; the bytes around the buffer
//! are guarded, and every block must lie inside it. Errors of `from_buffer` (empty, too small)
//! are checked against their documentation.
#![no_main]

use arbitrary::Arbitrary;
use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use isoheap::{BufferHeap, Heap, HeapError, Stats};
use isoheap_fuzz::{Front, GUARD, Op, Target, run};
use isoheap_testkit::{Api2, Block, Caps};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Setup {
    len: u32,
    tiny: bool,
    skew: u8,
    fill: u8,
}

struct BufferTarget<'a> {
    heap: BufferHeap<'a>,
    pre: &'a [MaybeUninit<u8>],
    post: &'a [MaybeUninit<u8>],
    fill: u8,
    range: (usize, usize),
}

/// The buffer heap through allocator-api2, whose `check()` also checks the guards.
struct Guarded<'t> {
    api: Api2<&'t Heap>,
    t: &'t BufferTarget<'t>,
}

impl Front for Guarded<'_> {
    fn name(&self) -> &str {
        self.api.name()
    }
    fn caps(&self) -> Caps {
        self.api.caps()
    }
    fn allocate(&self, l: Layout) -> Block {
        self.api.allocate(l)
    }
    fn allocate_zeroed(&self, l: Layout) -> Block {
        self.api.allocate_zeroed(l)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.api.deallocate(p, l) }
    }
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.api.grow(p, old, new) }
    }
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.api.grow_zeroed(p, old, new) }
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.api.shrink(p, old, new) }
    }
    fn stats(&self) -> Stats {
        self.api.stats()
    }
    fn check(&self) -> Result<(), String> {
        self.api.check()?;
        for (side, g) in [("before", self.t.pre), ("after", self.t.post)] {
            // SAFETY: the guards were initialised with `fill` and are not the heap's.
            if let Some(i) = g
                .iter()
                .position(|b| unsafe { b.assume_init() } != self.t.fill)
            {
                return Err(format!("guard byte {i} {side} the buffer was overwritten"));
            }
        }
        Ok(())
    }
    fn checked(&self) -> bool {
        self.api.checked()
    }
}

impl<'a> Target for BufferTarget<'a> {
    type F<'t>
        = Guarded<'t>
    where
        Self: 't;
    fn front(&self) -> Guarded<'_> {
        Guarded {
            api: Api2::new(&self.heap, "BufferHeap"),
            t: self,
        }
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
    let mut f = BufferTarget {
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
