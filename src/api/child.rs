//! Heaps inside heaps: [`ChildHeap`], a heap whose chunks are blocks of its parent (a memory
//! context, as PostgreSQL's and APR's pools have them).

use super::Heap;
use crate::error::HeapError;
use crate::heap::{Config, HeapCore, lent_len_for};
use crate::stats::Stats;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;

/// A heap inside another: its chunks are blocks of its parent, made by [`Heap::child`].
///
/// - Allocating in the child takes chunks from the parent (the first sized to the request, each
///   later one as large as all before it), so the parent's **budget and limit** bound the child too, and the
///   parent's `in_use` counts the child's chunks (reported apart as
///   [`Stats::lent_to_children`]).
/// - The child can be **reset** on its own ([`reset`](Self::reset): every block freed at once,
///   chunks beyond its `warm` bytes returned to the parent) or **dropped** (every chunk returned
///   to the parent).
/// - The parent cannot be reset or dropped while a child lives: the child borrows it.
/// - It dereferences to [`Heap`] for everything else (`allocate`, `stats`, `check`,
///   `set_budget`, a child of its own), and `&ChildHeap` is an allocator like `&Heap`. There is
///   no `DerefMut`: swapping the heap out of a child would break the borrow.
/// - A child merges every free (no quick lists: all its memory is the parent's), and a chunk of
///   a child is found by a walk of its few chunks, not the page map.
///
/// ```
/// use isoheap::Heap;
/// use allocator_api2::vec::Vec;
///
/// let request = Heap::builder().budget(1 << 20).build().unwrap();
/// {
///     let parse = request.child().unwrap();        // a context for parsing
///     let mut tokens: Vec<u32, &Heap> = Vec::new_in(&parse);
///     tokens.extend(0..1000);
///     assert!(request.stats().lent_to_children >= 4000);
///     let response = request.child().unwrap();     // another for the response
///     let mut body: Vec<u8, &Heap> = Vec::new_in(&response);
///     body.extend_from_slice(b"HTTP/1.1 200 OK");
///     drop(tokens);
///     drop(parse);                                 // its chunks go back to `request`
///     assert!(response.stats().in_use >= body.len());
/// }
/// assert_eq!(request.stats().in_use, 0);
/// assert_eq!(request.stats().lent_to_children, 0);
/// ```
pub struct ChildHeap<'p> {
    heap: Heap,
    _parent: PhantomData<&'p Heap>,
}

impl Heap {
    /// A child heap whose chunks are blocks of this heap (see [`ChildHeap`]). Maps and takes
    /// nothing until the child's first allocation. O(1).
    ///
    /// # Errors
    /// [`HeapError::ParentFull`] if this heap's budget, or its limit with no free span left,
    /// cannot lend the child even its smallest chunk; nothing changes then.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, HeapError};
    ///
    /// let tight = Heap::builder().budget(64).build().unwrap();
    /// assert!(matches!(tight.child(), Err(HeapError::ParentFull { .. })));
    /// let parent = Heap::new();
    /// let child = parent.child().unwrap();
    /// let grandchild = child.child().unwrap();   // contexts nest
    /// drop(grandchild.allocate(std::alloc::Layout::new::<[u64; 4]>()).unwrap());
    /// ```
    pub fn child(&self) -> Result<ChildHeap<'_>, HeapError> {
        let parent: NonNull<HeapCore> =
            NonNull::new(self.core.get()).unwrap_or_else(|| unreachable!());
        let (cfg, needed, available) = self.with_core(|c| {
            let needed = lent_len_for(crate::block::GRANULE, c.cfg.checked).unwrap_or(usize::MAX);
            let budget = c.cfg.budget.saturating_sub(c.in_use);
            let space = if c.mapped < c.cfg.limit {
                usize::MAX
            } else {
                c.stats().largest_free
            };
            (c.cfg, needed, budget.min(space))
        });
        if available < needed {
            return Err(HeapError::ParentFull { needed, available });
        }
        let heap = Heap::from_core(HeapCore::new(Config {
            parent: Some(parent),
            checked: cfg.checked,
            zero_on_free: cfg.zero_on_free,
            quick_reuse: cfg.quick_reuse,
            // Its memory is the parent's: nothing goes to the OS from here.
            give_back: usize::MAX,
            // Chunks double from the first (sized to the request): a child takes from its
            // parent's budget about twice what it holds, not a fixed 64 KiB step.
            growth: 1024,
            ..Config::DEFAULT
        }));
        heap.with_core(|c| {
            c.give_back_at = usize::MAX;
            c.quick.never();
        });
        Ok(ChildHeap {
            heap,
            _parent: PhantomData,
        })
    }
}

impl ChildHeap<'_> {
    /// Frees every block of the child at once (as [`Heap::reset`]): chunks beyond its `warm`
    /// bytes (1 MiB) go back to the parent. O(chunks).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let parent = Heap::new();
    /// let mut child = parent.child()?;
    /// for round in 0..3 {
    ///     let mut v = allocator_api2::vec::Vec::<u32, &Heap>::new_in(&child);
    ///     v.extend(0..1000 * round);
    ///     drop(v);
    ///     child.reset();                                  // every block of the child freed at once
    ///     assert_eq!(child.stats().in_use, 0);
    /// }
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn reset(&mut self) {
        self.heap.reset();
    }

    /// The child's counters (its chunks are its `mapped` bytes; see [`Heap::stats`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let parent = Heap::new();
    /// let child = parent.child()?;
    /// let v = allocator_api2::vec::Vec::<u64, &Heap>::with_capacity_in(100, &child);
    /// assert!(child.stats().in_use >= 800);
    /// assert!(parent.stats().lent_to_children >= child.stats().mapped);
    /// # drop(v);
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.heap.stats()
    }
}

impl Deref for ChildHeap<'_> {
    type Target = Heap;
    fn deref(&self) -> &Heap {
        &self.heap
    }
}

impl fmt::Debug for ChildHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildHeap")
            .field("heap", &self.heap)
            .finish()
    }
}
