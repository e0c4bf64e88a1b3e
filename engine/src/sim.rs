//! The model API and the run loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::ScheduleError;
use crate::queue::{EventId, EventQueue, FutureEvents, QueueKind};
use crate::rng::{RngStreams, SimRng, StreamId};
use crate::time::{SimDuration, SimTime};

/// A simulation model: state plus a handler for its closed set of events.
///
/// `Event` is usually an enum with small payloads (typed ids, not data), handled with
/// an exhaustive `match`, so a forgotten event kind is a compile error.
pub trait Model {
    /// The model's events.
    type Event;
    /// The model's error; scheduling errors convert into it so handlers can use `?`.
    type Error: From<ScheduleError>;

    /// Handles one event at `ctx.now()`.
    fn handle(&mut self, event: Self::Event, ctx: &mut Context<'_, Self::Event>) -> Result<(), Self::Error>;
}

/// When to schedule an event: at an instant, or after a delay from now. The one
/// scheduling method, [`Context::schedule`], takes either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At this instant (must not be in the past).
    At(SimTime),
    /// This long after now.
    After(SimDuration),
}

impl From<SimTime> for When {
    fn from(t: SimTime) -> Self {
        When::At(t)
    }
}

impl From<SimDuration> for When {
    fn from(d: SimDuration) -> Self {
        When::After(d)
    }
}

impl When {
    #[inline]
    fn resolve(self, now: SimTime) -> Result<SimTime, ScheduleError> {
        match self {
            When::At(at) if at < now => Err(ScheduleError::InPast { now, at }),
            When::At(at) => Ok(at),
            When::After(d) => now.checked_add(d).ok_or(ScheduleError::Overflow),
        }
    }
}

/// What a handler can do: read the clock, schedule and cancel events, draw random
/// numbers from its streams, and ask the run to stop.
pub struct Context<'a, E> {
    now: SimTime,
    queue: &'a mut FutureEvents<E>,
    rng: &'a mut RngStreams,
    stop: &'a mut bool,
}

impl<E> Context<'_, E> {
    /// The current simulation time.
    #[inline]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Schedules `event` at an instant or after a delay. Events at equal times run in
    /// the order they were scheduled.
    #[inline]
    pub fn schedule(&mut self, when: impl Into<When>, event: E) -> Result<EventId, ScheduleError> {
        let at = when.into().resolve(self.now)?;
        Ok(self.queue.push(at, event))
    }

    /// Schedules `event` for good, like [`Context::schedule`] but with no handle to
    /// cancel or move it by: the cheaper choice for events that always run (an
    /// arrival, a service completion that nothing interrupts).
    #[inline(always)]
    pub fn post(&mut self, when: impl Into<When>, event: E) -> Result<(), ScheduleError> {
        let at = when.into().resolve(self.now)?;
        self.queue.post(at, event);
        Ok(())
    }

    /// Posts `event` to run after every other event at its instant, even those
    /// scheduled later (see [`EventQueue::post_last`]): for a round that must see
    /// everything that happens at that instant.
    pub fn post_last(&mut self, when: impl Into<When>, event: E) -> Result<(), ScheduleError> {
        let at = when.into().resolve(self.now)?;
        self.queue.post_last(at, event);
        Ok(())
    }

    /// Cancels a pending event and returns its payload; `None` if it already ran or
    /// was cancelled.
    pub fn cancel(&mut self, id: EventId) -> Option<E> {
        self.queue.cancel(id)
    }

    /// Moves a pending event; returns its new handle.
    pub fn reschedule(&mut self, id: EventId, when: impl Into<When>) -> Result<EventId, ScheduleError> {
        let at = when.into().resolve(self.now)?;
        self.queue.reschedule(id, at).ok_or(ScheduleError::NotPending(id))
    }

    /// The time a pending event is due.
    pub fn time_of(&self, id: EventId) -> Option<SimTime> {
        self.queue.time_of(id)
    }

    /// The random stream `id` of this replication.
    #[inline]
    pub fn rng(&mut self, id: StreamId) -> &mut SimRng {
        self.rng.stream(id)
    }

    /// Ends the run after this event.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
}

/// Limits on one call of [`Simulation::run`]. The default runs until no event is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Handle events due at or before this instant, then set the clock to it.
    pub horizon: Option<SimTime>,
    /// Handle at most this many events in this call.
    pub max_events: Option<u64>,
}

