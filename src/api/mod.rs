//! The public face: [`Heap`], its builder, and the inherent allocation methods every trait impl
//! forwards to. Interior mutability lives here (an `UnsafeCell`), which is what makes `Heap`
//! `!Sync`.

mod buffer;
mod child;
mod helpers;
mod traits;

pub use buffer::BufferHeap;
pub use child::ChildHeap;

use crate::error::{CheckError, Fail, HeapError, Misuse};
use crate::heap::{self, HeapCore};
use crate::stats::Stats;
use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;

/// The allocation failed: out of memory (the heap's limit or the OS), or a size or alignment the
/// heap cannot serve. The heap is unchanged and fully usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("isoheap: memory allocation failed")
    }
}

impl core::error::Error for AllocError {}

/// The trait edge for results: a detected misuse stops the program (a panic naming the
/// address, raised here, after the heap's `&mut` state is no longer borrowed); every other
/// failure is `AllocError`.
#[inline]
#[track_caller]
pub(crate) fn edge<T>(r: Result<T, Fail>) -> Result<T, AllocError> {
    match r {
        Ok(v) => Ok(v),
        Err(Fail::Misuse(m)) => misuse(m),
        Err(_) => Err(AllocError),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn misuse(m: Misuse) -> ! {
    panic!("{m}")
}

/// An isolated heap: memory of its own, mapped from the OS, handed out to collections through
/// `&Heap` (which implements `Allocator`).
///
/// ```
/// use isoheap::Heap;
/// use allocator_api2::vec::Vec;
///
/// let heap = Heap::new();                       // maps nothing yet
/// let mut v: Vec<u32, &Heap> = Vec::new_in(&heap);
/// v.extend(0..1000);                            // grows in place at the heap's frontier
/// assert_eq!(v.iter().sum::<u32>(), 499_500);
/// drop(v);                                      // merges back into one free span
/// assert_eq!(heap.stats().in_use, 0);
/// heap.check().unwrap();
/// ```
///
/// Blocks are kept in address order: allocation is first fit (the lowest-addressed free block
/// that holds the request), freeing merges with both neighbours, and growing extends in place
/// when the space behind a block is free. Dropping the heap returns all its memory to the OS at
/// once, whatever is still allocated (the borrow of `&Heap` guarantees nothing uses it then).
///
/// `Heap` is `Send` (all its state moves with it, and no `&Heap` can outlive the move) but not
/// `Sync`: two threads may not allocate from one `Heap` at once.
///
/// ```compile_fail
/// let heap = isoheap::Heap::new();
/// std::thread::scope(|s| {
///     s.spawn(|| heap.stats()); // error: `UnsafeCell<..>` cannot be shared between threads
/// });
/// ```
pub struct Heap {
    core: UnsafeCell<HeapCore>,
    /// Debug builds: set while `with_core` runs, so a nested call is caught.
    #[cfg(debug_assertions)]
    busy: core::cell::Cell<bool>,
}

/// Debug builds: marks a heap's core as borrowed by `with_core` for the guard's life.
#[cfg(debug_assertions)]
struct Busy<'a>(&'a core::cell::Cell<bool>);

#[cfg(debug_assertions)]
impl<'a> Busy<'a> {
    #[inline]
    fn enter(flag: &'a core::cell::Cell<bool>) -> Busy<'a> {
        assert!(
            !flag.replace(true),
            "isoheap: internal error: the heap's state was borrowed twice"
        );
        Busy(flag)
    }
}

#[cfg(debug_assertions)]
impl Drop for Busy<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.set(false);
    }
}

// SAFETY: a Heap owns its chunks exclusively; moving it moves that ownership. It holds no
// thread-local state, and `&Heap` (the only way to reach the memory) cannot cross threads
// because Heap is not Sync.
unsafe impl Send for Heap {}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Heap {
    /// A heap that maps nothing until its first allocation, then grows on demand (64 KiB first,
    /// each new chunk as large as all before it, up to 1 GiB per chunk). An empty heap costs
    /// its own size (`size_of::<Heap>()` bytes) and no system call. O(1).
    ///
    /// Without the `mmap` feature a heap has no memory of its own: every allocation from a
    /// `Heap::new()` fails (use [`Heap::from_buffer`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let heap = Heap::new();
    /// assert_eq!(heap.stats().mapped, 0); // nothing mapped yet
    /// let b = allocator_api2::boxed::Box::new_in(7u64, &heap);
    /// assert_eq!(*b, 7);
    /// ```
    pub const fn new() -> Heap {
        Heap::from_core(HeapCore::new(heap::Config::DEFAULT))
    }

