//! # infersim (experiments)
//!
//! Wires scenarios to models and runs Monte Carlo batches: scenario files (TOML, with
//! `--set` overrides) are validated into typed configuration, replications run in
//! parallel with results independent of the thread count, and summaries carry
//! Student-t confidence intervals.
//!
//! ```
//! use infersim::scenario::Scenario;
//! use infersim::runner::run_batch;
//!
//! /// This example demonstrates a small batch of the built-in `mmc` scenario.
//! let mut scenario = Scenario::builtin("mmc").unwrap();
//! scenario.apply_overrides(&["simulation.customers=5000", "simulation.warmup_customers=500"]).unwrap();
//! let batch = run_batch(&scenario, 4, 42, 2).unwrap();
//! assert_eq!(batch.replications.len(), 4);
//! let wait = batch.summary("wait_s").unwrap();
//! assert!(wait.ci.unwrap().low > 0.0);
//! ```

pub mod runner;
pub mod scenario;
