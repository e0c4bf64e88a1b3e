//! # Adding a world to infersim: a café
//!
//! Customers arrive at random and queue for a few espresso machines; a cup takes a
//! random time to make; a customer who has waited longer than their patience when a
//! machine frees leaves without coffee. The machines draw power brewing and idle.
//!
//! Everything a world needs is here, in one file, through infersim's public API only:
//! the scenario tables as serde reads them ([`CafeFile`]), their resolution into a
//! checked configuration ([`Cafe`]), one replication on the engine's event loop
//! ([`World::run`]), a trace row per customer and a sampled queue length
//! ([`trace_row!`](infersim_agents::trace_row)), the metrics declared once with their
//! units ([`metrics!`](infersim_agents::metrics)), and what the command line shows for
//! it: a built-in scenario, a chart, a note after the table and a reader for the
//! café's own till log. `src/main.rs` registers it and ships the whole `infersim`
//! command with it.
//!
//! ```
//! use infersim::registry::Registry;
//! use infersim::scenario::Scenario;
//!
//! // One line adds the world; its built-in scenario then loads like any other.
//! let registry = Registry::builtin().with::<infersim_example_coffee::CoffeeWorld>();
//! let cafe = Scenario::load_with(&registry, "cafe").unwrap();
//! assert_eq!(cafe.world, "coffee");
//! ```

use infersim_agents::input::Inputs;
use infersim_agents::world::{
    Charts, ConfigError, DataTable, DistributionChart, Estimate, Metrics, Note, Observation, Replication, RunError,
    Traces, World,
};
use infersim_agents::{metrics, trace_row};
use infersim_engine::stats::{Occupancy, Tally};
use infersim_engine::{Context, Model, Observer, ScheduleError, SimDuration, SimTime, Simulation, StreamId};
use rand_distr::{Distribution, Exp};
use serde::Deserialize;
use std::collections::VecDeque;

/// The world: registered with `Registry::with::<CoffeeWorld>()`.
pub struct CoffeeWorld;

/// A scenario's tables as written: `[coffee]` and `[simulation]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CafeFile {
    coffee: CafeTable,
    simulation: SimulationTable,
}

/// `[coffee]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CafeTable {
    arrivals_per_h: f64,
    machines: u32,
    brew_mean_s: f64,
    patience_s: f64,
    brewing_w: f64,
    idle_w: f64,
}

/// `[simulation]` (the batch's own keys are removed before the world reads it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulationTable {
    duration_h: f64,
}

/// A checked café: what one point of a scenario runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Cafe {
    /// Customers per second.
    pub arrivals_per_s: f64,
    /// Espresso machines.
    pub machines: u32,
    /// Mean time to make a cup (s).
    pub brew_mean_s: f64,
    /// How long a customer waits at most (s).
    pub patience_s: f64,
    /// Power of a brewing machine (W).
    pub brewing_w: f64,
    /// Power of an idle machine (W).
    pub idle_w: f64,
    /// Length of the morning (s).
    pub duration_s: f64,
}

/// One customer, written to `requests.parquet`.
pub struct Customer {
    id: u64,
    arrival_s: f64,
    wait_s: f64,
    latency_s: Option<f64>,
    served: bool,
}

trace_row!(Customer, |c| {
    request_id: u64 = c.id,
    arrival_s: f64 = c.arrival_s,
    wait_s: f64 = c.wait_s,
    latency_s: Option<f64> = c.latency_s,
    outcome: &str = if c.served { "served" } else { "left" },
});

/// The queue sampled on a grid, written to `timeseries.parquet`.
pub struct QueueSample {
    t_s: f64,
    queue_len: u32,
    brewing: u32,
}

trace_row!(QueueSample, |s| {
    t_h: f64 = s.t_s / 3600.0,
    queue_len: u32 = s.queue_len,
    brewing: u32 = s.brewing,
});

