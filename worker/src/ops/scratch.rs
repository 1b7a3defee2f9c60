//! A per-thread scratch buffer for operators that need a large temporary
//! (the stem's im2col matrix, 1.35 MB; the fused expansions' chunks, about
//! 0.5 MB), kept between calls so each inference neither maps and faults
//! in fresh pages nor zeroes them. Operators of a plan run one after
//! another, so they share it.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `len` floats of this thread's scratch buffer. Their
/// contents are left over from earlier calls (zero when the buffer grows):
/// `f` must write what it reads.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        // A nested call on this thread (none happens in a plan) would find
        // the buffer borrowed; it gets one of its own rather than a panic.
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let buffer = match borrowed.as_deref_mut() {
            Ok(shared) => shared,
            Err(_) => &mut own,
        };
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_get_their_own_buffer() {
        with_scratch(4, |outer| {
            outer.fill(1.0);
            with_scratch(8, |inner| {
                assert_eq!(inner.len(), 8);
                inner.fill(2.0);
            });
            assert_eq!(outer, [1.0; 4]);
        });
        // The shared buffer kept its contents and grows on demand.
        with_scratch(6, |again| assert_eq!(again[..4], [1.0; 4]));
    }
}
