//! The workloads, their random numbers and distributions, and the tagged blocks they use.

use crate::peers::{FIXED_HEAP, Subject};
use std::alloc::Layout;
use std::ptr;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// SplitMix64.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    #[inline(always)]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n < 2^32), from the low 32 bits of `r`.
    #[inline(always)]
    pub(crate) fn pick(r: u64, n: usize) -> usize {
        (((r & 0xFFFF_FFFF) * n as u64) >> 32) as usize
    }
}

/// 4096 quantiles of a log-uniform distribution on `lo..=hi`.
pub(crate) struct LogTable(Vec<u32>);

impl LogTable {
    pub(crate) fn new(lo: usize, hi: usize) -> Self {
        let (a, b) = ((lo as f64).ln(), ((hi + 1) as f64).ln());
        LogTable(
            (0..4096)
                .map(|i| {
                    let u = (i as f64 + 0.5) / 4096.0;
                    ((a + (b - a) * u).exp() as usize).clamp(lo, hi) as u32
                })
                .collect(),
        )
    }
    /// 4096 quantiles of any distribution, from its quantile function on (0, 1).
    pub(crate) fn quantiles(f: impl Fn(f64) -> usize) -> Self {
        LogTable(
            (0..4096)
                .map(|i| f((i as f64 + 0.5) / 4096.0).max(1) as u32)
                .collect(),
        )
    }
    #[inline(always)]
    pub(crate) fn get(&self, r: u64) -> usize {
        self.0[(r & 4095) as usize] as usize
    }
}

/// The size distributions of the `sizes` grid and the efficiency runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dist {
    /// 64 B every time.
    Fixed,
    /// Uniform 8 B..4 KiB.
    Uniform,
    /// Log-uniform 8 B..4 KiB (churn's).
    LogUniform,
    /// Powers of two, 8 B..4 KiB, each equally likely.
    Pow2,
    /// 90 % uniform 16..64 B, 10 % uniform 4..64 KiB.
    Bimodal,
    /// Log-uniform 8 B..64 KiB.
    Wide,
}

pub(crate) const DISTS: [Dist; 6] = [
    Dist::Fixed,
    Dist::Uniform,
    Dist::LogUniform,
    Dist::Pow2,
    Dist::Bimodal,
    Dist::Wide,
];

impl Dist {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Dist::Fixed => "fixed64",
            Dist::Uniform => "uniform",
            Dist::LogUniform => "loguniform",
            Dist::Pow2 => "pow2",
            Dist::Bimodal => "bimodal",
            Dist::Wide => "wide",
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dist::Fixed => "64 B",
            Dist::Uniform => "uniform 8 B-4 KiB",
            Dist::LogUniform => "log-uniform 8 B-4 KiB",
            Dist::Pow2 => "powers of 2, 8 B-4 KiB",
            Dist::Bimodal => "bimodal 16-64 B / 4-64 KiB",
            Dist::Wide => "log-uniform 8 B-64 KiB",
        }
    }
    pub(crate) fn table(self) -> LogTable {
        match self {
            Dist::Fixed => LogTable::quantiles(|_| 64),
            Dist::Uniform => LogTable::quantiles(|u| 8 + (u * 4089.0) as usize),
            Dist::LogUniform => LogTable::new(8, 4096),
            Dist::Pow2 => LogTable::quantiles(|u| 8 << (u * 10.0) as usize),
            Dist::Bimodal => LogTable::quantiles(|u| {
                if u < 0.9 {
                    16 + (u / 0.9 * 49.0) as usize
                } else {
                    4096 + ((u - 0.9) / 0.1 * 61_441.0) as usize
                }
            }),
            Dist::Wide => LogTable::new(8, 65_536),
        }
    }
}

/// Which live block a `sizes` step frees.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Life {
    /// The newest (a stack).
    Lifo,
    /// The oldest (a queue).
    Fifo,
    /// A uniformly chosen one.
    Random,
}

pub(crate) const LIVES: [Life; 3] = [Life::Lifo, Life::Fifo, Life::Random];

impl Life {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Life::Lifo => "lifo",
            Life::Fifo => "fifo",
            Life::Random => "random",
        }
    }
}