metrics! {
    /// What one morning measured.
    #[derive(Debug, PartialEq)]
    pub struct CafeRun {
        /// Customers who got a cup.
        served: u64 = "customers",
        /// Customers who left without one.
        left: u64 = "customers",
        /// Mean wait of served customers (s).
        wait_mean_s: Option<f64> = "s",
        /// Mean arrival-to-cup time of served customers (s).
        latency_mean_s: Option<f64> = "s",
        /// Mean share of machines brewing.
        utilisation: Option<f64> = "share",
        /// The machines' energy over the morning (kWh).
        energy_kwh: f64 = "kWh",
    }
}

/// The café's events: payloads are ids, never data.
enum Event {
    Arrival,
    CupReady { machine: u32 },
    Sample,
}

const ARRIVALS: StreamId = StreamId(0);
const BREWING: StreamId = StreamId(1);

/// One replication's state.
struct Morning<'a, R, S> {
    cafe: &'a Cafe,
    queue: VecDeque<(u64, SimTime)>,
    /// For each machine, the customer it is brewing for and when they arrived.
    machines: Vec<Option<(u64, SimTime, SimTime)>>,
    next_id: u64,
    served: u64,
    left: u64,
    wait_s: Tally,
    latency_s: Tally,
    busy: Occupancy,
    requests: &'a mut R,
    /// Where the queue is sampled, and how often.
    samples: Option<(&'a mut S, SimDuration)>,
}

impl<R: Observer<Customer>, S: Observer<QueueSample>> Model for Morning<'_, R, S> {
    type Event = Event;
    type Error = ScheduleError;

    fn handle(&mut self, event: Event, ctx: &mut Context<'_, Event>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        match event {
            Event::Arrival => {
                self.queue.push_back((self.next_id, now));
                self.next_id += 1;
                let gap_s = Exp::new(self.cafe.arrivals_per_s).expect("a checked rate").sample(ctx.rng(ARRIVALS));
                ctx.post(SimDuration::from_secs_f64(gap_s)?, Event::Arrival)?;
            }
            Event::CupReady { machine } => {
                let (id, arrival, started) = self.machines[machine as usize].take().expect("a machine brewing");
                self.busy.add(started, now);
                self.served += 1;
                let latency_s = (now - arrival).as_secs_f64();
                self.latency_s.add(latency_s);
                let wait_s = (started - arrival).as_secs_f64();
                let arrival_s = arrival.as_secs_f64();
                self.requests.observe(Customer { id, arrival_s, wait_s, latency_s: Some(latency_s), served: true });
            }
            Event::Sample => {
                let brewing = self.machines.iter().filter(|m| m.is_some()).count() as u32;
                let queue_len = self.queue.len() as u32;
                if let Some((samples, every)) = self.samples.as_mut() {
                    samples.observe(QueueSample { t_s: now.as_secs_f64(), queue_len, brewing });
                    ctx.post(*every, Event::Sample)?;
                }
            }
        }
        self.start_cups(ctx)
    }
}

impl<R: Observer<Customer>, S: Observer<QueueSample>> Morning<'_, R, S> {
    /// Free machines take the next customers who are still patient.
    fn start_cups(&mut self, ctx: &mut Context<'_, Event>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        while let Some(machine) = self.machines.iter().position(Option::is_none) {
            let Some((id, arrival)) = self.queue.pop_front() else { break };
            let wait_s = (now - arrival).as_secs_f64();
            if wait_s > self.cafe.patience_s {
                self.left += 1;
                let arrival_s = arrival.as_secs_f64();
                self.requests.observe(Customer { id, arrival_s, wait_s, latency_s: None, served: false });
                continue;
            }
            self.wait_s.add(wait_s);
            self.machines[machine] = Some((id, arrival, now));
            let brew_s = Exp::new(1.0 / self.cafe.brew_mean_s).expect("a checked mean").sample(ctx.rng(BREWING));
            ctx.post(SimDuration::from_secs_f64(brew_s)?, Event::CupReady { machine: machine as u32 })?;
        }
        Ok(())
    }
}

