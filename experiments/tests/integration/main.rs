//! End-to-end tests of the `infersim` binary and library, linked into one test binary:
//! each file here was its own binary once, and every one of them links polars, arrow
//! and parquet, so eleven links cost minutes and gigabytes of disk. Run one group with
//! a filter, e.g. `cargo test -p infersim --test integration llm::`.

mod bloom;
mod calibrate;
mod cli;
mod coalescing;
mod common;
mod fleet;
mod fleet_adaptation;
mod fleet_miners;
mod fleet_retraining;
mod llm;
mod mutations;
mod network;
mod ownership;
mod pipeline;
mod pipeline_adaptation;
mod prefix;
mod readme;
mod rounds;
mod slurm;
mod worlds;
