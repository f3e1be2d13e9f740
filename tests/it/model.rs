//! Model-based property test: random sequences of allocate / deallocate / grow / shrink against
//! a shadow model of every live block, with `Heap::check()` after every step.
//!
//! The model is the kit's `Shadow` (shared with the fuzz targets): it keeps the live blocks
//! ordered by address. Every new block must be aligned, must not overlap its neighbours in the
//! model, and (zeroed) must read as zero; every block is filled with its own byte pattern, which
//! is verified before it is resized or freed, so a block that overlaps another or loses bytes in
//! a move is caught; `check()` and the counters are checked after every step. At the end
//! everything is freed and the heap must have merged back into one free span per chunk.
//!
//! `model_tests!(name, || make_heap())` instantiates the whole test for one way of making a heap;
//! `model_tests!(name, Buffer { len, offset })` runs it over a caller's buffer instead.

use isoheap::Heap;
use isoheap_testkit::{Methods, Options, Shadow, scaled};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::alloc::Layout;
use std::mem::MaybeUninit;

/// Largest size a block can reach by growing.
const MAX_BLOCK: usize = if cfg!(miri) { 1 << 14 } else { 1 << 18 };

/// One step of a test case.
#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align_log2: u8,
        zeroed: bool,
    },
    Free {
        idx: Index,
        /// Free with the returned length instead of the requested size (both are allowed).
        with_len: bool,
    },
    Grow {
        idx: Index,
        extra: usize,
        zeroed: bool,
        /// A new alignment for the grown block (`None`: keep it).
        align_log2: Option<u8>,
    },
    Shrink {
        idx: Index,
        /// The new size, as a point in `0..=size`.
        keep: Index,
        align_log2: Option<u8>,
    },
}

/// Sizes 0..=65536, mostly small (under Miri at most 4096 to keep the run short).
fn size() -> impl Strategy<Value = usize> {
    if cfg!(miri) {
        prop_oneof![4 => 0..64usize, 2 => 0..=4096usize].boxed()
    } else {
        prop_oneof![6 => 0..64usize, 3 => 0..4096usize, 1 => 0..=65536usize].boxed()
    }
}

/// log2 of alignments 1..=4096, mostly at most 16.
fn align_log2() -> impl Strategy<Value = u8> {
    prop_oneof![6 => 0..=4u8, 2 => 5..=12u8]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), align_log2(), any::<bool>()).prop_map(|(size, align_log2, zeroed)| {
            Op::Alloc { size, align_log2, zeroed }
        }),
        3 => (any::<Index>(), any::<bool>()).prop_map(|(idx, with_len)| Op::Free { idx, with_len }),
        2 => (any::<Index>(), size(), any::<bool>(), prop::option::weighted(0.2, align_log2()))
            .prop_map(|(idx, extra, zeroed, align_log2)| Op::Grow { idx, extra, zeroed, align_log2 }),
        2 => (any::<Index>(), any::<Index>(), prop::option::weighted(0.2, align_log2()))
            .prop_map(|(idx, keep, align_log2)| Op::Shrink { idx, keep, align_log2 }),
    ]
}

/// Up to 64 operations a case (32 under Miri: `check()` after every step reads the heap's
/// bitmaps, so a case costs steps times heap size, tens of seconds interpreted).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..=if cfg!(miri) { 32 } else { 64 })
}

type R = Result<(), TestCaseError>;

