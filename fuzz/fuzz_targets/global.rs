//! A local `isoheap::GlobalHeap` (not installed as the global allocator) through
//! `core::alloc::GlobalAlloc`: `alloc`, `alloc_zeroed`, `dealloc`, `realloc` (null is failure,
//! the old block stays valid), checked through `heap().check()`; `Elsewhere` ops free and
//! allocate on other threads.
#![no_main]

use core::alloc::Layout;
use core::ptr::NonNull;
use isoheap::{AllocError, GlobalHeap};
use isoheap_fuzz::{Front, Op, Sendable, Target, run};
use isoheap_testkit::Global;
use libfuzzer_sys::fuzz_target;

struct GlobalTarget(GlobalHeap);

impl Target for GlobalTarget {
    type F<'a> = Global<'a>;
    fn front(&self) -> Global<'_> {
        Global(&self.0)
    }
    fn threads(&self) -> bool {
        true
    }
    fn elsewhere(
        &self,
        frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<NonNull<[u8]>>, AllocError>> {
        std::thread::scope(|s| {
            let freer = s.spawn(move || {
                let g = Global(&self.0);
                for (p, l) in frees {
                    // SAFETY: live blocks of this heap with their exact layouts.
                    unsafe { g.deallocate(p.0, l) };
                }
            });
            let allocator = s.spawn(move || {
                let g = Global(&self.0);
                allocs
                    .iter()
                    .map(|&(l, z)| {
                        if z { g.allocate_zeroed(l) } else { g.allocate(l) }.map(Sendable)
                    })
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
    run(&mut GlobalTarget(GlobalHeap::new()), &ops, free_at_end);
});
