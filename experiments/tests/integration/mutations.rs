//! Validation against mutated scenarios: every numeric value of every built-in
//! scenario set to extremes (0, -1, 1e308, 1e-300, a huge integer), to text, or
//! deleted, one key at a time. A mutated scenario must either be refused with a
//! message (bad input, exit 2) or run: never a panic, a hang or a failed replication
//! on input that validation accepted.

use std::sync::mpsc;
use std::time::Duration;

use infersim::registry::Registry;
use infersim::runner::{TraceSpec, run_replication};
use infersim::scenario::Scenario;
use toml::{Table, Value};

/// Shortening overrides per built-in scenario (applied first, so an accepted mutation
/// runs briefly) and the keys those overrides pin.
fn short(name: &str) -> &'static [&'static str] {
    match name {
        "serving" | "llm-history" => &["simulation.duration_s=30", "simulation.warmup_s=5"],
        "mmc" => &["simulation.customers=500", "simulation.warmup_customers=50"],
        "bloom-sd" | "bloom-stochastic" | "bloom-deployment" | "bloom-sweep" => &["simulation.duration_h=12"],
        "nineteen-contenders" => &["simulation.duration_h=0.25"],
        "ipa-video" => &["simulation.duration_h=0.02"],
        "vllm-replay" => &["simulation.duration_s=10"],
        "llm-fleet" => &["simulation.duration_h=0.005", "simulation.warmup_s=2"],
        "llm-serving" => &["simulation.duration_s=20", "simulation.warmup_s=2"],
        "closed-loop-h100" => &["serving.arrivals.requests=20", "simulation.duration_s=60"],
        "mooncake-replay" => &["simulation.duration_s=20"],
        "hetero-fleet" => &["simulation.duration_h=0.01", "simulation.warmup_s=5"],
        "fleet-retraining" => &["simulation.duration_s=3600", "simulation.warmup_s=60"],
        "fleet-miners" => &["simulation.duration_s=300", "simulation.warmup_s=30"],
        "fleet-adaptation" => &["simulation.duration_s=600", "simulation.warmup_s=30"],
        other => panic!("no shortening for built-in scenario {other}"),
    }
}

/// Dotted paths of every leaf in a table (arrays of tables by index), with whether it
/// is a number.
fn leaves(table: &Table, prefix: &str, out: &mut Vec<(String, bool)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(t) => leaves(t, &path, out),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    leaves(item.as_table().expect("checked"), &format!("{path}[{i}]"), out);
                }
            }
            other => out.push((path, other.is_integer() || other.is_float())),
        }
    }
}

/// The table without the leaf at `path` (`a.b[2].c`).
fn without(table: &Table, path: &str) -> Table {
    fn remove(table: &mut Table, steps: &[&str]) {
        let (first, rest) = steps.split_first().expect("a path has a step");
        let (name, index) = match first.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (*first, None),
        };
        if rest.is_empty() {
            table.remove(name);
            return;
        }
        let Some(value) = table.get_mut(name) else { return };
        let value = match index {
            Some(i) => &mut value.as_array_mut().expect("an array")[i],
            None => value,
        };
        remove(value.as_table_mut().expect("a table"), rest);
    }
    let mut t = table.clone();
    remove(&mut t, &path.split('.').collect::<Vec<_>>());
    t
}

const MUTATIONS: &[&str] = &["0", "-1", "1e308", "1e-300", "9223372036854775807", "\"x\""];

/// Runs one replication on a thread; a hang is reported after `limit`.
fn runs_within(s: &Scenario, limit: Duration) -> Result<(), String> {
    let point = s.first_point().clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_replication(&point, 1, 0, &TraceSpec::none()));
    });
    match rx.recv_timeout(limit) {
        Ok(record) => record.error.map_or(Ok(()), Err),
        Err(_) => Err(format!("no result within {limit:?}: a hang on validated input")),
    }
}

#[test]
fn mutated_built_in_scenarios_are_refused_or_run() {
    let mut tried = 0;
    let mut problems = Vec::new();
    for (name, _) in Registry::builtin().scenarios() {
        let mut base = Scenario::builtin(name).unwrap();
        base.apply_overrides(short(name)).unwrap();
        let pinned: Vec<&str> = short(name).iter().map(|o| o.split('=').next().unwrap()).collect();
        let mut keys = Vec::new();
        leaves(&base.table, "", &mut keys);
        keys.retain(|(k, _)| !pinned.contains(&k.as_str()) && !k.starts_with("simulation.replications"));
        for (key, number) in keys {
            // Deleted.
            tried += 1;
            let text = toml::to_string(&without(&base.table, &key)).unwrap();
            if let Ok(s) = Scenario::parse(&format!("{name} without {key}"), &text)
                && let Err(e) = runs_within(&s, Duration::from_secs(60))
            {
                problems.push(format!("{name}: without {key}: {e}"));
            }
            if !number {
                continue;
            }
            for value in MUTATIONS {
                tried += 1;
                let mutation = format!("{key}={value}");
                // Anything may be refused; nothing that is accepted may fail.
                let mut s = base.clone();
                let accepted = s.apply_overrides(&[mutation.as_str()]).is_ok();
                if std::env::var_os("INFERSIM_MUTATIONS_VERBOSE").is_some() {
                    eprintln!("{name}: {mutation}: {}", if accepted { "accepted" } else { "refused" });
                }
                if accepted && let Err(e) = runs_within(&s, Duration::from_secs(60)) {
                    problems.push(format!("{name}: --set {mutation}: {e}"));
                }
            }
        }
    }
    assert!(tried >= 400, "only {tried} variants");
    assert!(problems.is_empty(), "{} of {tried} variants failed:\n{}", problems.len(), problems.join("\n"));
}