    /// A heap around a core.
    pub(crate) const fn from_core(core: HeapCore) -> Heap {
        Heap {
            core: UnsafeCell::new(core),
            #[cfg(debug_assertions)]
            busy: core::cell::Cell::new(false),
        }
    }

    /// A heap with `bytes` of block space mapped up front (plus its metadata, rounded to whole
    /// pages). Like `Vec::with_capacity`, it still grows past that; use [`Heap::builder`] for a
    /// limit.
    ///
    /// # Errors
    /// [`HeapError::ZeroSize`] for 0, [`HeapError::TooLarge`] for sizes the address space cannot
    /// hold, [`HeapError::OsRefused`] when the OS refuses the mapping, and
    /// [`HeapError::NoBacking`] without the `mmap` feature (there is no OS to map from).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, HeapError};
    ///
    /// let heap = Heap::with_capacity(1 << 20)?;
    /// assert!(heap.stats().free >= 1 << 20);      // mapped up front
    /// assert_eq!(Heap::with_capacity(0).unwrap_err(), HeapError::ZeroSize);
    /// # Ok::<(), HeapError>(())
    /// ```
    pub fn with_capacity(bytes: usize) -> Result<Heap, HeapError> {
        if bytes == 0 {
            return Err(HeapError::ZeroSize);
        }
        Heap::builder().initial(bytes).build()
    }

    /// A builder for the initial size, the growth step and a hard limit on bytes mapped (see
    /// [`HeapBuilder`] for every setting).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let heap = Heap::builder().budget(1 << 16).build().unwrap();
    /// assert_eq!(heap.stats().budget, Some(1 << 16));
    /// ```
    pub const fn builder() -> HeapBuilder {
        HeapBuilder {
            initial: 0,
            growth: heap::DEFAULT_GROWTH,
            limit: None,
            quick_reuse: true,
            warm: heap::DEFAULT_WARM,
            budget: None,
            give_back: heap::DEFAULT_GIVE_BACK,
            checked: heap::CHECKED_DEFAULT,
            zero_on_free: false,
        }
    }

