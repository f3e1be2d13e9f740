// The `Heap` front end shared by the `heap` and `nightly` targets, which differ only in the
// `Allocator` trait they drive: each target imports its trait as `A`, then includes this file.

use core::alloc::Layout;
use core::ptr::NonNull;
use isoheap::{Heap, Stats};
use isoheap_fuzz::{Block, Built, Caps, Front, HeapSetup, Op, build_heap, run};
use libfuzzer_sys::fuzz_target;

struct HeapFront {
    setup: HeapSetup,
    built: Built,
}

impl Front for HeapFront {
    fn caps(&self) -> Caps {
        Caps {
            checked: self.built.heap.is_checked(),
            ..Caps::ALLOCATOR
        }
    }
    fn allocate(&self, l: Layout, zero: bool) -> Result<Block, ()> {
        let a: &Heap = &self.built.heap;
        if zero {
            A::allocate_zeroed(&a, l)
        } else {
            A::allocate(&a, l)
        }
        .map_err(drop)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { A::deallocate(&&self.built.heap, p, l) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Block, ()> {
        let a: &Heap = &self.built.heap;
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
        // SAFETY: forwarded contract.
        unsafe { A::shrink(&&self.built.heap, p, old, new) }.map_err(drop)
    }
    fn check(&self) -> Result<(), String> {
        self.built.heap.check().map_err(|e| e.to_string())
    }
    fn stats(&self) -> Stats {
        self.built.heap.stats()
    }
    fn heap(&self) -> Option<&Heap> {
        Some(&self.built.heap)
    }
    fn budget(&self) -> Option<usize> {
        self.built.budget
    }
    fn limit(&self) -> Option<usize> {
        self.built.limit
    }
    fn reset(&mut self, renew: bool) -> Option<bool> {
        if renew {
            // Drop first, so that the new heap may get the old one's (dirty) mapping back.
            self.built.heap = Heap::new();
            self.built = build_heap(self.setup).expect("the same setup builds again");
        } else {
            self.built.heap.reset();
        }
        Some(renew)
    }
}

fuzz_target!(|input: (HeapSetup, bool, Vec<Op>)| {
    let (setup, free_at_end, ops) = input;
    // Mappings cached by heaps of earlier inputs would make runs depend on each other.
    isoheap::release_cached();
    let Some(built) = build_heap(setup) else {
        return;
    };
    let mut f = HeapFront { setup, built };
    run(&mut f, &ops, free_at_end);
});
