//! The bare M/M/c loop (`infersim_benches::bare_mmc`: one function, a `BinaryHeap`, the
//! same random numbers and statistics as the engine's station) as a whole process, for
//! the comparison with `infersim run mmc`, SimCore and SimPy in benches/README.md:
//! `cargo run --release -p infersim-benches --bin bare-mmc [customers]` (default
//! 5,000,000: 10 M events of M/M/4 at rho 0.9).

use std::time::Instant;

fn main() {
    let customers: u64 = std::env::args().nth(1).map_or(5_000_000, |a| a.parse().expect("a number of customers"));
    let started = Instant::now();
    let run = infersim_benches::bare_mmc(3.6, 1.0, 4, customers, 0, 42, 0);
    let wall_s = started.elapsed().as_secs_f64();
    println!(
        "bare loop: {customers} customers, {} events, {wall_s:.2} s, {:.2} M events/s, mean wait {:.3} s (Erlang C 1.969)",
        run.events,
        run.events as f64 / wall_s / 1e6,
        run.wait_s
    );
}