    /// Runs `f` on the heap's state. The only way to reach it through `&self`: `f` is crate
    /// code that runs no user code (no callbacks, no formatting; a misuse is returned and
    /// reported by the caller after `f` has returned, so the only panic inside is a failed
    /// internal debug assertion, a bug), so two `&mut HeapCore` never coexist. Builds with debug
    /// assertions check that: a nested call panics.
    #[inline]
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        #[cfg(debug_assertions)]
        let _busy = Busy::enter(&self.busy);
        // SAFETY: Heap is !Sync, so only this thread reaches the cell; no other reference to
        // the core is alive (see above; checked in debug builds by `Busy`), and the reference
        // does not outlive the call.
        f(unsafe { &mut *self.core.get() })
    }

    /// Allocates a block for `layout`. Zero-size layouts get a dangling, aligned pointer and use
    /// no memory. The returned length is the block's size (the request rounded up to 16 bytes),
    /// or exactly the request in checked mode ([`HeapBuilder::checked`], which adds a 2-byte tag
    /// to each block); `deallocate` accepts any size between the requested one and that length.
    ///
    /// Expected O(log n) in the number of free blocks (first fit in an address-ordered index),
    /// O(1) while nothing fits below the frontier, plus O(c) over the chunks (few: they grow
    /// geometrically). Mapping a new chunk is a system call.
    ///
    /// # Errors
    /// [`AllocError`] when the heap's limit, budget or the OS refuse the memory, or for a size
    /// or alignment it cannot serve (above [`MAX_ALIGN`](crate::MAX_ALIGN), near `isize::MAX`);
    /// the heap is unchanged.
    ///
    /// # Panics
    /// In checked mode, if the block it would reuse was written after it was freed (a use after
    /// free elsewhere in the program); the panic names the address.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let layout = Layout::new::<[u64; 4]>();
    /// let block = heap.allocate(layout)?;
    /// assert!(block.len() >= 32);
    /// // SAFETY: allocated just above with `layout`, not used afterwards.
    /// unsafe { heap.deallocate(block.cast(), layout) };
    /// # Ok::<(), isoheap::AllocError>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.with_core(|c| c.alloc(layout.size(), layout.align(), false)))
    }

    /// Like [`allocate`](Self::allocate), and the block reads as zero. Memory fresh from the OS
    /// is zero already and is not cleared again. Same complexity plus O(size) for reused memory.
    ///
    /// # Errors
    /// As for [`allocate`](Self::allocate).
    ///
    /// # Panics
    /// As for [`allocate`](Self::allocate).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let layout = Layout::array::<u32>(100).unwrap();
    /// let block = heap.allocate_zeroed(layout)?;
    /// // SAFETY: a live block of `block.len()` bytes.
    /// assert!(unsafe { block.as_ref() }.iter().all(|&b| b == 0));
    /// // SAFETY: allocated just above with `layout`, not used afterwards.
    /// unsafe { heap.deallocate(block.cast(), layout) };
    /// # Ok::<(), isoheap::AllocError>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.with_core(|c| c.alloc(layout.size(), layout.align(), true)))
    }

    /// Frees a block, merging it with free neighbours (found in O(1) through boundary bits);
    /// expected O(log n) for the index. Zero-size layouts are a no-op.
    ///
    /// # Safety
    /// 1. `ptr` was returned by this heap for `layout` (its size may be anything between the one
    ///    requested and the length returned);
    /// 2. it is not used afterwards.
    ///
    /// # Panics
    /// A pointer that does not belong to this heap, or in checked mode (on by default in debug
    /// builds, see [`HeapBuilder::checked`]) a block freed twice, an interior pointer or a
    /// layout other than the block's, stops the program with a panic naming the address,
    /// raised at the caller's line, before anything changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let layout = Layout::new::<u128>();
    /// let p = heap.allocate(layout).unwrap().cast::<u8>();
    /// // SAFETY: `p` was allocated by `heap` with `layout` and is not used afterwards.
    /// unsafe { heap.deallocate(p, layout) };
    /// assert_eq!(heap.stats().in_use, 0);
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `ptr` is a block of this heap allocated with `layout`, unused afterwards (this
        // function's contract, which is `dealloc`'s).
        let r = self.with_core(|c| unsafe { c.dealloc(ptr, layout.size(), layout.align()) });
        if let Err(Fail::Misuse(m)) = r {
            misuse(m)
        }
    }

    /// Grows a block to `new_layout`, in place when the space behind it is free or untouched
    /// (O(1) plus expected O(log n)), else by allocating, copying and freeing (O(size)).
    ///
    /// # Safety
    /// 1. `ptr` is a live block of this heap allocated with `old_layout`;
    /// 2. `new_layout.size() >= old_layout.size()`;
    /// 3. on success `ptr` must not be used again.
    ///
    /// # Errors
    /// [`AllocError`] if the memory cannot be had (as for [`allocate`](Self::allocate)) or
    /// `new_layout` is smaller than `old_layout`; the block is unchanged and still live.
    ///
    /// # Panics
    /// As for [`deallocate`](Self::deallocate): a pointer or layout that cannot be a live block
    /// of this heap (checked mode for most of them), at the caller's line.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let (small, big) = (Layout::new::<[u8; 16]>(), Layout::new::<[u8; 64]>());
    /// let p = heap.allocate(small)?.cast::<u8>();
    /// // SAFETY: `p` is a live block of `heap` allocated with `small`; 64 >= 16; `p` is not
    /// // used after the grow.
    /// let q = unsafe { heap.grow(p, small, big)? };
    /// assert!(q.len() >= 64);
    /// // SAFETY: the grown block, with its layout, not used afterwards.
    /// unsafe { heap.deallocate(q.cast(), big) };
    /// # Ok::<(), isoheap::AllocError>(())
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is a live block of this heap allocated with `old_layout` (this
        // function's contract, which is `HeapCore::grow`'s).
        edge(self.with_core(|c| unsafe {
            c.grow(
                ptr,
                (old_layout.size(), old_layout.align()),
                (new_layout.size(), new_layout.align()),
                false,
            )
        }))
    }

    /// Like [`grow`](Self::grow), and the new bytes read as zero.
    ///
    /// # Safety
    /// As for [`grow`](Self::grow).
    ///
    /// # Errors
    /// As for [`grow`](Self::grow).
    ///
    /// # Panics
    /// As for [`grow`](Self::grow).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let (small, big) = (Layout::new::<[u8; 16]>(), Layout::new::<[u8; 64]>());
    /// let p = heap.allocate(small)?.cast::<u8>();
    /// // SAFETY: `p` is a live block of `heap` allocated with `small`; 64 >= 16; `p` is not
    /// // used after the grow.
    /// let q = unsafe { heap.grow_zeroed(p, small, big)? };
    /// // SAFETY: the grown block; bytes 16.. are the new, zeroed ones.
    /// assert!(unsafe { &q.as_ref()[16..64] }.iter().all(|&b| b == 0));
    /// // SAFETY: the grown block, with its layout, not used afterwards.
    /// unsafe { heap.deallocate(q.cast(), big) };
    /// # Ok::<(), isoheap::AllocError>(())
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is a live block of this heap allocated with `old_layout` (this
        // function's contract, which is `HeapCore::grow`'s).
        edge(self.with_core(|c| unsafe {
            c.grow(
                ptr,
                (old_layout.size(), old_layout.align()),
                (new_layout.size(), new_layout.align()),
                true,
            )
        }))
    }

    /// Shrinks a block in place and returns the tail to the free set, merged with what follows
    /// (expected O(log n)). It moves only if `new_layout` needs an alignment the block lacks.
    ///
    /// # Safety
    /// 1. `ptr` is a live block of this heap allocated with `old_layout`;
    /// 2. `new_layout.size() <= old_layout.size()`;
    /// 3. on success `ptr` must not be used again (the block may have moved, or been freed
    ///    when `new_layout.size()` is 0).
    ///
    /// # Errors
    /// [`AllocError`] if `new_layout` is larger than `old_layout`, or if a move to a stricter
    /// alignment finds no memory; the block is unchanged and still live.
    ///
    /// # Panics
    /// As for [`grow`](Self::grow).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
    /// let (big, small) = (Layout::new::<[u8; 256]>(), Layout::new::<[u8; 32]>());
    /// let p = heap.allocate(big)?.cast::<u8>();
    /// // SAFETY: `p` is a live block of `heap` allocated with `big`; 32 <= 256; `p` is not used
    /// // after the shrink.
    /// let q = unsafe { heap.shrink(p, big, small)? };
    /// assert_eq!(q.cast::<u8>(), p);                // in place
    /// // SAFETY: the shrunk block, with its layout, not used afterwards.
    /// unsafe { heap.deallocate(q.cast(), small) };
    /// # Ok::<(), isoheap::AllocError>(())
    /// ```
    #[inline]
    #[track_caller]
    pub unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is a live block of this heap allocated with `old_layout` (this
        // function's contract, which is `HeapCore::shrink`'s).
        edge(self.with_core(|c| unsafe {
            c.shrink(
                ptr,
                (old_layout.size(), old_layout.align()),
                (new_layout.size(), new_layout.align()),
            )
        }))
    }

    /// Is this heap in checked mode (see [`HeapBuilder::checked`])?
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// assert!(Heap::builder().checked(true).build().unwrap().is_checked());
    /// assert!(!Heap::builder().checked(false).build().unwrap().is_checked());
    /// ```
    pub fn is_checked(&self) -> bool {
        self.with_core(|c| c.cfg.checked)
    }

    /// Sets or clears the budget on bytes in use (see [`HeapBuilder::budget`]). Lowering it
    /// below what is in use frees nothing: only later allocations are refused. O(1).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use allocator_api2::vec::Vec;
    ///
    /// let heap = Heap::new();
    /// heap.set_budget(Some(1024));
    /// let mut v: Vec<u8, &Heap> = Vec::new_in(&heap);
    /// assert!(v.try_reserve(4096).is_err());      // over budget: refused, heap unchanged
    /// assert_eq!(heap.stats().budget_refusals, 1);
    /// heap.set_budget(None);
    /// assert!(v.try_reserve(4096).is_ok());
    /// ```
    pub fn set_budget(&self, bytes: Option<usize>) {
        self.with_core(|c| c.cfg.budget = bytes.unwrap_or(usize::MAX));
    }

    /// Frees every block at once, in time independent of the number of blocks (O(chunks +
    /// mapped bytes / 1024)). The first chunks, up to 1 MiB (see [`HeapBuilder::warm`]), stay
    /// mapped for the next use; the rest go back to the OS. Taking `&mut self` guarantees that
    /// no collection still borrows the heap. The peak in use restarts from zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// let mut heap = Heap::new();
    /// for request in 0..3 {
    ///     let mut v = allocator_api2::vec::Vec::new_in(&heap);
    ///     v.extend(0..1000 * request);
    ///     // ... the request is served, v is dropped (or leaked: reset frees it anyway)
    ///     core::mem::forget(v);
    ///     heap.reset();
    ///     assert_eq!(heap.stats().in_use, 0);
    /// }
    /// ```
    pub fn reset(&mut self) {
        let warm = self.core.get_mut().cfg.warm;
        self.core.get_mut().reset(warm);
    }

    /// Counters: bytes in use, free, mapped, the largest free span, peak use. Blocks cached for
    /// quick reuse are merged into the free set first, so the free spans reported are those of
    /// a fully merged heap (no two adjacent). O(c) in chunks plus O(cached blocks).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let heap = Heap::new();
    /// let v = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(100, &heap);
    /// let s = heap.stats();
    /// assert!(s.in_use >= 800);
    /// assert_eq!(s.in_use + s.free + s.metadata, s.mapped);
    /// # drop(v);
    /// ```
    pub fn stats(&self) -> Stats {
        self.with_core(|c| c.flushed_stats())
    }

    /// Walks the whole heap and verifies every invariant: tags agree with the bitmap, the index
    /// holds exactly the free blocks in address order, no two free blocks are adjacent, block
    /// sizes add up to the mapped total, and the counters agree. Returns the first violation,
    /// naming its address. O(heap size / 1024 + free blocks).
    ///
    /// # Errors
    /// The first broken invariant, as a [`CheckError`] naming the address: the heap was
    /// corrupted (a write out of bounds in the program, or a bug here) and must not be used on.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    ///
    /// let heap = Heap::new();
    /// let mut m = hashbrown::HashMap::new_in(&heap);
    /// m.extend((0..100).map(|i| (i, i * i)));
    /// heap.check().expect("every invariant holds");
    /// ```
    pub fn check(&self) -> Result<(), CheckError> {
        self.with_core(|c| c.check())
    }

    /// Does `ptr` point into memory of this heap: inside one of its chunks (block area or
    /// metadata)? It answers for any pointer, dangling or foreign, even one into memory another
    /// thread's heap is giving back at that moment, and never reads memory the pointer leads to
    /// nor another heap's chunks.
    ///
    /// O(1) for a heap that maps its memory: every chunk is recorded with the heap's identity
    /// in the process page map (and, for the chunks the process-wide provider carves, in its
    /// segment's table), and the answer is one lookup there. A heap over a buffer and a child
    /// heap compare with their own chunk headers: O(c) in their chunks (a buffer heap's tile
    /// the buffer; a child's double in size, so a few dozen at most).
    ///
    /// - It says nothing about whether a **block is live**: a pointer to a freed block, into
    ///   free space or the untouched tail of a chunk is owned too. It is not a licence to
    ///   `deallocate`.
    /// - A **child heap**'s chunks are blocks of its parent, so the parent owns every pointer
    ///   into them (and its ancestors too); the child owns only pointers into its own chunks.
    /// - A pointer from [`Heap::allocate`] for a zero-size layout is dangling and owned by no
    ///   heap.
    /// - It works the same for heaps over a buffer ([`Heap::from_buffer`]), whose chunks are
    ///   the buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use allocator_api2::boxed::Box;
    ///
    /// let (a, b) = (Heap::new(), Heap::new());
    /// let x = Box::new_in(1u32, &a);
    /// let p: *const u32 = &*x;
    /// assert!(a.owns(p.cast()));
    /// assert!(!b.owns(p.cast()));
    /// assert!(!a.owns(&0u8));                       // the stack is no heap's
    ///
    /// let child = a.child().unwrap();
    /// let y = Box::new_in(2u32, &*child);
    /// let q: *const u32 = &*y;
    /// assert!(child.owns(q.cast()) && a.owns(q.cast()));   // the parent lent that chunk
    /// assert!(!child.owns(p.cast()));
    /// ```
    pub fn owns(&self, ptr: *const u8) -> bool {
        let addr = ptr.addr();
        self.with_core(|c| c.owns(addr))
    }

    /// Gives the heap's free memory back to the OS now, instead of waiting for the give-back
    /// threshold ([`HeapBuilder::give_back`]): the blocks cached for quick reuse are merged
    /// first, then every whole page of free memory (inside free blocks, and the tail of each
    /// chunk that was handed out before) is returned (`madvise(MADV_DONTNEED)` on Linux). The
    /// chunks stay mapped, so [`Stats::mapped`] does not change, but the resident size falls;
    /// the pages come back, reading as zero, when the heap uses them again. Returns the bytes
    /// given back.
    ///
    /// Returns 0 where nothing can go back: a heap over a caller's buffer, a child heap (its
    /// chunks are its parent's blocks: trim the parent once the child is dropped), without the
    /// `mmap` feature, on OSes other than Linux, under Miri. It neither frees blocks in use nor
    /// unmaps chunks (see [`Heap::reset`] and dropping the heap), nor touches memory the process
    /// keeps for other heaps ([`release_cached`](crate::release_cached)).
    ///
    /// The heap does not record which pages inside free blocks went back: a second call gives
    /// them back again (and counts them again), a cheap system call on pages already gone; the
    /// untouched tail of a chunk goes back only once.
    ///
    /// O(c + mapped bytes / 1024 + free blocks), one system call per free span of a page or
    /// more. Working through `&self`, it may be called while collections borrow the heap.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::Heap;
    /// use allocator_api2::vec::Vec;
    ///
    /// // Automatic give-back off: memory goes back only when asked for.
    /// let heap = Heap::builder().give_back(usize::MAX).build().unwrap();
    /// let keep: Vec<u8, &Heap> = Vec::with_capacity_in(100, &heap);
    /// let spike: Vec<u8, &Heap> = vec_of(&heap, 4 << 20); // 4 MiB, touched
    /// drop(spike);
    /// let released = heap.trim();
    /// if cfg!(all(target_os = "linux", not(miri))) {
    ///     assert!(released >= 3 << 20, "{released}");
    /// }
    /// assert!(keep.capacity() >= 100);
    /// # fn vec_of(heap: &Heap, n: usize) -> Vec<u8, &Heap> {
    /// #     let mut v = Vec::with_capacity_in(n, heap);
    /// #     v.resize(n, 1);
    /// #     v
    /// # }
    /// ```
    pub fn trim(&self) -> usize {
        self.with_core(|c| c.trim())
    }
}

