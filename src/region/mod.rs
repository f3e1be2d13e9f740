//! Getting memory and giving it back: the only place that talks to the OS. Everything the heap
//! reads or writes is reached from a pointer returned here (the provenance root).

#[cfg(feature = "mmap")]
pub(crate) mod cache;
#[cfg(feature = "mmap")]
pub(crate) mod mmap;

#[cfg(all(feature = "mmap", not(unix)))]
compile_error!(
    "isoheap's `mmap` feature needs a Unix target (anonymous mmap); on this target build with \
     `default-features = false` and give the heap a buffer instead"
);
