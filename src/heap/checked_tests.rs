use super::*;
use crate::block::CANARY;

struct Core(HeapCore);

impl Drop for Core {
    fn drop(&mut self) {
        self.0.give_back_all();
    }
}

fn core(quick: bool) -> Core {
    let mut c = HeapCore::new(Config {
        quick_reuse: quick,
        checked: true,
        ..Config::DEFAULT
    });
    c.quick.map_table();
    Core(c)
}

fn what<T: core::fmt::Debug>(r: Result<T, Fail>) -> (&'static str, Option<(usize, usize)>) {
    match r {
        Err(Fail::Misuse(m)) => (m.what, m.values),
        other => panic!("expected a misuse, got {other:?}"),
    }
}

fn alloc(h: &mut Core, size: usize, align: usize) -> NonNull<u8> {
    let b = h.0.alloc(size, align, false).unwrap();
    assert_eq!(b.len(), size, "checked mode returns exactly the size asked");
    b.cast()
}

#[test]
fn double_free_cached_and_merged() {
    for quick in [true, false] {
        let mut h = core(quick);
        let a = alloc(&mut h, 24, 8);
        let _guard = alloc(&mut h, 24, 8);
        // SAFETY: a is live with this layout; the second free is the misuse under test.
        unsafe {
            h.0.dealloc(a, 24, 8).unwrap();
            assert_eq!(what(h.0.dealloc(a, 24, 8)).0, DOUBLE_FREE, "quick {quick}");
        }
        h.0.check().unwrap();
    }
}

/// A block freed into the middle of a free block on a size-class list (it merged with the
/// block before it) is reported as a double free: the report finds the free block around the
/// address from the boundary bitmap, not the index (listed blocks are not in it).
#[test]
fn double_free_merged_into_a_listed_block() {
    let mut h = core(true);
    // A first chunk with room for all three blocks, side by side (above the quick lists' sizes).
    let room = alloc(&mut h, 60_000, 16);
    // SAFETY: allocated just above; freed once (back to the frontier).
    unsafe { h.0.dealloc(room, 60_000, 16).unwrap() };
    let a = alloc(&mut h, 5000, 16);
    let b = alloc(&mut h, 5000, 16);
    let _guard = alloc(&mut h, 16, 16);
    assert_eq!(
        b.addr().get() - a.addr().get(),
        5008,
        "side by side (5,000 B and the tag)"
    );
    // SAFETY: a and b are live with this layout; the third free is the misuse under test.
    unsafe {
        h.0.dealloc(b, 5000, 16).unwrap();
        h.0.dealloc(a, 5000, 16).unwrap();
        assert_eq!(what(h.0.dealloc(b, 5000, 16)).0, DOUBLE_FREE);
    }
    h.0.check().unwrap();
}

#[test]
fn foreign_and_interior_pointers() {
    let mut h = core(true);
    let mut other = core(true);
    let a = alloc(&mut h, 100, 16);
    let f = alloc(&mut other, 100, 16);
    // SAFETY: every call below is a misuse that must be refused before any change.
    unsafe {
        assert_eq!(what(h.0.dealloc(f, 100, 16)).0, FOREIGN);
        assert_eq!(what(h.0.dealloc(a.add(32), 68, 16)).0, INTERIOR);
        assert_eq!(what(h.0.dealloc(a.add(3), 97, 1)).0, NOT_A_BLOCK);
        let mut local = 0u64;
        let stack = NonNull::from(&mut local).cast::<u8>();
        assert_eq!(what(h.0.dealloc(stack, 8, 8)).0, FOREIGN);
        assert_eq!(
            what(h.0.grow(f, (100, 16), (200, 16), false)).0,
            FOREIGN,
            "grow checks ownership"
        );
        assert_eq!(what(h.0.shrink(f, (100, 16), (50, 16))).0, FOREIGN);
        h.0.check().unwrap();
        other.0.check().unwrap();
        h.0.dealloc(a, 100, 16).unwrap();
        other.0.dealloc(f, 100, 16).unwrap();
    }
    h.0.check().unwrap();
}

#[test]
fn size_and_alignment_must_match() {
    let mut h = core(true);
    let a = alloc(&mut h, 20, 8);
    // SAFETY: misuses refused before any change, then the right layout.
    unsafe {
        // Same granules, bigger and smaller: caught by the tag; other granules too.
        for wrong in [21, 30, 17, 1, 14, 64, 4096] {
            assert_eq!(
                what(h.0.dealloc(a, wrong, 8)),
                (BAD_SIZE, Some((wrong, 20)))
            );
        }
        assert_eq!(what(h.0.dealloc(a, 20, 4)), (BAD_ALIGN, Some((4, 8))));
        assert_eq!(what(h.0.dealloc(a, 20, 16)), (BAD_ALIGN, Some((16, 8))));
        assert_eq!(
            what(h.0.grow(a, (24, 8), (48, 8), false)).1,
            Some((24, 20)),
            "grow checks the old layout"
        );
        assert_eq!(what(h.0.shrink(a, (20, 2), (10, 2))).0, BAD_ALIGN);
        h.0.check().unwrap();
        let b = h.0.grow(a, (20, 8), (40, 8), false).unwrap();
        let b = h.0.shrink(b.cast(), (40, 8), (9, 8)).unwrap();
        assert_eq!(b.len(), 9);
        assert_eq!(what(h.0.dealloc(b.cast(), 40, 8)).1, Some((40, 9)));
        h.0.dealloc(b.cast(), 9, 8).unwrap();
    }
    h.0.check().unwrap();
    assert_eq!(h.0.in_use, 0);
}

