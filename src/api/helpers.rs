//! Bump-style conveniences on [`Heap`]: move a value, a string or a slice into the heap and get
//! a `&mut` to it back, as bumpalo's `Bump::alloc` does. Through `Deref` they work on every
//! wrapper too ([`ChildHeap`](crate::ChildHeap), [`BufferHeap`](crate::BufferHeap),
//! [`PooledHeap`](crate::PooledHeap)).
//!
//! The rules they share are documented on [`Heap::alloc`].

// Every helper returns a `&mut` to a new block from `&self`: each is a distinct block, so no two
// of them alias, which is what the lint guards against.
#![allow(clippy::mut_from_ref)]

use super::{AllocError, Heap};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Reports a failed helper: out of memory, or a slice whose size overflows `isize`.
#[cold]
#[inline(never)]
#[track_caller]
fn failed(what: &str, len: usize, elem: usize) -> ! {
    panic!(
        "isoheap: Heap::{what} failed: out of memory ({len} x {elem} bytes; the heap's limit, \
         budget or the OS refused, or the size overflows). Use the `try_` variant to handle it."
    )
}

impl Heap {
    /// Room for `len` values of `T`, uninitialised: a dangling, aligned pointer when that is
    /// zero bytes (no call into the heap), else a new block of this heap.
    #[inline]
    fn room_for<T>(&self, len: usize) -> Result<NonNull<T>, AllocError> {
        let layout = Layout::array::<T>(len).map_err(|_| AllocError)?;
        if layout.size() == 0 {
            return Ok(NonNull::dangling());
        }
        Ok(self.allocate(layout)?.cast::<T>())
    }

    /// Moves `value` into the heap and returns a reference to it, valid while the heap is
    /// borrowed. What these values cost and when they go away (the same for every `alloc_*`
    /// and `try_alloc_*` method):
    ///
    /// - Each value is one block of the heap, exactly as if a collection had allocated it. It is
    ///   never freed on its own: it is freed when the heap is [reset](Heap::reset) or dropped.
    /// - Its `Drop` never runs. A value that owns nothing outside itself (numbers, `&str`, arrays of
    ///   them) loses nothing. A value that owns memory elsewhere keeps it: a `Vec<T, &Heap>` stored
    ///   this way leaks its buffer into the heap until the heap is reset or dropped, a
    ///   `std::vec::Vec` leaks its buffer to the global allocator for good, and a file handle stays
    ///   open. That is memory-safe (as `core::mem::forget` is), just wasteful: drop such values
    ///   yourself (`core::ptr::drop_in_place`) or do not put them here.
    /// - The `&mut T` borrows the heap, so the heap cannot be reset (`&mut self`), moved or dropped
    ///   while any of these references lives:
    ///
    /// ```compile_fail,E0502
    /// use isoheap::Heap;
    /// let mut heap = Heap::new();
    /// let n = heap.alloc(41u32);
    /// heap.reset(); // error: `heap` is borrowed by `n`
    /// *n += 1;
    /// ```
    ///
    /// ```compile_fail,E0505
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let s = heap.alloc_str("hello");
    /// drop(heap); // error: `heap` is borrowed by `s`
    /// s.make_ascii_uppercase();
    /// ```
    ///
    /// Zero-sized values and empty slices take no memory and make no call into the heap.
    ///
    /// # Panics
    /// If the heap cannot allocate the block (its limit or budget, or the OS); see
    /// [`try_alloc`](Self::try_alloc).
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let point = heap.alloc((3, 4));
    /// point.0 += 1;
    /// assert_eq!(*point, (4, 4));
    /// assert!(heap.stats().in_use >= 8);
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc<T>(&self, value: T) -> &mut T {
        match self.try_alloc(value) {
            Ok(r) => r,
            Err(_) => failed("alloc", 1, size_of::<T>()),
        }
    }

    /// Like [`alloc`](Self::alloc), returning an error instead of panicking.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block; `value` is dropped then and the
    /// heap is unchanged.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::builder().budget(64).build().unwrap();
    /// assert_eq!(*heap.try_alloc(7u8).unwrap(), 7);
    /// assert!(heap.try_alloc([0u8; 4096]).is_err());  // past the budget
    /// ```
    #[inline]
    pub fn try_alloc<T>(&self, value: T) -> Result<&mut T, AllocError> {
        let p = self.room_for::<T>(1)?;
        // SAFETY: `p` is valid for writes of one `T` and aligned for it (a new block of
        // `Layout::new::<T>()`, or dangling and aligned when `T` is zero-sized); once written
        // it is initialised, no other reference to it exists, and the block stays allocated
        // while `self` is borrowed (only `reset(&mut self)` or drop frees it).
        Ok(unsafe {
            p.write(value);
            &mut *p.as_ptr()
        })
    }

