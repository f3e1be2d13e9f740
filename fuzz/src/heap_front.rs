// The `Heap` target shared by the `heap` and `nightly` fuzz targets, which differ only in the
// `Allocator` trait they drive: each target imports the test kit's front end for its trait as
// `Via` (`Api2` or `Core`), then includes this file.

use isoheap::Heap;
use isoheap_fuzz::{Built, HeapSetup, Op, Target, build_heap, run};
use libfuzzer_sys::fuzz_target;

struct HeapTarget {
    setup: HeapSetup,
    built: Built,
}

impl Target for HeapTarget {
    type F<'a> = Via<&'a Heap>;
    fn front(&self) -> Via<&Heap> {
        Via::new(&self.built.heap, "Heap")
    }
    fn heap(&self) -> Option<&Heap> {
        Some(&self.built.heap)
    }
    fn budget(&self) -> Option<usize> {
        self.built.budget
    }
    fn limit(&self) -> Option<usize> {
        self.built.limit
    }
    fn reset(&mut self, renew: bool) -> Option<bool> {
        if renew {
            // Drop first, so that the new heap may get the old one's (dirty) mapping back.
            self.built.heap = Heap::new();
            self.built = build_heap(self.setup).expect("the same setup builds again");
        } else {
            self.built.heap.reset();
        }
        Some(renew)
    }
}

fuzz_target!(|input: (HeapSetup, bool, Vec<Op>)| {
    let (setup, free_at_end, ops) = input;
    // Mappings cached by heaps of earlier inputs would make runs depend on each other.
    isoheap::release_cached();
    let Some(built) = build_heap(setup) else {
        return;
    };
    let mut t = HeapTarget { setup, built };
    run(&mut t, &ops, free_at_end);
});
