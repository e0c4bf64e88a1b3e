//! Differential test: the engine's station and the bare hand-written loop in the
//! benches crate draw the same random numbers in the same order, so they must agree
//! to the bit. A difference means the engine reorders events, loses one, or draws
//! from the wrong stream.

use infersim_agents::station::{StationConfig, run_station};
use infersim_benches::bare_mmc;

#[test]
fn engine_station_equals_the_bare_loop_bit_for_bit() {
    for (lambda, servers, warmup) in [(0.8, 1u32, 0u64), (3.6, 4, 1_000), (45.0, 50, 500)] {
        let config = StationConfig::mmc(lambda, 1.0, servers, 30_000, warmup);
        let engine = run_station(&config, 5, 3).unwrap();
        let bare = bare_mmc(lambda, 1.0, servers, 30_000, warmup, 5, 3);
        assert_eq!(engine.events, bare.events);
        assert_eq!(engine.wait_s.unwrap().to_bits(), bare.wait_s.to_bits(), "wait, c = {servers}");
        assert_eq!(engine.sojourn_s.unwrap().to_bits(), bare.sojourn_s.to_bits());
        assert_eq!(engine.queue_len.unwrap().to_bits(), bare.queue_len.to_bits());
        assert_eq!(engine.in_system.unwrap().to_bits(), bare.in_system.to_bits());
        assert_eq!(engine.utilisation.unwrap().to_bits(), bare.utilisation.to_bits());
        assert_eq!(engine.p_wait.unwrap().to_bits(), bare.p_wait.to_bits());
        assert_eq!(engine.sojourn_p99_s.unwrap().to_bits(), bare.sojourn_p99_s.to_bits());
    }
}
