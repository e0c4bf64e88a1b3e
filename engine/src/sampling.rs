//! Sampling state on a fixed time grid without adding events.
//!
//! A model calls [`Grid::due_before`] at the start of every event: it yields each grid
//! instant before `now` that has not been emitted yet, and the model records its state
//! for each (the state that held since the previous event). Because no event is ever
//! scheduled for sampling, turning it on cannot change the run it observes.
//!
//! ```
//! use infersim_engine::{sampling::Grid, SimDuration, SimTime};
//! let mut grid = Grid::new(SimDuration::from_secs(10).unwrap());
//! let due: Vec<u64> = grid.due_before(SimTime::from_secs_f64(25.0)?).map(|t| t.as_nanos() / 1_000_000_000).collect();
//! assert_eq!(due, [0, 10, 20]);
//! assert_eq!(grid.due_before(SimTime::from_secs_f64(25.0)?).count(), 0);
//! # Ok::<(), infersim_engine::ScheduleError>(())
//! ```

use crate::time::{SimDuration, SimTime};

/// Grid instants 0, every, 2 x every, ... handed out once each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    every: SimDuration,
    next: Option<SimTime>,
}

impl Grid {
    /// A grid with spacing `every` (> 0) starting at time zero.
    pub fn new(every: SimDuration) -> Self {
        assert!(every > SimDuration::ZERO, "a sampling grid needs a positive spacing");
        Grid { every, next: Some(SimTime::ZERO) }
    }

    /// The grid instants before `now` not yet handed out, in order.
    pub fn due_before(&mut self, now: SimTime) -> impl Iterator<Item = SimTime> + '_ {
        std::iter::from_fn(move || {
            let t = self.next.filter(|t| *t < now)?;
            self.next = t.checked_add(self.every);
            Some(t)
        })
    }
}
