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
use isoheap::{AllocError, SharedHeap, Stats, SyncHeap};
use isoheap_fuzz::{Front, Op, Sendable, Target, run};
use isoheap_testkit::{Api2, Block, Inspect};
use libfuzzer_sys::fuzz_target;

struct SyncTarget<H> {
    /// Allocates.
    a: H,
    /// Frees and resizes: the same heap (a copy of the reference, or a clone of the handle).
    b: H,
}

/// Allocations through one handle, frees and resizes through the other.
struct Split<'t, H> {
    a: Api2<&'t H>,
    b: Api2<&'t H>,
}

impl<H> Front for Split<'_, H>
where
    for<'h> &'h H: A + Inspect,
{
    fn name(&self) -> &str {
        self.a.name()
    }
    fn allocate(&self, l: Layout) -> Block {
        self.a.allocate(l)
    }
    fn allocate_zeroed(&self, l: Layout) -> Block {
        self.a.allocate_zeroed(l)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract; `b` is the same allocator as `a`.
        unsafe { self.b.deallocate(p, l) }
    }
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.b.grow(p, old, new) }
    }
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.b.grow_zeroed(p, old, new) }
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        unsafe { self.b.shrink(p, old, new) }
    }
    fn stats(&self) -> Stats {
        self.a.stats()
    }
    fn check(&self) -> Result<(), String> {
        self.a.check()
    }
    fn checked(&self) -> bool {
        self.a.checked()
    }
}

impl<H> Target for SyncTarget<H>
where
    H: A + Deref<Target = SyncHeap> + Clone + Send + Sync,
    for<'h> &'h H: A + Inspect,
{
    type F<'t>
        = Split<'t, H>
    where
        Self: 't;
    fn front(&self) -> Split<'_, H> {
        Split {
            a: Api2::new(&self.a, "SyncHeap (allocating handle)"),
            b: Api2::new(&self.b, "SyncHeap (freeing handle)"),
        }
    }
    fn threads(&self) -> bool {
        true
    }
    fn elsewhere(
        &self,
        frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<NonNull<[u8]>>, AllocError>> {
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
                        .map_err(|_| AllocError)
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
            run(&mut SyncTarget { a: &heap, b: &heap }, &ops, free_at_end);
        }
        Setup::Shared => {
            let heap = SharedHeap::new();
            let mut f = SyncTarget {
                a: heap.clone(),
                b: heap,
            };
            run(&mut f, &ops, free_at_end);
        }
    }
});
