//! A multi-server FIFO queueing station: the reference model that validates the
//! engine against queueing theory, drives its benchmarks, and underlies the serving
//! agents.
//!
//! Customers arrive with a chosen inter-arrival distribution, wait in one FIFO queue,
//! and are served by the first free of `servers` identical servers with a chosen
//! service-time distribution. With a `capacity` (customers in the system, waiting
//! plus in service), arrivals that find it full are blocked (a loss system; M/M/c/c
//! when capacity = servers).
//!
//! Statistics cover customers `warmup_customers..customers` (0-based arrival order);
//! time averages cover the window from the first counted arrival to the last arrival.
//! Arrivals stop after `customers`, and the run ends when the station has drained.
//!
//! Random streams: inter-arrival times come from [`ARRIVAL_STREAM`] and each
//! customer's service requirement from [`SERVICE_STREAM`], drawn at arrival in arrival
//! order. So replication `r` presents the same customers with the same work to any
//! number of servers (common random numbers), even blocked ones.

pub use crate::theory;

use std::collections::VecDeque;

use infersim_engine::sampling::Grid;
use infersim_engine::stats::{DurationSum, LatencyHistogram, Occupancy};
use infersim_engine::{
    Arena, Context, Id, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimTime, Simulation,
    StreamId,
};
use rand::Rng;

use crate::distributions::lognormal_from_mean_cv;
use crate::error::{ConfigError, RunError};
use crate::world::{Charts, DistributionChart, Metrics, Replication, Traces, World};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};

mod file;
pub use file::{StationFile, StationWorld, steady_state};

/// Stream of inter-arrival times.
pub const ARRIVAL_STREAM: StreamId = StreamId(0);
/// Stream of service requirements.
pub const SERVICE_STREAM: StreamId = StreamId(1);

/// A distribution of non-negative durations, described by its mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DurationDistribution {
    /// Exponential with this mean (memoryless: Poisson arrivals, M-type service).
    Exponential {
        /// Mean (s).
        mean_s: f64,
    },
    /// Always this value.
    Deterministic {
        /// The value (s).
        value_s: f64,
    },
    /// Log-normal with this mean and coefficient of variation (std / mean).
    LogNormal {
        /// Mean (s).
        mean_s: f64,
        /// Coefficient of variation, >= 0.
        cv: f64,
    },
}

impl DurationDistribution {
    /// Exponential with rate `rate_per_s`.
    pub(crate) fn exponential_rate(rate_per_s: f64) -> Self {
        DurationDistribution::Exponential { mean_s: 1.0 / rate_per_s }
    }

    /// The mean (s).
    pub fn mean_s(&self) -> f64 {
        match *self {
            DurationDistribution::Exponential { mean_s } | DurationDistribution::LogNormal { mean_s, .. } => mean_s,
            DurationDistribution::Deterministic { value_s } => value_s,
        }
    }

    /// The coefficient of variation.
    pub fn cv(&self) -> f64 {
        match *self {
            DurationDistribution::Exponential { .. } => 1.0,
            DurationDistribution::Deterministic { .. } => 0.0,
            DurationDistribution::LogNormal { cv, .. } => cv,
        }
    }

    fn sampler(&self, key: &'static str) -> Result<Sampler, RunError> {
        let mean_s = self.mean_s();
        if !(mean_s.is_finite() && mean_s > 0.0) {
            return Err(out_of_range(key, mean_s, "a finite number of seconds > 0"));
        }
        Ok(match *self {
            DurationDistribution::Exponential { mean_s } => {
                Sampler::Exponential(Exp::new(1.0 / mean_s).expect("rate checked positive and finite"))
            }
            DurationDistribution::Deterministic { value_s } => Sampler::Constant(value_s),
            DurationDistribution::LogNormal { mean_s, cv } => {
                if !(cv.is_finite() && cv >= 0.0) {
                    return Err(out_of_range("service_cv", cv, "a finite number >= 0"));
                }
                Sampler::LogNormal(lognormal_from_mean_cv(mean_s, cv))
            }
        })
    }
}

/// A validated, ready-to-draw distribution.
#[derive(Clone, Copy, Debug)]
enum Sampler {
    Exponential(Exp<f64>),
    Constant(f64),
    LogNormal(LogNormal<f64>),
}

impl Sampler {
    #[inline]
    fn sample_s<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            Sampler::Exponential(d) => d.sample(rng),
            Sampler::Constant(v) => *v,
            Sampler::LogNormal(d) => d.sample(rng),
        }
    }
}

