//! Alignment and overflow-checked rounding. Pure integer maths: no pointers, no memory.

#![forbid(unsafe_code)]

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
#[inline]
pub(crate) const fn align_up(x: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Rounds `x` down to a multiple of `align` (a power of two).
#[inline]
pub(crate) const fn align_down(x: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    x & !(align - 1)
}

/// Is `x` a multiple of `align` (a power of two)?
#[inline]
pub(crate) const fn is_aligned(x: usize, align: usize) -> bool {
    x & (align - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(align_up(0, 16), Some(0));
        assert_eq!(align_up(1, 16), Some(16));
        assert_eq!(align_up(16, 16), Some(16));
        assert_eq!(align_up(17, 16), Some(32));
        assert_eq!(align_up(usize::MAX, 16), None);
        assert_eq!(align_up(usize::MAX - 15, 16), Some(usize::MAX - 15));
        assert_eq!(align_down(31, 16), 16);
        assert!(is_aligned(4096, 4096));
        assert!(!is_aligned(4097, 4096));
    }
}