/// Alignment shift for 8 (70 %), 16 (25 %), 64 (5 %), from 16 bits of `r`.
#[inline(always)]
pub(crate) fn align_shift(r: u64) -> u8 {
    match Rng::pick(r & 0xFFFF, 20 << 16) >> 16 {
        0..=13 => 3,
        14..=18 => 4,
        _ => 6,
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks with tag bytes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub(crate) struct Blk {
    pub(crate) ptr: *mut u8,
    pub(crate) size: u32,
    pub(crate) align_shift: u8,
    pub(crate) tag: u8,
}

impl Blk {
    #[inline(always)]
    pub(crate) fn layout(&self) -> Layout {
        // SAFETY: power-of-two alignment, small size.
        unsafe { Layout::from_size_align_unchecked(self.size as usize, 1 << self.align_shift) }
    }
}

/// Counters of one workload run.
#[derive(Default, Debug)]
pub(crate) struct Outcome {
    pub(crate) calls: u64,
    pub(crate) nanos: u64,
    pub(crate) reallocs: u64,
    pub(crate) in_place: u64,
    pub(crate) corrupt: u64,
    /// efficiency only: live bytes / heap bytes at the first failure.
    pub(crate) eff: Option<f64>,
    pub(crate) note: Option<String>,
}

impl Outcome {
    pub(crate) fn ns_per_call(&self) -> f64 {
        self.nanos as f64 / self.calls.max(1) as f64
    }
}

/// Allocates `size` bytes at `1 << shift` and writes the tag at both ends. Null on failure.
#[inline(always)]
pub(crate) fn new_blk<S: Subject>(s: &mut S, size: usize, shift: u8, tag: u8) -> Option<Blk> {
    let b = Blk {
        ptr: ptr::null_mut(),
        size: size as u32,
        align_shift: shift,
        tag,
    };
    // SAFETY: size > 0 everywhere in this program.
    let p = unsafe { s.alloc(b.layout()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a fresh block of `size` bytes.
    unsafe {
        p.write(tag);
        p.add(size - 1).write(tag);
    }
    Some(Blk { ptr: p, ..b })
}

/// Checks the tags and frees the block.
#[inline(always)]
pub(crate) fn free_blk<S: Subject>(s: &mut S, b: Blk, out: &mut Outcome) {
    // SAFETY: b is a live block of s with its layout; its two ends were written.
    unsafe {
        let n = b.size as usize;
        if b.ptr.read() != b.tag || b.ptr.add(n - 1).read() != b.tag {
            out.corrupt += 1;
        }
        s.dealloc(b.ptr, b.layout());
    }
}

/// Reallocs to `new_size`, checks what must have survived, writes the new last byte, counts
/// in-place moves. Returns false (block unchanged) on failure.
#[inline(always)]
pub(crate) fn realloc_blk<S: Subject>(
    s: &mut S,
    b: &mut Blk,
    new_size: usize,
    out: &mut Outcome,
) -> bool {
    let old = b.size as usize;
    // SAFETY: b is a live block of s; the new pointer spans new_size bytes; reads of bytes the
    // program wrote before (the first byte; the old last byte when it is still inside).
    unsafe {
        let p = s.realloc(b.ptr, b.layout(), new_size);
        if p.is_null() {
            return false;
        }
        out.reallocs += 1;
        if p == b.ptr {
            out.in_place += 1;
        }
        if p.read() != b.tag || (new_size >= old && p.add(old - 1).read() != b.tag) {
            out.corrupt += 1;
        }
        p.add(new_size - 1).write(b.tag);
        b.ptr = p;
        b.size = new_size as u32;
    }
    true
}

/// After a workload's timed part: the subject's own check with blocks live, every live block
/// freed (tags checked), the check again with none.
pub(crate) fn free_all<S: Subject>(
    s: &mut S,
    live: impl IntoIterator<Item = Blk>,
    out: &mut Outcome,
) -> Result<(), String> {
    s.verify(false)?;
    for b in live {
        free_blk(s, b, out);
    }
    s.verify(true)
}

pub(crate) fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wl {
    Churn(usize),
    Request {
        reset: bool,
    },
    VecPush {
        isolated: bool,
    },
    ReallocStrings,
    /// A size distribution and a lifetime order, 1 000 live blocks.
    Sizes(Dist, Life),
    /// After glibc's bench-malloc-simple.
    GlibcSimple,
    /// After talc's random-actions benchmark.
    RandomActions,
    /// After rlsf's stress benchmark.
    RlsfStress,
    Efficiency(Dist),
}

impl Wl {
    pub(crate) fn name(self) -> String {
        match self {
            Wl::Churn(k) => format!("churn K={k}"),
            Wl::Request { reset: false } => "request (free each)".into(),
            Wl::Request { reset: true } => "request (reset heap)".into(),
            Wl::VecPush { isolated: false } => "vec_push".into(),
            Wl::VecPush { isolated: true } => "vec_push_isolated".into(),
            Wl::ReallocStrings => "realloc_strings".into(),
            Wl::Sizes(d, l) => format!("sizes {}, {}", d.name(), l.id()),
            Wl::GlibcSimple => "glibc-simple".into(),
            Wl::RandomActions => "random actions (talc)".into(),
            Wl::RlsfStress => "stress (rlsf)".into(),
            Wl::Efficiency(Dist::LogUniform) => "efficiency (live/64 MiB)".into(),
            Wl::Efficiency(d) => format!("efficiency {} (live/64 MiB)", d.name()),
        }
    }
    pub(crate) fn id(self) -> String {
        match self {
            Wl::Churn(k) => format!("churn_{k}"),
            Wl::Request { reset: false } => "request_free".into(),
            Wl::Request { reset: true } => "request_reset".into(),
            Wl::VecPush { isolated: false } => "vec_push".into(),
            Wl::VecPush { isolated: true } => "vec_push_isolated".into(),
            Wl::ReallocStrings => "realloc_strings".into(),
            Wl::Sizes(d, l) => format!("sizes_{}_{}", d.id(), l.id()),
            Wl::GlibcSimple => "glibc_simple".into(),
            Wl::RandomActions => "random_actions".into(),
            Wl::RlsfStress => "rlsf_stress".into(),
            Wl::Efficiency(Dist::LogUniform) => "efficiency".into(),
            Wl::Efficiency(d) => format!("efficiency_{}", d.id()),
        }
    }
    pub(crate) fn seed(self) -> u64 {
        match self {
            Wl::Churn(k) => 0xC0FFEE ^ k as u64,
            Wl::Request { .. } => 0x5EED_0001,
            Wl::VecPush { .. } => 0x5EED_0002,
            Wl::ReallocStrings => 0x5EED_0003,
            Wl::Efficiency(d) => 0x5EED_0004 ^ (d as u64) << 16,
            Wl::Sizes(d, l) => 0x5EED_0005 ^ (d as u64) << 16 ^ (l as u64) << 24,
            Wl::GlibcSimple => 0x5EED_0006,
            Wl::RandomActions => 0x5EED_0007,
            Wl::RlsfStress => 0x5EED_0008,
        }
    }
    pub(crate) fn has_inplace(self) -> bool {
        matches!(
            self,
            Wl::VecPush { .. } | Wl::ReallocStrings | Wl::RandomActions
        )
    }
    pub(crate) fn is_eff(self) -> bool {
        matches!(self, Wl::Efficiency(_))
    }
}

pub(crate) struct Dists {
    /// 8 B..4 KiB.
    pub(crate) small: LogTable,
    /// The tables of [`DISTS`], in its order.
    pub(crate) grid: Vec<LogTable>,
    /// 1..16384 elements.
    pub(crate) vec_len: LogTable,
    /// 16 B..8 KiB.
    pub(crate) str_len: LogTable,
}

/// Churn at `k` live blocks: the sizes grid's random lifetime with churn's distribution (the
/// same operations, so its figures compare with earlier runs).
pub(crate) fn churn<S: Subject>(
    s: &mut S,
    k: usize,
    ops: usize,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    sizes(s, &d.small, Life::Random, k, ops, seed)
}

pub(crate) fn request<S: Subject>(
    s: &mut S,
    requests: usize,
    reset: bool,
    seed: u64,
) -> Result<Outcome, String> {
    const OBJECTS: usize = 2000;
    const RING: usize = 8;
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut objs: Vec<Blk> = Vec::with_capacity(OBJECTS + 16);
    let mut ring: [Option<Blk>; RING] = [None; RING];
    let t = Instant::now();
    for _ in 0..requests {
        let mut ri = 0;
        let mut table = new_blk(s, 1024, 4, 0x7A).ok_or("table allocation failed")?;
        out.calls += 1;
        for i in 0..OBJECTS {
            let r = rng.next();
            let what = Rng::pick(r, 100);
            let tag = (r >> 56) as u8;
            let b = if what < 40 {
                let size = 8 + Rng::pick(r >> 32, 57);
                out.calls += 1;
                new_blk(s, size, 0, tag)
            } else if what < 70 {
                let size = 16 + 8 * Rng::pick(r >> 32, 15);
                let shift = if Rng::pick(r >> 40, 5) == 0 { 4 } else { 3 };
                out.calls += 1;
                new_blk(s, size, shift, tag)
            } else {
                let target = 16usize << Rng::pick(r >> 32, 7);
                out.calls += 1;
                new_blk(s, 16, 3, tag).and_then(|mut b| {
                    while (b.size as usize) < target {
                        out.calls += 1;
                        let n = b.size as usize * 2;
                        if !realloc_blk(s, &mut b, n, &mut out) {
                            return None;
                        }
                    }
                    Some(b)
                })
            }
            .ok_or("allocation failed")?;
            if Rng::pick(r >> 44, 10) < 3 {
                if let Some(old) = ring[ri].replace(b) {
                    free_blk(s, old, &mut out);
                    out.calls += 1;
                }
                ri = (ri + 1) % RING;
            } else {
                objs.push(b);
            }
            if matches!(i, 250 | 500 | 1000 | 1800) {
                let n = table.size as usize * 2;
                let nt = new_blk(s, n, 4, table.tag).ok_or("table allocation failed")?;
                // SAFETY: two distinct live blocks; the old one's bytes are copied (rehash).
                unsafe { ptr::copy_nonoverlapping(table.ptr, nt.ptr, table.size as usize) };
                // SAFETY: nt spans n bytes; restore its last tag after the copy.
                unsafe { nt.ptr.add(n - 1).write(nt.tag) };
                free_blk(s, table, &mut out);
                table = nt;
                out.calls += 2;
            }
        }
        if reset {
            objs.clear();
            ring = [None; RING];
            if !s.reset() {
                return Err("reset not supported".into());
            }
            out.calls += 1;
        } else {
            for b in ring.iter_mut().filter_map(Option::take) {
                free_blk(s, b, &mut out);
                out.calls += 1;
            }
            for b in objs.drain(..) {
                free_blk(s, b, &mut out);
                out.calls += 1;
            }
            free_blk(s, table, &mut out);
            out.calls += 1;
        }
    }
    out.nanos = elapsed_ns(t);
    s.verify(true)?;
    Ok(out)
}

pub(crate) struct VecSlot<S> {
    b: Option<Blk>,
    /// Target capacity in bytes.
    target: usize,
    owner: Option<S>,
}

pub(crate) fn vec_push<S: Subject>(
    s: &mut S,
    nvec: usize,
    steps: usize,
    isolated: bool,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut vs: Vec<VecSlot<S>> = (0..nvec)
        .map(|_| VecSlot {
            b: None,
            target: 0,
            owner: None,
        })
        .collect();
    let t = Instant::now();
    for _ in 0..steps {
        let r = rng.next();
        let v = &mut vs[Rng::pick(r, nvec)];
        match v.b {
            None => {
                v.target = 8 * d.vec_len.get(r >> 32);
                if isolated {
                    v.owner = s.spawn();
                }
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                v.b = Some(new_blk(sub, 32, 3, (r >> 48) as u8).ok_or("allocation failed")?);
            }
            Some(b) if b.size as usize >= v.target => {
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                free_blk(sub, b, &mut out);
                v.b = None;
                v.owner = None;
            }
            Some(mut b) => {
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                let n = b.size as usize * 2;
                if !realloc_blk(sub, &mut b, n, &mut out) {
                    return Err("realloc failed".into());
                }
                v.b = Some(b);
            }
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    s.verify(false)?;
    for v in &mut vs {
        if let Some(o) = v.owner.as_mut() {
            o.verify(false)?;
        }
        if let Some(b) = v.b.take() {
            let sub = v.owner.as_mut().unwrap_or(&mut *s);
            free_blk(sub, b, &mut out);
        }
        if let Some(o) = v.owner.as_mut() {
            o.verify(true)?;
        }
        v.owner = None;
    }
    s.verify(true)?;
    Ok(out)
}

pub(crate) fn realloc_strings<S: Subject>(
    s: &mut S,
    nstr: usize,
    steps: usize,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut strs: Vec<(Option<Blk>, usize)> = vec![(None, 0); nstr];
    let t = Instant::now();
    for _ in 0..steps {
        let r = rng.next();
        let slot = &mut strs[Rng::pick(r, nstr)];
        let add = 1 + ((r >> 32) & 15) as usize;
        match slot.0 {
            None => {
                slot.1 = d.str_len.get(r >> 40);
                slot.0 = Some(new_blk(s, add, 0, (r >> 56) as u8).ok_or("allocation failed")?);
            }
            Some(b) if b.size as usize >= slot.1 => {
                free_blk(s, b, &mut out);
                slot.0 = None;
            }
            Some(mut b) => {
                let n = b.size as usize + add;
                if !realloc_blk(s, &mut b, n, &mut out) {
                    return Err("realloc failed".into());
                }
                slot.0 = Some(b);
            }
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    free_all(s, strs.into_iter().filter_map(|x| x.0), &mut out)?;
    Ok(out)
}

pub(crate) fn efficiency<S: Subject>(
    s: &mut S,
    seed: u64,
    sizes: &LogTable,
    max_ops: usize,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut live: Vec<Blk> = Vec::new();
    let mut live_bytes: u64 = 0;
    let mut failed = false;
    let t = Instant::now();
    for _ in 0..max_ops {
        let r = rng.next();
        let what = Rng::pick(r, 100);
        out.calls += 1;
        if live.is_empty() || what < 55 {
            let size = sizes.get(r >> 32);
            match new_blk(s, size, align_shift(r >> 44), (r >> 24) as u8) {
                Some(b) => {
                    live_bytes += size as u64;
                    live.push(b);
                }
                None => {
                    failed = true;
                    break;
                }
            }
        } else if what < 75 {
            let b = live.swap_remove(Rng::pick(r >> 32, live.len()));
            live_bytes -= b.size as u64;
            free_blk(s, b, &mut out);
        } else {
            let i = Rng::pick(r >> 32, live.len());
            let new_size = sizes.get(r >> 20);
            let mut b = live[i];
            if !realloc_blk(s, &mut b, new_size, &mut out) {
                failed = true;
                break;
            }
            live_bytes = live_bytes - live[i].size as u64 + new_size as u64;
            live[i] = b;
        }
    }
    out.nanos = elapsed_ns(t);
    if !failed {
        out.note = Some(format!("no failure within {max_ops} ops"));
    }
    out.eff = Some(live_bytes as f64 / FIXED_HEAP as f64);
    free_all(s, live, &mut out)?;
    Ok(out)
}

/// A size distribution and a lifetime order: fill to `k` live blocks (untimed), then `ops`
/// steps (timed), each an allocation (p = 0.55 below `k` live, 0.45 at or above) or the free
/// of the newest (LIFO), the oldest (FIFO) or a uniformly chosen (random) live block.
/// Alignment as in churn.
pub(crate) fn sizes<S: Subject>(
    s: &mut S,
    table: &LogTable,
    life: Life,
    k: usize,
    ops: usize,
    seed: u64,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut live: std::collections::VecDeque<Blk> = std::collections::VecDeque::new();
    let fresh = |s: &mut S, rng: &mut Rng| {
        let r = rng.next();
        new_blk(s, table.get(r), align_shift(r >> 12), (r >> 40) as u8)
    };
    for _ in 0..k {
        live.push_back(fresh(s, &mut rng).ok_or("allocation failed while filling")?);
    }
    let t = Instant::now();
    for _ in 0..ops {
        let r = rng.next();
        let p_alloc = if live.len() < k { 55 } else { 45 };
        if live.is_empty() || Rng::pick(r, 100) < p_alloc {
            live.push_back(fresh(s, &mut rng).ok_or("allocation failed")?);
        } else {
            let b = match life {
                Life::Lifo => live.pop_back(),
                Life::Fifo => live.pop_front(),
                Life::Random => live.swap_remove_back(Rng::pick(r >> 32, live.len())),
            };
            free_blk(s, b.ok_or("no live block")?, &mut out);
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    free_all(s, live, &mut out)?;
    Ok(out)
}

/// After glibc's `benchtests/bench-malloc-simple.c` (as mimalloc-bench runs it): batches of
/// `n` blocks of one size allocated, then freed in allocation order, for every `n` in 25, 100,
/// 400, 1 600 and every size in 16, 64, 256, 1 024, 4 096 B; `rounds` times over.
pub(crate) fn glibc_simple<S: Subject>(
    s: &mut S,
    rounds: usize,
    seed: u64,
) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let mut batch: Vec<Blk> = Vec::with_capacity(1600);
    let tag = seed as u8;
    let t = Instant::now();
    for _ in 0..rounds {
        for size in [16usize, 64, 256, 1024, 4096] {
            for n in [25usize, 100, 400, 1600] {
                for _ in 0..n {
                    batch.push(new_blk(s, size, 3, tag).ok_or("allocation failed")?);
                }
                for b in batch.drain(..) {
                    free_blk(s, b, &mut out);
                }
                out.calls += 2 * n as u64;
            }
        }
    }
    out.nanos = elapsed_ns(t);
    s.verify(true)?;
    Ok(out)
}

/// After talc's random-actions benchmark (its published description): each step is a
/// realloc of a random live block to a uniform size in 1..3 x `max` (1/7), else an allocation
/// (3/7, or always below 300 live blocks) or the free of a random live block (3/7). Sizes are
/// biased toward small ones (`1 + (max - 1) u^2`, our choice), alignment 1..64 B (log-uniform);
/// the maximum cycles through 1 000, 3 000, 10 000 and 30 000 B every 1 000 steps.
pub(crate) fn random_actions<S: Subject>(
    s: &mut S,
    ops: usize,
    seed: u64,
) -> Result<Outcome, String> {
    const MAXES: [usize; 4] = [1000, 3000, 10_000, 30_000];
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut live: Vec<Blk> = Vec::with_capacity(4096);
    let t = Instant::now();
    for i in 0..ops {
        let max = MAXES[(i / 1000) % MAXES.len()];
        let r = rng.next();
        let action = Rng::pick(r, 7);
        if action == 6 && !live.is_empty() {
            let j = Rng::pick(r >> 32, live.len());
            let new_size = 1 + Rng::pick(rng.next(), 3 * max - 1);
            let mut b = live[j];
            if !realloc_blk(s, &mut b, new_size, &mut out) {
                return Err("realloc failed".into());
            }
            live[j] = b;
        } else if action < 3 || live.len() < 300 {
            let r2 = rng.next();
            let u = (r2 >> 11) as f64 / (1u64 << 53) as f64;
            let size = 1 + ((max - 1) as f64 * u * u) as usize;
            let shift = Rng::pick(r >> 40, 7) as u8;
            live.push(new_blk(s, size, shift, (r2 >> 3) as u8).ok_or("allocation failed")?);
        } else {
            let b = live.swap_remove(Rng::pick(r >> 32, live.len()));
            free_blk(s, b, &mut out);
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    free_all(s, live, &mut out)?;
    Ok(out)
}

/// After rlsf's stress benchmark (its published description): fill an array of 1 024 live
/// blocks, then repeatedly free a random one and allocate a new one with a size in
/// `min..=min + mask` and alignment `4 << (r & 3)`; the ten ranges 1..8, 2..15, 4..19, ...,
/// 128..255 (min doubling from 1, mask 7, 15, 15, 31, ...) take turns every 1 000 steps.
pub(crate) fn rlsf_stress<S: Subject>(s: &mut S, ops: usize, seed: u64) -> Result<Outcome, String> {
    // (min, mask) per range.
    const RANGES: [(usize, usize); 10] = [
        (1, 7),
        (2, 15),
        (4, 15),
        (8, 31),
        (16, 31),
        (32, 63),
        (48, 63),
        (64, 127),
        (96, 127),
        (128, 127),
    ];
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let new = |s: &mut S, r: u64, i: usize| {
        let (min, mask) = RANGES[(i / 1000) % RANGES.len()];
        let size = min + ((r >> 8) as usize & mask);
        new_blk(s, size, 2 + (r & 3) as u8, (r >> 16) as u8)
    };
    let mut live: Vec<Blk> = Vec::with_capacity(1024);
    for i in 0..1024 {
        live.push(new(s, rng.next(), i).ok_or("allocation failed while filling")?);
    }
    let t = Instant::now();
    for i in 0..ops {
        let r = rng.next();
        let j = Rng::pick(r >> 32, live.len());
        free_blk(s, live[j], &mut out);
        live[j] = new(s, rng.next(), i).ok_or("allocation failed")?;
        out.calls += 2;
    }
    out.nanos = elapsed_ns(t);
    free_all(s, live, &mut out)?;
    Ok(out)
}
