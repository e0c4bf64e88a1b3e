//! # infersim (experiments)
//!
//! Wires scenarios to models and runs Monte Carlo batches: scenario files (TOML, with
//! `--set` overrides and `[sweep]` grids) are validated into typed configuration,
//! replications run in parallel with results independent of the thread count, every
//! batch is written to an output directory (Parquet for notebooks, a manifest for
//! reproduction), and summaries carry Student-t confidence intervals.
//!
//! ```
//! use infersim_engine::Interrupt;
//! use infersim::batch::{run_batch, BatchSpec};
//! use infersim::runner::Shard;
//! use infersim::scenario::Scenario;
//!
//! /// This example demonstrates a small batch of the built-in `mmc` scenario.
//! let mut scenario = Scenario::builtin("mmc").unwrap();
//! scenario.apply_overrides(&["simulation.customers=5000", "simulation.warmup_customers=500"]).unwrap();
//! let out = std::env::temp_dir().join(format!("infersim-doc-{}", std::process::id()));
//! let spec = BatchSpec { replications: 4, seed: 42, threads: 2, shard: Shard::ALL, out: out.clone(), resume: false, confidence: 0.95, trace: Default::default() };
//! let report = run_batch(&scenario, &spec, &Interrupt::default(), &|_| {}).unwrap();
//! assert_eq!(report.manifest.completed, 4);
//! assert!(out.join("replications.parquet").exists() && out.join("summary.csv").exists());
//! # std::fs::remove_dir_all(out).unwrap();
//! ```

pub mod analysis;
pub mod batch;
pub mod calibrate;
pub mod cli;
pub mod error;
pub mod groups;
pub mod inputs;
pub mod journal;
pub mod lock;
pub mod output;
pub mod plot;
pub mod registry;
pub mod replications;
pub mod runner;
pub mod scenario;
pub mod slurm;
pub mod sweep;
pub mod trace;
