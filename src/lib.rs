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

pub use api::{AllocError, BufferHeap, ChildHeap, Heap, HeapBuilder};
pub use error::{CheckError, HeapError};
pub use heap::MAX_ALIGN;
pub use map::{Chunks, HeapMap, MapChunk, Span, SpanKind, Spans};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use pool::{HeapPool, PooledHeap};
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
#[cfg(all(feature = "mmap", feature = "std"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "mmap", feature = "std"))))]
pub use sync::SharedHeap;
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use sync::{ARENAS, GlobalHeap, SyncHeap};

/// Bytes per granule: every block is a multiple of this and aligned to it.
pub const GRANULE: usize = block::GRANULE;
