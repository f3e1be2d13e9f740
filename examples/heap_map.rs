//! A picture of a fragmented heap: a fixed-seed workload allocates 20,000 blocks of random
//! sizes, frees a random half of them, then allocates 2,000 more (first fit puts them in the
//! holes), and `Heap::map` draws the result. Writes `heap-map.svg` (or the path given as the
//! first argument) and prints the strips and the stats.
//!
//! ```sh
//! cargo run --release --example heap_map              # writes ./heap-map.svg
//! cargo run --release --example heap_map -- docs/heap-map.svg
//! ```

use core::alloc::Layout;
use core::ptr::NonNull;
use isoheap::{Heap, SpanKind};

/// xorshift64*: a small, fixed-seed generator, so that every run draws the same heap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly small blocks, some medium, a few large: 16 B to 64 KiB.
    fn size(&mut self) -> usize {
        let s = match self.below(100) {
            0..70 => 16 + self.below(240),
            70..97 => 256 + self.below(3840),
            _ => 4096 + self.below(61_440),
        };
        s as usize
    }
}

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "heap-map.svg".into());
    let heap = Heap::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    let alloc = |rng: &mut Rng, live: &mut Vec<_>| {
        let layout = Layout::from_size_align(rng.size(), 8).expect("layout");
        let p = heap.allocate(layout).expect("memory");
        live.push((p.cast::<u8>(), layout));
    };
    for _ in 0..20_000 {
        alloc(&mut rng, &mut live);
    }
    // Free a random half.
    for _ in 0..10_000 {
        let (p, layout) = live.swap_remove(rng.below(live.len() as u64) as usize);
        // SAFETY: `p` came from `heap` with `layout` and is freed once.
        unsafe { heap.deallocate(p, layout) };
    }
    // Refill some of the holes.
    for _ in 0..2_000 {
        alloc(&mut rng, &mut live);
    }
    heap.check().expect("heap invariants hold");

    let map = heap.map();
    let mut svg = String::new();
    map.write_svg(&mut svg).expect("writing to a String");
    std::fs::write(&path, &svg)?;

    let mut strips = String::new();
    map.write_strips(&mut strips, 64)
        .expect("writing to a String");
    print!("{strips}");
    let (mut used, mut free) = (0usize, 0usize);
    for s in &map {
        match s.kind {
            SpanKind::Used => used += 1,
            SpanKind::Free | SpanKind::Frontier => free += 1,
            _ => {}
        }
    }
    println!(
        "{} live blocks in {used} used spans (adjacent used blocks show as one), {free} free spans",
        live.len()
    );
    println!("{:?}", map.stats());
    if let Some(l) = map.largest_free() {
        println!(
            "largest free span: {} bytes at {:#x} ({:?}, chunk {})",
            l.len, l.addr, l.kind, l.chunk
        );
    }
    println!("wrote {path} ({} bytes)", svg.len());

    for (p, layout) in live {
        // SAFETY: every block still live came from `heap` with its layout.
        unsafe { heap.deallocate(p, layout) };
    }
    Ok(())
}
