//! # infersim-engine
//!
//! The deterministic discrete-event core of infersim. It knows nothing of GPUs,
//! requests or models: it offers integer time, a future-event list, a run loop over a
//! model's closed event enum, per-agent random streams and output statistics.
//!
//! ```
//! use infersim_engine::{Context, Model, ScheduleError, SimDuration, SimTime, Simulation, StreamId};
//! use infersim_engine::stats::Tally;
//! use rand_distr::{Distribution, Exp};
//!
//! /// This example demonstrates a Poisson source: it counts arrivals in 1000 seconds.
//! struct Source { arrivals: u64, gaps_s: Tally }
//! enum Event { Arrival }
//! const ARRIVALS: StreamId = StreamId(0);
//!
//! impl Model for Source {
//!     type Event = Event;
//!     type Error = ScheduleError;
//!     fn handle(&mut self, event: Event, ctx: &mut Context<'_, Event>) -> Result<(), ScheduleError> {
//!         match event {
//!             Event::Arrival => {
//!                 self.arrivals += 1;
//!                 let gap_s: f64 = Exp::new(2.0).unwrap().sample(ctx.rng(ARRIVALS));
//!                 self.gaps_s.add(gap_s);
//!                 // Posted: an arrival is never cancelled, so it needs no handle.
//!                 ctx.post(SimDuration::from_secs_f64(gap_s)?, Event::Arrival)?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut sim = Simulation::new(Source { arrivals: 0, gaps_s: Tally::new() }, 7, 0);
//! sim.post(SimDuration::ZERO, Event::Arrival)?;
//! sim.run_until(SimTime::from_secs_f64(1000.0)?)?;
//! let rate = sim.model().arrivals as f64 / 1000.0;
//! assert!((rate - 2.0).abs() < 0.2, "about 2 arrivals per second, got {rate}");
//! # Ok::<(), ScheduleError>(())
//! ```
//!
//! ## Contracts
//!
//! - **Time** is [`SimTime`]/[`SimDuration`], integer nanoseconds. Sampled `f64`
//!   seconds become time only through [`SimDuration::from_secs_f64`]. Scheduling before
//!   `now` is an error ([`ScheduleError::InPast`]), never a clamp.
//! - **Order** is total: events run by `(time, seq)`, `seq` counting schedule calls, so
//!   events at the same instant run first-in first-out. A run is reproducible to the
//!   event.
//! - **Events** are the model's own closed enum, handled by [`Model::handle`] with an
//!   exhaustive `match`. Agents live in [`Arena`]s addressed by typed [`Id`]s.
//! - **Randomness** comes from per-stream generators derived from (master seed,
//!   replication, [`StreamId`]); see [`rng`]. The same inputs give the same bits on any
//!   machine and any thread count.
//! - **Errors** are values: the engine returns `Result` and panics only on broken
//!   invariants.

pub mod arena;
pub mod error;
pub mod observer;
pub mod queue;
pub mod rng;
pub mod sampling;
pub mod sim;
pub mod stats;
pub mod time;

pub use arena::{Arena, Id, Slab};
pub use error::ScheduleError;
pub use observer::{NullObserver, Observer, VecObserver};
pub use queue::{EventId, EventQueue, FutureEvents, HeapQueue, IndexedQueue, QueueKind, Scheduled};
pub use rng::{RngStreams, SimRng, StreamId, derive_stream, replication_seed};
pub use sim::{Context, EventHook, Interrupt, Model, RunClock, RunLimits, Simulation, StopReason, When};
pub use time::{SimDuration, SimTime};