/// Why [`Simulation::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No event was left.
    QueueEmpty,
    /// The next event lies beyond the horizon; the clock stands at the horizon.
    Horizon,
    /// The event budget of this call was used up.
    EventBudget,
    /// A handler called [`Context::stop`].
    Requested,
    /// The run's [`Interrupt`] was raised (Ctrl-C, say): the model stands wherever
    /// the last event left it.
    Interrupted,
}

/// A flag that ends runs early from outside: raised (by a signal handler, another
/// thread, a notebook's stop button), every run that holds it returns
/// [`StopReason::Interrupted`] within [`Interrupt::CHECK_EVERY`] events. Clones share
/// the flag. The default never rises.
///
/// ```
/// use infersim_engine::Interrupt;
/// let ctrl_c = Interrupt::new();
/// let seen_by_a_run = ctrl_c.clone();
/// ctrl_c.raise();
/// assert!(seen_by_a_run.is_raised());
/// assert!(!Interrupt::default().is_raised());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Option<Arc<AtomicBool>>);

impl Interrupt {
    /// Events between two looks at the flag: a look is an atomic load, so it costs
    /// nothing measurable at this spacing, and even the slowest events (an LLM step
    /// of thousands of sequences) leave a few thousand of them well under a second.
    pub const CHECK_EVERY: u64 = 4096;

    /// A flag not yet raised.
    pub fn new() -> Self {
        Interrupt(Some(Arc::new(AtomicBool::new(false))))
    }