/// Runs one case: `ops` on `heap` (through its inherent methods) against the kit's shadow
/// model, which checks the heap and its counters after every step, then frees everything:
/// the heap must be one free span per chunk, and its largest span allocatable without mapping
/// more.
fn run_case(heap: &Heap, ops: &[Op], may_fail: bool) -> R {
    let f = Methods(heap, "Heap");
    let opts = Options {
        may_fail,
        stats_every_step: true,
        ..Options::default()
    };
    let mut m = Shadow::new(&f, opts);
    m.after(&f, "creating the heap");
    for (step, op) in ops.iter().enumerate() {
        m.step = step;
        m.op = Some(op.clone());
        match *op {
            Op::Alloc {
                size,
                align_log2,
                zeroed,
            } => m.alloc(
                &f,
                Layout::from_size_align(size, 1 << align_log2).unwrap(),
                zeroed,
            ),
            Op::Free { idx, with_len } => {
                if !m.is_empty() {
                    m.free(&f, idx.index(m.len()), with_len);
                }
            }
            Op::Grow {
                idx,
                extra,
                zeroed,
                align_log2,
            } => {
                if !m.is_empty() {
                    let i = idx.index(m.len());
                    let old = m.fit_layout(i, false);
                    let size = (old.size() + extra).min(MAX_BLOCK).max(old.size());
                    let align = align_log2.map_or(old.align(), |a| 1 << a);
                    let new = Layout::from_size_align(size, align).unwrap();
                    m.grow(&f, i, old, new, zeroed);
                }
            }
            Op::Shrink {
                idx,
                keep,
                align_log2,
            } => {
                if !m.is_empty() {
                    let i = idx.index(m.len());
                    let old = m.fit_layout(i, false);
                    let align = align_log2.map_or(old.align(), |a| 1 << a);
                    let new = Layout::from_size_align(keep.index(old.size() + 1), align).unwrap();
                    m.shrink(&f, i, old, new);
                }
            }
        }
    }
    m.op = None;
    m.finish_merged(&f);
    Ok(())
}

/// `cases` outside Miri (8 under Miri), times `ISOHEAP_TEST_SCALE` (default 1); `PROPTEST_CASES`
/// overrides both (Miri hides the host environment: pass `-Zmiri-env-forward=PROPTEST_CASES`,
/// as `.ci/run` does).
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| scaled(if cfg!(miri) { 8 } else { cases }));
    Config {
        cases,
        failure_persistence: None,
        // ChaCha dominates the run time under Miri; any generator finds these bugs.
        rng_algorithm: if cfg!(miri) {
            RngAlgorithm::XorShift
        } else {
            RngAlgorithm::default()
        },
        ..Config::default()
    }
}

/// A way of making a fresh heap for each case: a closure returning a `Heap`, or a [`Buffer`].
/// The heap is lent to `f` rather than returned, so that a heap over a buffer can borrow a
/// buffer that lives exactly as long as the case.
trait MakeHeap {
    fn with_heap(&self, f: &mut dyn FnMut(&Heap) -> R) -> R;
}

impl<F: Fn() -> Heap> MakeHeap for F {
    fn with_heap(&self, f: &mut dyn FnMut(&Heap) -> R) -> R {
        f(&self())
    }
}

/// A heap over a fresh, uninitialised buffer of `len` bytes for each case, starting `offset`
/// bytes into a 16-byte-aligned allocation (so a non-zero `offset` makes it misaligned).
struct Buffer {
    len: usize,
    offset: usize,
}

impl MakeHeap for Buffer {
    fn with_heap(&self, f: &mut dyn FnMut(&Heap) -> R) -> R {
        #[repr(align(16))]
        #[derive(Clone, Copy)]
        struct Granule(#[allow(dead_code)] [MaybeUninit<u8>; 16]);
        let granules = (self.offset + self.len).div_ceil(16);
        let mut mem = vec![Granule([MaybeUninit::uninit(); 16]); granules];
        // SAFETY: `Granule` is 16 plain bytes (size 16, no padding); the slice covers the Vec.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                mem.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                granules * 16,
            )
        };
        let heap = Heap::from_buffer(&mut bytes[self.offset..][..self.len])
            .map_err(|e| TestCaseError::fail(format!("from_buffer: {e}")))?;
        prop_assert_eq!(heap.stats().chunks, 1);
        prop_assert!(heap.stats().mapped <= self.len);
        f(&heap)
    }
}

