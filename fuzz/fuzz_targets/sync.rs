//! `isoheap::SyncHeap` (through `&SyncHeap`) or `SharedHeap` (through two clones of the handle:
//! one allocates, the other frees and resizes) with allocator-api2's `Allocator`. `Elsewhere`
//! ops free some blocks on one scoped thread while another allocates, concurrently; their
//! blocks join the model and are freed later from the main thread (remote frees both ways).
#![no_main]

use allocator_api2::alloc::Allocator as A;
use arbitrary::Arbitrary;
use core::alloc::Layout;
use core::ops::Deref;
use core::ptr::NonNull;
use isoheap::{SharedHeap, Stats, SyncHeap};
use isoheap_fuzz::{Block, Caps, Front, Op, Sendable, checked_default, run};
use libfuzzer_sys::fuzz_target;

struct SyncFront<H> {
    /// Allocates.
    a: H,
    /// Frees and resizes: the same heap (a copy of the reference, or a clone of the handle).
    b: H,
}

impl<H> Front for SyncFront<H>
where
    H: A + Deref<Target = SyncHeap> + Clone + Send + Sync,
{
    fn caps(&self) -> Caps {
        Caps {
            threads: true,
            checked: checked_default(),
            ..Caps::ALLOCATOR
        }
    }
    fn allocate(&self, l: Layout, zero: bool) -> Result<Block, ()> {
        if zero {
            self.a.allocate_zeroed(l)
        } else {
            self.a.allocate(l)
        }
        .map_err(drop)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract; `b` is the same allocator as `a`.
        unsafe { A::deallocate(&self.b, p, l) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Block, ()> {
        // SAFETY: forwarded contract.
        unsafe {
            if zero {
                A::grow_zeroed(&self.b, p, old, new)
            } else {
                A::grow(&self.b, p, old, new)
            }
        }
        .map_err(drop)
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<Block, ()> {
        // SAFETY: forwarded contract.
        unsafe { A::shrink(&self.b, p, old, new) }.map_err(drop)
    }
    fn check(&self) -> Result<(), String> {
        self.a.check().map_err(|e| e.to_string())
    }
    fn stats(&self) -> Stats {
        self.a.stats()
    }
    fn elsewhere(
        &self,
        frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<Block>, ()>> {
        let (fa, aa) = (self.b.clone(), self.a.clone());
        std::thread::scope(|s| {
            let freer = s.spawn(move || {
                for (p, l) in frees {
                    // SAFETY: live blocks of this heap, handed over whole by the model.
                    unsafe { A::deallocate(&fa, p.0, l) };
                }
            });
            let allocator = s.spawn(move || {
                allocs
                    .iter()
                    .map(|&(l, z)| {
                        if z {
                            aa.allocate_zeroed(l)
                        } else {
                            aa.allocate(l)
                        }
                        .map(Sendable)
                        .map_err(drop)
                    })
                    .collect::<Vec<_>>()
            });
            freer.join().expect("freeing thread");
            allocator.join().expect("allocating thread")
        })
    }
}

#[derive(Debug, Arbitrary)]
enum Setup {
    Sync,
    Shared,
}

fuzz_target!(|input: (Setup, bool, Vec<Op>)| {
    let (setup, free_at_end, ops) = input;
    isoheap::release_cached();
    match setup {
        Setup::Sync => {
            let heap = SyncHeap::new();
            run(&mut SyncFront { a: &heap, b: &heap }, &ops, free_at_end);
        }
        Setup::Shared => {
            let heap = SharedHeap::new();
            let mut f = SyncFront {
                a: heap.clone(),
                b: heap,
            };
            run(&mut f, &ops, free_at_end);
        }
    }
});