/// What a station is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StationConfig {
    /// Number of identical servers, >= 1.
    pub servers: u32,
    /// Time between arrivals.
    pub interarrival: DurationDistribution,
    /// Service requirement of one customer.
    pub service: DurationDistribution,
    /// Most customers in the system (waiting plus in service); `None` is unlimited.
    /// Must be >= `servers`.
    pub capacity: Option<u32>,
    /// Customers to generate.
    pub customers: u64,
    /// Leading customers left out of the statistics.
    pub warmup_customers: u64,
}

impl StationConfig {
    /// An M/M/c station (M/M/c/K with a capacity).
    pub fn mmc(
        arrival_rate_per_s: f64,
        service_rate_per_s: f64,
        servers: u32,
        customers: u64,
        warmup_customers: u64,
    ) -> Self {
        StationConfig {
            servers,
            interarrival: DurationDistribution::exponential_rate(arrival_rate_per_s),
            service: DurationDistribution::exponential_rate(service_rate_per_s),
            capacity: None,
            customers,
            warmup_customers,
        }
    }

    /// Offered load in Erlangs: mean service time / mean inter-arrival time.
    pub fn offered_erlangs(&self) -> f64 {
        self.service.mean_s() / self.interarrival.mean_s()
    }

    fn validate(&self) -> Result<(Sampler, Sampler), RunError> {
        if self.servers == 0 {
            return Err(out_of_range("servers", self.servers, "an integer >= 1"));
        }
        if let Some(capacity) = self.capacity
            && capacity < self.servers
        {
            return Err(out_of_range("capacity", capacity, "an integer >= servers"));
        }
        if self.customers < self.warmup_customers + 2 {
            return Err(out_of_range("customers", self.customers, "an integer >= warmup_customers + 2"));
        }
        Ok((self.interarrival.sampler("arrival mean")?, self.service.sampler("service mean")?))
    }
}

fn out_of_range(key: &'static str, value: impl ToString, allowed: &'static str) -> RunError {
    RunError::Config(ConfigError::invalid(key, value, allowed))
}

/// The station's events: payloads are ids, never data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StationEvent {
    /// The next customer arrives.
    Arrival,
    /// The customer on this server finishes.
    Departure(Id<Server>),
}

/// One server of the station.
#[derive(Clone, Debug, Default)]
pub struct Server {
    serving: Option<Customer>,
}

#[derive(Clone, Copy, Debug)]
struct Customer {
    index: u64,
    arrival: SimTime,
    service: SimDuration,
}

/// What happened to a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Served to completion.
    Served,
    /// Turned away because the station was full.
    Blocked,
}

/// One row per customer, for traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CustomerRecord {
    /// Arrival order, from 0.
    pub customer: u64,
    /// Arrival time (s).
    pub arrival_s: f64,
    /// Service start (s); `None` if blocked.
    pub start_s: Option<f64>,
    /// Departure (s); `None` if blocked.
    pub finish_s: Option<f64>,
    /// The server; `None` if blocked.
    pub server: Option<u32>,
    /// What happened.
    pub outcome: Outcome,
    /// Whether the customer falls in the warm-up (left out of the statistics).
    pub warmup: bool,
}

/// The station's state at one instant of the sampling grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StationSample {
    /// The grid instant (s).
    pub t_s: f64,
    /// Customers waiting.
    pub queue_len: u32,
    /// Servers busy.
    pub busy_servers: u32,
    /// Customers in the system (waiting plus in service).
    pub in_system: u32,
}

/// Samples of the state on a fixed grid (see [`Grid`]): sampling adds no events, so it
/// cannot change the run it observes.
struct GridSampler<S> {
    grid: Grid,
    sink: S,
}

/// Statistics over the observation window.
#[derive(Clone, Debug)]
struct WindowStats {
    start: SimTime,
    end: Option<SimTime>,
    wait: DurationSum,
    sojourn: DurationSum,
    sojourn_quantiles: LatencyHistogram,
    waited: u64,
    blocked: u64,
    arrivals: u64,
    /// Customers waiting, integrated from each customer's wait; the number in system
    /// is this plus `busy`, so its time average is derived rather than integrated a
    /// third time.
    queue: Occupancy,
    /// Busy servers, integrated from each service.
    busy: Occupancy,
}

impl WindowStats {
    fn new(start: SimTime) -> Self {
        WindowStats {
            start,
            end: None,
            wait: DurationSum::new(),
            sojourn: DurationSum::new(),
            sojourn_quantiles: LatencyHistogram::new(),
            waited: 0,
            blocked: 0,
            arrivals: 0,
            queue: Occupancy::new(start),
            busy: Occupancy::new(start),
        }
    }

