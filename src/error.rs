//! Typed errors. `AllocError` appears only at the trait edge (`api`); inside the crate every
//! failure has a reason.

#![forbid(unsafe_code)]

use core::fmt;

/// Why a heap could not be built.
///
/// Every variant has a one-line [`Display`](fmt::Display) message meant for a log line or a
/// `panic!` text; the type implements [`core::error::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeapError {
    /// A size of zero bytes was given where memory is needed (`with_capacity(0)`, `limit(0)`).
    ZeroSize,
    /// The memory given cannot hold the heap's metadata plus one block.
    TooSmall {
        /// Bytes that were given or asked for.
        requested: usize,
        /// The smallest size that works.
        minimum: usize,
    },
    /// The size does not fit the address space (more than `isize::MAX`, or more than one chunk
    /// of this heap can describe).
    TooLarge {
        /// Bytes that were asked for.
        requested: usize,
    },
    /// The initial size is larger than the hard limit on mapped bytes.
    LimitBelowInitial {
        /// The initial size asked for.
        initial: usize,
        /// The limit asked for.
        limit: usize,
    },
    /// The operating system refused to map memory.
    OsRefused {
        /// Bytes that were asked of the OS.
        bytes: usize,
        /// The OS error number (`errno`).
        errno: i32,
    },
    /// The heap has no memory to draw from: built without the `mmap` feature, the crate cannot
    /// ask the OS for memory, so a heap that must map memory up front (`Heap::with_capacity`,
    /// `HeapBuilder::initial`) cannot be built. Enable the `mmap` feature, or give the heap a
    /// buffer with `Heap::from_buffer`. (A `Heap::new()` in that build is empty and stays so:
    /// its allocations fail with `AllocError`.)
    NoBacking,
    /// A caller's buffer does not start on the alignment the heap needs.
    Misaligned {
        /// The buffer's address.
        addr: usize,
        /// The alignment needed.
        align: usize,
    },
    /// A child heap was asked of a heap that cannot lend it even its smallest chunk: the
    /// parent's budget or limit is reached.
    ParentFull {
        /// Bytes the child's smallest chunk needs.
        needed: usize,
        /// Bytes the parent could still lend (in one block).
        available: usize,
    },
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroSize => f.write_str("heap size must be greater than zero bytes"),
            Self::TooSmall { requested, minimum } => write!(
                f,
                "heap of {requested} bytes is too small: it needs at least {minimum} bytes for its metadata and one block"
            ),
            Self::TooLarge { requested } => write!(
                f,
                "heap size of {requested} bytes is larger than the address space or a heap chunk allows"
            ),
            Self::LimitBelowInitial { initial, limit } => write!(
                f,
                "initial heap size of {initial} bytes exceeds the limit of {limit} bytes"
            ),
            Self::OsRefused { bytes, errno } => write!(
                f,
                "the operating system refused to map {bytes} bytes (errno {errno})"
            ),
            Self::NoBacking => f.write_str(
                "the heap has no memory to map: isoheap was built without the `mmap` feature; enable `mmap`, or use `Heap::from_buffer` with memory of your own",
            ),
            Self::ParentFull { needed, available } => write!(
                f,
                "the parent heap cannot lend a child heap its first chunk: it needs {needed} bytes, the parent's budget or limit leaves {available}"
            ),
            Self::Misaligned { addr, align } => {
                write!(f, "buffer at {addr:#x} is not aligned to {align} bytes")
            }
        }
    }
}

impl core::error::Error for HeapError {}

/// A whole-heap invariant that [`Heap::check`](crate::Heap::check) found broken.
///
/// It names the address where the walk stopped and what was wrong there. A heap that returns
/// this error has been corrupted (by a bug in this crate or by a write out of bounds in the
/// program); it is not safe to keep using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckError {
    /// Address of the block, chunk or tag where the violation was found.
    pub addr: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "heap check failed at {:#x}: {}", self.addr, self.what)
    }
}

impl core::error::Error for CheckError {}

/// Why an allocation failed, inside the crate (the trait edge turns it into `AllocError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The size or alignment cannot be served at all (overflow, alignment above the maximum).
    Unsupported,
    /// The hard limit on mapped bytes would be passed.
    Limit,
    /// The operating system refused memory.
    Os,
    /// The heap's budget on bytes in use would be passed.
    Budget,
    /// The caller passed a pointer or layout that cannot be a live block of this heap, or the
    /// heap found its own tags corrupted. The trait edge stops the program with this message,
    /// after the heap's state is released.
    Misuse(Misuse),
}

/// A detected misuse: the address, what was wrong, and for a size or alignment that does not
/// match its block, the value given and the one the block was allocated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Misuse {
    /// The address the caller passed (or of the block found corrupted).
    pub addr: usize,
    /// What is wrong with it.
    pub what: &'static str,
    /// `(given, allocated)` for a size or alignment mismatch.
    pub values: Option<(usize, usize)>,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "isoheap: pointer {:#x} {}", self.addr, self.what)?;
        if let Some((given, allocated)) = self.values {
            write!(f, " (given {given}, allocated with {allocated})")?;
        }
        Ok(())
    }
}
