//! Fleets of pools: one pool written out is the one-pool shorthand byte for byte, and
//! requests go only to the pools that serve their model.

use std::path::Path;

use crate::common::{floats, infersim_ok, optional_floats, read, s, strings};

/// The built-in default's text with its one-pool keys taken out of `[serving]`.
fn default_without_pool_keys() -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/llm-serving.toml"))
            .unwrap();
    let pool_keys = ["nodes = ", "replicas_per_node = ", "model = ", "gpu = ", "tp = "];
    text.lines().filter(|l| !pool_keys.iter().any(|k| l.starts_with(k))).collect::<Vec<_>>().join("\n") + "\n"
}

/// Runs `text` (written to `name`.toml) for 2 replications with request traces; returns
/// the bytes of replications.parquet and of replication 1's requests.parquet.
fn run_bytes(dir: &Path, name: &str, text: &str) -> (Vec<u8>, Vec<u8>) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = dir.join(name);
    let sets = ["simulation.duration_s=120", "simulation.warmup_s=10"];
    let mut args = vec!["run", s(&path), "--reps", "2", "--trace", "requests", "--out", s(&out)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    infersim_ok(&args);
    let bytes = |p: &str| std::fs::read(out.join(p)).unwrap();
    (bytes("replications.parquet"), bytes("traces/point=0/rep=1/requests.parquet"))
}

#[test]
fn one_pool_written_out_is_the_shorthand_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // Failures too, so that the GPUs' failure streams are numbered alike.
    let failures = "\n[serving.failures]\nmtbf_h = 0.02\nmttr_h = 0.005\n";
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/llm-serving.toml"))
            .unwrap();
    let shorthand = run_bytes(dir.path(), "shorthand", &(original + failures));
    let pool = "\n[[serving.pools]]\nname = \"Llama-3.1-8B\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\ntp = 1\nnodes = 2\nreplicas_per_node = 2\n";
    let written_out = run_bytes(dir.path(), "pools", &(default_without_pool_keys() + failures + pool));
    assert!(shorthand.0 == written_out.0, "replications.parquet differs");
    assert!(shorthand.1 == written_out.1, "requests.parquet differs");
}

