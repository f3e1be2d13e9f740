//! One trait over every way into an isoheap heap ([`Front`]) and its implementations:
//!
//! - [`Api2`]: an allocator value through allocator-api2 0.2's `Allocator` (feature
//!   `allocator-api2`): `&Heap`, a `BufferHeap`'s `&Heap`, `&SyncHeap`, `SharedHeap`;
//! - [`Core`]: the same through core's unstable `Allocator` (feature `nightly`);
//! - [`Methods`]: the inherent methods of `Heap` (so of a `BufferHeap`, through `Deref`) and of
//!   `SyncHeap`;
//! - [`Global`]: a `GlobalHeap` through `GlobalAlloc` (feature `mmap`), which has no zero sizes,
//!   keeps the alignment on `realloc` and has no zeroing grow of its own ([`Caps::GLOBAL`]).

use core::alloc::Layout;
use core::ptr::NonNull;
use isoheap::{AllocError, Heap, Stats};

/// What an allocation returns through every front end: the block, or isoheap's `AllocError`
/// (every front end's error is a unit struct; `GlobalAlloc`'s null maps to it too).
pub type Block = Result<NonNull<[u8]>, AllocError>;

/// What a front end's contract allows and promises (the `Allocator` traits' or `GlobalAlloc`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The returned length is the documented one: exactly the size in checked mode, else the
    /// size rounded up to 16 (`Heap::allocate`'s docs).
    pub exact_len: bool,
    /// A block may be freed or resized with any size between the request and the returned
    /// length (the `Allocator` contract's "fits").
    pub fit_range: bool,
    /// A resize may ask for another alignment.
    pub align_change: bool,
    /// Zero-size layouts may be asked for.
    pub zero_size: bool,
    /// `grow_zeroed` is the front end's own (else [`Front::grow_zeroed`] zeroes the new bytes
    /// itself after a plain grow, and there is nothing of the heap's to test in it).
    pub grow_zeroes: bool,
}

impl Caps {
    /// The `Allocator` traits and the inherent methods.
    pub const ALLOCATOR: Caps = Caps {
        exact_len: true,
        fit_range: true,
        align_change: true,
        zero_size: true,
        grow_zeroes: true,
    };
    /// `GlobalAlloc`: exact layouts, no zero sizes, `realloc` keeps the alignment, no zeroing
    /// grow; the length is what was asked for.
    pub const GLOBAL: Caps = Caps {
        exact_len: false,
        fit_range: false,
        align_change: false,
        zero_size: false,
        grow_zeroes: false,
    };
}

/// One way into a heap: the allocation methods (errors mapped to [`AllocError`]) and the heap's
/// `stats`/`check`.
pub trait Front {
    /// Names the front end (and the heap's configuration) in failure messages.
    fn name(&self) -> &str;
    /// What the front end's contract allows; [`Caps::ALLOCATOR`] unless it says otherwise.
    fn caps(&self) -> Caps {
        Caps::ALLOCATOR
    }
    /// `Allocator::allocate` (or `GlobalAlloc::alloc`).
    fn allocate(&self, l: Layout) -> Block;
    /// `Allocator::allocate_zeroed` (or `GlobalAlloc::alloc_zeroed`).
    fn allocate_zeroed(&self, l: Layout) -> Block;
    /// `Allocator::deallocate` (or `GlobalAlloc::dealloc`).
    ///
    /// # Safety
    /// As for `Allocator::deallocate`: `p` is a live block of this heap that `l` fits (unless
    /// the caller plants a misuse on purpose, which the heap must catch).
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout);
    /// `Allocator::grow` (or `GlobalAlloc::realloc`).
    ///
    /// # Safety
    /// As for `Allocator::grow`, except that `new.size() < old.size()` is allowed (the heap
    /// refuses it).
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block;
    /// `Allocator::grow_zeroed`; where the front end has none ([`Caps::grow_zeroes`] false), a
    /// plain grow whose new bytes this method zeroes.
    ///
    /// # Safety
    /// As for [`Front::grow`].
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block;
    /// `Allocator::shrink` (or `GlobalAlloc::realloc`).
    ///
    /// # Safety
    /// As for `Allocator::shrink`, except that `new.size() > old.size()` is allowed (the heap
    /// refuses it).
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block;
    /// The heap's `stats()` (which flushes its quick lists).
    fn stats(&self) -> Stats;
    /// The heap's `check()`, plus whatever else the front end can verify, as text.
    fn check(&self) -> Result<(), String>;
    /// Is the heap in checked mode (`HeapBuilder::checked`: a 2-byte tag after every block)?
    fn checked(&self) -> bool;
}

/// Whether the crate's heaps are in checked mode by default (builds with debug assertions or
/// the `checked` feature): what a `SyncHeap`'s arenas and a `GlobalHeap` use, as `Heap::new()`
/// does.
pub fn checked_default() -> bool {
    Heap::new().is_checked()
}

