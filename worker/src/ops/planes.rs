//! Views of an activation's NCHW planes for the streamed kernels, which
//! read and write them a line at a time: [`ConvRows`](crate::ops::conv_rows)
//! reads input lines, [`ProjectRows`](crate::ops::project_rows) writes
//! output lines.
//!
//! A block with a residual runs in place
//! ([`FastProjected`](crate::ops::project::op::FastProjected)): its output
//! goes into its input's buffer, whose lines the expansion has just read,
//! so the writes find them in cache instead of fetching a fresh tensor's
//! lines from memory. There the expansion reads lines of the very buffer
//! the projection writes, each line before any write reaches it, which
//! two Rust slices over one buffer cannot express: these views hold raw
//! pointers and lend a slice for one line (or one write) at a time.

use std::marker::PhantomData;

/// Read access to planes, one line at a time.
#[derive(Clone, Copy)]
pub struct PlanesIn<'a> {
    start: *const f32,
    len: usize,
    _planes: PhantomData<&'a [f32]>,
}

impl<'a> From<&'a [f32]> for PlanesIn<'a> {
    fn from(planes: &'a [f32]) -> Self {
        PlanesIn {
            start: planes.as_ptr(),
            len: planes.len(),
            _planes: PhantomData,
        }
    }
}

impl PlanesIn<'_> {
    /// Floats in the planes.
    pub fn floats(&self) -> usize {
        self.len
    }

    /// `len` floats from `start` on.
    pub fn line(&self, start: usize, len: usize) -> &[f32] {
        assert!(start + len <= self.len, "line past the planes");
        // SAFETY: in bounds (asserted), valid for reads for `'a`, and not
        // being written while the line is lent (`in_place`'s contract; a
        // view made from a shared slice is never written at all).
        unsafe { std::slice::from_raw_parts(self.start.add(start), len) }
    }
}

/// Write access to planes, one write at a time.
pub struct PlanesOut<'a> {
    start: *mut f32,
    len: usize,
    _planes: PhantomData<&'a mut [f32]>,
}

impl<'a> From<&'a mut [f32]> for PlanesOut<'a> {
    fn from(planes: &'a mut [f32]) -> Self {
        PlanesOut {
            start: planes.as_mut_ptr(),
            len: planes.len(),
            _planes: PhantomData,
        }
    }
}

impl PlanesOut<'_> {
    /// Floats in the planes.
    pub fn floats(&self) -> usize {
        self.len
    }

    /// `len` floats from `start` on, for one write.
    pub fn slice_mut(&mut self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "write past the planes");
        // SAFETY: in bounds (asserted), valid for writes for `'a`, and not
        // lent to a reader while this slice lives (`in_place`'s contract).
        unsafe { std::slice::from_raw_parts_mut(self.start.add(start), len) }
    }
}

/// A reading and a writing view of the same `planes`.
///
/// # Safety
/// The caller must not let a line lent by the reader be alive while the
/// writer writes (no slice of one may outlive its use into the other's),
/// and must only read lines no write has reached yet if it wants the
/// input's values.
pub unsafe fn in_place(planes: &mut [f32]) -> (PlanesIn<'_>, PlanesOut<'_>) {
    let start = planes.as_mut_ptr();
    let reader = PlanesIn {
        start,
        len: planes.len(),
        _planes: PhantomData,
    };
    let writer = PlanesOut {
        start,
        len: planes.len(),
        _planes: PhantomData,
    };
    (reader, writer)
}
