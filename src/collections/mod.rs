//! Collections in a heap of this crate: [`String`] and its [`format_in!`](crate::format_in)
//! macro (features `allocator-api2` and `std`, both default), and [`HashMap`] (feature
//! `hashbrown`).

#[cfg(all(feature = "allocator-api2", feature = "std"))]
mod string;
#[cfg(all(feature = "allocator-api2", feature = "std"))]
pub use string::{OwnHeap, String};

/// hashbrown's `HashMap` in a [`Heap`](crate::Heap), with hashbrown's default hasher (feature
/// `hashbrown`, which makes hashbrown 0.17 a dependency; it is none by default).
///
/// ```
/// use isoheap::Heap;
/// use isoheap::collections::HashMap;
///
/// let heap = Heap::new();
/// let mut ages: HashMap<&str, u32> = HashMap::new_in(&heap);
/// ages.insert("ada", 36);
/// ages.insert("alan", 41);
/// assert_eq!(ages["alan"], 41);
/// assert!(heap.stats().in_use > 0);
/// ```
#[cfg(feature = "hashbrown")]
#[cfg_attr(docsrs, doc(cfg(feature = "hashbrown")))]
pub type HashMap<'h, K, V> =
    hashbrown::HashMap<K, V, hashbrown::DefaultHashBuilder, &'h crate::Heap>;
