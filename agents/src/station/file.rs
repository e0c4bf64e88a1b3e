//! The station's scenario tables, its trace rows and how infersim runs it, with
//! the closed forms its estimates are printed beside.

use super::*;

crate::trace_row!(CustomerRecord, |r| {
    request_id: u64 = r.customer,
    arrival_s: f64 = r.arrival_s,
    start_s: Option<f64> = r.start_s,
    finish_s: Option<f64> = r.finish_s,
    server: Option<u32> = r.server,
    wait_s: Option<f64> = r.start_s.map(|s| s - r.arrival_s),
    latency_s: Option<f64> = r.finish_s.map(|f| f - r.arrival_s),
    outcome: &str = match r.outcome {
        Outcome::Served => "served",
        Outcome::Blocked => "rejected",
    },
    warmup: bool = r.warmup,
});

crate::trace_row!(StationSample, |s| {
    t_h: f64 = s.t_s / 3600.0,
    t_s: f64 = s.t_s,
    queue_len: u32 = s.queue_len,
    busy_servers: u32 = s.busy_servers,
    in_system: u32 = s.in_system,
});

/// The scenario tables of a station: `[station]` and `[simulation]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationFile {
    station: StationTable,
    simulation: StationWindow,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StationTable {
    servers: i64,
    arrival_rate_per_s: f64,
    service_rate_per_s: f64,
    service: String,
    service_cv: Option<f64>,
    capacity: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StationWindow {
    customers: i64,
    #[serde(default)]
    warmup_customers: i64,
}

/// The reference queueing station as a world (`world = "station"`).
#[derive(Clone, Copy, Debug)]
pub struct StationWorld;

impl World for StationWorld {
    const NAME: &'static str = "station";
    type File = StationFile;
    type Config = StationConfig;
    type Request = CustomerRecord;
    type Sample = StationSample;

    fn charts() -> Charts {
        Charts { distributions: &[DistributionChart::LATENCY], tradeoffs: &[] }
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[("mmc", include_str!("../../../data/scenarios/mmc.toml"))]
    }

    fn resolve(file: StationFile, _inputs: &dyn crate::input::Inputs) -> Result<StationConfig, ConfigError> {
        let (s, sim) = (&file.station, &file.simulation);
        // Rates whose exponential gaps the clock holds: from one a million seconds to a
        // million a second.
        let positive = |key: &str, v: f64| {
            if v.is_finite() && (1e-6..=1e6).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::invalid(key, v, "a rate from 0.000001 to 1,000,000 per second"))
            }
        };
        let servers = u32::try_from(s.servers)
            .ok()
            .filter(|&c| c >= 1)
            .ok_or_else(|| ConfigError::invalid("station.servers", s.servers, "an integer from 1 to 4294967295"))?;
        let lambda = positive("station.arrival_rate_per_s", s.arrival_rate_per_s)?;
        let mu = positive("station.service_rate_per_s", s.service_rate_per_s)?;
        let service = match (s.service.as_str(), s.service_cv) {
            ("exponential", None) => DurationDistribution::Exponential { mean_s: 1.0 / mu },
            ("deterministic", None) => DurationDistribution::Deterministic { value_s: 1.0 / mu },
            ("lognormal", Some(cv)) if cv.is_finite() && (0.0..=10.0).contains(&cv) => {
                DurationDistribution::LogNormal { mean_s: 1.0 / mu, cv }
            }
            ("lognormal", Some(cv)) => {
                return Err(ConfigError::invalid("station.service_cv", cv, "a number from 0 to 10"));
            }
            ("lognormal", None) => {
                return Err(ConfigError::invalid(
                    "station.service_cv",
                    "(missing)",
                    "a number >= 0 when service = \"lognormal\"",
                ));
            }
            ("exponential" | "deterministic", Some(cv)) => {
                return Err(ConfigError::invalid("station.service_cv", cv, "no value unless service = \"lognormal\""));
            }
            (other, _) => {
                return Err(ConfigError::invalid(
                    "station.service",
                    other,
                    "one of exponential, deterministic, lognormal",
                ));
            }
        };
        let capacity = match s.capacity {
            None => None,
            Some(k) => Some(
                u32::try_from(k)
                    .ok()
                    .filter(|&k| k >= servers)
                    .ok_or_else(|| ConfigError::invalid("station.capacity", k, "an integer >= station.servers"))?,
            ),
        };
        let warmup = u64::try_from(sim.warmup_customers).map_err(|_| {
            ConfigError::invalid("simulation.warmup_customers", sim.warmup_customers, "an integer >= 0")
        })?;
        let customers =
            u64::try_from(sim.customers).ok().filter(|&n| n >= warmup.saturating_add(2)).ok_or_else(|| {
                ConfigError::invalid(
                    "simulation.customers",
                    sim.customers,
                    "an integer >= simulation.warmup_customers + 2",
                )
            })?;
        let config = StationConfig {
            servers,
            interarrival: DurationDistribution::exponential_rate(lambda),
            service,
            capacity,
            customers,
            warmup_customers: warmup,
        };
        config.validate().map_err(|e| match e {
            RunError::Config(e) => e.within("station"),
            other => ConfigError::invalid("station", other, "durations the clock can hold"),
        })?;
        Ok(config)
    }

    fn run<R: Observer<CustomerRecord>, S: Observer<StationSample>>(
        config: &StationConfig,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, crate::error::RunError> {
        let (seed, rep) = (replication.master_seed, replication.index);
        let run = match traces.sample_every {
            Some(every) => {
                let mut sim = build_sampled_station(
                    config,
                    traces.requests,
                    every,
                    traces.samples,
                    QueueKind::default(),
                    seed,
                    rep,
                )?;
                replication.attach(&mut sim, None);
                finish_station(&mut sim)?
            }
            None => {
                let mut sim = build_station(config, traces.requests, QueueKind::default(), seed, rep)?;
                replication.attach(&mut sim, None);
                finish_station(&mut sim)?
            }
        };
        replication.finished(run.metrics())
    }

    fn analytic(config: &StationConfig) -> Vec<(&'static str, f64)> {
        steady_state(config)
    }
}

