//! Planted memory errors for memcheck: proof that Valgrind sees `isoheap`'s own blocks (the
//! `valgrind` feature's client requests), not just one big mapping. Each case does one thing a
//! correct program never does, through raw pointers; run natively it "works" silently (the
//! memory is mapped), under memcheck it must be reported.
//!
//! ```text
//! cargo build --features valgrind --example valgrind_planted
//! valgrind --error-exitcode=99 target/debug/examples/valgrind_planted use-after-free   # exit 99
//! ```
//!
//! Cases: `use-after-free`, `read-past-end` (into free memory after the block),
//! `past-shrunk-end` (into the tail a shrink gave back), `uninit` (a branch on bytes never
//! written), `after-reset`, `none` (a control: must be clean).

use core::alloc::Layout;
use isoheap::Heap;

fn main() {
    let case = std::env::args().nth(1).unwrap_or_else(|| "none".into());
    // One chunk up front, so that every block below lies in it (a first chunk sized to the
    // first request would not hold the 8 KiB block the read-past-end case frees).
    let heap = Heap::builder()
        .checked(false)
        .initial(64 << 10)
        .build()
        .unwrap();
    let layout = Layout::from_size_align(64, 8).unwrap();
    let p = heap.allocate(layout).unwrap().cast::<u8>();
    let _guard = heap.allocate(layout).unwrap();
    // SAFETY: none for the planted cases (that is the point); the control is sound.
    let v = unsafe {
        match case.as_str() {
            "use-after-free" => {
                p.as_ptr().write_bytes(7, 64);
                heap.deallocate(p, layout);
                std::ptr::read_volatile(p.as_ptr().add(40))
            }
            "read-past-end" => {
                let big = Layout::from_size_align(8192, 8).unwrap();
                let q = heap.allocate(big).unwrap().cast::<u8>();
                let _after = heap.allocate(layout).unwrap();
                heap.deallocate(q, big);
                // The 64-byte block's last byte is fine; 8 KiB past it is free memory.
                std::ptr::read_volatile(p.as_ptr().add(64 + 16 + 4000))
            }
            "past-shrunk-end" => {
                // Shrunk from 64 to 16 bytes: byte 40 is in the granules it gave back.
                p.as_ptr().write_bytes(3, 64);
                let small = Layout::from_size_align(16, 8).unwrap();
                let q = heap.shrink(p, layout, small).unwrap().cast::<u8>();
                std::ptr::read_volatile(q.as_ptr().add(40))
            }
            "uninit" => {
                let b = std::ptr::read_volatile(p.as_ptr().add(3));
                if b == 42 { 1 } else { 0 }
            }
            "after-reset" => {
                let mut heap2 = Heap::builder().checked(false).build().unwrap();
                let q = heap2.allocate(layout).unwrap().cast::<u8>();
                q.as_ptr().write(5);
                heap2.reset();
                std::ptr::read_volatile(q.as_ptr())
            }
            "none" => {
                p.as_ptr().write_bytes(1, 64);
                let v = std::ptr::read_volatile(p.as_ptr().add(63));
                heap.deallocate(p, layout);
                v
            }
            other => panic!("unknown case {other}"),
        }
    };
    println!("{case}: read {v}");
}