    /// The window ends at the last arrival; waits and services still under way count
    /// up to it.
    fn close(&mut self, end: SimTime) {
        self.end = Some(end);
        self.queue.close(end);
        self.busy.close(end);
    }
}

/// The station model; `O` receives a [`CustomerRecord`] per customer and `S` a
/// [`StationSample`] per instant of the sampling grid, if one is set.
pub struct Station<O = NullObserver, S = NullObserver> {
    config: StationConfig,
    interarrival: Sampler,
    service: Sampler,
    servers: Arena<Server>,
    /// Idle servers, lowest id on top.
    idle: Vec<Id<Server>>,
    queue: VecDeque<Customer>,
    arrived: u64,
    in_system: u32,
    stats: WindowStats,
    observer: O,
    sampler: Option<GridSampler<S>>,
}

impl<O: Observer<CustomerRecord>> Station<O> {
    /// A station with no customers, validated.
    pub fn new(config: StationConfig, observer: O) -> Result<Self, RunError> {
        let (interarrival, service) = config.validate()?;
        let mut servers = Arena::with_capacity(config.servers as usize);
        for _ in 0..config.servers {
            servers.push(Server::default());
        }
        let mut idle: Vec<_> = servers.ids().collect();
        idle.reverse();
        Ok(Station {
            config,
            interarrival,
            service,
            servers,
            idle,
            queue: VecDeque::new(),
            arrived: 0,
            in_system: 0,
            stats: WindowStats::new(SimTime::ZERO),
            observer,
            sampler: None,
        })
    }
}

impl<O: Observer<CustomerRecord>, S: Observer<StationSample>> Station<O, S> {
    /// Samples the state every `every` (from time zero) into `sink`.
    pub(crate) fn with_samples<S2: Observer<StationSample>>(self, every: SimDuration, sink: S2) -> Station<O, S2> {
        Station {
            config: self.config,
            interarrival: self.interarrival,
            service: self.service,
            servers: self.servers,
            idle: self.idle,
            queue: self.queue,
            arrived: self.arrived,
            in_system: self.in_system,
            stats: self.stats,
            observer: self.observer,
            sampler: (every > SimDuration::ZERO).then(|| GridSampler { grid: Grid::new(every), sink }),
        }
    }

    /// The sample sink, if sampling is on.
    pub fn samples(&self) -> Option<&S> {
        self.sampler.as_ref().map(|s| &s.sink)
    }

    /// Consumes the station, returning its observers.
    pub fn into_observers(self) -> (O, Option<S>) {
        (self.observer, self.sampler.map(|s| s.sink))
    }

    /// Emits every grid instant before `now` with the state that held there.
    #[inline]
    fn sample_before(&mut self, now: SimTime) {
        let busy = self.busy_servers();
        let (queue_len, in_system) = (self.queue.len() as u32, self.in_system);
        let Some(s) = self.sampler.as_mut() else { return };
        for t in s.grid.due_before(now) {
            s.sink.observe(StationSample { t_s: t.as_secs_f64(), queue_len, busy_servers: busy, in_system });
        }
    }

