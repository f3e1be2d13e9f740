//! The remote-free stack of an arena: blocks that other threads freed while the arena was
//! busy, linked through their first word, until the arena's next holder merges them.
//!
//! Only two operations, so no ABA problem: `push` (any thread, lock-free) and `take` (the
//! lock holder: every block at once). A push publishes its block's record with a Release CAS
//! that `take`'s Acquire swap pairs with. A byte count beside the head tells a pusher when the
//! stack holds enough to be worth merging for an owner that may never come back (its thread
//! has exited): see `Arena::push_remote`.
//!
//! This file is also compiled by the loom models (`loom/`), with loom's atomics and their own
//! `remote_next`/`remote_next_set` (the link's read and write).

use super::*;

pub(super) struct RemoteStack {
    head: AtomicPtr<u8>,
    /// Bytes pushed since the last `take` (a hint: a push racing with a `take` may be counted
    /// on either side of it).
    pending: AtomicUsize,
}

impl RemoteStack {
    maybe_const! {
        pub(super) fn new() -> Self {
            RemoteStack {
                head: AtomicPtr::new(null_mut()),
                pending: AtomicUsize::new(0),
            }
        }
    }

    /// Pushes block `b` (of `size` bytes). Lock-free. Returns the bytes pushed since the last
    /// `take`, this block's included.
    ///
    /// # Safety
    /// 1. `b` is a block whose first word this thread may write (its user gave it up, and nobody
    ///    else writes it until a `take` hands it out);
    /// 2. it is pushed once until taken.
    // The crate pushes chains (`push_chain`); the loom models (`loom/`) push single blocks.
    #[allow(dead_code)]
    pub(super) unsafe fn push(&self, b: NonNull<u8>, size: usize) -> usize {
        // SAFETY: a chain of one block: `push_chain`'s items are this function's.
        unsafe { self.push_chain(b, b, size) }
    }

    /// Pushes a chain of blocks, `first` to `last` linked through their first words (`last`'s
    /// link is overwritten), `bytes` in all, with one CAS. Lock-free. Returns the bytes pushed
    /// since the last `take`, these included.
    ///
    /// # Safety
    /// 1. every block of the chain is one whose first word this thread may write (its user
    ///    gave it up, and nobody else writes it until a `take` hands it out), and the chain
    ///    leads from `first` to `last`;
    /// 2. none of them is on the stack or pushed again until taken.
    pub(super) unsafe fn push_chain(
        &self,
        first: NonNull<u8>,
        last: NonNull<u8>,
        bytes: usize,
    ) -> usize {
        let mut head = self.head.load(Relaxed);
        loop {
            // SAFETY: (1) ours to write; rewritten before each publication attempt.
            unsafe { remote_next_set(last, head) };
            match self
                .head
                .compare_exchange_weak(head, first.as_ptr(), Release, Relaxed)
            {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        self.pending.fetch_add(bytes, Relaxed).saturating_add(bytes)
    }

    /// Takes every block pushed so far (a plain load first: the swap is an atomic
    /// read-modify-write, too dear when the stack is empty, as it nearly always is). The
    /// caller holds the arena's lock, so the blocks are its own to merge.
    #[inline]
    pub(super) fn take(&self) -> Taken {
        if self.head.load(Relaxed).is_null() {
            return Taken(null_mut());
        }
        self.pending.store(0, Relaxed);
        Taken(self.head.swap(null_mut(), Acquire))
    }
}

/// The blocks one `take` got, newest first.
pub(super) struct Taken(*mut u8);

impl Iterator for Taken {
    type Item = NonNull<u8>;

    #[inline]
    fn next(&mut self) -> Option<NonNull<u8>> {
        let b = NonNull::new(self.0)?;
        // SAFETY: every block on a taken stack was linked by `push` (its first word written
        // before the Release CAS that published it, which `take`'s Acquire swap saw) and is
        // read here once, before the caller reuses the block.
        self.0 = unsafe { remote_next(b) };
        Some(b)
    }
}