/// Steady-state values where the station has a closed form: M/M/c (Erlang C), M/G/1
/// (Pollaczek-Khinchine) and loss systems M/G/c/c (Erlang B), as (metric, value).
pub fn steady_state(config: &StationConfig) -> Vec<(&'static str, f64)> {
    let DurationDistribution::Exponential { mean_s: interarrival_s } = config.interarrival else {
        return Vec::new();
    };
    let lambda = 1.0 / interarrival_s;
    let service_s = config.service.mean_s();
    let c = config.servers;
    let exponential = matches!(config.service, DurationDistribution::Exponential { .. });
    let waiting = match config.capacity {
        None if exponential => theory::mmc(lambda, 1.0 / service_s, c),
        None if c == 1 => theory::mg1(lambda, service_s, config.service.cv()),
        Some(k) if k == c => {
            // Erlang B holds for any service distribution (insensitivity).
            let b = theory::erlang_b(c, lambda * service_s);
            let carried = lambda * (1.0 - b) * service_s;
            return vec![
                ("wait_s", 0.0),
                ("sojourn_s", service_s),
                ("queue_len", 0.0),
                ("in_system", carried),
                ("p_wait", 0.0),
                ("p_block", b),
                ("utilisation", carried / f64::from(c)),
            ];
        }
        _ => None,
    };
    match waiting {
        Some(m) => vec![
            ("wait_s", m.wait_s),
            ("sojourn_s", m.sojourn_s),
            ("queue_len", m.queue_len),
            ("in_system", m.in_system),
            ("p_wait", m.p_wait),
            ("p_block", 0.0),
            ("utilisation", lambda * service_s / f64::from(c)),
        ],
        None => Vec::new(),
    }
}