    /// The observer, e.g. to read collected rows.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    fn busy_servers(&self) -> u32 {
        self.config.servers - self.idle.len() as u32
    }

    fn counted(&self, customer: &Customer) -> bool {
        customer.index >= self.config.warmup_customers
    }

    #[inline(always)]
    fn start_service(
        &mut self,
        server: Id<Server>,
        customer: Customer,
        ctx: &mut Context<'_, StationEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.stats.queue.add(customer.arrival, now);
        if self.counted(&customer) {
            let wait = now - customer.arrival;
            self.stats.wait.add(wait);
            if wait > SimDuration::ZERO {
                self.stats.waited += 1;
            }
        }
        ctx.post(customer.service, StationEvent::Departure(server))?;
        self.servers[server].serving = Some(customer);
        Ok(())
    }

    #[inline(always)]
    fn on_arrival(&mut self, ctx: &mut Context<'_, StationEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let index = self.arrived;
        self.arrived += 1;
        if index == self.config.warmup_customers {
            self.stats = WindowStats::new(now);
        }
        let service_s = self.service.sample_s(ctx.rng(SERVICE_STREAM));
        let customer = Customer { index, arrival: now, service: SimDuration::from_secs_f64(service_s)? };
        let counted = self.counted(&customer);
        if counted {
            self.stats.arrivals += 1;
        }
        let full = self.config.capacity.is_some_and(|cap| self.in_system >= cap);
        if full {
            if counted {
                self.stats.blocked += 1;
            }
            self.observer.observe(CustomerRecord {
                customer: index,
                arrival_s: now.as_secs_f64(),
                start_s: None,
                finish_s: None,
                server: None,
                outcome: Outcome::Blocked,
                warmup: !counted,
            });
        } else {
            self.in_system += 1;
            match self.idle.pop() {
                Some(server) => self.start_service(server, customer, ctx)?,
                None => self.queue.push_back(customer),
            }
        }
        if self.arrived < self.config.customers {
            let gap_s = self.interarrival.sample_s(ctx.rng(ARRIVAL_STREAM));
            ctx.post(SimDuration::from_secs_f64(gap_s)?, StationEvent::Arrival)?;
        } else {
            self.stats.close(now);
        }
        Ok(())
    }

    #[inline(always)]
    fn on_departure(&mut self, server: Id<Server>, ctx: &mut Context<'_, StationEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let done = self.servers[server].serving.take().expect("departure from an idle server: broken invariant");
        self.in_system -= 1;
        let start = now - done.service;
        self.stats.busy.add(start, now);
        if self.counted(&done) {
            let sojourn = now - done.arrival;
            self.stats.sojourn.add(sojourn);
            self.stats.sojourn_quantiles.record(sojourn);
        }
        self.observer.observe(CustomerRecord {
            customer: done.index,
            arrival_s: done.arrival.as_secs_f64(),
            start_s: Some(start.as_secs_f64()),
            finish_s: Some(now.as_secs_f64()),
            server: Some(server.index()),
            outcome: Outcome::Served,
            warmup: !self.counted(&done),
        });
        match self.queue.pop_front() {
            Some(next) => self.start_service(server, next, ctx)?,
            None => self.idle.push(server),
        }
        Ok(())
    }

    /// The statistics of a finished run.
    pub fn results(&self, events: u64) -> StationRun {
        let s = &self.stats;
        let end = s.end.unwrap_or(s.start);
        let window_s = (end - s.start).as_secs_f64();
        let served = s.sojourn.count();
        let queue_len = s.queue.mean();
        let busy = s.busy.mean();
        let [sojourn_p50_s, sojourn_p95_s, sojourn_p99_s] = s.sojourn_quantiles.quantiles_s([0.50, 0.95, 0.99]);
        StationRun {
            wait_s: s.wait.mean_s(),
            sojourn_s: s.sojourn.mean_s(),
            queue_len,
            in_system: queue_len.zip(busy).map(|(q, b)| q + b),
            utilisation: busy.map(|b| b / f64::from(self.config.servers)),
            p_wait: (served > 0).then(|| s.waited as f64 / served as f64),
            p_block: (s.arrivals > 0).then(|| s.blocked as f64 / s.arrivals as f64),
            sojourn_p50_s,
            sojourn_p95_s,
            sojourn_p99_s,
            arrival_rate_per_s: (window_s > 0.0).then(|| s.arrivals.saturating_sub(1) as f64 / window_s),
            arrivals: s.arrivals,
            served,
            blocked: s.blocked,
            window_s,
            events,
        }
    }
}

impl<O: Observer<CustomerRecord>, S: Observer<StationSample>> Model for Station<O, S> {
    type Event = StationEvent;
    /// Configuration errors are caught by [`Station::new`]; at run time only the
    /// engine can refuse a time, and a small error type keeps handler returns cheap.
    type Error = ScheduleError;

    #[inline]
    fn handle(&mut self, event: StationEvent, ctx: &mut Context<'_, StationEvent>) -> Result<(), ScheduleError> {
        if self.sampler.is_some() {
            self.sample_before(ctx.now());
        }
        match event {
            StationEvent::Arrival => self.on_arrival(ctx),
            StationEvent::Departure(server) => self.on_departure(server, ctx),
        }
    }
}

