#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(test)]
extern crate std;

mod addr;
mod api;
mod bins;
mod block;
mod check;
#[cfg(any(
    all(feature = "allocator-api2", feature = "std"),
    feature = "hashbrown"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        all(feature = "allocator-api2", feature = "std"),
        feature = "hashbrown"
    )))
)]
pub mod collections;
mod error;
mod heap;
mod index;
mod map;
#[cfg(feature = "std")]
mod pool;
mod quick;
mod region;
mod stats;
#[cfg(feature = "mmap")]
mod sync;
mod vg;

/// allocator-api2 0.2, whose `Allocator` the crate's heaps implement (the version hashbrown
/// uses), re-exported so its types need no dependency of their own:
///
/// ```
/// use isoheap::Heap;
/// use isoheap::allocator_api2::vec::Vec;
///
/// let heap = Heap::new();
/// let mut v = Vec::new_in(&heap);
/// v.push(1u8);
/// assert_eq!(v, [1]);
/// ```
#[cfg(feature = "allocator-api2")]
#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
pub use allocator_api2;
/// allocator-api2 0.4 (feature `allocator-api2-04`), whose `Allocator` the crate's heaps also
/// implement, re-exported under this name (with `std`, its `Vec` and `Box` are there too):
///
/// ```
/// # #[cfg(all(feature = "allocator-api2-04", feature = "std"))] {
/// use isoheap::Heap;
/// use isoheap::allocator_api2_04::vec::Vec;
///
/// let heap = Heap::new();
/// let mut v = Vec::new_in(&heap);
/// v.extend_from_slice(b"0.4");
/// assert_eq!(v.len(), 3);
/// # }
/// ```
#[cfg(feature = "allocator-api2-04")]
#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2-04")))]
pub use allocator_api2_04;
pub use api::{AllocError, BufferHeap, ChildHeap, Heap, HeapBuilder};
pub use error::{CheckError, HeapError};
pub use heap::MAX_ALIGN;
pub use map::{Chunks, HeapMap, MapChunk, Span, SpanKind, Spans};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use pool::{HeapPool, PoolHeap, PooledHeap};
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use region::os::{OsCounters, os_counters};
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use region::provider::set_idle_limit;
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use region::release_cached;
pub use stats::Stats;
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use sync::{ARENAS, GlobalHeap, SyncHeap};
#[cfg(all(feature = "mmap", feature = "std"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "mmap", feature = "std"))))]
pub use sync::{Scope, SharedHeap, THREAD_CACHE_BYTES};

/// Bytes per granule: every block is a multiple of this and aligned to it.
pub const GRANULE: usize = block::GRANULE;