/// The heap behind an allocator value: its `stats`, `check` and checked mode.
pub trait Inspect {
    /// The heap's `stats()`.
    fn stats(&self) -> Stats;
    /// The heap's `check()`, as text.
    fn check(&self) -> Result<(), String>;
    /// Is the heap in checked mode?
    fn checked(&self) -> bool;
}

impl Inspect for Heap {
    fn stats(&self) -> Stats {
        Heap::stats(self)
    }
    fn check(&self) -> Result<(), String> {
        Heap::check(self).map_err(|e| e.to_string())
    }
    fn checked(&self) -> bool {
        self.is_checked()
    }
}

/// Implements [`Inspect`] for a handle that derefs to a heap that has it.
macro_rules! inspect_through_deref {
    ($handle:ty) => {
        impl Inspect for $handle {
            fn stats(&self) -> Stats {
                Inspect::stats(&**self)
            }
            fn check(&self) -> Result<(), String> {
                Inspect::check(&**self)
            }
            fn checked(&self) -> bool {
                Inspect::checked(&**self)
            }
        }
    };
}

inspect_through_deref!(isoheap::BufferHeap<'_>);

#[cfg(feature = "mmap")]
impl Inspect for isoheap::SyncHeap {
    fn stats(&self) -> Stats {
        isoheap::SyncHeap::stats(self)
    }
    fn check(&self) -> Result<(), String> {
        isoheap::SyncHeap::check(self).map_err(|e| e.to_string())
    }
    fn checked(&self) -> bool {
        checked_default()
    }
}

#[cfg(all(feature = "mmap", feature = "std"))]
inspect_through_deref!(isoheap::SharedHeap);

impl<T: Inspect + ?Sized> Inspect for &T {
    fn stats(&self) -> Stats {
        (**self).stats()
    }
    fn check(&self) -> Result<(), String> {
        (**self).check()
    }
    fn checked(&self) -> bool {
        (**self).checked()
    }
}

/// Implements [`Front`] for `$wrapper<A>`, an allocator value `A` (the wrapper's field `a`)
/// driven through the `Allocator` trait `$tr`, whose error is `$err`.
#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
macro_rules! allocator_front {
    ($wrapper:ident, $tr:path, $err:path) => {
        impl<A: $tr + Inspect> $wrapper<A> {
            /// Wraps the allocator value `a`, named `name` in failure messages.
            pub fn new(a: A, name: &'static str) -> Self {
                $wrapper { a, name }
            }
        }

        impl<A: $tr + Inspect> Front for $wrapper<A> {
            fn name(&self) -> &str {
                self.name
            }
            fn allocate(&self, l: Layout) -> Block {
                <A as $tr>::allocate(&self.a, l).map_err(|$err| AllocError)
            }
            fn allocate_zeroed(&self, l: Layout) -> Block {
                <A as $tr>::allocate_zeroed(&self.a, l).map_err(|$err| AllocError)
            }
            unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
                // SAFETY: the caller keeps `Allocator::deallocate`'s contract (or plants a
                // misuse on purpose), as this method's own contract says.
                unsafe { <A as $tr>::deallocate(&self.a, p, l) }
            }
            unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: the caller keeps `Allocator::grow`'s contract (a smaller `new` is
                // refused by the heap, not undefined).
                unsafe { <A as $tr>::grow(&self.a, p, old, new) }.map_err(|$err| AllocError)
            }
            unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: as for `grow`.
                unsafe { <A as $tr>::grow_zeroed(&self.a, p, old, new) }.map_err(|$err| AllocError)
            }
            unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: the caller keeps `Allocator::shrink`'s contract (a larger `new` is
                // refused by the heap, not undefined).
                unsafe { <A as $tr>::shrink(&self.a, p, old, new) }.map_err(|$err| AllocError)
            }
            fn stats(&self) -> Stats {
                self.a.stats()
            }
            fn check(&self) -> Result<(), String> {
                self.a.check()
            }
            fn checked(&self) -> bool {
                self.a.checked()
            }
        }
    };
}

/// An allocator value (`&Heap`, a `BufferHeap`'s `&Heap`, `&SyncHeap`, `SharedHeap`) through
/// allocator-api2 0.2's `Allocator`.
#[cfg(feature = "allocator-api2")]
pub struct Api2<A> {
    /// The allocator.
    pub a: A,
    /// Its name in failure messages.
    pub name: &'static str,
}

#[cfg(feature = "allocator-api2")]
allocator_front!(
    Api2,
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError
);

/// An allocator value through core's unstable `Allocator` (feature `nightly`).
#[cfg(feature = "nightly")]
pub struct Core<A> {
    /// The allocator.
    pub a: A,
    /// Its name in failure messages.
    pub name: &'static str,
}

