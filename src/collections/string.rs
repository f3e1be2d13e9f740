//! [`String`]: UTF-8 text in any allocator-api2 0.2 allocator, and [`format_in!`].

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use core::borrow::Borrow;
use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::{Deref, DerefMut};

/// A growable UTF-8 string in an allocator: `&Heap`, `&SyncHeap`, `SharedHeap`, `&ChildHeap`,
/// `&BufferHeap`, `&PooledHeap`, or any other allocator-api2 0.2 `Allocator`. It is
/// allocator-api2's `Vec<u8, A>` that only ever holds UTF-8, and behaves like std's `String`:
/// it derefs to `str`, compares, orders and hashes as its text, and is a [`fmt::Write`] sink.
/// [`format_in!`](crate::format_in) builds one from format arguments.
///
/// ```
/// use isoheap::Heap;
/// use isoheap::collections::String;
///
/// let heap = Heap::new();
/// let mut s = String::new_in(&heap);
/// s.push_str("hello");
/// s.push(',');
/// s.push_str(" world");
/// assert_eq!(s, "hello, world");
/// assert_eq!(s.to_uppercase(), "HELLO, WORLD");  // any `str` method, through `Deref`
/// assert!(heap.stats().in_use >= s.len());
/// ```
///
/// Growing past what the allocator can give panics (as std's `String` and allocator-api2's
/// `Vec` do); [`try_reserve`](Self::try_reserve) asks first without panicking.
pub struct String<A: Allocator> {
    vec: Vec<u8, A>,
}

impl<A: Allocator> String<A> {
    /// An empty string; allocates nothing until text is added.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::new_in(&heap);
    /// assert!(s.is_empty());
    /// assert_eq!(heap.stats().in_use, 0);
    /// ```
    #[inline]
    pub fn new_in(alloc: A) -> String<A> {
        String {
            vec: Vec::new_in(alloc),
        }
    }

    /// An empty string with room for at least `capacity` bytes.
    ///
    /// # Panics
    /// If the allocator cannot allocate `capacity` bytes (or it exceeds `isize::MAX`).
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::with_capacity_in(100, &heap);
    /// assert!(s.capacity() >= 100);
    /// assert!(heap.stats().in_use >= 100);
    /// ```
    #[inline]
    pub fn with_capacity_in(capacity: usize, alloc: A) -> String<A> {
        String {
            vec: Vec::with_capacity_in(capacity, alloc),
        }
    }

    /// A copy of `s` in `alloc`.
    ///
    /// # Panics
    /// If the allocator cannot allocate `s.len()` bytes.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::from_str_in("ünïcode", &heap);
    /// assert_eq!(s.len(), 9);
    /// assert_eq!(s, "ünïcode");
    /// ```
    #[inline]
    pub fn from_str_in(s: &str, alloc: A) -> String<A> {
        let mut out = String::with_capacity_in(s.len(), alloc);
        out.push_str(s);
        out
    }

    /// Appends a character (1 to 4 bytes of UTF-8).
    ///
    /// # Panics
    /// If the allocator cannot grow the string.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::new_in(&heap);
    /// s.push('a');
    /// s.push('€');
    /// assert_eq!((s.as_str(), s.len()), ("a€", 4));
    /// ```
    #[inline]
    pub fn push(&mut self, c: char) {
        self.vec
            .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }

