//! M/M/4 at rho 0.9 in SimCore (dslab's engine), for the whole-process comparison in
//! benches/README.md: Poisson arrivals at 3.6/s, four servers at 1.0/s, FCFS, no
//! capacity limit; running sums of wait and sojourn; two model events per customer.
//!
//!     cargo run --release -- [customers]    # default 5,000,000 (10 M events)

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use rand_distr::Exp;
use serde::Serialize;
use simcore::{cast, Event, EventHandler, Simulation, SimulationContext};

#[derive(Clone, Serialize)]
struct Arrival {}

#[derive(Clone, Serialize)]
struct Departure {
    arrived: f64,
}

struct Station {
    ctx: SimulationContext,
    interarrival: Exp<f64>,
    service: Exp<f64>,
    customers: u64,
    arrivals: u64,
    busy: u32,
    queue: VecDeque<f64>,
    served: u64,
    wait_sum: f64,
    sojourn_sum: f64,
}

impl Station {
    fn start_service(&mut self, arrived: f64) {
        self.wait_sum += self.ctx.time() - arrived;
        let service = self.ctx.sample_from_distribution(&self.service);
        self.ctx.emit_self(Departure { arrived }, service);
    }
}

impl EventHandler for Station {
    fn on(&mut self, event: Event) {
        cast!(match event.data {
            Arrival {} => {
                self.arrivals += 1;
                let now = self.ctx.time();
                if self.busy < 4 {
                    self.busy += 1;
                    self.start_service(now);
                } else {
                    self.queue.push_back(now);
                }
                if self.arrivals < self.customers {
                    let gap = self.ctx.sample_from_distribution(&self.interarrival);
                    self.ctx.emit_self(Arrival {}, gap);
                }
            }
            Departure { arrived } => {
                self.served += 1;
                self.sojourn_sum += self.ctx.time() - arrived;
                match self.queue.pop_front() {
                    Some(next) => self.start_service(next),
                    None => self.busy -= 1,
                }
            }
        })
    }
}

fn main() {
    let customers: u64 = std::env::args().nth(1).map_or(5_000_000, |a| a.parse().unwrap());
    let started = Instant::now();
    let mut sim = Simulation::new(42);
    let ctx = sim.create_context("station");
    let station = Rc::new(RefCell::new(Station {
        ctx,
        interarrival: Exp::new(3.6).unwrap(),
        service: Exp::new(1.0).unwrap(),
        customers,
        arrivals: 0,
        busy: 0,
        queue: VecDeque::new(),
        served: 0,
        wait_sum: 0.0,
        sojourn_sum: 0.0,
    }));
    sim.add_handler("station", station.clone());
    station.borrow().ctx.emit_self(Arrival {}, 0.0);
    sim.step_until_no_events();
    let wall = started.elapsed().as_secs_f64();
    let s = station.borrow();
    let events = 2 * s.served;
    println!(
        "simcore 0.1.0: {customers} customers, {events} events, {wall:.2} s, {:.2} M events/s, mean wait {:.3} s (Erlang C 1.969)",
        events as f64 / wall / 1e6,
        s.wait_sum / s.served as f64
    );
}
