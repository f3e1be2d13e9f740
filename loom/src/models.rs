//! The models. Each runs every interleaving loom explores (bounded by `LOOM_MAX_PREEMPTIONS`)
//! and checks: no access to an arena's state outside its lock (loom's cells), every freed block
//! merged exactly once, every link read after its write, no thread left waiting for ever.

use super::*;
use gate::{ForkList, Forked};
use lock::{SpinLock, hold_first};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use remote::RemoteStack;

/// A model block's size: what `push` counts.
const SIZE: usize = 16;

/// A model arena: the crate's lock and remote stack; `merged` stands for its heap (the blocks
/// freed into it, by id), `taken` for blocks it handed out again.
struct Arena {
    lock: SpinLock,
    remote: RemoteStack,
    merged: UnsafeCell<Vec<usize>>,
    /// Pushed bytes past which a pusher merges the stack itself if the arena is idle (as
    /// `sync::arena::REMOTE_DRAIN`, scaled to model blocks).
    drain_at: usize,
}

// SAFETY: `merged` is only reached under `lock` (what the models check), the rest is atomic.
unsafe impl Sync for Arena {}

impl Arena {
    fn new(drain_at: usize) -> Arena {
        Arena {
            lock: SpinLock::new(),
            remote: RemoteStack::new(),
            merged: UnsafeCell::new(Vec::new()),
            drain_at,
        }
    }

    /// As `Arena::locked`'s start: merges the remote stack. The caller holds the lock.
    fn merge_remote(&self) {
        for b in self.remote.take() {
            // SAFETY: the stack hands out live Nodes of the model's `Blocks`.
            let n = unsafe { b.cast::<Node>().as_ref() };
            // The heap writes into a block it merges (its free-set node).
            n.data.with_mut(|d| unsafe_write(d, 0));
            self.merged.with_mut(|m| {
                // SAFETY: under the lock (loom checks it).
                unsafe { (*m).push(n.id) }
            });
        }
    }

    /// As `SyncHeap::dealloc_raw` for a block of this arena: a thread whose home it is frees
    /// at once if the lock is free; else (or from another thread) the block goes on the remote
    /// stack, and, as `Arena::push_remote`, the pusher merges the stack if it holds
    /// `drain_at` bytes and the arena is idle.
    fn free(&self, n: &Node, home: bool) {
        // The user's last write before the free.
        n.data.with_mut(|d| unsafe_write(d, n.id + 100));
        if home && let Some(_held) = self.lock.try_hold() {
            self.merge_remote();
            self.merged.with_mut(|m| {
                // SAFETY: under the lock.
                unsafe { (*m).push(n.id) }
            });
            return;
        }
        // SAFETY: (1) the block's user gave it up; (2) it is pushed once.
        let pending = unsafe { self.remote.push(NonNull::from(n).cast(), SIZE) };
        if pending >= self.drain_at
            && let Some(_held) = self.lock.try_hold()
        {
            self.merge_remote();
        }
    }

    /// An allocation in this arena (its owner thread): under the lock, merge the remote stack,
    /// then hand out a merged block if there is one.
    fn allocate(&self) -> Option<usize> {
        let _held = self.lock.hold();
        self.merge_remote();
        self.merged.with_mut(|m| {
            // SAFETY: under the lock.
            unsafe { (*m).pop() }
        })
    }

    /// After every thread is joined: merge what is left and return every block id the arena
    /// holds, sorted.
    fn settle(&self) -> Vec<usize> {
        assert!(self.lock.try_lock(), "a lock was left held");
        self.merge_remote();
        self.lock.unlock();
        let mut m = self.merged.with(|m| {
            // SAFETY: every thread is joined.
            unsafe { (*m).clone() }
        });
        m.sort_unstable();
        m
    }
}

/// Writes through a loom cell's pointer.
fn unsafe_write(p: *mut usize, v: usize) {
    // SAFETY: loom's `with_mut` hands out a pointer to the cell's value for the closure's
    // duration, and checks that the access is exclusive.
    unsafe { *p = v }
}

/// Model blocks, shared by the threads (they are only written through loom cells).
struct Blocks(Vec<Node>);

// SAFETY: a Node's fields are loom cells, whose accesses loom checks, and an id never written.
unsafe impl Sync for Blocks {}
// SAFETY: as above.
unsafe impl Send for Blocks {}