/// The counters and settings, read without side effects: unlike [`Heap::stats`], it does not
/// merge the blocks cached for quick reuse (they are counted in `free` and `cached_before`, not in
/// `free_blocks` or `largest_free`), so printing a heap never changes it.
impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copy everything out first: the formatter may allocate from this very heap. No side
        // effects: the quick lists are left alone (`stats()` would merge them first).
        let stats = self.with_core(|c| c.peek_stats());
        let cfg = self.with_core(|c| c.cfg);
        f.debug_struct("Heap")
            .field("stats", &stats)
            .field("growth", &cfg.growth)
            .field("limit", &(cfg.limit != usize::MAX).then_some(cfg.limit))
            .field("quick_reuse", &cfg.quick_reuse)
            .finish()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        self.core.get_mut().give_back_all();
    }
}

/// Builds a [`Heap`] with an initial size, a growth step and an optional hard limit.
///
/// ```
/// use isoheap::Heap;
/// let heap = Heap::builder()
///     .initial(1 << 20)          // map 1 MiB up front
///     .limit(1 << 20)            // and never more: allocations past it fail cleanly
///     .build()
///     .expect("1 MiB heap");
/// assert!(heap.stats().mapped <= 1 << 20);
/// # let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(100, &heap);
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct HeapBuilder {
    initial: usize,
    growth: usize,
    limit: Option<usize>,
    quick_reuse: bool,
    warm: usize,
    budget: Option<usize>,
    give_back: usize,
    checked: bool,
    zero_on_free: bool,
}

