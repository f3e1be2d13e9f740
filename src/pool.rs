//! A pool of heaps for a server: one heap per request, taken from the pool and given back
//! reset, so a steady stream of requests maps and unmaps nothing. It lends [`Heap`]s, or
//! [`SyncHeap`]s for a request served by several threads (or a future that moves between a
//! runtime's worker threads).

#![forbid(unsafe_code)]

extern crate std;

use crate::SyncHeap;
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
///
/// # A heap per request in an async runtime
///
/// A future that holds a `Vec<u8, &Heap>` across an `.await` is not `Send` (`Heap` is not
/// `Sync`, so `&Heap` is not `Send`), and a multi-threaded runtime (`tokio::spawn`) wants
/// `Send` futures. Lend [`SyncHeap`]s instead ([`HeapPool::of_sync_heaps`]): `&SyncHeap` is
/// `Send`, so the request's collections can live across awaits and the future may resume on
/// another worker thread.
///
/// ```
/// use isoheap::{HeapPool, SyncHeap};
/// use allocator_api2::vec::Vec;
///
/// static POOL: HeapPool<SyncHeap> = HeapPool::of_sync_heaps(8);
///
/// async fn next_chunk() -> &'static [u8] {
///     b"more"
/// }
///
/// async fn handle() -> usize {
///     let heap = POOL.get().expect("heap");
///     let mut body: Vec<u8, &SyncHeap> = Vec::new_in(&heap);
///     body.extend_from_slice(b"GET /");
///     body.extend_from_slice(next_chunk().await); // held across the await
///     body.len()
/// } // body, then the guard: the heap is reset and back in the pool
///
/// fn spawnable<F: core::future::Future + Send + 'static>(f: F) -> F {
///     f // what `tokio::spawn` asks of a future
/// }
/// let fut = spawnable(handle());
/// // Any executor runs it; here, a single poll (nothing in it waits).
/// let mut fut = core::pin::pin!(fut);
/// let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
/// assert_eq!(fut.as_mut().poll(&mut cx), core::task::Poll::Ready(9));
/// assert_eq!(POOL.idle(), 1);
/// ```
pub struct HeapPool<H: PoolHeap = Heap> {
    idle: Mutex<Vec<(usize, H)>>,
    builder: HeapBuilder,
    max_idle: usize,
    created: AtomicUsize,
    /// Whether `idle` has room for `max_idle` heaps.
    reserved: AtomicBool,
}

/// The heaps a [`HeapPool`] lends: [`Heap`] and [`SyncHeap`]. Sealed: its methods are the
/// pool's business.
///
/// # Examples
///
/// ```
/// use isoheap::{Heap, HeapPool, PoolHeap, SyncHeap};
///
/// fn lend<H: PoolHeap>(pool: &HeapPool<H>) -> usize {
///     let heap = pool.get().expect("a heap");
///     heap.id()
/// }
/// assert_eq!(lend(&HeapPool::new(Heap::builder(), 1)), 0);
/// assert_eq!(lend(&HeapPool::<SyncHeap>::of_sync_heaps(1)), 0);
/// ```
pub trait PoolHeap: Send + fmt::Debug + sealed::Sealed {
    /// A new heap for the pool, from its builder.
    #[doc(hidden)]
    fn build(builder: &HeapBuilder) -> Result<Self, HeapError>
    where
        Self: Sized;
    /// Frees everything in the heap and restores the pool's settings, for the next request.
    #[doc(hidden)]
    fn recycle(&mut self, builder: &HeapBuilder);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Heap {}
    impl Sealed for crate::SyncHeap {}
}

impl PoolHeap for Heap {
    fn build(builder: &HeapBuilder) -> Result<Heap, HeapError> {
        (*builder).build()
    }

    fn recycle(&mut self, builder: &HeapBuilder) {
        self.reset();
        // A request may have changed its heap's budget: the next one starts from the pool's.
        self.with_core(|c| c.cfg.budget = builder.budget_bytes());
    }
}