#[test]
fn requests_go_only_to_the_pools_that_serve_their_model() {
    let dir = tempfile::tempdir().unwrap();
    // Chat asks for the 8B model (three H100s), code for the 70B (one replica of four
    // A100s); the default's tasks are chat and code.
    let text = default_without_pool_keys()
        .replace("name = \"code\"\n", "name = \"code\"\nmodel = \"Llama-3.1-70B\"\n")
        .replace("name = \"chat\"\n", "name = \"chat\"\nmodel = \"Llama-3.1-8B\"\n")
        + "\n[[serving.pools]]\nname = \"chat-h100\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 3\n\
           \n[[serving.pools]]\nname = \"code-a100\"\nmodel = \"Llama-3.1-70B\"\ngpu = \"A100-80GB\"\ntp = 4\nreplicas = 1\n";
    let path = dir.path().join("two-models.toml");
    std::fs::write(&path, &text).unwrap();
    let out = dir.path().join("two-models");
    let sets = ["simulation.duration_s=60", "simulation.warmup_s=5", "serving.arrivals.rate_per_s=10"];
    let mut args = vec!["run", s(&path), "--reps", "1", "--trace", "requests", "--out", s(&out)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    infersim_ok(&args);
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    let (tasks, replicas) = (strings(&requests, "task"), floats(&requests, "replica"));
    let mut seen = [0, 0];
    for (task, replica) in tasks.iter().zip(&replicas) {
        match task.as_deref() {
            Some("chat") => assert!(*replica < 3.0, "a chat request on replica {replica}"),
            Some("code") => assert_eq!(*replica, 3.0, "a code request on replica {replica}"),
            other => panic!("task {other:?}"),
        }
        seen[usize::from(task.as_deref() == Some("code"))] += 1;
    }
    assert!(seen[0] > 100 && seen[1] > 20, "{seen:?}");
    let replications = read(out.join("replications.parquet"));
    assert!(floats(&replications, "served")[0] > 0.0);

    // A task must name a model when several are served, and only a served one.
    let unnamed = text.replace("name = \"code\"\nmodel = \"Llama-3.1-70B\"\n", "name = \"code\"\n");
    std::fs::write(&path, unnamed).unwrap();
    let e = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(e.contains("tasks[1].model") && e.contains("serve several (Llama-3.1-8B, Llama-3.1-70B)"), "{e}");
    std::fs::write(
        &path,
        text.replace("name = \"code\"\nmodel = \"Llama-3.1-70B\"\n", "name = \"code\"\nmodel = \"Qwen3-8B\"\n"),
    )
    .unwrap();
    let e = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(e.contains("tasks[1].model = Qwen3-8B") && e.contains("a model the pools serve"), "{e}");
    // The one-pool keys and pools do not mix.
    std::fs::write(&path, text.replace("[serving]\n", "[serving]\ntp = 2\n")).unwrap();
    let e = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(e.contains("serving.tp") && e.contains("none with [[serving.pools]]"), "{e}");
}

/// One autoscaled pool of Llama-3.1-8B on H100s under a step in load (4 requests/s,
/// then 40 from 600 s): the autoscaler adds replicas within two decision intervals of
/// the step, they serve after their cold start (16 GB at 0.9 GB/s plus 64 s), and the
/// requests that arrive meanwhile wait: their TTFT shows the cold start, and a pool
/// whose replicas start at once does not show it. Every request is accounted for.
#[test]
fn an_autoscaled_pool_follows_a_step_in_load_and_ttft_shows_the_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = default_without_pool_keys().replace(
        "[serving.arrivals]\nkind = \"poisson\"\nrate_per_s = 60.0\n",
        "[serving.arrivals]\nkind = \"piecewise\"\nat_s = [0.0, 600.0]\nrates_per_s = [4.0, 40.0]\n",
    );
    assert!(base.contains("piecewise"));
    let run = |name: &str, engine_start_s: f64, load_gb_per_s: f64| {
        let text = format!(
            "{base}\n[[serving.pools]]\nname = \"chat\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 1\n\
             [serving.pools.autoscale]\nmin_replicas = 1\nmax_replicas = 8\nsignal = \"running\"\ntarget = 32.0\n\
             interval_s = 15.0\nscale_down_delay_s = 300.0\nengine_start_s = {engine_start_s}\nload_gb_per_s = {load_gb_per_s}\n"
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = dir.path().join(name);
        let sets = ["simulation.duration_s=1200", "simulation.warmup_s=0"];
        let mut args = vec!["run", s(&path), "--reps", "1", "--trace", "requests", "--out", s(&out)];
        for set in &sets {
            args.extend(["--set", set]);
        }
        infersim_ok(&args);
        out
    };
    let cold = run("cold", 64.0, 0.9);
    let series = read(cold.join("traces/point=0/rep=0/timeseries.parquet"));
    let (t_s, replicas) = (floats(&series, "t_s"), floats(&series, "replicas"));
    let at = |t: f64| replicas[t_s.iter().position(|&x| x >= t).unwrap()];
    assert!(t_s.iter().zip(&replicas).filter(|(t, _)| (300.0..600.0).contains(*t)).all(|(_, &n)| n <= 2.0));
    // Within two intervals of the step the autoscaler has asked for more.
    assert!(at(600.0 + 2.0 * 15.0 + 1.0) >= 3.0, "{:?}", &replicas[..]);
    assert!(at(1100.0) >= 4.0, "{:?}", &replicas[..]);

    // The TTFT of requests that arrived during the first cold start, with and without it.
    let ttft_p90 = |out: &std::path::Path| {
        let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
        let (arrival, first) =
            (floats(&requests, "arrival_s"), crate::common::optional_floats(&requests, "first_token_s"));
        let mut ttfts: Vec<f64> = arrival
            .iter()
            .zip(first)
            .filter(|(a, _)| (615.0..690.0).contains(*a))
            .map(|(a, f)| f.expect("served") - a)
            .collect();
        ttfts.sort_by(f64::total_cmp);
        ttfts[ttfts.len() * 9 / 10]
    };
    let instant = run("instant", 0.0, 1e6);
    let (with_cold_start, without) = (ttft_p90(&cold), ttft_p90(&instant));
    assert!(with_cold_start > 5.0 * without && with_cold_start > 10.0, "{with_cold_start} vs {without}");
    let m = read(cold.join("replications.parquet"));
    let ended: f64 = ["served", "timed_out", "lost", "rejected"].iter().map(|c| floats(&m, c)[0]).sum();
    assert_eq!(ended, floats(&m, "arrived")[0]);
    assert!(floats(&m, "cold_starts")[0] >= 3.0 && floats(&m, "replica_hours")[0] < 8.0 * 1200.0 / 3600.0);
}

/// A trace's `model` column sends each request to the pools serving that model, and a
/// model no pool serves is refused with the names that are.
#[test]
fn a_traces_model_column_routes_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut trace = String::from("timestamp_s,prompt_tokens,output_tokens,model\n");
    for i in 0..200 {
        let model = if i % 3 == 0 { "Llama-3.1-70B" } else { "Llama-3.1-8B" };
        trace += &format!("{},{},{},{model}\n", f64::from(i) * 0.1, 100 + i, 20 + i % 7);
    }
    std::fs::write(dir.path().join("trace.csv"), &trace).unwrap();
    let text = default_without_pool_keys().replace(
        "[serving.arrivals]\nkind = \"poisson\"\nrate_per_s = 60.0\n",
        "[serving.arrivals]\nkind = \"trace\"\npath = \"trace.csv\"\n",
    ) + "\n[[serving.pools]]\nname = \"small\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 2\n\
           \n[[serving.pools]]\nname = \"large\"\nmodel = \"Llama-3.1-70B\"\ngpu = \"H100\"\ntp = 4\nreplicas = 1\n";
    // The default's tasks name no model: the trace's column does.
    let path = dir.path().join("traced.toml");
    std::fs::write(&path, &text).unwrap();
    let out = dir.path().join("traced");
    infersim_ok(&[
        "run",
        s(&path),
        "--reps",
        "1",
        "--trace",
        "requests",
        "--out",
        s(&out),
        "--set",
        "simulation.duration_s=60",
    ]);
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    let (ids, replicas) = (floats(&requests, "request_id"), floats(&requests, "replica"));
    assert_eq!(ids.len(), 200);
    for (id, replica) in ids.iter().zip(&replicas) {
        let large = (*id as u64).is_multiple_of(3);
        assert_eq!(*replica == 2.0, large, "request {id} on replica {replica}");
    }
    std::fs::write(dir.path().join("trace.csv"), trace.replace("Llama-3.1-70B", "Qwen3-32B")).unwrap();
    let e = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(e.contains("Qwen3-32B") && e.contains("Llama-3.1-8B, Llama-3.1-70B"), "{e}");
}