    /// Appends a string slice.
    ///
    /// # Panics
    /// If the allocator cannot grow the string.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::new_in(&heap);
    /// s.push_str("foo");
    /// s.push_str("bar");
    /// assert_eq!(s, "foobar");
    /// ```
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        self.vec.extend_from_slice(s.as_bytes());
    }

    /// Makes room for at least `additional` more bytes without panicking.
    ///
    /// # Errors
    /// If the allocator cannot grow the string (or the capacity overflows); the string is
    /// unchanged then.
    ///
    /// ```
    /// let heap = isoheap::Heap::builder().budget(1024).build().unwrap();
    /// let mut s = isoheap::collections::String::new_in(&heap);
    /// assert!(s.try_reserve(100).is_ok());
    /// assert!(s.try_reserve(1 << 20).is_err());
    /// assert!(s.capacity() >= 100);
    /// ```
    #[inline]
    pub fn try_reserve(
        &mut self,
        additional: usize,
    ) -> Result<(), allocator_api2::collections::TryReserveError> {
        self.vec.try_reserve(additional)
    }

    /// The text, as a `&str`.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::from_str_in("abc", &heap);
    /// let t: &str = s.as_str();
    /// assert_eq!(t, "abc");
    /// ```
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: `vec` only ever holds UTF-8: every method that adds bytes adds a whole `str`
        // or `char`, and `truncate` cuts only on a char boundary.
        unsafe { core::str::from_utf8_unchecked(&self.vec) }
    }

    /// The text, as a `&mut str` (which can change it only in ways that keep it UTF-8).
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::from_str_in("abc", &heap);
    /// s.as_mut_str().make_ascii_uppercase();
    /// assert_eq!(s, "ABC");
    /// ```
    #[inline]
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: `vec` holds UTF-8 (see `as_str`), and `&mut str` lets safe code change it
        // only in ways that keep it UTF-8.
        unsafe { core::str::from_utf8_unchecked_mut(&mut self.vec) }
    }

    /// The text's bytes.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::from_str_in("hi", &heap);
    /// assert_eq!(s.as_bytes(), b"hi");
    /// ```
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.vec
    }

    /// The bytes, as the allocator-api2 `Vec` they were kept in (no copy).
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::from_str_in("hi", &heap);
    /// let bytes: isoheap::allocator_api2::vec::Vec<u8, _> = s.into_bytes();
    /// assert_eq!(bytes, b"hi");
    /// ```
    #[inline]
    pub fn into_bytes(self) -> Vec<u8, A> {
        self.vec
    }

    /// The length in bytes (not in `char`s).
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::from_str_in("é", &heap);
    /// assert_eq!(s.len(), 2);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.vec.len()
    }

    /// Whether the string has no text.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::new_in(&heap);
    /// assert!(s.is_empty());
    /// s.push('x');
    /// assert!(!s.is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    /// Bytes the string holds without growing.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::with_capacity_in(10, &heap);
    /// assert!(s.capacity() >= 10);
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// Removes all text, keeping the capacity.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::from_str_in("abc", &heap);
    /// let cap = s.capacity();
    /// s.clear();
    /// assert!(s.is_empty());
    /// assert_eq!(s.capacity(), cap);
    /// ```
    #[inline]
    pub fn clear(&mut self) {
        self.vec.clear();
    }

    /// Shortens the string to `new_len` bytes; does nothing if it is not longer than that.
    ///
    /// # Panics
    /// If `new_len` is shorter than the string and does not lie on a `char` boundary (as std's
    /// `String::truncate`).
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::from_str_in("héllo", &heap);
    /// s.truncate(3);
    /// assert_eq!(s, "hé");
    /// s.truncate(10);
    /// assert_eq!(s, "hé");
    /// ```
    ///
    /// ```should_panic
    /// let heap = isoheap::Heap::new();
    /// let mut s = isoheap::collections::String::from_str_in("é", &heap);
    /// s.truncate(1); // panics: inside 'é'
    /// ```
    #[inline]
    #[track_caller]
    pub fn truncate(&mut self, new_len: usize) {
        if new_len <= self.len() {
            assert!(
                self.is_char_boundary(new_len),
                "isoheap::collections::String::truncate: {new_len} is not a char boundary"
            );
            self.vec.truncate(new_len);
        }
    }

    /// The allocator the string lives in.
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let s = isoheap::collections::String::new_in(&heap);
    /// assert!(core::ptr::eq(*s.allocator(), &heap));
    /// ```
    #[inline]
    pub fn allocator(&self) -> &A {
        self.vec.allocator()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The crate's own heap types whose blocks stay allocated while a shared borrow of the heap
/// lives: none of them can be reset or dropped through `&self` (`Heap::reset`,
/// `ChildHeap::reset` and `BufferHeap::reset` take `&mut self`, a `PooledHeap` resets its heap
/// only when dropped or through `DerefMut`, a `SyncHeap` has no reset). So text in a
/// `String<&'h H>` may be [leaked](String::leak) as a `&'h mut str`. Sealed: implemented for
/// `Heap`, `ChildHeap`, `BufferHeap`, `PooledHeap` and `SyncHeap` only.
///
/// ```
/// fn keep<'h, H: isoheap::collections::OwnHeap>(s: isoheap::collections::String<&'h H>) -> &'h str
/// where
///     &'h H: isoheap::allocator_api2::alloc::Allocator,
/// {
///     s.leak()
/// }
/// let heap = isoheap::Heap::new();
/// assert_eq!(keep(isoheap::format_in!(&heap, "{}", 1)), "1");
/// ```
///
/// Text in an owned handle (a `SharedHeap`) or in any other allocator cannot be leaked this way:
///
/// ```compile_fail,E0599
/// let shared = isoheap::SharedHeap::new();
/// let s = isoheap::format_in!(shared.clone(), "text");
/// let text = s.leak(); // error: `leak` needs a `String<&'h H>` with `H: OwnHeap`
/// ```
pub trait OwnHeap: sealed::Sealed {}

macro_rules! own_heap {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl OwnHeap for $ty {}
    )*};
}
own_heap!(
    crate::Heap,
    crate::ChildHeap<'_>,
    crate::BufferHeap<'_>,
    crate::PooledHeap<'_>
);
#[cfg(feature = "mmap")]
own_heap!(crate::SyncHeap);