fn blocks(n: usize) -> Arc<Blocks> {
    Arc::new(Blocks(
        (0..n)
            .map(|id| Node {
                next: UnsafeCell::new(null_mut()),
                data: UnsafeCell::new(0),
                id,
            })
            .collect(),
    ))
}

#[test]
fn spin_lock_excludes() {
    loom::model(|| {
        let lock = Arc::new(SpinLock::new());
        let count = Arc::new(Counter(UnsafeCell::new(0)));
        let ts: Vec<_> = (0..2)
            .map(|t| {
                let (lock, count) = (lock.clone(), count.clone());
                thread::spawn(move || {
                    let _held = if t == 0 {
                        lock.hold()
                    } else {
                        loop {
                            if let Some(h) = lock.try_hold() {
                                break h;
                            }
                            thread::yield_now();
                        }
                    };
                    count.0.with_mut(|c| {
                        // SAFETY: under the lock (loom checks it).
                        unsafe { *c += 1 }
                    });
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(count.0.with(unsafe_read), 2);
        assert!(lock.try_lock(), "the lock was left held");
    });
}

struct Counter(UnsafeCell<usize>);
// SAFETY: reached only under a lock (what the model checks).
unsafe impl Sync for Counter {}

fn unsafe_read(p: *const usize) -> usize {
    // SAFETY: as for `unsafe_write`, for a shared access.
    unsafe { *p }
}

/// Two threads free blocks of a third's arena while it allocates there: each block is merged
/// exactly once, whether its free went through the remote stack, the pusher's own merge or
/// the owner's.
#[test]
fn two_threads_free_into_a_third_arena_while_it_allocates() {
    loom::model(|| {
        // The second push reaches the drain mark: the pusher may merge itself.
        let arena = Arc::new(Arena::new(2 * SIZE));
        let bs = blocks(2);
        let mut ts = Vec::new();
        for i in 0..2 {
            let (arena, bs) = (arena.clone(), bs.clone());
            ts.push(thread::spawn(move || arena.free(&bs.0[i], false)));
        }
        let owner = {
            let arena = arena.clone();
            thread::spawn(move || arena.allocate())
        };
        for t in ts {
            t.join().unwrap();
        }
        let got = owner.join().unwrap();
        let mut all = arena.settle();
        all.extend(got);
        all.sort_unstable();
        assert_eq!(all, vec![0, 1], "a block was lost or merged twice");
    });
}

/// A thread frees into its home arena (at once when the lock is free) and into another's
/// (remote), racing with the other arena's owner, which merges twice.
#[test]
fn a_free_races_with_the_drain() {
    loom::model(|| {
        let arena = Arc::new(Arena::new(usize::MAX));
        let bs = blocks(2);
        let freer = {
            let (arena, bs) = (arena.clone(), bs.clone());
            thread::spawn(move || {
                arena.free(&bs.0[0], false);
                arena.free(&bs.0[1], true);
            })
        };
        let drainer = {
            let arena = arena.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let _held = arena.lock.hold();
                    arena.merge_remote();
                }
            })
        };
        freer.join().unwrap();
        drainer.join().unwrap();
        assert_eq!(
            arena.settle(),
            vec![0, 1],
            "a block was lost or merged twice"
        );
    });
}

/// Lock hand-off under re-entry: a thread holding its home arena's lock re-enters the
/// allocator (a signal handler, or an allocation inside one) while another thread waits for
/// that lock. The re-entered call must never wait for the lock it holds (it takes another
/// arena or gives up), and the waiter gets the lock once it is released.
#[test]
fn a_reentered_call_hands_off_and_never_waits_for_its_own_lock() {
    loom::model(|| {
        let locks = Arc::new([SpinLock::new(), SpinLock::new()]);
        let cells = Arc::new([Counter(UnsafeCell::new(0)), Counter(UnsafeCell::new(0))]);
        let bump = |cells: &[Counter; 2], i: usize| {
            cells[i].0.with_mut(|c| {
                // SAFETY: under lock i (loom checks it).
                unsafe { *c += 1 }
            })
        };
        let reentered = {
            let (locks, cells) = (locks.clone(), cells.clone());
            thread::spawn(move || {
                let _outer = locks[0].hold();
                bump(&cells, 0);
                // Re-entered (as `SyncHeap::with_any(reentrant = true)`), two rounds.
                if let Some((i, _inner)) = hold_first(2, 0, 2, |i| &locks[i]) {
                    assert_eq!(i, 1, "a re-entered call took the lock its thread holds");
                    bump(&cells, i);
                }
            })
        };
        let waiter = {
            let (locks, cells) = (locks.clone(), cells.clone());
            thread::spawn(move || {
                // Not re-entered, home 0: the first free lock, else wait for home's.
                let (i, _held) = match hold_first(2, 0, 1, |i| &locks[i]) {
                    Some(got) => got,
                    None => (0, locks[0].hold_unless_forking(false).expect("not forking")),
                };
                bump(&cells, i);
            })
        };
        reentered.join().unwrap();
        waiter.join().unwrap();
        for l in locks.iter() {
            assert!(l.try_lock(), "a lock was left held");
        }
        let total: usize = cells.iter().map(|c| c.0.with(unsafe_read)).sum();
        assert!((2..=3).contains(&total), "{total} critical sections ran");
    });
}

/// A model of a fork-safe heap: one arena lock and the state it guards (more locks only
/// repeat the same steps, and multiply the interleavings).
struct ForkHeap {
    locks: [SpinLock; 1],
    cells: [Counter; 1],
    next: AtomicPtr<ForkHeap>,
    fork_safe: AtomicBool,
}

impl Forked for ForkHeap {
    fn fork_next(&self) -> &AtomicPtr<Self> {
        &self.next
    }
    fn fork_locks(&self) -> impl Iterator<Item = &SpinLock> {
        self.locks.iter()
    }
    fn set_fork_safe(&self) {
        self.fork_safe.store(true, Release);
    }
}

impl ForkHeap {
    /// A new heap, leaked (the fork list holds `'static` heaps; one small leak per model run).
    fn leaked() -> &'static ForkHeap {
        Box::leak(Box::new(ForkHeap {
            locks: [SpinLock::new()],
            cells: [Counter(UnsafeCell::new(0))],
            next: AtomicPtr::new(null_mut()),
            fork_safe: AtomicBool::new(false),
        }))
    }

    /// An allocation in arena `i`, as `SyncHeap::lock` takes it: the lock, or, on a thread
    /// inside `fork` (an atfork handler's allocation), no lock, as that thread holds it.
    fn allocate(&self, i: usize) {
        let _held = self.locks[i].hold_unless_forking(self.fork_safe.load(Relaxed));
        self.cells[i].0.with_mut(|c| {
            // SAFETY: under the lock, or by the forking thread that holds it (loom checks).
            unsafe { *c += 1 }
        });
    }

    fn count(&self) -> usize {
        for l in &self.locks {
            assert!(l.try_lock(), "a lock was left held after fork");
        }
        self.cells.iter().map(|c| c.0.with(unsafe_read)).sum()
    }
}

