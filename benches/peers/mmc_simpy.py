"""M/M/4 at rho 0.9 in SimPy, for the whole-process comparison in benches/README.md.

The model of `infersim run mmc`: Poisson arrivals at 3.6/s, four servers at 1.0/s each,
FCFS, no capacity limit; per customer it keeps the wait and sojourn (running mean) and
counts two model events (arrival, departure), as infersim's `events` metric does.

    python3 benches/peers/mmc_simpy.py [customers]    # default 1,000,000
"""

import random
import sys
import time

import simpy


def main(customers: int) -> None:
    rng = random.Random(42)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=4)
    stats = {"n": 0, "wait": 0.0, "sojourn": 0.0}

    def customer(env):
        arrived = env.now
        with servers.request() as req:
            yield req
            stats["wait"] += env.now - arrived
            yield env.timeout(rng.expovariate(1.0))
        stats["sojourn"] += env.now - arrived
        stats["n"] += 1

    def source(env):
        for _ in range(customers):
            yield env.timeout(rng.expovariate(3.6))
            env.process(customer(env))

    started = time.perf_counter()
    env.process(source(env))
    env.run()
    wall = time.perf_counter() - started
    events = 2 * customers
    print(f"simpy {simpy.__version__}: {customers} customers, {events} events, {wall:.2f} s, "
          f"{events / wall / 1e6:.3f} M events/s, mean wait {stats['wait'] / stats['n']:.3f} s (Erlang C 1.969)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
