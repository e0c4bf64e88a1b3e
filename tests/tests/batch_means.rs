//! Batch means on one long run: the interval over batch means of the waits of a single
//! M/M/1 run (rho 0.8) must contain the analytic Wq, with MSER-5 deleting the warm-up.
//! One run is one draw, so the check has a 1% false-failure rate at the stated 99%
//! confidence; the seed is fixed.

use infersim_agents::station::{Outcome, StationConfig, build_station, theory};
use infersim_engine::stats::{Warmup, batch_means};
use infersim_engine::{QueueKind, VecObserver};

#[test]
fn batch_means_of_one_long_mm1_run_cover_wq() {
    // No built-in warm-up: MSER-5 has to find it. The run starts empty.
    let config = StationConfig::mmc(0.8, 1.0, 1, 1_000_000, 0);
    let mut sim = build_station(&config, VecObserver::default(), QueueKind::default(), 77, 0).unwrap();
    sim.run(Default::default()).unwrap();
    let waits: Vec<f64> = sim
        .model()
        .observer()
        .rows
        .iter()
        .filter(|r| r.outcome == Outcome::Served)
        .map(|r| r.start_s.unwrap() - r.arrival_s)
        .collect();
    // Rows arrive in departure order, which for one FIFO server is arrival order.
    assert_eq!(waits.len(), 1_000_000);
    let bm = batch_means(&waits, Warmup::Mser5, 20, 0.99).unwrap();
    let exact = theory::mmc(0.8, 1.0, 1).unwrap().wait_s;
    assert!(bm.ci.contains(exact), "{:?} misses {exact}", bm.ci);
    // 50 000 customers per batch is far longer than the correlation time at rho 0.8.
    let rho1 = bm.lag1_autocorrelation.unwrap();
    assert!(rho1.abs() < 0.5, "batches still correlated: {rho1}");
    assert!(bm.deleted < 100_000, "MSER-5 deleted {}", bm.deleted);
}