impl<'h, H: OwnHeap> String<&'h H>
where
    &'h H: Allocator,
{
    /// Gives up the string and returns its text, which stays in the heap (never freed on its
    /// own) until the heap is reset or dropped, neither of which can happen while the
    /// `&'h mut str` lives. Only for strings in the crate's own heaps borrowed for `'h` (see
    /// [`OwnHeap`]): an arbitrary allocator might free its memory through a shared reference.
    ///
    /// ```
    /// use isoheap::Heap;
    /// use isoheap::collections::String;
    ///
    /// let heap = Heap::new();
    /// let name: &mut str = String::from_str_in("ada", &heap).leak();
    /// name.make_ascii_uppercase();
    /// assert_eq!(name, "ADA");
    /// ```
    ///
    /// The heap stays borrowed for as long as the text is used:
    ///
    /// ```compile_fail,E0502
    /// let mut heap = isoheap::Heap::new();
    /// let name = isoheap::collections::String::from_str_in("ada", &heap).leak();
    /// heap.reset(); // error: `heap` is borrowed by `name`
    /// name.make_ascii_uppercase();
    /// ```
    #[inline]
    pub fn leak(self) -> &'h mut str {
        let bytes: &'h mut [u8] = self.vec.leak();
        // SAFETY: the bytes are the string's, which are UTF-8 (see `as_str`).
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }
}

impl<A: Allocator> Deref for String<A> {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<A: Allocator> DerefMut for String<A> {
    #[inline]
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl<A: Allocator> AsRef<str> for String<A> {
    #[inline]
    fn as_ref(&self) -> &str {
        self
    }
}

impl<A: Allocator> AsRef<[u8]> for String<A> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<A: Allocator> Borrow<str> for String<A> {
    #[inline]
    fn borrow(&self) -> &str {
        self
    }
}

impl<A: Allocator> fmt::Display for String<A> {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl<A: Allocator> fmt::Debug for String<A> {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<A: Allocator> fmt::Write for String<A> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }

