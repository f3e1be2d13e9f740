//! A local `isoheap::GlobalHeap` (not installed as the global allocator) through
//! `core::alloc::GlobalAlloc`: `alloc`, `alloc_zeroed`, `dealloc`, `realloc` (null is failure,
//! the old block stays valid), checked through `heap().check()`; `Elsewhere` ops free and
//! allocate on other threads.
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use isoheap::{GlobalHeap, Stats};
use isoheap_fuzz::{Block, Caps, Front, Op, Sendable, checked_default, run};
use libfuzzer_sys::fuzz_target;

struct GlobalFront(GlobalHeap);

fn block(p: *mut u8, size: usize) -> Result<Block, ()> {
    NonNull::new(p)
        .map(|p| NonNull::slice_from_raw_parts(p, size))
        .ok_or(())
}

fn alloc(g: &GlobalHeap, l: Layout, zero: bool) -> Result<Block, ()> {
    // SAFETY: the driver never asks `GlobalAlloc` for zero sizes.
    block(
        unsafe { if zero { g.alloc_zeroed(l) } else { g.alloc(l) } },
        l.size(),
    )
}

impl Front for GlobalFront {
    fn caps(&self) -> Caps {
        Caps {
            checked: checked_default(),
            ..Caps::GLOBAL
        }
    }
    fn allocate(&self, l: Layout, zero: bool) -> Result<Block, ()> {
        alloc(&self.0, l, zero)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract (exact layout).
        unsafe { self.0.dealloc(p.as_ptr(), l) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
        _zero: bool,
    ) -> Result<Block, ()> {
        debug_assert_eq!(old.align(), new.align());
        // SAFETY: forwarded contract; `new` is a valid layout, so its size rounded up to the
        // alignment does not overflow isize.
        block(
            unsafe { self.0.realloc(p.as_ptr(), old, new.size()) },
            new.size(),
        )
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<Block, ()> {
        // SAFETY: as for grow; `new.size() > 0`.
        block(
            unsafe { self.0.realloc(p.as_ptr(), old, new.size()) },
            new.size(),
        )
    }
    fn check(&self) -> Result<(), String> {
        self.0.heap().check().map_err(|e| e.to_string())
    }
    fn stats(&self) -> Stats {
        self.0.heap().stats()
    }
    fn elsewhere(
        &self,
        frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<Block>, ()>> {
        let g = &self.0;
        std::thread::scope(|s| {
            let freer = s.spawn(move || {
                for (p, l) in frees {
                    // SAFETY: live blocks of this heap with their exact layouts.
                    unsafe { g.dealloc(p.0.as_ptr(), l) };
                }
            });
            let allocator = s.spawn(move || {
                allocs
                    .iter()
                    .map(|&(l, z)| alloc(g, l, z).map(Sendable))
                    .collect::<Vec<_>>()
            });
            freer.join().expect("freeing thread");
            allocator.join().expect("allocating thread")
        })
    }
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (free_at_end, ops) = input;
    isoheap::release_cached();
    run(&mut GlobalFront(GlobalHeap::new()), &ops, free_at_end);
});
