//! A benchmark regression gate: compares two saved criterion baselines and fails
//! (exit 1) on a real slowdown, not on noise.
//!
//! ```sh
//! git switch main    && cargo bench -p infersim-benches -- --save-baseline main
//! git switch my-work && cargo bench -p infersim-benches -- --save-baseline candidate
//! cargo run -p infersim-benches --bin bench-gate -- main candidate [--threshold 0.10]
//! ```
//!
//! A benchmark has slowed down when the lower end of the candidate's 95% interval of
//! the median is above the upper end of the baseline's, times 1 + threshold: the two
//! intervals do not overlap even after allowing the threshold. Run-to-run noise moves
//! medians by up to 10% on this machine (benches/README.md), hence the default.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The 95% interval of a benchmark's median time (ns).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Median {
    low: f64,
    point: f64,
    high: f64,
}

fn median_of(path: &Path) -> Option<Median> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let m = json.get("median")?;
    let ci = m.get("confidence_interval")?;
    Some(Median {
        low: ci.get("lower_bound")?.as_f64()?,
        point: m.get("point_estimate")?.as_f64()?,
        high: ci.get("upper_bound")?.as_f64()?,
    })
}

/// Every benchmark directory below `root` (those holding a `<baseline>/estimates.json`).
fn benchmarks(root: &Path, baseline: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join(baseline).join("estimates.json").is_file() {
            out.push(path.clone());
        }
        if path.is_dir() {
            benchmarks(&path, baseline, out);
        }
    }
}

/// Whether `candidate` is slower than `base` beyond noise and `threshold`.
fn slower(base: Median, candidate: Median, threshold: f64) -> bool {
    candidate.low > base.high * (1.0 + threshold)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threshold = 0.10;
    let mut names = Vec::new();
    let mut dir = PathBuf::from("target/criterion");
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--threshold" => {
                threshold = match args.get(i + 1).and_then(|t| t.parse().ok()) {
                    Some(t) => t,
                    None => return usage("--threshold needs a number, e.g. 0.10"),
                };
                i += 1;
            }
            "--dir" => {
                dir = match args.get(i + 1) {
                    Some(d) => PathBuf::from(d),
                    None => return usage("--dir needs a directory"),
                };
                i += 1;
            }
            name => names.push(name.to_string()),
        }
        i += 1;
    }
    let [base, candidate] = names.as_slice() else { return usage("give two baseline names") };
    let mut found = Vec::new();
    benchmarks(&dir, base, &mut found);
    found.sort();
    let mut regressions = 0;
    let mut compared = 0;
    for bench in &found {
        let (Some(b), Some(c)) = (
            median_of(&bench.join(base).join("estimates.json")),
            median_of(&bench.join(candidate).join("estimates.json")),
        ) else {
            continue;
        };
        compared += 1;
        let verdict = if slower(b, c, threshold) {
            regressions += 1;
            "SLOWER"
        } else if slower(c, b, threshold) {
            "faster"
        } else {
            "same"
        };
        let name = bench.strip_prefix(&dir).unwrap_or(bench).display();
        println!("{verdict:>6}  {:+6.1}%  {name}", (c.point / b.point - 1.0) * 100.0);
    }
    if compared == 0 {
        return usage(&format!("no benchmark under {} has both baselines {base} and {candidate}", dir.display()));
    }
    println!("{compared} benchmarks compared, {regressions} slower beyond noise and {:.0}%", threshold * 100.0);
    if regressions > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn usage(message: &str) -> ExitCode {
    eprintln!(
        "bench-gate: {message}\nusage: bench-gate BASELINE CANDIDATE [--threshold 0.10] [--dir target/criterion]"
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, bench: &str, baseline: &str, low: f64, point: f64, high: f64) {
        let d = dir.join(bench).join(baseline);
        std::fs::create_dir_all(&d).unwrap();
        let ci = format!("{{\"confidence_level\":0.95,\"lower_bound\":{low},\"upper_bound\":{high}}}");
        let estimate = format!("{{\"confidence_interval\":{ci},\"point_estimate\":{point},\"standard_error\":1.0}}");
        let text = format!(
            "{{\"mean\":{estimate},\"median\":{estimate},\"median_abs_dev\":{estimate},\"slope\":null,\"std_dev\":{estimate}}}"
        );
        std::fs::write(d.join("estimates.json"), text).unwrap();
    }

    #[test]
    fn a_slowdown_beyond_noise_fails_and_noise_does_not() {
        let base = Median { low: 95.0, point: 100.0, high: 105.0 };
        assert!(!slower(base, Median { low: 100.0, point: 108.0, high: 116.0 }, 0.10), "overlapping: noise");
        assert!(!slower(base, Median { low: 114.0, point: 118.0, high: 122.0 }, 0.10), "within the threshold");
        assert!(slower(base, Median { low: 120.0, point: 125.0, high: 130.0 }, 0.10));
        let dir = std::env::temp_dir().join(format!("bench-gate-test-{}", std::process::id()));
        write(&dir, "group/hold", "main", 95.0, 100.0, 105.0);
        write(&dir, "group/hold", "candidate", 120.0, 125.0, 130.0);
        let mut found = Vec::new();
        benchmarks(&dir, "main", &mut found);
        assert_eq!(found, [dir.join("group/hold")]);
        assert_eq!(median_of(&found[0].join("candidate/estimates.json")).unwrap().point, 125.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
