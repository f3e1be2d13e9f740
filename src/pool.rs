//! A pool of heaps for a server: one heap per request, taken from the pool and given back
//! reset, so a steady stream of requests maps and unmaps nothing.

#![forbid(unsafe_code)]

extern crate std;

use crate::api::{Heap, HeapBuilder};
use crate::error::HeapError;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Mutex;
use std::vec::Vec;

/// A bounded pool of [`Heap`]s, shared by worker threads (`HeapPool` is `Sync`).
///
/// [`get`](Self::get) hands out a heap (an idle one, or a new one built from the pool's
/// [`HeapBuilder`]) inside a [`PooledHeap`] guard; dropping the guard [`reset`](Heap::reset)s
/// the heap (O(chunks), whatever was allocated), restores the builder's budget (a request may
/// have changed it with `set_budget`) and puts it back, unless `max_idle` heaps are
/// idle already, in which case it is dropped and its memory returned. So the pool keeps at
/// most `max_idle` heaps of at most the builder's `warm` bytes each (default 1 MiB) mapped
/// between requests. The lock is a `std` mutex held only to push or pop one entry of a vector
/// reserved (outside the lock) when the first heap is lent: it never allocates and never runs
/// heap code while held. `new` is `const`, so a pool can be a `static`:
///
/// ```
/// use isoheap::{Heap, HeapPool};
///
/// static REQUESTS: HeapPool = HeapPool::new(Heap::builder().budget(1 << 20), 8);
///
/// let heap = REQUESTS.get().expect("heap");
/// let mut body = allocator_api2::vec::Vec::new_in(&*heap);
/// body.extend_from_slice(b"GET / HTTP/1.1");
/// assert_eq!(heap.stats().in_use, 16);
/// ```
///
/// ```
/// use isoheap::{Heap, HeapPool};
/// use allocator_api2::vec::Vec;
///
/// let pool = HeapPool::new(Heap::builder().budget(1 << 20), 8);
/// std::thread::scope(|s| {
///     for t in 0..4 {
///         let pool = &pool;
///         s.spawn(move || {
///             for _ in 0..100 {
///                 let heap = pool.get().expect("heap");
///                 let mut body: Vec<u8, &Heap> = Vec::new_in(&heap);
///                 // A request larger than the budget is refused cleanly:
///                 assert!(body.try_reserve(2 << 20).is_err());
///                 body.extend_from_slice(&[t; 1000]);
///             } // the heap is reset and goes back to the pool here
///         });
///     }
/// });
/// assert!(pool.idle() <= 8);
/// ```
pub struct HeapPool {
    idle: Mutex<Vec<(usize, Heap)>>,
    builder: HeapBuilder,
    max_idle: usize,
    created: AtomicUsize,
    /// Whether `idle` has room for `max_idle` heaps.
    reserved: AtomicBool,
}

impl HeapPool {
    /// A pool that builds heaps with `builder` and keeps at most `max_idle` of them idle.
    /// Allocates nothing (the list of idle heaps is reserved when the first heap is lent).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, HeapPool};
    ///
    /// // A `const fn`: a pool can be a `static`.
    /// static POOL: HeapPool = HeapPool::new(Heap::builder().budget(1 << 20), 16);
    /// let heap = POOL.get()?;
    /// assert_eq!(heap.stats().budget, Some(1 << 20));
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn new(builder: HeapBuilder, max_idle: usize) -> HeapPool {
        HeapPool {
            idle: Mutex::new(Vec::new()),
            builder,
            max_idle,
            created: AtomicUsize::new(0),
            reserved: AtomicBool::new(false),
        }
    }

