//! # infersim-agents
//!
//! The domain models of infersim, built on `infersim-engine`. This crate knows about
//! queues, servers and (later) GPUs, requests, miners and retraining; it knows nothing
//! of files, command lines or output formats.
//!
//! ```
//! use infersim_agents::station::{run_station, theory, DurationDistribution, StationConfig};
//!
//! /// This example demonstrates an M/D/1 queue at 50% load against Pollaczek-Khinchine.
//! let config = StationConfig {
//!     servers: 1,
//!     interarrival: DurationDistribution::Exponential { mean_s: 2.0 },
//!     service: DurationDistribution::Deterministic { value_s: 1.0 },
//!     capacity: None,
//!     customers: 20_000,
//!     warmup_customers: 1_000,
//! };
//! let run = run_station(&config, 42, 0).unwrap();
//! let exact = theory::md1(0.5, 1.0).unwrap();
//! let sojourn_s = run.sojourn_s.unwrap();
//! assert!((sojourn_s - exact.sojourn_s).abs() < 0.1 * exact.sojourn_s, "{sojourn_s} vs {}", exact.sojourn_s);
//! ```

pub mod arrivals;
pub mod distributions;
pub mod error;
pub mod failures;
pub mod feedback;
pub mod grid;
pub mod input;
pub mod llm;
pub mod min_index;
pub mod network;
pub mod pipeline;
pub mod power;
pub mod requests;
pub mod retraining;
pub mod serving;
pub mod station;
pub mod world;