/// Requests are conserved across pools under failures and autoscaling: every request
/// that arrived was served, timed out, lost or rejected, whatever replicas failed,
/// started or drained meanwhile.
#[test]
fn requests_are_conserved_across_pools_under_failures_and_autoscaling() {
    let dir = tempfile::tempdir().unwrap();
    let text = default_without_pool_keys()
        .replace("name = \"code\"\n", "name = \"code\"\nmodel = \"Llama-3.1-70B\"\ntimeout_s = 20.0\n")
        .replace("name = \"chat\"\n", "name = \"chat\"\nmodel = \"Llama-3.1-8B\"\n")
        .replace("rate_per_s = 60.0", "rate_per_s = 30.0")
        + "\n[[serving.pools]]\nname = \"chat\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 2\n\
           [serving.pools.failures]\nmtbf_h = 0.05\nmttr_h = 0.01\nretries = 1\n\
           [serving.pools.autoscale]\nmin_replicas = 1\nmax_replicas = 6\nsignal = \"waiting\"\ntarget = 2.0\n\
           interval_s = 10.0\nscale_down_delay_s = 60.0\nengine_start_s = 20.0\n\
           \n[[serving.pools]]\nname = \"code\"\nmodel = \"Llama-3.1-70B\"\ngpu = \"H100\"\ntp = 4\nreplicas = 2\n\
           [serving.pools.failures]\nmtbf_h = 0.1\nmttr_h = 0.02\nretries = 0\n";
    let path = dir.path().join("churn.toml");
    std::fs::write(&path, text).unwrap();
    // The prefix-aware router too: its index of replicas by committed blocks follows
    // replicas failing, starting and draining (debug builds check each pick against a
    // scan of the group).
    // And the router in rounds, which retries wait for too.
    for (routing, interval_s) in [("least_outstanding_requests", 0.0), ("prefix_aware", 0.0), ("prefix_aware", 0.02)] {
        conserved(&path, &dir.path().join(format!("{routing}-{interval_s}")), routing, interval_s);
    }
}