impl HeapBuilder {
    /// Bytes of block space to map when the heap is built (0: map on first use).
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::builder().initial(1 << 20).build()?;
    /// assert!(heap.stats().free >= 1 << 20);            // mapped up front, no growth until then
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn initial(mut self, bytes: usize) -> Self {
        self.initial = bytes;
        self
    }

    /// The smallest chunk mapped when the heap grows (default 64 KiB). Chunks also grow
    /// geometrically, so a heap of N bytes has O(log N) of them.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::builder().growth(1 << 20).build()?;
    /// let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(100, &heap);
    /// let w = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(64 << 10, &heap);
    /// assert!(heap.stats().mapped >= 1 << 20);          // the second chunk is at least the step
    /// # drop((v, w));
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn growth(mut self, bytes: usize) -> Self {
        self.growth = bytes;
        self
    }

    /// A hard limit on bytes mapped, metadata included. An allocation that would need more
    /// fails with `AllocError` and leaves the heap usable. A heap whose limit equals its
    /// initial size never maps again.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::vec::Vec;
    ///
    /// let heap = isoheap::Heap::builder().limit(256 << 10).build()?;
    /// let mut v: Vec<u8, _> = Vec::new_in(&heap);
    /// assert!(v.try_reserve(1 << 20).is_err());         // past the limit: an error, heap usable
    /// assert!(v.try_reserve(1 << 10).is_ok());
    /// assert!(heap.stats().mapped <= 256 << 10);
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn limit(mut self, bytes: usize) -> Self {
        self.limit = Some(bytes);
        self
    }