    /// Makes room for `max_idle` heaps in the idle list, allocating outside the lock, so that
    /// returning a heap never allocates while the lock is held.
    #[cold]
    fn reserve(&self) {
        let mut room = Vec::with_capacity(self.max_idle);
        let mut idle = self.lock();
        if idle.capacity() < self.max_idle {
            // Only the first call gets here, before any heap was lent: the list is still the
            // `Vec::new()` of `new`, which owns no buffer, so nothing is freed under the lock.
            room.append(&mut idle);
            *idle = room;
        }
        drop(idle);
        self.reserved.store(true, Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Heap)>> {
        // A panic while the lock is held cannot leave the vector inconsistent (push and pop
        // are the only operations), so a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle heap, or builds one. O(1) plus, for a new heap, the builder's work.
    ///
    /// # Errors
    /// What [`HeapBuilder::build`] returns when a new heap must be built (a heap reused from
    /// the pool cannot fail).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, HeapPool};
    /// use allocator_api2::vec::Vec;
    ///
    /// let pool = HeapPool::new(Heap::builder(), 4);
    /// {
    ///     let heap = pool.get()?;
    ///     let mut v: Vec<u8, &Heap> = Vec::new_in(&heap);
    ///     v.extend_from_slice(b"request body");
    /// } // `v` and then the guard dropped: the heap is reset and back in the pool
    /// assert_eq!((pool.created(), pool.idle()), (1, 1));
    /// let again = pool.get()?;
    /// assert_eq!((again.id(), again.stats().in_use), (0, 0)); // the same heap, empty
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn get(&self) -> Result<PooledHeap<'_>, HeapError> {
        if !self.reserved.load(Acquire) {
            self.reserve();
        }
        let popped = self.lock().pop();
        let (id, heap) = match popped {
            Some(entry) => entry,
            None => {
                let heap = self.builder.build()?;
                (self.created.fetch_add(1, Relaxed), heap)
            }
        };
        Ok(PooledHeap {
            id,
            heap: Some(heap),
            pool: self,
        })
    }

    /// Heaps waiting in the pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = isoheap::HeapPool::new(isoheap::Heap::builder(), 4);
    /// let (a, b) = (pool.get()?, pool.get()?);
    /// assert_eq!(pool.idle(), 0);
    /// drop((a, b));
    /// assert_eq!(pool.idle(), 2);
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// Heaps this pool has built so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = isoheap::HeapPool::new(isoheap::Heap::builder(), 1);
    /// drop(pool.get()?);
    /// drop(pool.get()?);                // reuses the idle heap
    /// assert_eq!(pool.created(), 1);
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn created(&self) -> usize {
        self.created.load(Relaxed)
    }
}

impl fmt::Debug for HeapPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapPool")
            .field("idle", &self.idle())
            .field("max_idle", &self.max_idle)
            .field("created", &self.created())
            .finish()
    }
}

/// A heap on loan from a [`HeapPool`]; dereferences to [`Heap`]. Dropping it resets the heap
/// and returns it to the pool. Only one guard holds a given heap at a time.
pub struct PooledHeap<'p> {
    id: usize,
    heap: Option<Heap>,
    pool: &'p HeapPool,
}

impl PooledHeap<'_> {
    /// Which of the pool's heaps this is (0, 1, 2, ... in order of creation).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = isoheap::HeapPool::new(isoheap::Heap::builder(), 4);
    /// let (a, b) = (pool.get()?, pool.get()?);
    /// assert_eq!((a.id(), b.id()), (0, 1));
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn id(&self) -> usize {
        self.id
    }
}

impl Deref for PooledHeap<'_> {
    type Target = Heap;
    fn deref(&self) -> &Heap {
        // The heap is only taken out in `drop`.
        self.heap.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for PooledHeap<'_> {
    fn deref_mut(&mut self) -> &mut Heap {
        self.heap.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl fmt::Debug for PooledHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledHeap")
            .field("id", &self.id)
            .field("heap", &**self)
            .finish()
    }
}

impl Drop for PooledHeap<'_> {
    fn drop(&mut self) {
        let Some(mut heap) = self.heap.take() else {
            return;
        };
        heap.reset();
        // A request may have changed its heap's budget: the next one starts from the pool's.
        heap.with_core(|c| c.cfg.budget = self.pool.builder.budget_bytes());
        let mut idle = self.pool.lock();
        if idle.len() < self.pool.max_idle {
            idle.push((self.id, heap));
        } else {
            drop(idle);
            drop(heap);
        }
    }
}