#[test]
fn overflow_into_canary_and_tag() {
    let mut h = core(true);
    let a = alloc(&mut h, 20, 8);
    let b = alloc(&mut h, 30, 8);
    // SAFETY: the writes past the blocks' ends are the faults under test; they stay inside
    // the blocks' last granules (the heap's canary and tag), which are heap memory.
    unsafe {
        a.as_ptr().add(20).write(0);
        let e = h.0.check().unwrap_err();
        assert!(e.what.contains("canary"), "check() sees the overflow: {e}");
        assert_eq!(what(h.0.dealloc(a, 20, 8)).0, BAD_CANARY);
        a.as_ptr().add(20).write(CANARY);
        h.0.dealloc(a, 20, 8).unwrap();
        b.as_ptr().add(31).write(!b.as_ptr().add(31).read());
        assert_eq!(what(h.0.dealloc(b, 30, 8)).0, BAD_TAG);
        b.as_ptr().add(31).write(!b.as_ptr().add(31).read());
        h.0.dealloc(b, 30, 8).unwrap();
    }
    h.0.check().unwrap();
}

#[test]
fn corrupted_free_neighbour_and_write_after_free() {
    let mut h = core(false);
    let a = alloc(&mut h, 200, 16);
    let b = alloc(&mut h, 200, 16);
    let _guard = alloc(&mut h, 16, 16);
    // SAFETY: the stale writes are the faults under test; they land in the heap's own
    // (free) memory.
    unsafe {
        h.0.dealloc(b, 200, 16).unwrap();
        // A stale write over b's node (its size field).
        let saved = b.as_ptr().add(12).cast::<u32>().read();
        b.as_ptr().add(12).cast::<u32>().write(7);
        assert_eq!(what(h.0.dealloc(a, 200, 16)).0, BAD_NEIGHBOUR);
        b.as_ptr().add(12).cast::<u32>().write(saved);
        h.0.check().unwrap();
        h.0.dealloc(a, 200, 16).unwrap();
    }
    h.0.check().unwrap();
    // Quick lists: a reused block must still hold its poison.
    let mut h = core(true);
    let a = alloc(&mut h, 64, 16);
    // SAFETY: a is live, then freed; the write after free is the fault under test.
    unsafe {
        a.as_ptr().write_bytes(1, 64);
        h.0.dealloc(a, 64, 16).unwrap();
        assert!(
            core::slice::from_raw_parts(a.as_ptr().add(8), 56)
                .iter()
                .all(|&x| x == POISON),
            "freed memory is poisoned"
        );
        a.as_ptr().add(40).write(0);
    }
    assert_eq!(what(h.0.alloc(64, 16, false)).0, WRITE_AFTER_FREE);
    // The damaged block went back to the free set: the heap is whole and usable.
    h.0.check().unwrap();
    assert_eq!(h.0.in_use, 0);
    let b = alloc(&mut h, 64, 16);
    // SAFETY: b is live with this layout.
    unsafe { h.0.dealloc(b, 64, 16).unwrap() };
    h.0.check().unwrap();
}

#[test]
fn wipe_zeroes_freed_blocks_and_reset() {
    let mut h = Core(HeapCore::new(Config {
        zero_on_free: true,
        ..Config::DEFAULT
    }));
    let a = h.0.alloc(300, 16, false).unwrap().cast::<u8>();
    let keep = h.0.alloc(300, 16, false).unwrap().cast::<u8>();
    // SAFETY: live blocks of 300 bytes; a is read after its free as heap memory (it is
    // still mapped and the test owns the heap).
    unsafe {
        a.as_ptr().write_bytes(0xAB, 300);
        keep.as_ptr().write_bytes(0xCD, 300);
        h.0.dealloc(a, 300, 16).unwrap();
        // The first words hold free-list links; the secret bytes after them are gone.
        let rest = core::slice::from_raw_parts(a.as_ptr().add(16), 280);
        assert!(rest.iter().all(|&x| x == 0), "freed block wiped");
        h.0.reset(usize::MAX);
        let rest = core::slice::from_raw_parts(keep.as_ptr(), 300);
        assert!(rest.iter().all(|&x| x == 0), "reset wipes used memory");
    }
}