    /// Allocates room for a `T`, then moves `f()` into it (so the value can be built in place,
    /// as bumpalo's `alloc_with`). `f` may allocate from this heap too. If `f` panics, the block
    /// stays allocated until the heap is reset or dropped.
    ///
    /// # Panics
    /// If the heap cannot allocate the block (`f` is not called then), or if `f` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let table = heap.alloc_with(|| [1u64; 64]);
    /// assert_eq!(table.iter().sum::<u64>(), 64);
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc_with<T, F: FnOnce() -> T>(&self, f: F) -> &mut T {
        match self.try_alloc_with(f) {
            Ok(r) => r,
            Err(_) => failed("alloc_with", 1, size_of::<T>()),
        }
    }

    /// Like [`alloc_with`](Self::alloc_with), returning an error instead of panicking.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block; `f` is not called then.
    ///
    /// # Panics
    /// If `f` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::builder().budget(1024).build().unwrap();
    /// assert!(heap.try_alloc_with(|| [0u8; 4096]).is_err());
    /// assert_eq!(heap.try_alloc_with(|| 5u16).map(|r| *r), Ok(5));
    /// ```
    #[inline]
    pub fn try_alloc_with<T, F: FnOnce() -> T>(&self, f: F) -> Result<&mut T, AllocError> {
        let p = self.room_for::<T>(1)?;
        // SAFETY: as in `try_alloc`: `p` is valid for writes of one aligned `T`, initialised
        // once written, referenced nowhere else, and allocated while `self` is borrowed. If `f`
        // panics nothing was written and no reference exists; the block just stays allocated.
        Ok(unsafe {
            p.write(f());
            &mut *p.as_ptr()
        })
    }

    /// Copies `s` into the heap. An empty string takes no memory.
    ///
    /// # Panics
    /// If the heap cannot allocate the block; see [`try_alloc_str`](Self::try_alloc_str).
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let name = heap.alloc_str("ada");
    /// name.make_ascii_uppercase();
    /// assert_eq!(name, "ADA");
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc_str(&self, s: &str) -> &mut str {
        match self.try_alloc_str(s) {
            Ok(r) => r,
            Err(_) => failed("alloc_str", s.len(), 1),
        }
    }

    /// Like [`alloc_str`](Self::alloc_str), returning an error instead of panicking.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::builder().budget(32).build().unwrap();
    /// assert_eq!(heap.try_alloc_str("short").unwrap(), "short");
    /// assert!(heap.try_alloc_str(&"long ".repeat(100)).is_err());
    /// ```
    #[inline]
    pub fn try_alloc_str(&self, s: &str) -> Result<&mut str, AllocError> {
        let bytes = self.try_alloc_slice_copy(s.as_bytes())?;
        // SAFETY: the bytes are a copy of a `str`, so valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Copies a slice of `Copy` values into the heap. An empty slice (or one of zero-sized
    /// values) takes no memory.
    ///
    /// # Panics
    /// If the heap cannot allocate the block; see
    /// [`try_alloc_slice_copy`](Self::try_alloc_slice_copy).
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let xs = heap.alloc_slice_copy(&[3, 1, 2]);
    /// xs.sort_unstable();
    /// assert_eq!(xs, &[1, 2, 3]);
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> &mut [T] {
        match self.try_alloc_slice_copy(src) {
            Ok(r) => r,
            Err(_) => failed("alloc_slice_copy", src.len(), size_of::<T>()),
        }
    }

    /// Like [`alloc_slice_copy`](Self::alloc_slice_copy), returning an error instead of
    /// panicking.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::builder().budget(64).build().unwrap();
    /// assert_eq!(heap.try_alloc_slice_copy(&[1u8, 2]).unwrap(), &[1, 2]);
    /// assert!(heap.try_alloc_slice_copy(&[0u64; 100]).is_err());
    /// ```
    #[inline]
    pub fn try_alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let p = self.room_for::<T>(src.len())?;
        // SAFETY: `p` is valid for writes of `src.len()` aligned `T`s (a new block of
        // `Layout::array::<T>(len)`, or dangling and aligned when that is zero bytes), which
        // cannot overlap `src` (a block nobody else had); once copied all `len` are initialised
        // (`T: Copy`), no other reference exists, and the block stays allocated while `self`
        // is borrowed.
        Ok(unsafe {
            p.copy_from_nonoverlapping(NonNull::from(src).cast::<T>(), src.len());
            NonNull::slice_from_raw_parts(p, src.len()).as_mut()
        })
    }