/// Instantiates the model test for one way of making a heap.
///
/// `model_tests!(name, || make_heap())` expects every allocation to succeed and runs 10,000
/// cases; `model_tests!(name, || make_heap(), cases = N, may_fail)` runs `N` cases on a heap
/// whose allocations may fail (which must leave the heap and every block as they were). In
/// place of the closure, any [`MakeHeap`] (a [`Buffer`]).
macro_rules! model_tests {
    ($name:ident, $make:expr) => {
        model_tests!($name, $make, cases = 10_000, may_fail = false);
    };
    ($name:ident, $make:expr, cases = $cases:expr) => {
        model_tests!($name, $make, cases = $cases, may_fail = false);
    };
    ($name:ident, $make:expr, cases = $cases:expr, may_fail) => {
        model_tests!($name, $make, cases = $cases, may_fail = true);
    };
    ($name:ident, $make:expr, cases = $cases:expr, may_fail = $may_fail:expr) => {
        #[test]
        fn $name() {
            let make = $make;
            let mut runner = TestRunner::new(config($cases));
            let result = runner.run(&ops(), |ops| {
                MakeHeap::with_heap(&make, &mut |heap| run_case(heap, &ops, $may_fail))
            });
            if let Err(e) = result {
                panic!("{e}\n{runner}");
            }
        }
    };
}

model_tests!(grows_on_demand, || Heap::new());
// Strict address-ordered first fit: no quick lists, every free merges at once.
model_tests!(
    strict_first_fit,
    || Heap::builder().quick_reuse(false).build().unwrap(),
    cases = 2_000
);
// Unchecked (as release builds are by default): free blocks of up to 4 KiB live on the chunks'
// size-class lists, not in the index.
model_tests!(
    size_classes,
    || Heap::builder().checked(false).build().unwrap(),
    cases = 1_000
);
// The same, often full: the out-of-memory path's exact search of the size-class lists.
model_tests!(
    size_classes_tightly_limited,
    || Heap::builder()
        .checked(false)
        .initial(64 << 10)
        .limit(64 << 10)
        .build()
        .unwrap(),
    cases = 1_000,
    may_fail
);
// Under Miri a quarter of the size: `check()` reads the whole bitmap after every step.
model_tests!(
    with_capacity,
    || Heap::with_capacity(if cfg!(miri) { 256 << 10 } else { 1 << 20 }).unwrap(),
    cases = 1_000
);
// Under Miri half the size (see `with_capacity`).
model_tests!(
    limited,
    || Heap::builder()
        .initial(if cfg!(miri) { 128 << 10 } else { 256 << 10 })
        .limit(if cfg!(miri) { 128 << 10 } else { 256 << 10 })
        .build()
        .unwrap(),
    cases = 1_000,
    may_fail
);
// A quarter of the size: allocations fail often, so the failure paths get exercised.
model_tests!(
    tightly_limited,
    || Heap::builder()
        .initial(64 << 10)
        .limit(64 << 10)
        .build()
        .unwrap(),
    cases = 1_000,
    may_fail
);

// Over a caller's buffer (no mmap): the heap cannot grow, so allocations fail when it is full.
// Under Miri 64 KiB, since `check()` reads the whole bitmap after every step.
model_tests!(
    buffer,
    Buffer {
        len: if cfg!(miri) { 64 << 10 } else { 1 << 20 },
        offset: 0
    },
    cases = 1_000,
    may_fail
);
// A small buffer that does not start on 16 bytes (and whose length is not a multiple of 16):
// the heap aligns its start up and its length down, and is often full.
model_tests!(
    buffer_misaligned_and_small,
    Buffer {
        len: (64 << 10) - 3,
        offset: 7
    },
    cases = 1_000,
    may_fail
);