impl World for CoffeeWorld {
    const NAME: &'static str = "coffee";
    type File = CafeFile;
    type Config = Cafe;
    type Request = Customer;
    type Sample = QueueSample;

    fn resolve(file: CafeFile, _inputs: &dyn Inputs) -> Result<Cafe, ConfigError> {
        let c = file.coffee;
        let positive = |key: &str, x: f64, max: f64, allowed: &'static str| {
            let ok = x.is_finite() && x > 0.0 && x <= max;
            if ok { Ok(x) } else { Err(ConfigError::invalid(key, x, allowed)) }
        };
        let watts = |key: &str, x: f64| match x.is_finite() && (0.0..=100_000.0).contains(&x) {
            true => Ok(x),
            false => Err(ConfigError::invalid(key, x, "watts from 0 to 100,000")),
        };
        if !(1..=1000).contains(&c.machines) {
            return Err(ConfigError::invalid("coffee.machines", c.machines, "an integer from 1 to 1000"));
        }
        Ok(Cafe {
            arrivals_per_s: positive("coffee.arrivals_per_h", c.arrivals_per_h, 1e6, "customers per hour, > 0")?
                / 3600.0,
            machines: c.machines,
            brew_mean_s: positive("coffee.brew_mean_s", c.brew_mean_s, 86_400.0, "seconds > 0, at most a day")?,
            patience_s: positive("coffee.patience_s", c.patience_s, 86_400.0, "seconds > 0, at most a day")?,
            brewing_w: watts("coffee.brewing_w", c.brewing_w)?,
            idle_w: watts("coffee.idle_w", c.idle_w)?,
            duration_s: positive("simulation.duration_h", file.simulation.duration_h, 24.0 * 365.0, "hours > 0")?
                * 3600.0,
        })
    }

    fn run<R: Observer<Customer>, S: Observer<QueueSample>>(
        cafe: &Cafe,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        let sampling = traces.sample_every.is_some();
        let morning = Morning {
            cafe,
            queue: VecDeque::new(),
            machines: vec![None; cafe.machines as usize],
            next_id: 0,
            served: 0,
            left: 0,
            wait_s: Tally::new(),
            latency_s: Tally::new(),
            busy: Occupancy::new(SimTime::ZERO),
            requests: traces.requests,
            samples: traces.sample_every.map(|every| (traces.samples, every)),
        };
        let mut sim = Simulation::new(morning, replication.master_seed, replication.index);
        replication.attach(&mut sim, SimTime::from_secs_f64(cafe.duration_s).ok());
        sim.post(SimDuration::ZERO, Event::Arrival)?;
        if sampling {
            sim.post(SimDuration::ZERO, Event::Sample)?;
        }
        let end = SimTime::from_secs_f64(cafe.duration_s)?;
        sim.run_until(end)?;
        replication.finished(())?;
        let m = sim.model_mut();
        m.busy.close(end);
        for (_, _, started) in m.machines.iter().flatten() {
            m.busy.add(*started, end);
        }
        let brewing_s = m.busy.area_ns() as f64 / 1e9;
        let idle_s = cafe.duration_s * f64::from(cafe.machines) - brewing_s;
        let run = CafeRun {
            served: m.served,
            left: m.left,
            wait_mean_s: m.wait_s.mean(),
            latency_mean_s: m.latency_s.mean(),
            utilisation: m.busy.mean().map(|busy| busy / f64::from(cafe.machines)),
            energy_kwh: (brewing_s * cafe.brewing_w + idle_s * cafe.idle_w) / 3.6e6,
        };
        Ok(run.metrics())
    }

    /// A café that turns many customers away is out of its depth: says so.
    fn notes(estimates: &[Estimate]) -> Vec<Note> {
        let mean = |point: u32, metric: &str| {
            estimates.iter().find(|e| e.point == point && e.metric == metric).map(|e| e.mean)
        };
        let points: std::collections::BTreeSet<u32> = estimates.iter().map(|e| e.point).collect();
        points
            .into_iter()
            .filter_map(|p| {
                let (left, served) = (mean(p, "left")?, mean(p, "served")?);
                let share = left / (left + served);
                (share > 0.1).then(|| {
                    Note::Finding(format!(
                        "point {p}: {:.0}% of customers left without coffee: add a machine or shorten the brew",
                        share * 100.0
                    ))
                })
            })
            .collect()
    }

    fn charts() -> Charts {
        Charts { distributions: &[DistributionChart::LATENCY], tradeoffs: &[] }
    }

    /// The café's till log: when each order was placed and handed over (s), as
    /// arrival-to-cup samples.
    fn observe(table: &DataTable) -> Option<Observation> {
        let (ordered, handed) = (table.column("ordered_at_s")?, table.column("handed_over_s")?);
        let latency_s: Vec<f64> = (0..table.rows())
            .filter_map(|row| Some(table.number(handed, row).ok()? - table.number(ordered, row).ok()?))
            .collect();
        Some(Observation { samples: vec![("latency_s".into(), latency_s)], values: Vec::new() })
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[("cafe", include_str!("../scenarios/cafe.toml"))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infersim_engine::NullObserver;

    fn cafe() -> Cafe {
        Cafe {
            arrivals_per_s: 50.0 / 3600.0,
            machines: 2,
            brew_mean_s: 120.0,
            patience_s: 600.0,
            brewing_w: 1500.0,
            idle_w: 100.0,
            duration_s: 4.0 * 3600.0,
        }
    }

    fn run(cafe: &Cafe, index: u64) -> Metrics {
        let traces = Traces { requests: &mut NullObserver, samples: &mut NullObserver, sample_every: None };
        CoffeeWorld::run(cafe, Replication::new(11, index), traces).unwrap()
    }

    fn value(m: &Metrics, name: &str) -> f64 {
        match m.get(name) {
            Some(infersim_agents::world::MetricValue::Number(Some(x))) => x,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// Energy is brewing power while brewing and idle power otherwise, exactly:
    /// machines x duration in all.
    #[test]
    fn energy_splits_the_machine_hours_between_brewing_and_idle() {
        let m = run(&cafe(), 0);
        let machine_s = 2.0 * 4.0 * 3600.0;
        let brewing_s = value(&m, "utilisation") * machine_s;
        let expected_kwh = (brewing_s * 1500.0 + (machine_s - brewing_s) * 100.0) / 3.6e6;
        assert!((value(&m, "energy_kwh") - expected_kwh).abs() < 1e-9 * expected_kwh);
        // Offered load 50/h x 120 s over 2 machines is 0.83: the utilisation is near
        // it (less what the impatient take away).
        assert!((0.6..0.9).contains(&value(&m, "utilisation")), "{:?}", m.get("utilisation"));
    }

    /// With one machine at five times its capacity, most customers leave, and the
    /// note says so; with ten machines, none do and the note is silent.
    #[test]
    fn a_note_names_the_points_where_many_customers_leave() {
        let swamped = Cafe { machines: 1, arrivals_per_s: 5.0 / cafe().brew_mean_s, ..cafe() };
        let roomy = Cafe { machines: 10, ..cafe() };
        let mut estimates = Vec::new();
        for (point, cafe) in [(0u32, &swamped), (1, &roomy)] {
            let m = run(cafe, 0);
            for metric in ["left", "served"] {
                estimates.push(Estimate { point, metric: metric.into(), mean: value(&m, metric), replications: 1 });
            }
        }
        let notes = CoffeeWorld::notes(&estimates);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(matches!(&notes[0], Note::Finding(text) if text.starts_with("point 0: ")), "{notes:?}");
    }
}