    #[inline]
    fn write_char(&mut self, c: char) -> fmt::Result {
        self.push(c);
        Ok(())
    }
}

impl<A: Allocator + Clone> Clone for String<A> {
    #[inline]
    fn clone(&self) -> Self {
        String {
            vec: self.vec.clone(),
        }
    }
}

impl<A: Allocator, B: Allocator> PartialEq<String<B>> for String<A> {
    #[inline]
    fn eq(&self, other: &String<B>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<A: Allocator> Eq for String<A> {}

impl<A: Allocator> PartialEq<str> for String<A> {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<A: Allocator> PartialEq<&str> for String<A> {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<A: Allocator> PartialEq<String<A>> for str {
    #[inline]
    fn eq(&self, other: &String<A>) -> bool {
        self == other.as_str()
    }
}

impl<A: Allocator> PartialEq<String<A>> for &str {
    #[inline]
    fn eq(&self, other: &String<A>) -> bool {
        *self == other.as_str()
    }
}

impl<A: Allocator> PartialOrd for String<A> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<A: Allocator> Ord for String<A> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl<A: Allocator> Hash for String<A> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<A: Allocator> Extend<char> for String<A> {
    fn extend<I: IntoIterator<Item = char>>(&mut self, iter: I) {
        for c in iter {
            self.push(c);
        }
    }
}

impl<'a, A: Allocator> Extend<&'a str> for String<A> {
    fn extend<I: IntoIterator<Item = &'a str>>(&mut self, iter: I) {
        for s in iter {
            self.push_str(s);
        }
    }
}

/// Formats its arguments into a new [`String`](crate::collections::String) in the given
/// allocator (any of the crate's: `&heap`, `&sync_heap`, `shared_heap.clone()`, `&child`,
/// `&buffer_heap`, `&pooled`), like `format!`:
/// `format_in!(alloc, "format string", args...)`.
///
/// # Panics
/// If the allocator cannot hold the text, or a `Display`/`Debug` implementation returns an
/// error (as `format!`).
///
/// ```
/// use isoheap::{Heap, format_in};
///
/// let heap = Heap::new();
/// let (user, n) = ("ada", 3);
/// let line = format_in!(&heap, "{user} has {n} item{}", if n == 1 { "" } else { "s" });
/// assert_eq!(line, "ada has 3 items");
/// let sync = isoheap::SyncHeap::new();
/// assert_eq!(format_in!(&sync, "{:>4}", 7), "   7");
/// ```
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(all(feature = "allocator-api2", feature = "std"))))]
macro_rules! format_in {
    ($alloc:expr, $($arg:tt)+) => {{
        let mut s = $crate::collections::String::new_in($alloc);
        ::core::fmt::Write::write_fmt(&mut s, ::core::format_args!($($arg)+))
            .expect("a formatting trait implementation returned an error");
        s
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Heap;
    use core::fmt::Write;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn builds_edits_and_reads_like_std() {
        let heap = Heap::new();
        let mut s = String::with_capacity_in(4, &heap);
        assert!(s.is_empty() && s.capacity() >= 4);
        s.push_str("héllo");
        s.push(' ');
        s.push('🦀');
        write!(s, " {}+{}={}", 1, 2, 1 + 2).unwrap();
        let mut std_s = std::string::String::from("héllo 🦀");
        write!(std_s, " {}+{}={}", 1, 2, 1 + 2).unwrap();
        assert_eq!(s.as_str(), std_s);
        assert_eq!(s.len(), std_s.len());
        assert_eq!(s.as_bytes(), std_s.as_bytes());
        assert_eq!(std::format!("{s}|{s:?}"), std::format!("{std_s}|{std_s:?}"));
        s.as_mut_str().make_ascii_uppercase();
        assert!(s.starts_with("HéLLO"));
        s.truncate(6);
        assert_eq!(s, "HéLLO");
        s.truncate(100);
        assert_eq!(s.len(), 6);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.truncate(2)));
        assert!(r.is_err(), "2 is inside 'é'");
        assert_eq!(s, "HéLLO", "unchanged by the refused truncate");
        let cap = s.capacity();
        s.clear();
        assert_eq!((s.len(), s.capacity()), (0, cap));
        s.extend(['a', 'b']);
        s.extend(["cd", "e"]);
        assert_eq!(s, "abcde");
        let bytes = s.into_bytes();
        assert_eq!(&bytes[..], b"abcde");
        heap.check().unwrap();
    }

    #[test]
    fn compares_orders_and_hashes_as_str() {
        let heap = Heap::new();
        let other = Heap::new();
        let a = String::from_str_in("apple", &heap);
        let b = String::from_str_in("banana", &other);
        let a2 = a.clone();
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert!(a == "apple" && "apple" == a && *"apple" == a && a == *"apple");
        assert!(a < String::from_str_in("apples", &other));
        assert_eq!(a.cmp(&a2), Ordering::Equal);
        let c = String::from_str_in("banana", &heap);
        assert!(a < c && c > a);
        let h = RandomState::new();
        assert_eq!(h.hash_one(&a), h.hash_one("apple"));
        assert_ne!(h.hash_one(&a), h.hash_one(&c));
        // The clone is a copy in the same heap, not a second reference to the bytes.
        assert_ne!(a.as_ptr(), a2.as_ptr());
        assert!(core::ptr::eq(*a2.allocator(), &heap));
    }

    #[test]
    fn leak_and_format_in() {
        let mut heap = Heap::new();
        {
            let s = crate::format_in!(&heap, "{}-{:03}", "id", 7);
            assert_eq!(s, "id-007");
            let kept = s.leak();
            kept.make_ascii_uppercase();
            assert_eq!(kept, "ID-007");
            assert!(heap.stats().in_use >= 6);
        }
        heap.reset();
        assert_eq!(heap.stats().in_use, 0);
        let empty = crate::format_in!(&heap, "{}", "");
        assert_eq!((empty.len(), heap.stats().in_use), (0, 0));
        heap.check().unwrap();
    }
}
