//! Validation of the engine and the station against queueing theory.
//!
//! Method: independent replications with warm-up deletion; each check asserts that
//! the Student-t interval over replications, at the stated confidence, contains the
//! analytic value. Seeds are fixed, so each check is deterministic; had the model been
//! right but unlucky, a 99% interval would miss with probability 1%. Every check can
//! fail: a wrong service discipline, a biased time average or an off-by-one in the
//! window moves the estimate by many interval widths (the sensitivity test at the end
//! shows a 5% error in the arrival rate is caught).

use infersim_agents::station::{DurationDistribution, StationConfig, theory};
use infersim_tests::{assert_covers, interval, replicate};

const CONFIDENCE: f64 = 0.99;
const REPS: u64 = 30;

#[test]
fn mm1_at_rho_0_8_matches_theory_and_littles_law() {
    let config = StationConfig::mmc(0.8, 1.0, 1, 60_000, 5_000);
    let exact = theory::mmc(0.8, 1.0, 1).unwrap();
    let runs = replicate(&config, 2024, REPS);
    assert_covers("M/M/1 Wq", &runs, |r| r.wait_s.unwrap(), exact.wait_s, CONFIDENCE);
    assert_covers("M/M/1 W", &runs, |r| r.sojourn_s.unwrap(), exact.sojourn_s, CONFIDENCE);
    assert_covers("M/M/1 Lq", &runs, |r| r.queue_len.unwrap(), exact.queue_len, CONFIDENCE);
    assert_covers("M/M/1 L", &runs, |r| r.in_system.unwrap(), exact.in_system, CONFIDENCE);
    assert_covers("M/M/1 P(wait)", &runs, |r| r.p_wait.unwrap(), exact.p_wait, CONFIDENCE);
    assert_covers("M/M/1 utilisation", &runs, |r| r.utilisation.unwrap(), 0.8, CONFIDENCE);
    // Little's law, L = lambda W, with lambda measured in the same run.
    assert_covers(
        "Little's law L - lambda W",
        &runs,
        |r| r.in_system.unwrap() - r.arrival_rate_per_s.unwrap() * r.sojourn_s.unwrap(),
        0.0,
        CONFIDENCE,
    );
    assert_covers(
        "Little's law Lq - lambda Wq",
        &runs,
        |r| r.queue_len.unwrap() - r.arrival_rate_per_s.unwrap() * r.wait_s.unwrap(),
        0.0,
        CONFIDENCE,
    );
}

#[test]
fn mmc_with_4_servers_at_rho_0_9_matches_erlang_c() {
    let config = StationConfig::mmc(3.6, 1.0, 4, 80_000, 8_000);
    let exact = theory::mmc(3.6, 1.0, 4).unwrap();
    let runs = replicate(&config, 7, REPS);
    assert_covers("M/M/4 Erlang C", &runs, |r| r.p_wait.unwrap(), exact.p_wait, CONFIDENCE);
    assert_covers("M/M/4 Wq", &runs, |r| r.wait_s.unwrap(), exact.wait_s, CONFIDENCE);
    assert_covers("M/M/4 Lq", &runs, |r| r.queue_len.unwrap(), exact.queue_len, CONFIDENCE);
}

#[test]
fn md1_at_rho_0_7_matches_pollaczek_khinchine() {
    let mut config = StationConfig::mmc(0.7, 1.0, 1, 40_000, 2_000);
    config.service = DurationDistribution::Deterministic { value_s: 1.0 };
    let exact = theory::md1(0.7, 1.0).unwrap();
    let runs = replicate(&config, 11, REPS);
    assert_covers("M/D/1 Wq", &runs, |r| r.wait_s.unwrap(), exact.wait_s, CONFIDENCE);
    assert_covers("M/D/1 Lq", &runs, |r| r.queue_len.unwrap(), exact.queue_len, CONFIDENCE);
}

#[test]
fn mg1_with_lognormal_service_matches_pollaczek_khinchine() {
    let mut config = StationConfig::mmc(0.6, 1.0, 1, 40_000, 2_000);
    config.service = DurationDistribution::LogNormal { mean_s: 1.0, cv: 0.5 };
    let exact = theory::mg1(0.6, 1.0, 0.5).unwrap();
    let runs = replicate(&config, 13, REPS);
    assert_covers("M/G/1 Wq", &runs, |r| r.wait_s.unwrap(), exact.wait_s, CONFIDENCE);
}

#[test]
fn mmcc_with_5_servers_and_4_erlangs_matches_erlang_b() {
    let mut config = StationConfig::mmc(4.0, 1.0, 5, 40_000, 1_000);
    config.capacity = Some(5);
    let exact = theory::erlang_b(5, 4.0);
    let runs = replicate(&config, 5, REPS);
    assert_covers("M/M/5/5 Erlang B", &runs, |r| r.p_block.unwrap(), exact, CONFIDENCE);
    // Nobody waits in a loss system.
    assert!(runs.iter().all(|r| r.wait_s == Some(0.0) && r.queue_len == Some(0.0)));
}

/// Over 200 independent experiments of 20 replications each, the 95% interval for
/// M/M/1 Wq must contain the true value between 90% and 99% of the time. With true
/// coverage 95%, the count of hits is Binomial(200, 0.95): mean 190, sd 3.1, so the
/// band [180, 198] holds with probability above 99.5%.
#[test]
fn replication_intervals_cover_at_their_nominal_rate() {
    let config = StationConfig::mmc(0.8, 1.0, 1, 10_000, 1_000);
    let exact = theory::mmc(0.8, 1.0, 1).unwrap().wait_s;
    let experiments = 200;
    let reps = 20;
    let hits = (0..experiments)
        .filter(|&e| {
            let runs = replicate(&config, 10_000 + e, reps);
            interval(&runs, |r| r.wait_s.unwrap(), 0.95).contains(exact)
        })
        .count();
    let coverage = hits as f64 / experiments as f64;
    assert!((0.90..=0.99).contains(&coverage), "coverage {coverage} outside [0.90, 0.99]");
}

/// The checks above can fail: the same method rejects a queue whose arrival rate is
/// 5% off (M/M/1 at rho 0.84 measured against the rho 0.8 formula).
#[test]
fn the_method_detects_a_five_percent_error() {
    let config = StationConfig::mmc(0.84, 1.0, 1, 60_000, 5_000);
    let runs = replicate(&config, 2024, REPS);
    let exact_at_0_8 = theory::mmc(0.8, 1.0, 1).unwrap().wait_s;
    assert!(!interval(&runs, |r| r.wait_s.unwrap(), CONFIDENCE).contains(exact_at_0_8));
}