/// Runs the churning fleet at `path` with `routing` (routing every `interval_s`):
/// every arrival ends one way.
fn conserved(path: &Path, out: &Path, routing: &str, interval_s: f64) {
    // No warm-up: the outcome counts cover every request, as `arrived` does.
    let (routing, interval) =
        (format!("serving.routing={routing}"), format!("serving.routing_interval_s={interval_s}"));
    let sets =
        ["--set", "simulation.duration_s=900", "--set", "simulation.warmup_s=0", "--set", &routing, "--set", &interval];
    infersim_ok(&[&["run", s(path), "--reps", "3", "--out", s(out)][..], &sets[..]].concat());
    let m = read(out.join("replications.parquet"));
    let arrived = floats(&m, "arrived");
    let ended: Vec<f64> = (0..arrived.len())
        .map(|i| ["served", "timed_out", "lost", "rejected"].iter().map(|c| floats(&m, c)[i]).sum())
        .collect();
    assert_eq!(ended, arrived);
    // The failures and the autoscaler both acted.
    let total = |c: &str| floats(&m, c).iter().sum::<f64>();
    assert!(total("gpu_failures") > 10.0 && total("lost") > 0.0 && total("retries") > 0.0, "{m}");
    assert!(total("cold_starts") > 0.0, "{m}");
}