/// The strategies cover what the issue asks for: sizes up to 64 KiB, alignments up to 4096.
#[test]
fn strategies_cover_the_ranges() {
    let rng = TestRng::deterministic_rng(config(1).rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config(1), rng);
    let (mut max_size, mut max_align, mut zero) = (0usize, 0u8, false);
    for _ in 0..if cfg!(miri) { 200 } else { 5_000 } {
        let s = size().new_tree(&mut runner).unwrap().current();
        let a = align_log2().new_tree(&mut runner).unwrap().current();
        max_size = max_size.max(s);
        max_align = max_align.max(a);
        zero |= s == 0;
    }
    assert!(zero);
    assert!(max_size > if cfg!(miri) { 2048 } else { 32 << 10 });
    assert_eq!(max_align, 12);
}

/// The chunk provider under several threads: each thread runs model cases, every case on a
/// heap of its own made and dropped around it (checked after every step against the shadow
/// model), so heaps take chunks from and give them back to the shared provider concurrently.
/// Afterwards the provider's footprint is bounded: a second round of the same work maps no more
/// segments than the first left (its memory is reused), and the committed idle memory is within
/// the idle limit. Alone in a process (other tests' heaps would move the counters).
#[test]
fn heaps_on_many_threads_share_the_provider() {
    if !isoheap_testkit::alone(module_path!(), "heaps_on_many_threads_share_the_provider") {
        return;
    }
    let threads = if cfg!(miri) { 2 } else { 4 };
    let round = || {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    // Under Miri one case per thread and round: the threads' interleaving is
                    // what this adds to the single-threaded model tests.
                    let mut cfg = config(100);
                    if cfg!(miri) {
                        cfg.cases = 1;
                    }
                    let mut runner = TestRunner::new(cfg);
                    // Threads differ by what each keeps alive meanwhile: a heap with a block
                    // of a thread-specific size, so their chunks interleave in the segments.
                    let keep = Heap::new();
                    let _held = keep.allocate(Layout::from_size_align(100 << t, 16).unwrap());
                    let result = runner.run(&ops(), |ops| run_case(&Heap::new(), &ops, false));
                    if let Err(e) = result {
                        panic!("thread {t}: {e}");
                    }
                });
            }
        });
    };
    round();
    let first = isoheap::os_counters();
    round();
    let second = isoheap::os_counters();
    assert!(
        second.segments <= first.segments,
        "the second round mapped more segments: {first:?} then {second:?}"
    );
    // Every heap is gone, so the freed chunks merged back: a chunk of half a segment (the
    // largest the provider carves) comes from what is there, without a new segment.
    let big = Heap::new();
    let half = if cfg!(miri) { 300 << 10 } else { 1200 << 10 };
    let _b = big
        .allocate(Layout::from_size_align(half, 16).unwrap())
        .unwrap();
    let third = isoheap::os_counters();
    assert!(
        third.segments <= second.segments && third.maps == second.maps,
        "a large chunk needed a new mapping after every heap was dropped: {second:?} then {third:?}"
    );
    drop(big);
    if !cfg!(miri) {
        // (Under Miri nothing is decommitted.)
        assert!(
            second.idle_bytes <= 8 << 20,
            "idle memory past the limit: {second:?}"
        );
    }
    isoheap::release_cached();
}

/// One step of the parent/children model.
#[derive(Clone, Debug)]
enum Ctx {
    NewChild,
    DropChild(Index),
    ResetChild(Index),
    /// Allocate in the parent (`who` picks 0) or in a child.
    Alloc {
        who: Index,
        size: usize,
        align_log2: u8,
    },
    Free(Index),
    Grow {
        idx: Index,
        extra: usize,
    },
}

fn ctx_ops() -> impl Strategy<Value = Vec<Ctx>> {
    let op = prop_oneof![
        1 => Just(Ctx::NewChild),
        1 => any::<Index>().prop_map(Ctx::DropChild),
        1 => any::<Index>().prop_map(Ctx::ResetChild),
        6 => (any::<Index>(), size(), align_log2())
            .prop_map(|(who, size, align_log2)| Ctx::Alloc { who, size, align_log2 }),
        3 => any::<Index>().prop_map(Ctx::Free),
        2 => (any::<Index>(), size()).prop_map(|(idx, extra)| Ctx::Grow { idx, extra }),
    ];
    prop::collection::vec(op, 0..=if cfg!(miri) { 24 } else { 64 })
}