/// A fork (prepare, an allocation by an earlier-registered atfork handler on the forking
/// thread, after) while another thread allocates in the same heap and then registers a second
/// heap and allocates there: no deadlock, the forking thread's allocation runs unlocked without
/// racing, and every lock taken is released.
#[test]
fn fork_while_another_thread_allocates_and_registers() {
    loom::model(|| {
        let list = Arc::new(ForkList::<ForkHeap>::new());
        let a = ForkHeap::leaked();
        list.register(a);
        let b = ForkHeap::leaked();
        let forker = {
            let list = list.clone();
            thread::spawn(move || {
                list.prepare();
                assert!(in_fork());
                a.allocate(0);
                list.after();
                assert!(!in_fork());
            })
        };
        let other = {
            let list = list.clone();
            thread::spawn(move || {
                a.allocate(0);
                list.register(b);
                b.allocate(0);
            })
        };
        forker.join().unwrap();
        other.join().unwrap();
        assert_eq!(a.count(), 2);
        assert_eq!(b.count(), 1);
        assert!(b.fork_safe.load(Relaxed), "a registered heap is fork-safe");
    });
}

/// Two threads fork at once: they take turns at the gate, each one's handler allocation runs
/// while it alone holds the locks.
#[test]
fn two_forks_take_turns() {
    loom::model(|| {
        let list = Arc::new(ForkList::<ForkHeap>::new());
        let a = ForkHeap::leaked();
        list.register(a);
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let list = list.clone();
                thread::spawn(move || {
                    list.prepare();
                    a.allocate(0);
                    list.after();
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(a.count(), 2);
    });
}