    /// Bytes of chunks that [`Heap::reset`] keeps mapped for the next use (default 1 MiB); the
    /// rest goes back to the OS.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut heap = isoheap::Heap::builder().warm(0).build()?;
    /// drop(allocator_api2::vec::Vec::<u8, _>::with_capacity_in(4096, &heap));
    /// heap.reset();
    /// assert_eq!(heap.stats().mapped, 0);                // nothing kept warm
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn warm(mut self, bytes: usize) -> Self {
        self.warm = bytes;
        self
    }

    /// A hard limit on bytes **in use** (blocks handed out, each counted at its size (plus the
    /// 2-byte tag in checked mode) rounded up
    /// to 16 bytes; a grow that moves counts the old and the new block while both exist). An
    /// allocation that would pass it fails with `AllocError` and changes nothing, so fallible
    /// APIs (`Vec::try_reserve`, `Box::try_new_in`, hashbrown's `try_reserve`) return `Err` and
    /// the heap stays usable; `stats().budget_refusals` counts these refusals. Unlike
    /// [`limit`](Self::limit) it does not count metadata, free space or cached blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::vec::Vec;
    ///
    /// let heap = isoheap::Heap::builder().budget(4096).build()?;
    /// let mut v: Vec<u8, _> = Vec::new_in(&heap);
    /// assert!(v.try_reserve(8192).is_err());
    /// assert_eq!(heap.stats().budget_refusals, 1);
    /// v.try_reserve(1000).expect("within the budget");
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn budget(mut self, bytes: usize) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// Free spans of at least `bytes` (default 64 KiB) are given back to the OS
    /// (`madvise(MADV_DONTNEED)` on Linux) so that the resident size falls after a spike; the
    /// memory stays mapped and is reused (reading as zero). Small frees never make a system
    /// call. A heap that refills memory it gave back raises its own threshold (up to 8 MiB), so
    /// a pattern repeated in rounds does not fault its pages in again every round.
    /// `usize::MAX` turns it off.
    ///
    /// # Examples
    ///
    /// ```
    /// // Give back free spans of 1 MiB or more (fewer system calls than the 64 KiB default), or
    /// // never (`usize::MAX`: then only `trim()`, `reset()` and dropping the heap do).
    /// let eager_less = isoheap::Heap::builder().give_back(1 << 20).build()?;
    /// let never = isoheap::Heap::builder().give_back(usize::MAX).build()?;
    /// # drop((eager_less, never));
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn give_back(mut self, bytes: usize) -> Self {
        self.give_back = bytes;
        self
    }