/// A live block in the parent/children model: which heap (`None`: the parent; else a child's
/// id), where, its layout and the byte it is filled with.
struct CtxBlock {
    owner: Option<usize>,
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
    fill: u8,
}

fn ctx_fill(b: &CtxBlock) {
    // SAFETY: a live block of at least `layout.size()` bytes.
    unsafe { b.ptr.as_ptr().write_bytes(b.fill, b.layout.size()) };
}

fn ctx_verify(b: &CtxBlock, what: &str) -> R {
    // SAFETY: a live block of at least `layout.size()` bytes, filled by `ctx_fill`.
    let s = unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), b.layout.size()) };
    prop_assert!(
        s.iter().all(|&x| x == b.fill),
        "{what}: block {:p} ({:?}) of {:?} was overwritten",
        b.ptr,
        b.layout,
        b.owner
    );
    Ok(())
}

/// Runs one case of the parent/children model on `parent`: random interleavings of child
/// creation, use, reset and drop, every block filled and verified, and after every step
/// `check()` on the parent and every child, the parent's `lent_to_children` equal to what the
/// children have mapped, and each heap's `in_use` covering its live blocks. A refused
/// allocation (the parent's budget or limit) must change nothing.
fn run_ctx_case(parent: &Heap, ops: &[Ctx]) -> R {
    let mut children: Vec<(usize, isoheap::ChildHeap<'_>)> = Vec::new();
    let mut next_id = 0;
    let mut live: Vec<CtxBlock> = Vec::new();
    let mut fill = 0u8;
    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} ({op:?})");
        match op {
            Ctx::NewChild => {
                if let Ok(c) = parent.child() {
                    children.push((next_id, c));
                    next_id += 1;
                }
            }
            Ctx::DropChild(i) if !children.is_empty() => {
                let (id, c) = children.remove(i.index(children.len()));
                for b in live.iter().filter(|b| b.owner == Some(id)) {
                    ctx_verify(b, &what)?;
                }
                live.retain(|b| b.owner != Some(id));
                drop(c);
            }
            Ctx::ResetChild(i) if !children.is_empty() => {
                let k = i.index(children.len());
                let id = children[k].0;
                live.retain(|b| b.owner != Some(id));
                children[k].1.reset();
                prop_assert_eq!(
                    children[k].1.stats().in_use,
                    0,
                    "{}: reset child in use",
                    what
                );
            }
            Ctx::Alloc {
                who,
                size,
                align_log2,
            } => {
                let k = who.index(children.len() + 1);
                let (owner, heap): (Option<usize>, &Heap) = if k == 0 {
                    (None, parent)
                } else {
                    (Some(children[k - 1].0), &children[k - 1].1)
                };
                let layout = Layout::from_size_align(*size, 1 << align_log2).unwrap();
                let before = parent.stats();
                match heap.allocate(layout) {
                    Ok(p) if layout.size() > 0 => {
                        fill = fill.wrapping_add(1).max(1);
                        let b = CtxBlock {
                            owner,
                            ptr: p.cast(),
                            layout,
                            fill,
                        };
                        ctx_fill(&b);
                        live.push(b);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let after = parent.stats();
                        prop_assert_eq!(
                            (after.in_use, after.lent_to_children),
                            (before.in_use, before.lent_to_children),
                            "{}: a refused allocation changed the parent",
                            what
                        );
                    }
                }
            }
            Ctx::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i.index(live.len()));
                ctx_verify(&b, &what)?;
                let heap: &Heap = match b.owner {
                    None => parent,
                    Some(id) => &children.iter().find(|c| c.0 == id).unwrap().1,
                };
                // SAFETY: a live block of this heap with this layout.
                unsafe { heap.deallocate(b.ptr, b.layout) };
            }
            Ctx::Grow { idx, extra } if !live.is_empty() => {
                let j = idx.index(live.len());
                ctx_verify(&live[j], &what)?;
                let b = &live[j];
                let heap: &Heap = match b.owner {
                    None => parent,
                    Some(id) => &children.iter().find(|c| c.0 == id).unwrap().1,
                };
                let new = Layout::from_size_align(
                    (b.layout.size() + extra).min(MAX_BLOCK),
                    b.layout.align(),
                )
                .unwrap();
                if new.size() > b.layout.size() {
                    // SAFETY: a live block of this heap with this layout; on success only the
                    // result is used.
                    if let Ok(p) = unsafe { heap.grow(b.ptr, b.layout, new) } {
                        let b = &mut live[j];
                        b.ptr = p.cast();
                        b.layout = new;
                        ctx_fill(b);
                    }
                }
            }
            _ => {}
        }
        // After every step: every heap checks out, and the books agree.
        parent
            .check()
            .map_err(|e| TestCaseError::fail(format!("{what}: parent: {e}")))?;
        let mut lent = 0;
        for (id, c) in &children {
            c.check()
                .map_err(|e| TestCaseError::fail(format!("{what}: child {id}: {e}")))?;
            let s = c.stats();
            lent += s.mapped;
            let mine: usize = live
                .iter()
                .filter(|b| b.owner == Some(*id))
                .map(|b| b.layout.size())
                .sum();
            prop_assert!(
                s.in_use >= mine,
                "{}: child {} in_use {} < {}",
                what,
                id,
                s.in_use,
                mine
            );
        }
        let ps = parent.stats();
        prop_assert_eq!(ps.lent_to_children, lent, "{}: lent to children", what);
        let mine: usize = live
            .iter()
            .filter(|b| b.owner.is_none())
            .map(|b| b.layout.size())
            .sum();
        prop_assert!(ps.in_use >= lent + mine, "{}: parent in_use {:?}", what, ps);
    }
    for b in &live {
        ctx_verify(b, "at the end")?;
    }
    let parent_blocks: Vec<_> = live.iter().filter(|b| b.owner.is_none()).collect();
    for b in parent_blocks {
        // SAFETY: a live block of the parent with this layout.
        unsafe { parent.deallocate(b.ptr, b.layout) };
    }
    drop(children);
    let s = parent.stats();
    prop_assert_eq!(
        (s.in_use, s.lent_to_children),
        (0, 0),
        "every child returned its chunks"
    );
    parent
        .check()
        .map_err(|e| TestCaseError::fail(format!("at the end: {e}")))?;
    Ok(())
}