    /// An interrupt that shares `flag`.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Interrupt(Some(flag))
    }

    /// Raises the flag (idempotent); returns whether it was already raised.
    pub fn raise(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.swap(true, Ordering::SeqCst))
    }

    /// Whether the flag is raised.
    #[inline]
    pub fn is_raised(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

/// How far a run has got, for whoever watches it from another thread (a progress
/// bar): the run publishes its clock every [`Interrupt::CHECK_EVERY`] events and when
/// it returns, and whoever knows where the run ends can set its horizon. A default
/// clock is one nobody reads.
///
/// ```
/// use infersim_engine::{RunClock, SimTime};
/// let clock = RunClock::new();
/// assert_eq!(clock.fraction(), None);
/// clock.set_horizon(SimTime::from_nanos(200));
/// assert_eq!(clock.now(), SimTime::ZERO);
/// assert_eq!(clock.fraction(), Some(0.0));
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunClock(Arc<[AtomicU64; 2]>);

impl RunClock {
    /// A clock at zero with no horizon.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run's clock as last published.
    pub fn now(&self) -> SimTime {
        SimTime::from_nanos(self.0[0].load(Ordering::Relaxed))
    }

    /// Sets where the run ends (its last arrival, say): what [`RunClock::fraction`]
    /// measures against.
    pub fn set_horizon(&self, horizon: SimTime) {
        self.0[1].store(horizon.as_nanos(), Ordering::Relaxed);
    }

    /// The share of the horizon the clock has passed, in [0, 1]; `None` with no
    /// horizon set.
    pub fn fraction(&self) -> Option<f64> {
        let horizon = self.0[1].load(Ordering::Relaxed);
        (horizon > 0).then(|| (self.now().as_nanos() as f64 / horizon as f64).min(1.0))
    }

    fn publish(&self, now: SimTime) {
        self.0[0].store(now.as_nanos(), Ordering::Relaxed);
    }
}

/// A hook called with every event just before it is handled (for trace hashes and
/// debugging). It costs one predictable branch per event when absent.
pub type EventHook<E> = Box<dyn FnMut(SimTime, EventId, &E) + Send>;

/// A model, its future-event list, its clock and its random streams.
///
/// ```
/// use infersim_engine::{Context, Model, ScheduleError, SimDuration, Simulation, StopReason};
///
/// /// This example demonstrates a clock that ticks every second and stops at the fifth.
/// struct Ticker { ticks: u32 }
/// enum Event { Tick }
///
/// impl Model for Ticker {
///     type Event = Event;
///     type Error = ScheduleError;
///     fn handle(&mut self, event: Event, ctx: &mut Context<'_, Event>) -> Result<(), ScheduleError> {
///         match event {
///             Event::Tick => {
///                 self.ticks += 1;
///                 if self.ticks == 5 {
///                     ctx.stop();
///                 } else {
///                     ctx.schedule(SimDuration::from_secs_f64(1.0)?, Event::Tick)?;
///                 }
///             }
///         }
///         Ok(())
///     }
/// }
///
/// let mut sim = Simulation::new(Ticker { ticks: 0 }, 42, 0);
/// sim.schedule(SimDuration::ZERO, Event::Tick)?;
/// assert_eq!(sim.run(Default::default())?, StopReason::Requested);
/// assert_eq!(sim.model().ticks, 5);
/// assert_eq!(sim.now().as_secs_f64(), 4.0);
/// # Ok::<(), ScheduleError>(())
/// ```
pub struct Simulation<M: Model> {
    model: M,
    queue: FutureEvents<M::Event>,
    now: SimTime,
    rng: RngStreams,
    events_handled: u64,
    stop_requested: bool,
    hook: Option<EventHook<M::Event>>,
    interrupt: Interrupt,
    clock: Option<RunClock>,
}

impl<M: Model> Simulation<M> {
    /// A simulation of `model` at time zero, with the default future-event list and
    /// the random streams of `replication` under `master_seed`.
    pub fn new(model: M, master_seed: u64, replication: u64) -> Self {
        Self::with_queue(model, QueueKind::default(), master_seed, replication)
    }

    /// Like [`Simulation::new`], with a chosen future-event list.
    pub fn with_queue(model: M, queue: QueueKind, master_seed: u64, replication: u64) -> Self {
        Simulation {
            model,
            queue: FutureEvents::new(queue),
            now: SimTime::ZERO,
            rng: RngStreams::new(master_seed, replication),
            events_handled: 0,
            stop_requested: false,
            hook: None,
            interrupt: Interrupt::default(),
            clock: None,
        }
    }

    /// The current simulation time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (e.g. to reset statistics after a warm-up).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Consumes the simulation and returns the model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Events handled so far.
    pub fn events_handled(&self) -> u64 {
        self.events_handled
    }

    /// Events pending.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// The random streams, for drawing initial conditions before the run.
    pub fn rng(&mut self, id: StreamId) -> &mut SimRng {
        self.rng.stream(id)
    }

    /// Makes runs return [`StopReason::Interrupted`] soon after `interrupt` is raised.
    pub fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    /// Publishes the clock to `clock` as runs go (see [`RunClock`]).
    pub fn watch(&mut self, clock: RunClock) {
        self.clock = Some(clock);
    }

    /// Installs a hook called with every event before it is handled.
    pub fn set_event_hook(&mut self, hook: EventHook<M::Event>) {
        self.hook = Some(hook);
    }

    /// Schedules an event from outside the model (initial events, injected faults).
    pub fn schedule(&mut self, when: impl Into<When>, event: M::Event) -> Result<EventId, ScheduleError> {
        let at = when.into().resolve(self.now)?;
        Ok(self.queue.push(at, event))
    }

    /// Posts an event from outside the model (see [`Context::post`]).
    pub fn post(&mut self, when: impl Into<When>, event: M::Event) -> Result<(), ScheduleError> {
        let at = when.into().resolve(self.now)?;
        self.queue.post(at, event);
        Ok(())
    }

    /// Cancels a pending event from outside the model.
    pub fn cancel(&mut self, id: EventId) -> Option<M::Event> {
        self.queue.cancel(id)
    }

    /// Handles the next event, if any; returns its time.
    pub fn step(&mut self) -> Result<Option<SimTime>, M::Error> {
        let Some(next) = self.queue.pop() else { return Ok(None) };
        self.dispatch(next.time, next.id, next.event)?;
        Ok(Some(next.time))
    }

    #[inline]
    fn dispatch(&mut self, time: SimTime, id: EventId, event: M::Event) -> Result<(), M::Error> {
        debug_assert!(time >= self.now, "the future-event list went back in time");
        self.now = time;
        if let Some(hook) = self.hook.as_mut() {
            hook(time, id, &event);
        }
        self.events_handled += 1;
        let mut ctx = Context { now: time, queue: &mut self.queue, rng: &mut self.rng, stop: &mut self.stop_requested };
        self.model.handle(event, &mut ctx)
    }

    /// Runs until the queue empties, the horizon or event budget is reached, a
    /// handler asks to stop, or the interrupt is raised (looked at every
    /// [`Interrupt::CHECK_EVERY`] events, and before the first). A model error ends
    /// the run and is returned.
    pub fn run(&mut self, limits: RunLimits) -> Result<StopReason, M::Error> {
        let stopped = self.run_events(limits);
        if let Some(clock) = &self.clock {
            clock.publish(self.now);
        }
        stopped
    }

    fn run_events(&mut self, limits: RunLimits) -> Result<StopReason, M::Error> {
        self.stop_requested = false;
        let mut budget = limits.max_events.unwrap_or(u64::MAX);
        if self.interrupt.is_raised() {
            return Ok(StopReason::Interrupted);
        }
        loop {
            if budget == 0 {
                return Ok(StopReason::EventBudget);
            }
            // Peek only when a horizon is set: an unbounded run pops directly.
            if let Some(horizon) = limits.horizon {
                match self.queue.peek_time() {
                    Some(t) if t <= horizon => {}
                    next => {
                        self.now = self.now.max(horizon);
                        return Ok(if next.is_some() { StopReason::Horizon } else { StopReason::QueueEmpty });
                    }
                }
            }
            let Some(next) = self.queue.pop() else {
                return Ok(StopReason::QueueEmpty);
            };
            budget -= 1;
            self.dispatch(next.time, next.id, next.event)?;
            if self.stop_requested {
                return Ok(StopReason::Requested);
            }
            if self.events_handled.is_multiple_of(Interrupt::CHECK_EVERY) {
                if let Some(clock) = &self.clock {
                    clock.publish(self.now);
                }
                if self.interrupt.is_raised() {
                    return Ok(StopReason::Interrupted);
                }
            }
        }
    }

    /// Runs until `horizon` (see [`RunLimits::horizon`]).
    pub fn run_until(&mut self, horizon: SimTime) -> Result<StopReason, M::Error> {
        self.run(RunLimits { horizon: Some(horizon), max_events: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Ticks every second; fails on tick `fail_at`, stops on tick `stop_at`.
    struct Clock {
        ticks: Vec<u64>,
        fail_at: u64,
        stop_at: u64,
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    enum ClockError {
        #[error("tick {0} failed")]
        Failed(u64),
        #[error(transparent)]
        Schedule(#[from] ScheduleError),
    }

    impl Model for Clock {
        type Event = ();
        type Error = ClockError;
        fn handle(&mut self, _: (), ctx: &mut Context<'_, ()>) -> Result<(), ClockError> {
            let n = self.ticks.len() as u64;
            self.ticks.push(ctx.now().as_nanos());
            if n == self.fail_at {
                return Err(ClockError::Failed(n));
            }
            if n == self.stop_at {
                ctx.stop();
            }
            ctx.schedule(SimDuration::from_nanos(1_000), ())?;
            Ok(())
        }
    }

    fn clock(fail_at: u64, stop_at: u64) -> Simulation<Clock> {
        let mut sim = Simulation::new(Clock { ticks: Vec::new(), fail_at, stop_at }, 0, 0);
        sim.schedule(SimTime::ZERO, ()).unwrap();
        sim
    }

    #[test]
    fn horizon_runs_events_at_the_horizon_and_sets_the_clock() {
        let mut sim = clock(u64::MAX, u64::MAX);
        assert_eq!(sim.run_until(SimTime::from_nanos(2_500)), Ok(StopReason::Horizon));
        assert_eq!(sim.model().ticks, vec![0, 1_000, 2_000]);
        assert_eq!(sim.now(), SimTime::from_nanos(2_500));
        // An event exactly at the horizon runs.
        assert_eq!(sim.run_until(SimTime::from_nanos(3_000)), Ok(StopReason::Horizon));
        assert_eq!(sim.model().ticks.last(), Some(&3_000));
        assert_eq!(sim.pending_events(), 1);
    }

    #[test]
    fn an_empty_queue_before_the_horizon_still_advances_the_clock() {
        let mut sim = Simulation::new(Clock { ticks: Vec::new(), fail_at: u64::MAX, stop_at: u64::MAX }, 0, 0);
        assert_eq!(sim.run_until(SimTime::from_nanos(7)), Ok(StopReason::QueueEmpty));
        assert_eq!(sim.now(), SimTime::from_nanos(7));
        assert_eq!(sim.run(RunLimits::default()), Ok(StopReason::QueueEmpty));
        assert_eq!(sim.step(), Ok(None));
    }

    #[test]
    fn event_budget_and_stop_request_end_a_run() {
        let mut sim = clock(u64::MAX, 5);
        assert_eq!(sim.run(RunLimits { horizon: None, max_events: Some(3) }), Ok(StopReason::EventBudget));
        assert_eq!(sim.events_handled(), 3);
        assert_eq!(sim.step(), Ok(Some(SimTime::from_nanos(3_000))));
        assert_eq!(sim.run(RunLimits::default()), Ok(StopReason::Requested));
        assert_eq!(sim.events_handled(), 6);
        // The stop request does not outlive the run that saw it.
        assert_eq!(sim.run(RunLimits { horizon: None, max_events: Some(2) }), Ok(StopReason::EventBudget));
    }

    #[test]
    fn an_interrupt_ends_a_run_that_would_never_end_within_check_every_events() {
        let interrupt = Interrupt::new();
        let mut sim = clock(u64::MAX, u64::MAX);
        sim.set_interrupt(interrupt.clone());
        assert_eq!(sim.run(RunLimits { horizon: None, max_events: Some(10_000) }), Ok(StopReason::EventBudget));
        // Raised from another thread while the run goes on.
        let raiser = interrupt.clone();
        let handle = std::thread::spawn(move || raiser.raise());
        handle.join().unwrap();
        let before = sim.events_handled();
        assert_eq!(sim.run(RunLimits::default()), Ok(StopReason::Interrupted));
        assert!(sim.events_handled() - before <= Interrupt::CHECK_EVERY, "{} events", sim.events_handled() - before);
        // Raised before a run starts: not one event is handled.
        let handled = sim.events_handled();
        assert_eq!(sim.run_until(SimTime::MAX), Ok(StopReason::Interrupted));
        assert_eq!(sim.events_handled(), handled);
        // Without one, the clock runs on.
        let mut free = clock(u64::MAX, u64::MAX);
        assert_eq!(free.run(RunLimits { horizon: None, max_events: Some(10_000) }), Ok(StopReason::EventBudget));
    }

    /// A watched run publishes its clock every `CHECK_EVERY` events and when it returns.
    #[test]
    fn a_watched_run_publishes_its_clock() {
        let watched = RunClock::new();
        let mut sim = clock(u64::MAX, u64::MAX);
        sim.watch(watched.clone());
        let horizon = SimTime::from_nanos(4 * 1_000 * Interrupt::CHECK_EVERY);
        watched.set_horizon(horizon);
        // What the watcher sees just before each event (ticks are 1,000 ns apart).
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen_by_hook, watching) = (seen.clone(), watched.clone());
        sim.set_event_hook(Box::new(move |_, _, _| seen_by_hook.lock().unwrap().push(watching.now().as_nanos())));
        let events = Interrupt::CHECK_EVERY + 10;
        assert_eq!(sim.run(RunLimits { horizon: None, max_events: Some(events) }), Ok(StopReason::EventBudget));
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let (before, after) = seen.split_at(Interrupt::CHECK_EVERY as usize);
        assert!(before.iter().all(|&t| t == 0), "nothing before the first look");
        let last_tick_looked_at = (Interrupt::CHECK_EVERY - 1) * 1_000;
        assert!(after.len() == 10 && after.iter().all(|&t| t == last_tick_looked_at), "{after:?}");
        // And at the return.
        assert_eq!(watched.now(), sim.now());
        assert_eq!(watched.fraction(), Some(sim.now().as_nanos() as f64 / horizon.as_nanos() as f64));
        assert_eq!(sim.run_until(SimTime::from_nanos(2 * horizon.as_nanos())), Ok(StopReason::Horizon));
        assert_eq!(watched.fraction(), Some(1.0), "at most the whole");
    }

    #[test]
    fn a_model_error_ends_the_run_and_is_returned() {
        let mut sim = clock(2, u64::MAX);
        assert_eq!(sim.run(RunLimits::default()), Err(ClockError::Failed(2)));
        assert_eq!(sim.now(), SimTime::from_nanos(2_000));
    }

    #[test]
    fn the_hook_sees_every_event_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut sim = clock(u64::MAX, 3);
        sim.set_event_hook(Box::new(move |t, id, _| sink.lock().unwrap().push((t.as_nanos(), id.seq()))));
        sim.run(RunLimits::default()).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![(0, 0), (1_000, 1), (2_000, 2), (3_000, 3)]);
    }

    #[test]
    fn when_resolves_instants_and_delays() {
        let now = SimTime::from_nanos(10);
        assert_eq!(When::from(SimTime::from_nanos(12)).resolve(now), Ok(SimTime::from_nanos(12)));
        assert_eq!(When::from(SimDuration::from_nanos(5)).resolve(now), Ok(SimTime::from_nanos(15)));
        assert_eq!(
            When::At(SimTime::from_nanos(9)).resolve(now),
            Err(ScheduleError::InPast { now, at: SimTime::from_nanos(9) })
        );
        assert_eq!(When::After(SimDuration::MAX).resolve(now), Err(ScheduleError::Overflow));
    }
}