crate::metrics! {
    /// The measures of one replication. A measure that is undefined for the run (for
    /// example the mean wait when every counted customer was blocked) is `None`.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct StationRun {
        /// Mean time in queue of counted customers that were served (s).
        wait_s: Option<f64> = "s",
        /// Mean time in system of counted customers that were served (s).
        sojourn_s: Option<f64> = "s",
        /// Time-average number waiting over the window.
        queue_len: Option<f64> = "customers",
        /// Time-average number in the system over the window.
        in_system: Option<f64> = "customers",
        /// Fraction of served counted customers that had to wait.
        p_wait: Option<f64> = "share",
        /// Fraction of counted arrivals that were blocked.
        p_block: Option<f64> = "share",
        /// Time-average fraction of servers busy over the window.
        utilisation: Option<f64> = "share",
        /// 99th percentile of time in system (s).
        sojourn_p99_s: Option<f64> = "s",
        /// Events handled in the whole run.
        events: u64 = "events",
    }
    also {
        /// Median time in system (s) (HDR histogram, 0.1% precision).
        sojourn_p50_s: Option<f64>,
        /// 95th percentile of time in system (s).
        sojourn_p95_s: Option<f64>,
        /// Arrivals per second over the window (the first counted arrival opens it).
        arrival_rate_per_s: Option<f64>,
        /// Counted arrivals.
        arrivals: u64,
        /// Counted customers served.
        served: u64,
        /// Counted customers blocked.
        blocked: u64,
        /// Length of the observation window (s).
        window_s: f64,
    }
}