/// Heaps inside heaps, over three kinds of parent: a plain heap, one whose budget the children
/// often reach, and a heap over a caller's buffer.
#[test]
fn children_of_a_heap() {
    type WithParent<'a> = &'a dyn Fn(&mut dyn FnMut(&Heap) -> R) -> R;
    let kinds: [(&str, WithParent<'_>); 3] = [
        ("plain", &|f| f(&Heap::new())),
        ("budget", &|f| {
            f(&Heap::builder()
                .budget(if cfg!(miri) { 16 << 10 } else { 96 << 10 })
                .build()
                .unwrap())
        }),
        ("buffer", &|f| {
            let mut buf =
                vec![MaybeUninit::<u8>::uninit(); if cfg!(miri) { 64 << 10 } else { 512 << 10 }];
            let heap = Heap::from_buffer(&mut buf).unwrap();
            f(&heap)
        }),
    ];
    for (name, with) in kinds {
        // Under Miri at most two cases per parent (each checks every heap after every step).
        let mut cfg = config(300);
        if cfg!(miri) {
            cfg.cases = cfg.cases.min(2);
        }
        let mut runner = TestRunner::new(cfg);
        let result = runner.run(&ctx_ops(), |ops| {
            with(&mut |parent| run_ctx_case(parent, &ops))
        });
        if let Err(e) = result {
            panic!("{name} parent: {e}");
        }
    }
}
