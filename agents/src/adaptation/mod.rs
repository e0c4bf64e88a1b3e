//! Model-variant adaptation (IPA, energy-aware), shared below the worlds: variant
//! profiles (accuracy, latency per batch) and the planner that chooses a variant, a
//! batch size and replicas for a load. The pipeline world plans its stages with it, and
//! a token-level fleet plans its variant pools with the same code.

pub mod planner;
pub mod profile;

pub use planner::{Limits, Objective, Plan, StagePlan, solve};
pub use profile::{Quadratic, ReplicaCost, Stage, Variant, fit_quadratic};