/// A fleet of several pools and models writes pools.parquet and models.parquet (a row
/// per point, replication and pool or model) with their summaries: the pools' counts,
/// GPU energy and cost add up to the fleet's, and so do the models'.
#[test]
fn pools_and_models_get_tables_that_add_up_to_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    let sets = ["--set", "simulation.duration_h=0.3", "--set", "simulation.warmup_s=60"];
    let traced = ["--trace", "timeseries"];
    infersim_ok(&[&["run", "hetero-fleet", "--reps", "2", "--out", s(&out)][..], &sets[..], &traced[..]].concat());
    assert!(!out.join("groups.jsonl").exists());
    // The time series samples each pool too (`part`), and the pools add up to the fleet.
    let series = read(out.join("traces/point=0/rep=1/timeseries.parquet"));
    let (parts, t) = (strings(&series, "part"), floats(&series, "t_s"));
    for column in ["replicas", "running", "gpu_power_w", "energy_kwh"] {
        let values = floats(&series, column);
        for (i, _) in parts.iter().enumerate().filter(|(_, p)| p.is_none()) {
            let of_parts: f64 =
                (0..series.height()).filter(|&k| t[k] == t[i] && parts[k].is_some()).map(|k| values[k]).sum();
            assert!(
                (of_parts - values[i]).abs() <= 1e-9 * values[i].abs().max(1.0),
                "{column} at {}: {of_parts} vs {}",
                t[i],
                values[i]
            );
        }
    }
    let named: std::collections::BTreeSet<_> = parts.iter().flatten().cloned().collect();
    assert_eq!(named.into_iter().collect::<Vec<_>>(), ["chat-h100", "code-a100"]);
    let fleet = read(out.join("replications.parquet"));
    for (table, kind) in [("pools.parquet", "pool"), ("models.parquet", "model")] {
        let parts = read(out.join(table));
        assert_eq!(parts.height(), 2 * fleet.height(), "{table}");
        let names = strings(&parts, kind);
        assert_eq!(names.iter().filter(|n| n.is_some()).count(), parts.height());
        let (points, reps) = (floats(&parts, "point"), floats(&parts, "replication"));
        for metric in ["arrived", "served", "energy_gpu_kwh", "cost_usd"] {
            let values = floats(&parts, metric);
            for (i, total) in floats(&fleet, metric).iter().enumerate() {
                let (p, r) = (floats(&fleet, "point")[i], floats(&fleet, "replication")[i]);
                let sum: f64 = (0..parts.height()).filter(|&k| points[k] == p && reps[k] == r).map(|k| values[k]).sum();
                assert!((sum - total).abs() <= 1e-9 * total.abs().max(1.0), "{table} {metric}: {sum} vs {total}");
            }
        }
        let summary = read(out.join(table.replace(".parquet", "_summary.parquet")));
        assert!(summary.height() > 0 && out.join(table.replace(".parquet", "_summary.csv")).exists());
    }
    // What a model does not measure is absent, not 0; pools have their steps.
    let (pools, models) = (read(out.join("pools.parquet")), read(out.join("models.parquet")));
    assert!(models.column("steps").is_err() && models.column("events").is_err());
    assert!(pools.column("steps").is_ok() && pools.column("events").is_err());
    // compare --by pool pairs each pool's replications; a batch against itself differs
    // in nothing, and its gates pass.
    let o = infersim_ok(&["compare", s(&out), s(&out), "--by", "pool", "--fail-on", "ttft_p99_s:+1%"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("pool chat-h100") && text.contains("pool code-a100") && text.contains("gates passed"),
        "{text}"
    );
    let e = crate::common::infersim_fails(&["compare", s(&out), s(&out), "--by", "gpu"]);
    assert!(e.contains("no gpus.parquet"), "{e}");
    // plot --by pool: a sweep chart per metric, a line per pool.
    let plots = dir.path().join("plots");
    infersim_ok(&["plot", s(&out), "--by", "pool", "--to", s(&plots)]);
    for chart in ["sweep_ttft_p99_s_by_pool.png", "sweep_energy_gpu_kwh_by_pool.svg"] {
        assert!(plots.join(chart).is_file(), "{chart}");
    }
    // Time series: the fleet's, and a line per pool.
    infersim_ok(&["plot", s(&out), "--to", s(&plots)]);
    for chart in ["timeseries_replicas.png", "timeseries_replicas_by_part.png"] {
        assert!(plots.join(chart).is_file(), "{chart}");
    }
    let e = crate::common::infersim_fails(&["plot", s(&out), "--by", "gpu", "--to", s(&plots)]);
    assert!(e.contains("--by gpu: no"), "{e}");
    // The same batch in two shards, merged: the same tables, byte for byte.
    let shards: Vec<_> = (1..=2).map(|i| dir.path().join(format!("shard{i}"))).collect();
    for (i, shard) in shards.iter().enumerate() {
        let part = format!("{}/2", i + 1);
        infersim_ok(
            &[&["run", "hetero-fleet", "--reps", "2", "--shard", &part, "--out", s(shard)][..], &sets[..]].concat(),
        );
    }
    let merged = dir.path().join("merged");
    infersim_ok(&["analyze", s(&shards[0]), s(&shards[1]), "--out", s(&merged)]);
    for file in ["pools.parquet", "pools_summary.csv", "models.parquet", "models_summary.parquet"] {
        let (whole, merged) = (std::fs::read(out.join(file)).unwrap(), std::fs::read(merged.join(file)));
        assert!(merged.is_ok_and(|m| m == whole), "{file}: the merged shards differ from the whole batch");
    }
}

