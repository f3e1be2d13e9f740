//! The trait edges, each a thin forward to `Heap`'s inherent methods. All `cfg`s that choose
//! between the allocator traits are in this file.
//!
//! Two independent, additive features, each adding one impl:
//!
//! | features                          | `&Heap` implements                                       |
//! |-----------------------------------|----------------------------------------------------------|
//! | `allocator-api2` (default)        | `allocator_api2::alloc::Allocator` (0.2), on stable       |
//! | `nightly`                         | `core::alloc::Allocator` (std's `Vec::new_in`, ...)       |
//! | both                              | both: std collections, hashbrown and allocator-api2's `Vec` on one heap |
//! | `allocator-api2-04`               | also `allocator_api2_04::alloc::Allocator` (0.4), on stable |
//!
//! Every front end gets the same set: `&Heap`, `&ChildHeap`, `&BufferHeap`, `&PooledHeap`
//! (`std`), `&SyncHeap` (`mmap`) and `SharedHeap` (`mmap` and `std`).
//!
//! allocator-api2 0.2 has its own `nightly` feature that makes its trait a re-export of core's.
//! We do not turn it on: it would also make hashbrown (without hashbrown's own `nightly`) fail to
//! build. If something else in a build turns it on, the two impls here are impls of one trait
//! and collide (E0119); build isoheap with `default-features = false, features = ["mmap",
//! "nightly"]` then, and the core impl serves allocator-api2 users as well.

#[allow(unused_imports)]
use super::Heap;

#[allow(unused_macros)]
macro_rules! forward_allocator {
    ($ty:ty, $trait_:path, $err:path) => {
        // SAFETY: blocks stay valid until deallocated or the heap is dropped, and `&Heap`
        // borrows the heap so it outlives every block; copies of `&Heap` are the same
        // allocator; each method forwards to the inherent method with the same contract.
        unsafe impl $trait_ for $ty {
            #[inline]
            #[track_caller]
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                (**self).allocate(layout).map_err(|_| $err)
            }

            #[inline]
            #[track_caller]
            fn allocate_zeroed(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                (**self).allocate_zeroed(layout).map_err(|_| $err)
            }

            #[inline]
            #[track_caller]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                // SAFETY: the trait's contract is the inherent method's.
                unsafe { (**self).deallocate(ptr, layout) }
            }

            #[inline]
            #[track_caller]
            unsafe fn grow(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old_layout: core::alloc::Layout,
                new_layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: the trait's contract is the inherent method's.
                unsafe { (**self).grow(ptr, old_layout, new_layout) }.map_err(|_| $err)
            }

            #[inline]
            #[track_caller]
            unsafe fn grow_zeroed(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old_layout: core::alloc::Layout,
                new_layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: the trait's contract is the inherent method's.
                unsafe { (**self).grow_zeroed(ptr, old_layout, new_layout) }.map_err(|_| $err)
            }

            #[inline]
            #[track_caller]
            unsafe fn shrink(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old_layout: core::alloc::Layout,
                new_layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: the trait's contract is the inherent method's.
                unsafe { (**self).shrink(ptr, old_layout, new_layout) }.map_err(|_| $err)
            }
        }
    };
}

#[cfg(feature = "nightly")]
forward_allocator!(&Heap, core::alloc::Allocator, core::alloc::AllocError);
#[cfg(feature = "allocator-api2")]
forward_allocator!(
    &Heap,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

#[cfg(feature = "nightly")]
forward_allocator!(
    &crate::ChildHeap<'_>,
    core::alloc::Allocator,
    core::alloc::AllocError
);
#[cfg(feature = "allocator-api2")]
forward_allocator!(
    &crate::ChildHeap<'_>,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

#[cfg(all(feature = "nightly", feature = "mmap"))]
forward_allocator!(
    &crate::SyncHeap,
    core::alloc::Allocator,
    core::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2", feature = "mmap"))]
forward_allocator!(
    &crate::SyncHeap,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

#[cfg(all(feature = "nightly", feature = "mmap", feature = "std"))]
forward_allocator!(
    crate::SharedHeap,
    core::alloc::Allocator,
    core::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2", feature = "mmap", feature = "std"))]
forward_allocator!(
    crate::SharedHeap,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

// The wrappers that deref to `Heap`: an impl on the reference, so `Vec::new_in(&pooled)` and
// `Vec::new_in(&buffer_heap)` need no annotation (`(**self)` reaches `Heap`'s inherent methods
// through `Deref`). Each borrows its heap, which `reset` (`&mut self`) and drop cannot touch
// while the reference lives.
#[cfg(feature = "nightly")]
forward_allocator!(
    &crate::BufferHeap<'_>,
    core::alloc::Allocator,
    core::alloc::AllocError
);
#[cfg(feature = "allocator-api2")]
forward_allocator!(
    &crate::BufferHeap<'_>,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);
#[cfg(all(feature = "nightly", feature = "std"))]
forward_allocator!(
    &crate::PooledHeap<'_>,
    core::alloc::Allocator,
    core::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2", feature = "std"))]
forward_allocator!(
    &crate::PooledHeap<'_>,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

// allocator-api2 0.4 (feature `allocator-api2-04`): a trait distinct from 0.2's and core's, so
// these impls sit beside the others.
#[cfg(feature = "allocator-api2-04")]
forward_allocator!(
    &Heap,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
#[cfg(feature = "allocator-api2-04")]
forward_allocator!(
    &crate::ChildHeap<'_>,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
#[cfg(feature = "allocator-api2-04")]
forward_allocator!(
    &crate::BufferHeap<'_>,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2-04", feature = "std"))]
forward_allocator!(
    &crate::PooledHeap<'_>,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2-04", feature = "mmap"))]
forward_allocator!(
    &crate::SyncHeap,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
#[cfg(all(feature = "allocator-api2-04", feature = "mmap", feature = "std"))]
forward_allocator!(
    crate::SharedHeap,
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError
);
