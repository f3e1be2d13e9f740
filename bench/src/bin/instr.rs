//! Instructions per allocator call, counted by callgrind (stable on a noisy machine).
//!
//! `cargo run --release -p isoheap-bench --bin instr -- SUBJECT OPS` runs churn at 10,000 live
//! blocks (sizes log-uniform 8 B..4 KiB, alignment 8, fixed seed): fill to 10,000 blocks, then
//! OPS steps of one deallocate (a random live block) + one allocate. SUBJECT is `isoheap`,
//! `talc` or `rlsf`. Run it twice under callgrind with different OPS and divide the difference in
//! instructions by twice the difference in OPS: setup and exit cancel out.
//!
//! ```text
//! cargo build --release -p isoheap-bench --bin instr
//! for s in isoheap talc rlsf; do for n in 200000 400000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/instr $s $n 2>&1 |
//!     sed -n "s/.*Collected : //p"; done; done
//! ```

use std::alloc::Layout;
use std::ptr::NonNull;

const LIVE: usize = 10_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Log-uniform 8..4096 without floating point: a random exponent, then a random mantissa.
    fn size(&mut self) -> usize {
        let r = self.next();
        let e = 3 + (r % 9) as u32; // 2^3 .. 2^11
        let base = 1usize << e;
        base + ((r >> 8) as usize % base)
    }
}

trait Subject {
    fn alloc(&mut self, l: Layout) -> *mut u8;
    fn free(&mut self, p: *mut u8, l: Layout);
}

struct Iso(isoheap::Heap);
impl Subject for Iso {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        self.0.allocate(l).unwrap().cast::<u8>().as_ptr()
    }
    fn free(&mut self, p: *mut u8, l: Layout) {
        // SAFETY: p was allocated by this heap with l.
        unsafe { self.0.deallocate(NonNull::new(p).unwrap(), l) }
    }
}

fn region(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping, never unmapped (the process exits).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED);
    p.cast()
}

struct Talc(talc::base::Talc<talc::source::Manual, talc::DefaultBinning>);
impl Subject for Talc {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero size.
        unsafe { self.0.allocate(l) }.unwrap().as_ptr()
    }
    fn free(&mut self, p: *mut u8, l: Layout) {
        // SAFETY: p was allocated by this talc with l.
        unsafe { self.0.deallocate(p, l) }
    }
}

struct Rlsf(rlsf::Tlsf<'static, u32, u32, 30, 32>);
impl Subject for Rlsf {
    fn alloc(&mut self, l: Layout) -> *mut u8 {
        self.0.allocate(l).unwrap().as_ptr()
    }
    fn free(&mut self, p: *mut u8, l: Layout) {
        // SAFETY: p was allocated by this tlsf with l's alignment.
        unsafe { self.0.deallocate(NonNull::new(p).unwrap(), l.align()) }
    }
}

fn run(s: &mut dyn Subject, ops: usize) -> usize {
    let mut rng = Rng(42);
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(LIVE);
    for _ in 0..LIVE {
        let l = Layout::from_size_align(rng.size(), 8).unwrap();
        live.push((s.alloc(l), l));
    }
    let mut sum = 0usize;
    for _ in 0..ops {
        let i = rng.next() as usize % LIVE;
        let (p, l) = live[i];
        s.free(p, l);
        let l = Layout::from_size_align(rng.size(), 8).unwrap();
        let q = s.alloc(l);
        sum = sum.wrapping_add(q as usize);
        live[i] = (q, l);
    }
    for (p, l) in live {
        s.free(p, l);
    }
    sum
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let subject = args.get(1).map_or("isoheap", String::as_str);
    let ops: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let sum = match subject {
        "isoheap" => run(&mut Iso(isoheap::Heap::new()), ops),
        "talc" => {
            let mut t = talc::base::Talc::new(talc::source::Manual);
            // SAFETY: a fresh region that nothing else uses.
            unsafe { t.claim(region(1 << 30), 1 << 30) }.unwrap();
            run(&mut Talc(t), ops)
        }
        "rlsf" => {
            let mut t = rlsf::Tlsf::new();
            let b = NonNull::slice_from_raw_parts(NonNull::new(region(1 << 30)).unwrap(), 1 << 30);
            // SAFETY: a fresh region that nothing else uses.
            unsafe { t.insert_free_block_ptr(b) }.unwrap();
            run(&mut Rlsf(t), ops)
        }
        other => panic!("unknown subject {other}: isoheap, talc or rlsf"),
    };
    println!("{subject}: {ops} ops done ({sum:x})");
}