#[cfg(feature = "nightly")]
allocator_front!(Core, core::alloc::Allocator, core::alloc::AllocError);

/// The inherent methods of a heap (`Heap`, so a `BufferHeap` through `Deref`, or `SyncHeap`),
/// named in failure messages by the second field.
pub struct Methods<'h, H: ?Sized>(pub &'h H, pub &'static str);

/// Implements [`Front`] for [`Methods`] of `$heap`, whose inherent methods mirror `Allocator`.
macro_rules! methods_front {
    ($heap:ty) => {
        impl Front for Methods<'_, $heap> {
            fn name(&self) -> &str {
                self.1
            }
            fn allocate(&self, l: Layout) -> Block {
                self.0.allocate(l)
            }
            fn allocate_zeroed(&self, l: Layout) -> Block {
                self.0.allocate_zeroed(l)
            }
            unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
                // SAFETY: the caller keeps the inherent method's contract (`Allocator`'s), or
                // plants a misuse on purpose.
                unsafe { self.0.deallocate(p, l) }
            }
            unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: the caller keeps `Allocator::grow`'s contract.
                unsafe { self.0.grow(p, old, new) }
            }
            unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: the caller keeps `Allocator::grow_zeroed`'s contract.
                unsafe { self.0.grow_zeroed(p, old, new) }
            }
            unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
                // SAFETY: the caller keeps `Allocator::shrink`'s contract.
                unsafe { self.0.shrink(p, old, new) }
            }
            fn stats(&self) -> Stats {
                Inspect::stats(self.0)
            }
            fn check(&self) -> Result<(), String> {
                Inspect::check(self.0)
            }
            fn checked(&self) -> bool {
                Inspect::checked(self.0)
            }
        }
    };
}

methods_front!(Heap);
#[cfg(feature = "mmap")]
methods_front!(isoheap::SyncHeap);

/// A `GlobalHeap` (not the program's allocator) through `GlobalAlloc`: grow and shrink are
/// `realloc`, which keeps the alignment (a resize to another alignment panics); there are no
/// zero sizes (asking for one panics); null is `Err(AllocError)`, with the old block intact.
#[cfg(feature = "mmap")]
pub struct Global<'h>(pub &'h isoheap::GlobalHeap);

#[cfg(feature = "mmap")]
impl Global<'_> {
    fn block(p: *mut u8, size: usize) -> Block {
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, size))
            .ok_or(AllocError)
    }

    fn alloc(&self, l: Layout, zero: bool) -> Block {
        use core::alloc::GlobalAlloc;
        assert!(l.size() > 0, "GlobalAlloc::alloc takes no zero size");
        // SAFETY: a non-zero size (asserted).
        let p = unsafe {
            if zero {
                self.0.alloc_zeroed(l)
            } else {
                self.0.alloc(l)
            }
        };
        Self::block(p, l.size())
    }
}

#[cfg(feature = "mmap")]
impl Front for Global<'_> {
    fn name(&self) -> &str {
        "GlobalHeap as GlobalAlloc"
    }
    fn caps(&self) -> Caps {
        Caps::GLOBAL
    }
    fn allocate(&self, l: Layout) -> Block {
        self.alloc(l, false)
    }
    fn allocate_zeroed(&self, l: Layout) -> Block {
        self.alloc(l, true)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        use core::alloc::GlobalAlloc;
        // SAFETY: the caller keeps `GlobalAlloc::dealloc`'s contract (exact layout), or plants
        // a misuse on purpose.
        unsafe { self.0.dealloc(p.as_ptr(), l) }
    }
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        use core::alloc::GlobalAlloc;
        assert_eq!(old.align(), new.align(), "realloc keeps the alignment");
        // SAFETY: the caller keeps `realloc`'s contract: `p` is live with `old` (exact), and
        // `new` is a valid layout of the same alignment, so its size rounded up to it does not
        // overflow isize; the caller never asks for size 0.
        Self::block(
            unsafe { self.0.realloc(p.as_ptr(), old, new.size()) },
            new.size(),
        )
    }
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: forwarded contract.
        let b = unsafe { self.grow(p, old, new) }?;
        let tail = new.size().saturating_sub(old.size());
        // SAFETY: the new block has `new.size()` bytes; the tail past the old size is ours.
        unsafe {
            b.cast::<u8>()
                .add(old.size().min(new.size()))
                .write_bytes(0, tail)
        };
        Ok(b)
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Block {
        // SAFETY: as for grow (`realloc` takes both directions).
        unsafe { self.grow(p, old, new) }
    }
    fn stats(&self) -> Stats {
        self.0.heap().stats()
    }
    fn check(&self) -> Result<(), String> {
        self.0.heap().check().map_err(|e| e.to_string())
    }
    fn checked(&self) -> bool {
        checked_default()
    }
}
