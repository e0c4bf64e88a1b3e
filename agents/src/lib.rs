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

pub mod adaptation;
pub mod arrivals;
pub mod contenders;
pub mod distributions;
pub mod drift;
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
pub mod scoring;
pub mod serving;
pub mod station;
pub mod theory;
pub mod world;

/// The built-in scenario `infersim run` runs when none is named.
pub const DEFAULT_SCENARIO: &str = "llm-serving";

/// Adds the worlds infersim ships to `worlds`, in the order `infersim list` shows
/// them: the one list of them.
pub fn builtin_worlds<W: world::Worlds>(worlds: W) -> W {
    worlds
        .with::<station::StationWorld>()
        .with::<serving::ServingWorld>()
        .with::<retraining::RetrainingWorld>()
        .with::<network::NetworkWorld>()
        .with::<pipeline::PipelineWorld>()
}

#[cfg(test)]
mod tests {
    /// The worlds, each a module (a directory or a file) of this crate.
    const WORLDS: [&str; 5] = ["station", "serving", "retraining", "network", "pipeline"];

    /// Every source file of `world`, with its text.
    fn sources(world: &str) -> Vec<(std::path::PathBuf, String)> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut stack = vec![src.join(world)];
        if src.join(format!("{world}.rs")).is_file() {
            stack = vec![src.join(format!("{world}.rs"))];
        }
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
        assert!(!files.is_empty(), "the world {world} has sources");
        files
    }

    /// Every world's metrics, as declared.
    fn declared() -> Vec<(&'static str, &'static [crate::world::MetricDeclaration])> {
        vec![
            ("station", crate::station::StationRun::UNITS),
            ("serving (static)", crate::serving::batched::BatchedRun::UNITS),
            ("serving (continuous)", crate::serving::continuous::ContinuousRun::UNITS),
            ("serving (a fleet's drifting model)", crate::serving::continuous::FleetRetrainingRun::UNITS),
            ("serving (a fleet of miners)", crate::serving::continuous::FleetMinersRun::UNITS),
            ("serving (a fleet's variant controller)", crate::serving::continuous::FleetAdaptationRun::UNITS),
            ("retraining", crate::retraining::RetrainingRun::UNITS),
            ("network", crate::network::NetworkRun::UNITS),
            ("pipeline", crate::pipeline::PipelineRun::UNITS),
        ]
    }

    /// A metric's name says its unit where it ends in one, and says what its
    /// declaration says; the same name is the same quantity, with the same unit and
    /// type, in every world.
    #[test]
    fn metric_names_units_and_types_agree_across_worlds() {
        let mut seen: std::collections::BTreeMap<&str, (&str, &str, &str)> = Default::default();
        for (world, metrics) in declared() {
            for &(name, unit, ty) in metrics {
                if let Some((suffix, expected)) =
                    crate::world::UNIT_SUFFIXES.iter().find(|(suffix, _)| name.ends_with(suffix))
                {
                    assert_eq!(unit, *expected, "{world}: {name} ends in {suffix}");
                }
                if let Some(&(other, u, t)) = seen.get(name) {
                    assert_eq!((u, t), (unit, ty), "{name}: {other} declares it otherwise than {world}");
                }
                seen.insert(name, (world, unit, ty));
            }
        }
        assert!(seen.len() > 100, "{} metrics", seen.len());
    }

    /// No world imports another: what several use is a shared agent below them.
    #[test]
    fn no_world_imports_another_world() {
        for world in WORLDS {
            for (path, text) in sources(world) {
                for other in WORLDS.iter().filter(|o| **o != world) {
                    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
                    let reaching = code
                        .filter(|l| {
                            l.contains(&format!("crate::{other}::"))
                                || l.contains(&format!("crate::{other}}}"))
                                || l.contains(&format!("crate::{other};"))
                        })
                        .collect::<Vec<_>>();
                    assert!(
                        reaching.is_empty(),
                        "{} ({world}) imports the {other} world: {reaching:?}",
                        path.display()
                    );
                }
            }
        }
    }
}