/// Prefill and decode pools (`role`) are the one-pool split of `[serving.disaggregation]`
/// written out: the same replicas in the same order give the same bytes; and the
/// decode pool may be another GPU.
#[test]
fn prefill_and_decode_pools_are_the_split_pool_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let failures = "\n[serving.failures]\nmtbf_h = 0.05\nmttr_h = 0.005\n";
    let link = "\n[serving.disaggregation]\nlink_gb_per_s = 50.0\nlink_latency_us = 20.0\n";
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/llm-serving.toml"))
            .unwrap()
            .replace("nodes = 2\n", "nodes = 4\n")
            .replace("replicas_per_node = 2\n", "replicas_per_node = 1\n");
    assert!(original.contains("nodes = 4\n") && original.contains("replicas_per_node = 1\n"));
    let split = original
        + failures
        + &link.replace("[serving.disaggregation]\n", "[serving.disaggregation]\nprefill_replicas = 1\n");
    let shorthand = run_bytes(dir.path(), "split", &split);
    let pool = |name: &str, role: &str, gpu: &str, nodes: u32| {
        format!(
            "\n[[serving.pools]]\nname = \"{name}\"\nrole = \"{role}\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"{gpu}\"\nnodes = {nodes}\nreplicas_per_node = 1\n"
        )
    };
    let pools = default_without_pool_keys() + failures + link;
    let written_out = run_bytes(
        dir.path(),
        "roles",
        &(pools.clone() + &pool("prefill", "prefill", "H100", 1) + &pool("decode", "decode", "H100", 3)),
    );
    assert!(shorthand.0 == written_out.0, "replications.parquet differs");
    // The same requests; written out as two pools, each also names its pool.
    let requests = |name: &str| read(dir.path().join(name).join("traces/point=0/rep=1/requests.parquet"));
    let (one, two) = (requests("split"), requests("roles"));
    assert!(one.column("pool").is_err() && two.column("pool").is_ok());
    assert!(one.equals_missing(&two.drop("pool").unwrap()), "requests.parquet differs");
    // Prefill on H100s, decode on A100s: every request's KV crosses once, from the
    // prefill pool.
    let out = dir.path().join("mixed-gpus");
    let path = dir.path().join("mixed-gpus.toml");
    std::fs::write(&path, pools + &pool("prefill", "prefill", "H100", 1) + &pool("decode", "decode", "A100-80GB", 3))
        .unwrap();
    let traced = ["--trace", "requests"];
    infersim_ok(
        &[&["run", s(&path), "--reps", "1", "--set", "simulation.duration_s=60", "--out", s(&out)][..], &traced[..]]
            .concat(),
    );
    // Requests name their pool: the decode pool they finished on.
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    let (pools_of, outcomes) = (strings(&requests, "pool"), strings(&requests, "outcome"));
    let served = outcomes.iter().filter(|o| o.as_deref() == Some("served")).count();
    assert!(served > 1000);
    assert!(
        pools_of.iter().zip(&outcomes).all(|(p, o)| o.as_deref() != Some("served") || p.as_deref() == Some("decode"))
    );
    let parts = read(out.join("pools.parquet"));
    let names = strings(&parts, "pool");
    let at = |name: &str| names.iter().position(|n| n.as_deref() == Some(name)).unwrap();
    let (transfers, served, arrived) =
        (floats(&parts, "kv_transfers"), floats(&parts, "served"), floats(&parts, "arrived"));
    // Every arrival (warm-up included) prefilled and crossed; every request served
    // after the warm-up finished on a decode replica.
    assert!(transfers[at("prefill")] >= 0.99 * arrived[at("prefill")] && transfers[at("decode")] == 0.0);
    let fleet = read(out.join("replications.parquet"));
    assert!(served[at("prefill")] == 0.0 && served[at("decode")] == floats(&fleet, "served")[0], "{served:?}");
    // A prefill pool without a decode pool for its name is refused, naming the key.
    std::fs::write(&path, default_without_pool_keys() + link + &pool("prefill", "prefill", "H100", 1)).unwrap();
    let e = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(e.contains("serving.pools[0].role") && e.contains("decode pool"), "{e}");
}

/// The 1,000-GPU benchmark scenario (benches/scenarios) stays valid, and its first
/// simulated second runs: 1,000 replicas in two pools, prefix-aware.
#[test]
fn the_thousand_gpu_benchmark_scenario_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/scenarios/fleet-day-1000-gpus.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let sets = ["--set", "simulation.duration_s=1", "--set", "simulation.warmup_s=0"];
    infersim_ok(&[&["run", s(&path), "--reps", "1", "-q", "--out", s(&out)][..], &sets[..]].concat());
    let pools = read(out.join("pools.parquet"));
    let replicas = floats(&pools, "replicas_mean");
    assert!((replicas[0] - 400.0).abs() < 1e-6 && (replicas[1] - 600.0).abs() < 1e-6, "{replicas:?}");
    assert!(floats(&read(out.join("replications.parquet")), "arrived")[0] > 2000.0);
}