    /// Whether freed blocks of up to 4 KiB are kept on exact-size lists for O(1) reuse (default
    /// `true`). The lists hold at most `max(64 KiB, in_use / 8)` bytes and are merged before
    /// the heap maps more memory. In an unchecked heap it also files merged free blocks of up to
    /// 4 KiB on size-class lists (O(1) good fit for any small size, see README "How it works").
    /// With `false`, every free merges at once and every allocation is strict lowest-address
    /// first fit, at some cost in speed.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::Layout;
    ///
    /// // Strict address-ordered first fit: a freed block is reused at once by the next request
    /// // that fits, lowest address first.
    /// let heap = isoheap::Heap::builder().quick_reuse(false).build()?;
    /// let l = Layout::from_size_align(64, 8).unwrap();
    /// let (a, b) = (heap.allocate(l).unwrap(), heap.allocate(l).unwrap());
    /// // SAFETY: `a` came from this heap with layout `l`, not used afterwards.
    /// unsafe { heap.deallocate(a.cast(), l) };
    /// let c = heap.allocate(l).unwrap();
    /// assert_eq!(c.cast::<u8>(), a.cast::<u8>());
    /// # unsafe { heap.deallocate(b.cast(), l); heap.deallocate(c.cast(), l) };
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn quick_reuse(mut self, on: bool) -> Self {
        self.quick_reuse = on;
        self
    }

