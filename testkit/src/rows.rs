//! The front ends a per-front-end test runs its row on ([`front_tests!`](crate::front_tests)):
//! each function builds fresh heaps and runs `row` on each way into them.

#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use crate::bytes::buffer;
#[cfg(feature = "allocator-api2")]
use crate::front::Api2;
#[cfg(feature = "nightly")]
use crate::front::Core;
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use crate::front::Front;
#[cfg(feature = "allocator-api2")]
use crate::front::Methods;
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
use isoheap::Heap;

/// `&Heap` through allocator-api2 and through the inherent methods (each on a fresh heap), a
/// strict heap (no quick lists) and an unchecked one (checked mode is on by default in debug
/// builds, so every `cargo test`; this is the release path).
#[cfg(feature = "allocator-api2")]
pub fn heap(row: impl Fn(&dyn Front)) {
    let heap = Heap::new();
    row(&Api2::new(&heap, "&Heap as allocator_api2::Allocator"));
    let heap = Heap::new();
    row(&Methods(&heap, "Heap (inherent methods)"));
    let strict = Heap::builder().quick_reuse(false).build().unwrap();
    row(&Api2::new(
        &strict,
        "&Heap (quick_reuse(false)) as allocator_api2::Allocator",
    ));
    let unchecked = Heap::builder().checked(false).build().unwrap();
    row(&Api2::new(
        &unchecked,
        "&Heap (checked(false)) as allocator_api2::Allocator",
    ));
}

/// `&Heap` through `core::alloc::Allocator`: a mapped heap and a buffer heap of `buffer_len`
/// bytes.
#[cfg(feature = "nightly")]
pub fn core(buffer_len: usize, row: impl Fn(&dyn Front)) {
    let heap = Heap::new();
    row(&Core::new(&heap, "&Heap as core::alloc::Allocator"));
    let mut buf = buffer(buffer_len);
    let heap = Heap::from_buffer(&mut buf).unwrap();
    row(&Core::new(&*heap, "&BufferHeap as core::alloc::Allocator"));
}

/// A `BufferHeap` over `len` bytes, through allocator-api2 and the inherent methods.
#[cfg(feature = "allocator-api2")]
pub fn buffer_heap(len: usize, row: impl Fn(&dyn Front)) {
    let mut buf = buffer(len);
    let heap = Heap::from_buffer(&mut buf).unwrap();
    row(&Api2::new(
        &*heap,
        "BufferHeap as allocator_api2::Allocator",
    ));
    drop(heap);
    let heap = Heap::from_buffer(&mut buf).unwrap();
    row(&Methods(&*heap, "Heap (inherent methods)"));
}

/// `&SyncHeap` through allocator-api2 and the inherent methods, and `SharedHeap`.
#[cfg(all(feature = "allocator-api2", feature = "mmap", feature = "std"))]
pub fn sync(row: impl Fn(&dyn Front)) {
    use isoheap::{SharedHeap, SyncHeap};
    let heap = SyncHeap::new();
    row(&Api2::new(&heap, "&SyncHeap as allocator_api2::Allocator"));
    let heap = SyncHeap::new();
    row(&Methods(&heap, "SyncHeap (inherent methods)"));
    row(&Api2::new(
        SharedHeap::new(),
        "SharedHeap as allocator_api2::Allocator",
    ));
}
