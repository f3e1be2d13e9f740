//! # isoheap
//!
//! Isolated heaps for collections. A [`Heap`] owns memory mapped from the OS and hands it out
//! through `&Heap`, which implements `Allocator` (allocator-api2 0.2 on stable, core's with the
//! `nightly` feature): `Vec::new_in(&heap)`, `hashbrown::HashMap::new_in(&heap)`. Free blocks
//! are kept in address order and merged with both neighbours on free; allocation is first fit
//! through an index that answers in O(log n). Dropping the heap frees everything at once.
//!
//! ```
//! use isoheap::Heap;
//! use allocator_api2::vec::Vec;
//! use hashbrown::HashMap;
//!
//! let heap = Heap::new();
//! let mut names: Vec<&str, &Heap> = Vec::new_in(&heap);
//! let mut ages = HashMap::new_in(&heap);
//! for (name, age) in [("ada", 36), ("alan", 41)] {
//!     names.push(name);
//!     ages.insert(name, age);
//! }
//! assert_eq!(ages["alan"], 41);
//! heap.check().expect("heap invariants hold");
//! println!("{:?}", heap.stats());
//! ```
//!
//! ## Features
//! - `std` (default): [`HeapPool`], a pool of heaps for servers (uses std's mutex).
//! - `mmap` (default): memory from the OS by anonymous `mmap` (Unix).
//! - `allocator-api2` (default): `&Heap` implements allocator-api2 0.2's `Allocator` (stable).
//! - `nightly`: `&Heap` also implements `core::alloc::Allocator` for std collections; needs a
//!   nightly compiler and may break when the unstable trait changes. The two trait features are
//!   additive (see the README for the one combination that collides).
//!
//! The crate is `#![no_std]`; it never uses the global allocator.

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
pub use pool::{HeapPool, PooledHeap};
#[cfg(feature = "mmap")]
pub use region::os::{OsCounters, os_counters};
#[cfg(feature = "mmap")]
pub use region::provider::set_idle_limit;
#[cfg(feature = "mmap")]
pub use region::release_cached;
pub use stats::Stats;
#[cfg(feature = "mmap")]
pub use sync::{ARENAS, GlobalHeap, SyncHeap};
#[cfg(all(feature = "mmap", feature = "std"))]
pub use sync::{Scope, SharedHeap, THREAD_CACHE_BYTES};

/// Bytes per granule: every block is a multiple of this and aligned to it.
pub const GRANULE: usize = block::GRANULE;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