    /// Checked mode (default: on in builds with debug assertions or with the `checked`
    /// feature). Every pointer and layout given back is verified in O(1) before anything
    /// changes (a pointer of another heap, an interior pointer, a double free, a size or
    /// alignment other than the block's, a block whose canary or tag was overwritten, a free
    /// neighbour with a corrupted tag), and a misuse stops the program with a panic naming the
    /// address. Freed memory is poisoned (`0xDF`, the first 64 KiB of each block) and checked
    /// for writes when a small block is reused. Each block carries 2 more bytes (a tag after
    /// the caller's bytes, so blocks whose size is a multiple of 16 take one more granule),
    /// chunks carry 2 more bits per 16 bytes, and `allocate` returns exactly the size asked.
    ///
    /// ```should_panic
    /// use isoheap::Heap;
    /// use core::alloc::Layout;
    /// let heap = Heap::builder().checked(true).build().unwrap();
    /// let layout = Layout::from_size_align(24, 8).unwrap();
    /// let p = heap.allocate(layout).unwrap().cast::<u8>();
    /// unsafe {
    ///     heap.deallocate(p, layout);
    ///     heap.deallocate(p, layout); // panics: "isoheap: pointer 0x... is free already (double free)"
    /// }
    /// ```
    pub const fn checked(mut self, on: bool) -> Self {
        self.checked = on;
        self
    }

    /// Zero every block when it is freed (and all used memory on [`Heap::reset`]), so secrets
    /// do not outlive their owners in the heap (default off). Costs a write of every freed
    /// byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::boxed::Box;
    ///
    /// let heap = isoheap::Heap::builder().zero_on_free(true).build()?;
    /// let key = Box::new_in(*b"secret key bytes", &heap);
    /// drop(key);                                         // its 16 bytes are zero now
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub const fn zero_on_free(mut self, on: bool) -> Self {
        self.zero_on_free = on;
        self
    }

    /// The checked mode this builder sets.
    #[cfg(feature = "std")]
    pub(crate) const fn checked_flag(&self) -> bool {
        self.checked
    }

    /// The budget this builder sets (`usize::MAX` for none).
    #[cfg(feature = "std")]
    pub(crate) fn budget_bytes(&self) -> usize {
        self.budget.unwrap_or(usize::MAX)
    }

    /// Builds the heap, mapping the initial size if one was set.
    ///
    /// # Errors
    /// A zero growth step or limit ([`HeapError::ZeroSize`]), a limit too small for one chunk
    /// ([`HeapError::TooSmall`]), an initial size beyond the address space
    /// ([`HeapError::TooLarge`]) or above the limit ([`HeapError::LimitBelowInitial`]), the OS
    /// refusing the mapping ([`HeapError::OsRefused`]), or an initial size without the `mmap`
    /// feature ([`HeapError::NoBacking`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, HeapError};
    ///
    /// let heap = Heap::builder().initial(64 << 10).limit(1 << 20).build()?;
    /// assert!(heap.stats().mapped <= 1 << 20);
    /// let e = Heap::builder().initial(2 << 20).limit(1 << 20).build().unwrap_err();
    /// assert!(matches!(e, HeapError::LimitBelowInitial { .. }));
    /// # Ok::<(), HeapError>(())
    /// ```
    pub fn build(self) -> Result<Heap, HeapError> {
        let mut core = heap::build(
            self.initial,
            self.growth,
            self.limit,
            self.quick_reuse,
            (self.checked, self.zero_on_free),
        )?;
        core.cfg.warm = self.warm;
        core.cfg.budget = self.budget.unwrap_or(usize::MAX);
        core.cfg.give_back = self.give_back;
        Ok(Heap::from_core(core))
    }
}

#[cfg(test)]
mod tests;