    /// Clones every element of `src` into the heap. If a `clone` panics, the block stays
    /// allocated until the heap is reset or dropped, and the clones made so far are not
    /// dropped.
    ///
    /// # Panics
    /// If the heap cannot allocate the block (see
    /// [`try_alloc_slice_clone`](Self::try_alloc_slice_clone)), or if a `clone` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let words = heap.alloc_slice_clone(&["a", "b"]);
    /// words[1] = "c";
    /// assert_eq!(words, &["a", "c"]);
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc_slice_clone<T: Clone>(&self, src: &[T]) -> &mut [T] {
        match self.try_alloc_slice_clone(src) {
            Ok(r) => r,
            Err(_) => failed("alloc_slice_clone", src.len(), size_of::<T>()),
        }
    }

    /// Like [`alloc_slice_clone`](Self::alloc_slice_clone), returning an error instead of
    /// panicking when the heap cannot allocate.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block; nothing is cloned then.
    ///
    /// # Panics
    /// If a `clone` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::builder().budget(64).build().unwrap();
    /// assert_eq!(heap.try_alloc_slice_clone(&[(); 1000]).unwrap().len(), 1000); // no memory
    /// assert!(heap.try_alloc_slice_clone(&[[0u8; 8]; 100]).is_err());
    /// ```
    #[inline]
    pub fn try_alloc_slice_clone<T: Clone>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(src.len(), |i| src[i].clone())
    }

    /// Fills a new slice of `len` values with `f(0)`, `f(1)`, ... in order. `f` may allocate
    /// from this heap too. If `f` panics, the block stays allocated until the heap is reset or
    /// dropped, and the values made so far are not dropped.
    ///
    /// # Panics
    /// If the heap cannot allocate the block (see
    /// [`try_alloc_slice_fill_with`](Self::try_alloc_slice_fill_with)), or if `f` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// let squares = heap.alloc_slice_fill_with(5, |i| i * i);
    /// assert_eq!(squares, &[0, 1, 4, 9, 16]);
    /// ```
    #[track_caller]
    #[inline]
    pub fn alloc_slice_fill_with<T, F: FnMut(usize) -> T>(&self, len: usize, f: F) -> &mut [T] {
        match self.try_alloc_slice_fill_with(len, f) {
            Ok(r) => r,
            Err(_) => failed("alloc_slice_fill_with", len, size_of::<T>()),
        }
    }

    /// Like [`alloc_slice_fill_with`](Self::alloc_slice_fill_with), returning an error instead
    /// of panicking when the heap cannot allocate.
    ///
    /// # Errors
    /// [`AllocError`] if the heap cannot allocate the block or `len` values of `T` overflow
    /// `isize`; `f` is not called then.
    ///
    /// # Panics
    /// If `f` panics.
    ///
    /// ```
    /// use isoheap::Heap;
    /// let heap = Heap::new();
    /// assert!(heap.try_alloc_slice_fill_with(usize::MAX, |_| 0u32).is_err()); // overflows
    /// assert_eq!(heap.try_alloc_slice_fill_with(3, |i| i as u8).unwrap(), &[0, 1, 2]);
    /// ```
    #[inline]
    pub fn try_alloc_slice_fill_with<T, F: FnMut(usize) -> T>(
        &self,
        len: usize,
        mut f: F,
    ) -> Result<&mut [T], AllocError> {
        let p = self.room_for::<T>(len)?;
        for i in 0..len {
            // SAFETY: `i < len`, so `p + i` is inside the room for `len` aligned `T`s (or
            // dangling and aligned for zero-sized `T`, where every offset is `p`); nothing else
            // refers to it.
            unsafe { p.add(i).write(f(i)) };
        }
        // SAFETY: all `len` elements were written above; the block is referenced nowhere else
        // and stays allocated while `self` is borrowed.
        Ok(unsafe { NonNull::slice_from_raw_parts(p, len).as_mut() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn values_strings_and_slices_live_in_the_heap() {
        let heap = Heap::new();
        let a = heap.alloc(0x1234_5678_u32);
        let b = heap.alloc_with(|| [7u16; 3]);
        let s = heap.alloc_str("héllo");
        let c = heap.alloc_slice_copy(&[1u64, 2, 3]);
        let d = heap.alloc_slice_clone(&["x", "y"]);
        let e = heap.alloc_slice_fill_with(4, |i| i as u8 * 2);
        *a += 1;
        b[2] = 9;
        s.make_ascii_uppercase();
        c.reverse();
        d.swap(0, 1);
        e[0] = 100;
        assert_eq!(*a, 0x1234_5679);
        assert_eq!(*b, [7, 7, 9]);
        assert_eq!(s, "HéLLO");
        assert_eq!(c, &[3, 2, 1]);
        assert_eq!(d, &["y", "x"]);
        assert_eq!(e, &[100, 2, 4, 6]);
        // Six blocks, each rounded to granules, none overlapping.
        let s1 = heap.stats();
        assert!(
            s1.in_use >= 4 + 6 + 6 + 24 + 2 * size_of::<&str>() + 4,
            "{s1:?}"
        );
        let addrs = [
            NonNull::from(&*a).cast::<u8>().addr().get(),
            NonNull::from(&*b).cast::<u8>().addr().get(),
            NonNull::from(&*s).cast::<u8>().addr().get(),
            NonNull::from(&*c).cast::<u8>().addr().get(),
            NonNull::from(&*d).cast::<u8>().addr().get(),
            NonNull::from(&*e).cast::<u8>().addr().get(),
        ];
        for (i, x) in addrs.iter().enumerate() {
            assert!(addrs[i + 1..].iter().all(|y| y != x), "{addrs:x?}");
        }
        heap.check().unwrap();
    }

    #[test]
    fn zero_sized_and_empty_take_nothing() {
        let heap = Heap::new();
        let unit = heap.alloc(());
        let units = heap.alloc_slice_fill_with(1000, |_| ());
        let empty = heap.alloc_slice_copy::<u64>(&[]);
        let none = heap.alloc_str("");
        let zst_arr = heap.alloc([0u32; 0]);
        assert_eq!((units.len(), empty.len(), none.len()), (1000, 0, 0));
        assert_eq!(*unit, ());
        assert_eq!(zst_arr.len(), 0);
        assert_eq!(NonNull::from(&*empty).cast::<u64>(), NonNull::dangling());
        let s = heap.stats();
        assert_eq!(
            (s.in_use, s.mapped),
            (0, 0),
            "nothing allocated, nothing mapped"
        );
    }

    #[test]
    fn drop_never_runs_and_reset_frees() {
        struct Counted<'a>(&'a Cell<u32>);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Cell::new(0);
        let mut heap = Heap::new();
        heap.alloc(Counted(&drops));
        heap.alloc_slice_fill_with(3, |_| Counted(&drops));
        assert!(heap.stats().in_use > 0);
        heap.reset();
        assert_eq!(heap.stats().in_use, 0);
        drop(heap);
        assert_eq!(drops.get(), 0, "values in the heap are never dropped");
    }

    #[test]
    fn try_variants_fail_cleanly_and_panicking_ones_panic() {
        let heap = Heap::builder().budget(64).build().unwrap();
        assert_eq!(heap.try_alloc([0u8; 100]), Err(AllocError));
        assert!(
            heap.try_alloc_with(|| -> [u8; 100] { unreachable!() })
                .is_err()
        );
        assert!(heap.try_alloc_str(&"x".repeat(100)).is_err());
        assert!(heap.try_alloc_slice_copy(&[0u8; 100]).is_err());
        assert!(heap.try_alloc_slice_clone(&[0u8; 100]).is_err());
        assert!(
            heap.try_alloc_slice_fill_with(usize::MAX / 2, |_| 0u16)
                .is_err()
        );
        assert_eq!(heap.stats().in_use, 0);
        assert_eq!(*heap.try_alloc(5u8).unwrap(), 5);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            heap.alloc_slice_copy(&[0u8; 100]);
        }));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<std::string::String>().unwrap();
        assert!(msg.contains("Heap::alloc_slice_copy failed"), "{msg}");
        heap.check().unwrap();
    }

    #[test]
    fn nested_allocation_from_the_closure() {
        let heap = Heap::new();
        let outer = heap.alloc_with(|| heap.alloc_str("inner") as &str);
        let grid = heap.alloc_slice_fill_with(2, |i| heap.alloc_slice_fill_with(2, |j| i * 2 + j));
        assert_eq!(*outer, "inner");
        assert_eq!(&*grid[1], &[2, 3]);
        heap.check().unwrap();
    }
}
