//! How a model emits rows (per request, per sample) without knowing where they go.
//!
//! The engine and the agents only see [`Observer`]; the experiments crate supplies one
//! that streams rows to Parquet. [`NullObserver`] compiles to nothing, so an untraced
//! run pays nothing for tracing.

/// Receives rows of type `R` as the model produces them.
pub trait Observer<R> {
    /// Takes one row.
    fn observe(&mut self, row: R);
}

/// Discards every row.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullObserver;

impl<R> Observer<R> for NullObserver {
    #[inline(always)]
    fn observe(&mut self, _row: R) {}
}

/// Keeps every row in memory: for tests and small runs.
#[derive(Clone, Debug)]
pub struct VecObserver<R> {
    /// Rows in the order observed.
    pub rows: Vec<R>,
}

impl<R> Default for VecObserver<R> {
    fn default() -> Self {
        VecObserver { rows: Vec::new() }
    }
}

impl<R> Observer<R> for VecObserver<R> {
    fn observe(&mut self, row: R) {
        self.rows.push(row);
    }
}

/// An observer that may be absent: `None` discards every row, as [`NullObserver`].
impl<R, O: Observer<R>> Observer<R> for Option<O> {
    #[inline]
    fn observe(&mut self, row: R) {
        if let Some(observer) = self {
            observer.observe(row);
        }
    }
}

impl<R, O: Observer<R> + ?Sized> Observer<R> for &mut O {
    fn observe(&mut self, row: R) {
        (**self).observe(row);
    }
}