impl PoolHeap for SyncHeap {
    fn build(builder: &HeapBuilder) -> Result<SyncHeap, HeapError> {
        Ok(SyncHeap::with_checked(builder.checked_flag()))
    }

    fn recycle(&mut self, _: &HeapBuilder) {
        self.reset();
    }
}

impl HeapPool<SyncHeap> {
    /// A pool of [`SyncHeap`]s (checked mode as the build's default, as for
    /// [`SyncHeap::new`]) that keeps at most `max_idle` of them idle. Each is reset when it
    /// comes back ([`SyncHeap::reset`]: every arena keeps up to 1 MiB of its chunks mapped).
    /// A `SyncHeap` has no budget or limit. `const`, like [`HeapPool::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{HeapPool, SyncHeap};
    /// use allocator_api2::vec::Vec;
    ///
    /// static POOL: HeapPool<SyncHeap> = HeapPool::of_sync_heaps(4);
    /// let heap = POOL.get()?;
    /// std::thread::scope(|s| {
    ///     for t in 0..2u8 {
    ///         let heap = &*heap;
    ///         s.spawn(move || {
    ///             let mut part: Vec<u8, &SyncHeap> = Vec::new_in(heap);
    ///             part.extend_from_slice(&[t; 100]);
    ///         });
    ///     }
    /// });
    /// drop(heap);
    /// assert_eq!((POOL.created(), POOL.idle()), (1, 1));
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn of_sync_heaps(max_idle: usize) -> HeapPool<SyncHeap> {
        HeapPool::with(Heap::builder(), max_idle)
    }
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
        HeapPool::with(builder, max_idle)
    }
}

impl<H: PoolHeap> HeapPool<H> {
    /// An empty pool of `H`s built from `builder`.
    const fn with(builder: HeapBuilder, max_idle: usize) -> HeapPool<H> {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, H)>> {
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
    pub fn get(&self) -> Result<PooledHeap<'_, H>, HeapError> {
        if !self.reserved.load(Acquire) {
            self.reserve();
        }
        let popped = self.lock().pop();
        let (id, heap) = match popped {
            Some(entry) => entry,
            None => {
                let heap = H::build(&self.builder)?;
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

impl<H: PoolHeap> fmt::Debug for HeapPool<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapPool")
            .field("idle", &self.idle())
            .field("max_idle", &self.max_idle)
            .field("created", &self.created())
            .finish()
    }
}

/// A heap on loan from a [`HeapPool`]; dereferences to [`Heap`] (or [`SyncHeap`] from a pool
/// of those). Dropping it resets the heap and returns it to the pool. Only one guard holds a
/// given heap at a time.
pub struct PooledHeap<'p, H: PoolHeap = Heap> {
    id: usize,
    heap: Option<H>,
    pool: &'p HeapPool<H>,
}

impl<H: PoolHeap> PooledHeap<'_, H> {
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

impl<H: PoolHeap> Deref for PooledHeap<'_, H> {
    type Target = H;
    fn deref(&self) -> &H {
        // The heap is only taken out in `drop`.
        self.heap.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<H: PoolHeap> DerefMut for PooledHeap<'_, H> {
    fn deref_mut(&mut self) -> &mut H {
        self.heap.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<H: PoolHeap> fmt::Debug for PooledHeap<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledHeap")
            .field("id", &self.id)
            .field("heap", &**self)
            .finish()
    }
}

impl<H: PoolHeap> Drop for PooledHeap<'_, H> {
    fn drop(&mut self) {
        let Some(mut heap) = self.heap.take() else {
            return;
        };
        heap.recycle(&self.pool.builder);
        let mut idle = self.pool.lock();
        if idle.len() < self.pool.max_idle {
            idle.push((self.id, heap));
        } else {
            drop(idle);
            drop(heap);
        }
    }
}