/// Builds the simulation of `config` for one replication, with its first arrival
/// scheduled, on a chosen future-event list.
pub fn build_station<O: Observer<CustomerRecord>>(
    config: &StationConfig,
    observer: O,
    queue: QueueKind,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Station<O>>, RunError> {
    start(Station::new(*config, observer)?, queue, master_seed, replication)
}

/// Like [`build_station`], also sampling the state every `every` into `samples`.
pub(crate) fn build_sampled_station<O: Observer<CustomerRecord>, S: Observer<StationSample>>(
    config: &StationConfig,
    observer: O,
    every: SimDuration,
    samples: S,
    queue: QueueKind,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Station<O, S>>, RunError> {
    start(Station::new(*config, observer)?.with_samples(every, samples), queue, master_seed, replication)
}

/// Schedules the first arrival of a new station.
fn start<O: Observer<CustomerRecord>, S: Observer<StationSample>>(
    station: Station<O, S>,
    queue: QueueKind,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Station<O, S>>, RunError> {
    let interarrival = station.interarrival;
    let mut sim = Simulation::with_queue(station, queue, master_seed, replication);
    let first_s = interarrival.sample_s(sim.rng(ARRIVAL_STREAM));
    sim.post(SimDuration::from_secs_f64(first_s)?, StationEvent::Arrival)?;
    Ok(sim)
}

/// Runs a built replication until the station drains and returns its measures.
pub(crate) fn finish_station<O: Observer<CustomerRecord>, S: Observer<StationSample>>(
    sim: &mut Simulation<Station<O, S>>,
) -> Result<StationRun, ScheduleError> {
    sim.run(Default::default())?;
    Ok(sim.model().results(sim.events_handled()))
}

/// Runs one replication of `config` to completion, untraced.
pub fn run_station(config: &StationConfig, master_seed: u64, replication: u64) -> Result<StationRun, RunError> {
    let mut sim = build_station(config, NullObserver, QueueKind::default(), master_seed, replication)?;
    Ok(finish_station(&mut sim)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use infersim_engine::VecObserver;
    use infersim_engine::stats::Tally;

    fn small() -> StationConfig {
        StationConfig::mmc(0.9, 1.0, 2, 500, 50)
    }

    #[test]
    fn every_customer_is_accounted_for() {
        let mut config = small();
        config.capacity = Some(3);
        let mut sim = build_station(&config, VecObserver::default(), QueueKind::default(), 1, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let run = sim.model().results(sim.events_handled());
        let rows = &sim.model().observer().rows;
        assert_eq!(rows.len() as u64, config.customers);
        assert_eq!(run.arrivals, config.customers - config.warmup_customers);
        assert_eq!(run.served + run.blocked, run.arrivals);
        assert!(run.blocked > 0, "capacity 3 at 90% load blocks someone");
        for r in rows {
            if let (Some(start), Some(finish)) = (r.start_s, r.finish_s) {
                assert!(r.arrival_s <= start && start <= finish, "{r:?}");
            }
        }
        // Events: one arrival per customer and one departure per served customer.
        let served_all = rows.iter().filter(|r| r.outcome == Outcome::Served).count() as u64;
        assert_eq!(run.events, config.customers + served_all);
    }

    #[test]
    fn sampling_sees_the_state_on_the_grid_and_changes_nothing() {
        let config = StationConfig::mmc(3.0, 1.0, 2, 2_000, 100);
        let every = SimDuration::from_secs_f64(0.5).unwrap();
        let mut plain = build_station(&config, VecObserver::default(), QueueKind::default(), 4, 0).unwrap();
        plain.run(Default::default()).unwrap();
        let mut sampled = build_sampled_station(
            &config,
            VecObserver::default(),
            every,
            VecObserver::default(),
            QueueKind::default(),
            4,
            0,
        )
        .unwrap();
        sampled.run(Default::default()).unwrap();
        assert_eq!(plain.events_handled(), sampled.events_handled());
        assert_eq!(plain.model().results(0), sampled.model().results(0));
        let samples = &sampled.model().samples().unwrap().rows;
        let end_s = sampled.now().as_secs_f64();
        assert_eq!(samples.len(), (end_s / 0.5).ceil() as usize, "one sample per grid instant before the end");
        assert!(samples.windows(2).all(|w| (w[1].t_s - w[0].t_s - 0.5).abs() < 1e-9));
        assert!(samples.iter().all(|s| s.in_system == s.queue_len + s.busy_servers && s.busy_servers <= 2));
        // The state at an instant is what the customer rows imply: arrived by then and not yet gone.
        let rows = &sampled.model().observer().rows;
        for s in samples.iter().step_by(97) {
            let present = rows.iter().filter(|r| r.arrival_s <= s.t_s && r.finish_s.is_some_and(|f| f > s.t_s)).count();
            assert_eq!(present as u32, s.in_system, "at t = {}", s.t_s);
        }
    }

    #[test]
    fn fifo_order_of_service_with_one_server() {
        let config = StationConfig::mmc(2.0, 1.0, 1, 200, 0);
        let mut sim = build_station(&config, VecObserver::default(), QueueKind::default(), 3, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let starts: Vec<f64> = sim.model().observer().rows.iter().map(|r| r.start_s.unwrap()).collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "one server serves in arrival order");
    }

    #[test]
    fn invalid_configs_name_the_key_and_range() {
        let mut c = small();
        c.servers = 0;
        assert!(matches!(Station::new(c, NullObserver), Err(RunError::Config(e)) if e.key() == "servers"));
        let mut c = small();
        c.capacity = Some(1);
        let err = Station::new(c, NullObserver).err().unwrap();
        assert_eq!(err.to_string(), "capacity = 1 is invalid: expected an integer >= servers");
        let mut c = small();
        c.interarrival = DurationDistribution::Exponential { mean_s: f64::NAN };
        assert!(Station::new(c, NullObserver).is_err());
        let mut c = small();
        c.service = DurationDistribution::LogNormal { mean_s: 1.0, cv: -1.0 };
        assert!(Station::new(c, NullObserver).is_err());
        let mut c = small();
        c.warmup_customers = c.customers;
        assert!(Station::new(c, NullObserver).is_err());
    }

    #[test]
    fn lognormal_has_the_requested_mean_and_cv() {
        let d = DurationDistribution::LogNormal { mean_s: 2.0, cv: 0.5 };
        let sampler = d.sampler("service mean").unwrap();
        let mut rng = infersim_engine::derive_stream(5, 0, StreamId(0));
        let mut t = Tally::new();
        for _ in 0..200_000 {
            t.add(sampler.sample_s(&mut rng));
        }
        // Standard error of the mean is 1 / sqrt(200000) = 0.0022; 5 sigma = 0.011.
        assert!((t.mean().unwrap() - 2.0).abs() < 0.011, "{:?}", t.mean());
        assert!((t.std_dev().unwrap() / t.mean().unwrap() - 0.5).abs() < 0.01);
    }
}

#[cfg(test)]
mod value_stability {
    use super::*;
    use infersim_engine::VecObserver;

    /// Pins the first arrival and departure times of a replication, so an upgrade of
    /// `rand_distr` (or a change in how the station draws) that would change every
    /// result is caught here rather than noticed as drift in published numbers.
    #[test]
    fn first_customers_are_pinned() {
        let config = StationConfig::mmc(1.0, 2.0, 1, 10, 0);
        let mut sim = build_station(&config, VecObserver::default(), QueueKind::default(), 42, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let first: Vec<(f64, f64)> =
            sim.model().observer().rows.iter().take(3).map(|r| (r.arrival_s, r.finish_s.unwrap())).collect();
        assert_eq!(first, PINNED);
    }

    const PINNED: [(f64, f64); 3] = [(2.504187915, 2.603644203), (2.60664213, 2.611865629), (3.29404008, 3.771482827)];
}