/// A fleet's batch killed mid-way and resumed writes the same pools.parquet and
/// models.parquet as one run straight through: each replication's parts are saved
/// before its record, so none is lost and none is counted twice.
#[test]
fn a_killed_fleet_batch_resumes_to_the_same_part_tables() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let args =
        ["--reps", "30", "--threads", "1", "--set", "simulation.duration_h=0.05", "--set", "simulation.warmup_s=0"];
    let whole = dir.path().join("whole");
    infersim_ok(&[&["run", "hetero-fleet", "-q", "--out", s(&whole)][..], &args[..]].concat());
    let out = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_infersim"))
        .args([&["run", "hetero-fleet", "-q", "--out", s(&out)][..], &args[..]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let saved = || std::fs::read_to_string(out.join("parts.jsonl")).map_or(0, |t| t.matches('\n').count());
    let deadline = Instant::now() + Duration::from_secs(120);
    while saved() < 5 {
        assert!(Instant::now() < deadline, "no replication finished in 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    assert!(!out.join("pools.parquet").exists() && (5..90).contains(&saved()), "{} saved", saved());
    infersim_ok(&[&["run", "hetero-fleet", "-q", "--out", s(&out), "--resume"][..], &args[..]].concat());
    for file in ["replications.parquet", "pools.parquet", "models.parquet", "pools_summary.csv"] {
        let (a, b) = (std::fs::read(whole.join(file)).unwrap(), std::fs::read(out.join(file)).unwrap());
        assert!(a == b, "{file}: the resumed batch differs");
    }
}

/// `correspond --by pool`: an observed requests file with a `pool` column is compared
/// pool by pool with the batch's pools.parquet. Observed here is the batch's own
/// replication 0, so each pool's observed TTFT is its requests' (computed in the test)
/// and lies within that pool's replications.
#[test]
fn correspond_by_pool_compares_each_pools_requests_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let text = default_without_pool_keys()
        + "\n[[serving.pools]]\nname = \"fast\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 2\n\
           \n[[serving.pools]]\nname = \"slow\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"A100-80GB\"\nreplicas = 2\n";
    let path = dir.path().join("two-pools.toml");
    std::fs::write(&path, &text).unwrap();
    let out = dir.path().join("two-pools");
    let sets = ["simulation.duration_s=60", "simulation.warmup_s=5", "serving.arrivals.rate_per_s=20"];
    let mut args = vec!["run", s(&path), "--reps", "3", "--trace", "requests", "--out", s(&out)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    infersim_ok(&args);
    let observed = out.join("traces/point=0/rep=0/requests.parquet");
    infersim_ok(&["correspond", s(&out), "--observed", s(&observed)]);
    let whole = std::fs::read(out.join("correspondence.csv")).unwrap();
    let printed = infersim_ok(&["correspond", s(&out), "--observed", s(&observed), "--by", "pool"]);
    assert_eq!(std::fs::read(out.join("correspondence.csv")).unwrap(), whole, "the whole batch's table stays");
    let printed = String::from_utf8_lossy(&printed.stdout).to_string();
    assert!(printed.contains("pool fast:") && printed.contains("pool slow:"), "{printed}");
    let table = read_csv(&out.join("correspondence_by_pool.csv"));
    let requests = read(observed);
    let (pools, ttft, warmup) =
        (strings(&requests, "pool"), optional_floats(&requests, "ttft_s"), crate::common::bools(&requests, "warmup"));
    for pool in ["fast", "slow"] {
        let xs: Vec<f64> = (0..pools.len())
            .filter(|&i| pools[i].as_deref() == Some(pool) && warmup[i] == Some(false))
            .filter_map(|i| ttft[i])
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let row = table
            .iter()
            .find(|r| r[0] == pool && r[1] == "ttft_mean_s")
            .unwrap_or_else(|| panic!("no ttft_mean_s row for {pool}: {table:?}"));
        let observed: f64 = row[2].parse().unwrap();
        assert!((observed - mean).abs() < 1e-9 * mean.max(1e-9), "{pool}: {observed} vs {mean}");
        assert_eq!(row[7], "true", "{pool}: replication 0 lies within the pool's replications");
    }
    // A pool the batch does not have, and a file without the column, are refused.
    let csv = dir.path().join("other.csv");
    std::fs::write(&csv, "pool,ttft_s\nnone-such,0.1\n").unwrap();
    let err = crate::common::infersim_fails(&["correspond", s(&out), "--observed", s(&csv), "--by", "pool"]);
    assert!(err.contains("none-such") && err.contains("fast, slow"), "{err}");
    std::fs::write(&csv, "ttft_s\n0.1\n").unwrap();
    let err = crate::common::infersim_fails(&["correspond", s(&out), "--observed", s(&csv), "--by", "pool"]);
    assert!(err.contains("no `pool` column"), "{err}");
    let err = crate::common::infersim_fails(&["correspond", s(&out), "--observed", s(&csv), "--by", "../pool"]);
    assert!(err.contains("`pool` and `model`"), "{err}");
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}
