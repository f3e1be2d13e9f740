//! Small helpers for tests that write and verify blocks by hand: layouts, buffers, a per-byte
//! pattern, zero checks, and panic messages.

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// `Layout::from_size_align(size, align).unwrap()`.
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// An uninitialised buffer of `len` bytes for `Heap::from_buffer`.
pub fn buffer(len: usize) -> Box<[MaybeUninit<u8>]> {
    vec![MaybeUninit::uninit(); len].into_boxed_slice()
}

/// The address of a block.
pub fn addr<T: ?Sized>(p: NonNull<T>) -> usize {
    p.cast::<u8>().addr().get()
}

/// Byte `i` of the pattern tagged `tag`: differs for every position (mod 2^16) and tag.
pub fn byte(i: usize, tag: u8) -> u8 {
    (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31) ^ tag
}

/// Fills `len` bytes at `p` with the pattern of `tag` ([`byte`]).
///
/// # Safety
/// `p..p+len` is writable.
pub unsafe fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    for i in 0..len {
        // SAFETY: inside the range the caller vouches for.
        unsafe { p.add(i).write(byte(i, tag)) };
    }
}

/// Asserts bytes `from..to` at `p` hold the pattern [`fill`] wrote with `tag`.
///
/// # Safety
/// `p+from..p+to` is readable.
pub unsafe fn assert_pattern(p: NonNull<u8>, from: usize, to: usize, tag: u8, what: &str) {
    for i in from..to {
        // SAFETY: inside the range the caller vouches for.
        let got = unsafe { p.add(i).read() };
        assert_eq!(
            got,
            byte(i, tag),
            "{what}: byte {i} (of {from}..{to}) at {p:p}"
        );
    }
}

/// Asserts `len` bytes at `p` hold the pattern [`fill`] wrote with `tag`.
///
/// # Safety
/// `p..p+len` is readable.
pub unsafe fn assert_filled(p: NonNull<u8>, len: usize, tag: u8, what: &str) {
    for i in 0..len {
        // SAFETY: inside the range the caller vouches for.
        let got = unsafe { p.add(i).read() };
        assert_eq!(got, byte(i, tag), "{what}: byte {i} of {len} at {p:p}");
    }
}

/// Asserts `len` bytes at `p` are zero.
///
/// # Safety
/// `p..p+len` is readable.
pub unsafe fn assert_zero(p: NonNull<u8>, len: usize, what: &str) {
    // SAFETY: the caller vouches for the range.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    if let Some(i) = s.iter().position(|&b| b != 0) {
        panic!(
            "{what}: byte {i} of {len} at {p:p} is {:#x}, not zero",
            s[i]
        );
    }
}

/// Are all `len` bytes at `p` equal to `v`?
///
/// # Safety
/// `p..p+len` is readable.
pub unsafe fn all_are(p: NonNull<u8>, len: usize, v: u8) -> bool {
    // SAFETY: the caller vouches for the range.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    // One memcmp of the slice with itself shifted: fast in debug builds.
    len == 0 || (s[0] == v && s[1..] == s[..len - 1])
}

/// The message of a caught panic (empty if it was not text).
pub fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f`, recording a panic as a failure named `what` (so one test reports every failing
/// case of a loop, not only the first); [`report`] fails with all of them.
pub fn attempt(failures: &mut Vec<String>, what: String, f: impl FnOnce()) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(f)) {
        failures.push(format!("{what}: {}", panic_text(e)));
    }
}

/// Fails with every failure [`attempt`] recorded, if any.
pub fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
