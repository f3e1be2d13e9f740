//! A tour of isoheap: collections in heaps of their own, what each heap reports, and the
//! whole-heap check. Run with `cargo run --release --example tour`.

use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use hashbrown::HashMap;
use isoheap::{Heap, Stats};

fn show(name: &str, s: &Stats) {
    println!(
        "{name:<28} in use {:>9} B | free {:>9} B in {:>3} spans (largest {:>9} B) | mapped {:>9} B in {} chunk(s), metadata {:>6} B | peak {:>9} B",
        s.in_use,
        s.free,
        s.free_blocks,
        s.largest_free,
        s.mapped,
        s.chunks,
        s.metadata,
        s.peak_in_use
    );
}

fn main() {
    // 1. A vector in a heap of its own: it grows in place at the heap's frontier.
    let heap = Heap::new();
    let mut v: Vec<u64, &Heap> = Vec::new_in(&heap);
    let mut moves = 0;
    let mut last = v.as_ptr();
    for i in 0..100_000u64 {
        v.push(i);
        if v.as_ptr() != last {
            moves += 1;
            last = v.as_ptr();
        }
    }
    println!(
        "Vec<u64> of {} elements: the buffer moved {moves} time(s) while growing",
        v.len()
    );
    show("vec heap", &heap.stats());
    heap.check().expect("vec heap is consistent");
    drop(v);
    show("vec heap after drop", &heap.stats());

    // 2. A hash map and boxed strings sharing one heap, then churned.
    let heap = Heap::new();
    let mut words: HashMap<u32, Box<str, &Heap>, _, &Heap> = HashMap::new_in(&heap);
    for i in 0..20_000u32 {
        let s = format!("word-{i}-{}", "x".repeat((i % 37) as usize));
        let mut b = Box::<[u8], &Heap>::new_uninit_slice_in(s.len(), &heap);
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            d.write(c);
        }
        // SAFETY: every byte was written above, and they are the bytes of a valid str.
        let b = unsafe { b.assume_init() };
        let (ptr, alloc) = Box::into_raw_with_allocator(b);
        // SAFETY: the bytes came from `s`, so they are valid UTF-8.
        let b = unsafe { Box::from_raw_in(ptr as *mut str, alloc) };
        words.insert(i, b);
    }
    for i in (0..20_000u32).filter(|i| i % 3 != 0) {
        words.remove(&i);
    }
    assert!(
        words
            .iter()
            .all(|(k, v)| v.starts_with(&format!("word-{k}-")))
    );
    show("map heap, 1/3 kept", &heap.stats());
    heap.check().expect("map heap is consistent");
    drop(words);
    show("map heap after drop", &heap.stats());

    // 3. A heap with a hard limit refuses cleanly and stays usable.
    let small = Heap::builder()
        .initial(256 << 10)
        .limit(256 << 10)
        .build()
        .expect("256 KiB heap");
    let mut big: Vec<u8, &Heap> = Vec::new_in(&small);
    let refused = big.try_reserve(1 << 20).is_err();
    big.extend_from_slice(&[7; 1000]);
    println!(
        "limited heap refused 1 MiB: {refused}; then holds {} bytes",
        big.len()
    );
    show("limited heap", &small.stats());
    small.check().expect("limited heap is consistent");
    println!("check(): all heaps consistent");
}
