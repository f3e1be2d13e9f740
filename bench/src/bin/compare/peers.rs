//! The subjects: one trait over every allocator under test, and its implementations.

use allocator_api2::alloc::Allocator as _;
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::{self, NonNull};

/// One allocator under test. All sizes are non-zero.
pub(crate) trait Subject: Sized {
    /// Short display name.
    fn name(&self) -> &'static str;
    /// Allocates a block for `layout`; null on failure.
    ///
    /// # Safety
    /// `layout.size() > 0`.
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8;
    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` came from this subject's `alloc`/`realloc` with `layout` and is not used again.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
    /// Resizes a block to `new_size` (same alignment), moving it if needed; null on failure
    /// (then the old block is untouched and still live).
    ///
    /// # Safety
    /// As for `dealloc`; `new_size > 0`.
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8;
    /// Frees every block at once, if this subject can; every pointer it handed out is then
    /// dead. Returns false (and does nothing) if it cannot.
    fn reset(&mut self) -> bool {
        false
    }
    /// A new, separate instance for one collection (vec_push_isolated), if that is this
    /// subject's natural use; `None` means "share `self`".
    fn spawn(&self) -> Option<Self> {
        None
    }
    /// Checks the subject's own invariants (outside the timing). `all_freed`: the caller has
    /// freed every block it allocated.
    fn verify(&mut self, all_freed: bool) -> Result<(), String> {
        let _ = all_freed;
        Ok(())
    }
}

/// The new layout for a realloc: same alignment, new size.
#[inline(always)]
pub(crate) fn resized(layout: Layout, new_size: usize) -> Layout {
    // SAFETY: the alignment comes from a valid layout, and every size used here is far below
    // isize::MAX - align.
    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) }
}

// ---- isoheap ----

pub(crate) struct Iso {
    heap: isoheap::Heap,
}

impl Iso {
    pub(crate) fn new() -> Self {
        Iso {
            heap: isoheap::Heap::new(),
        }
    }

    /// Checked mode (`HeapBuilder::checked(true)`), for its cost.
    pub(crate) fn checked() -> Self {
        Iso {
            heap: isoheap::Heap::builder().checked(true).build().unwrap(),
        }
    }

    pub(crate) fn fixed(bytes: usize) -> Self {
        let heap = isoheap::Heap::builder()
            .initial(bytes)
            .limit(bytes)
            .build()
            .unwrap_or_else(|e| {
                panic!("isoheap: Heap::builder().initial({bytes}).limit({bytes}): {e}")
            });
        Iso { heap }
    }
}

impl Subject for Iso {
    fn name(&self) -> &'static str {
        if self.heap.is_checked() {
            "isoheap_checked"
        } else {
            "isoheap"
        }
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        match self.heap.allocate(layout) {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; blocks are never null.
        unsafe { self.heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = resized(layout, new_size);
        // SAFETY: forwarded contract; grow for bigger sizes, shrink for smaller ones.
        let r = unsafe {
            let p = NonNull::new_unchecked(ptr);
            if new_size >= layout.size() {
                self.heap.grow(p, layout, new)
            } else {
                self.heap.shrink(p, layout, new)
            }
        };
        match r {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    fn reset(&mut self) -> bool {
        self.heap.reset();
        true
    }
    fn spawn(&self) -> Option<Self> {
        Some(if self.heap.is_checked() {
            Iso::checked()
        } else {
            Iso::new()
        })
    }
    fn verify(&mut self, all_freed: bool) -> Result<(), String> {
        self.heap.check().map_err(|e| format!("Heap::check: {e}"))?;
        let st = self.heap.stats();
        if all_freed && st.in_use != 0 {
            return Err(format!(
                "stats().in_use = {} after every block was freed ({st:?})",
                st.in_use
            ));
        }
        Ok(())
    }
}

// ---- glibc malloc and mimalloc, through GlobalAlloc ----

pub(crate) struct Sys;

impl Subject for Sys {
    fn name(&self) -> &'static str {
        "system"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { System.alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

pub(crate) struct Mi;

impl Subject for Mi {
    fn name(&self) -> &'static str {
        "mimalloc"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

// ---- bumpalo ----

pub(crate) struct BumpS {
    bump: bumpalo::Bump,
}

impl BumpS {
    pub(crate) fn new() -> Self {
        BumpS {
            bump: bumpalo::Bump::new(),
        }
    }
    pub(crate) fn limited(bytes: usize) -> Self {
        let bump = bumpalo::Bump::new();
        bump.set_allocation_limit(Some(bytes));
        BumpS { bump }
    }
}

impl Subject for BumpS {
    fn name(&self) -> &'static str {
        "bumpalo"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        match self.bump.try_alloc_layout(layout) {
            Ok(p) => p.as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (bumpalo reclaims only the most recent block).
        unsafe { (&self.bump).deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = resized(layout, new_size);
        // SAFETY: forwarded contract.
        let r = unsafe {
            let p = NonNull::new_unchecked(ptr);
            if new_size >= layout.size() {
                (&self.bump).grow(p, layout, new)
            } else {
                (&self.bump).shrink(p, layout, new)
            }
        };
        match r {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    fn reset(&mut self) -> bool {
        self.bump.reset();
        true
    }
    fn spawn(&self) -> Option<Self> {
        Some(BumpS::new())
    }
}

// ---- buffer-backed: an anonymous mapping per instance ----

/// An anonymous private mapping, unmapped on drop.
pub(crate) struct Region {
    base: *mut u8,
    len: usize,
}

impl Region {
    pub(crate) fn new(len: usize) -> Region {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
        Region {
            base: p.cast(),
            len,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: this mapping was made by Region::new and nothing uses it any more (the
        // allocator over it is declared before the region and so dropped first).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Address space for the buffer-backed peers outside `efficiency` (only touched pages cost).
pub(crate) const BIG_REGION: usize = 8 << 30;
/// The fixed heap of the `efficiency` workload.
pub(crate) const FIXED_HEAP: usize = 64 << 20;

pub(crate) type TalcHeap = talc::base::Talc<talc::source::Manual, talc::DefaultBinning>;

pub(crate) struct TalcS {
    talc: TalcHeap,
    _region: Region,
}

impl TalcS {
    pub(crate) fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut talc = TalcHeap::new(talc::source::Manual);
        // SAFETY: the region is ours, outlives `talc` (field order) and is used by nothing else.
        let ok = unsafe { talc.claim(region.base, region.len) };
        assert!(ok.is_some(), "talc: claim failed");
        TalcS {
            talc,
            _region: region,
        }
    }
}

impl Subject for TalcS {
    fn name(&self) -> &'static str {
        "talc"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { self.talc.allocate(layout) }.map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.talc.deallocate(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; on a move the old block is copied and freed here.
        unsafe {
            if self.talc.try_realloc_in_place(ptr, layout, new_size) {
                return ptr;
            }
            let Some(n) = self.talc.allocate(resized(layout, new_size)) else {
                return ptr::null_mut();
            };
            ptr::copy_nonoverlapping(ptr, n.as_ptr(), layout.size().min(new_size));
            self.talc.deallocate(ptr, layout);
            n.as_ptr()
        }
    }
}

pub(crate) type Tlsf = rlsf::Tlsf<'static, u32, u32, 30, 32>;

pub(crate) struct RlsfS {
    tlsf: Tlsf,
    _region: Region,
}

impl RlsfS {
    pub(crate) fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut tlsf = Tlsf::new();
        let block = NonNull::slice_from_raw_parts(
            NonNull::new(region.base).expect("mmap returned null"),
            region.len,
        );
        // SAFETY: the region is ours and outlives `tlsf` (field order); nothing else uses it.
        let ok = unsafe { tlsf.insert_free_block_ptr(block) };
        assert!(ok.is_some(), "rlsf: insert_free_block_ptr failed");
        RlsfS {
            tlsf,
            _region: region,
        }
    }
}

impl Subject for RlsfS {
    fn name(&self) -> &'static str {
        "rlsf"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.tlsf
            .allocate(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; same alignment as allocated.
        unsafe {
            self.tlsf
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; the alignment is unchanged, as rlsf requires.
        unsafe {
            self.tlsf
                .reallocate(NonNull::new_unchecked(ptr), resized(layout, new_size))
                .map_or(ptr::null_mut(), |p| p.as_ptr())
        }
    }
}

pub(crate) struct Lla {
    heap: linked_list_allocator::Heap,
    _region: Region,
}

impl Lla {
    pub(crate) fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the region is ours and outlives `heap` (field order); nothing else uses it.
        unsafe { heap.init(region.base, region.len) };
        Lla {
            heap,
            _region: region,
        }
    }
}

impl Subject for Lla {
    fn name(&self) -> &'static str {
        "linked_list_allocator"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.heap
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // linked_list_allocator has no realloc: allocate, copy, free.
        let Ok(n) = self.heap.allocate_first_fit(resized(layout, new_size)) else {
            return ptr::null_mut();
        };
        // SAFETY: distinct live blocks; forwarded contract for the free.
        unsafe {
            ptr::copy_nonoverlapping(ptr, n.as_ptr(), layout.size().min(new_size));
            self.heap.deallocate(NonNull::new_unchecked(ptr), layout);
        }
        n.as_ptr()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Isoheap,
    IsoChecked,
    System,
    Mimalloc,
    Bumpalo,
    Talc,
    Rlsf,
    Lla,
}

pub(crate) const KINDS: [Kind; 8] = [
    Kind::Isoheap,
    Kind::IsoChecked,
    Kind::System,
    Kind::Mimalloc,
    Kind::Bumpalo,
    Kind::Talc,
    Kind::Rlsf,
    Kind::Lla,
];

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Isoheap => "isoheap",
            Kind::IsoChecked => "isoheap_checked",
            Kind::System => "system",
            Kind::Mimalloc => "mimalloc",
            Kind::Bumpalo => "bumpalo",
            Kind::Talc => "talc",
            Kind::Rlsf => "rlsf",
            Kind::Lla => "linked_list_allocator",
        }
    }
    pub(crate) fn color(self) -> &'static str {
        match self {
            Kind::Isoheap => "#d62728",
            Kind::IsoChecked => "#e377c2",
            Kind::System => "#1f77b4",
            Kind::Mimalloc => "#2ca02c",
            Kind::Bumpalo => "#9467bd",
            Kind::Talc => "#ff7f0e",
            Kind::Rlsf => "#8c564b",
            Kind::Lla => "#7f7f7f",
        }
    }
}
