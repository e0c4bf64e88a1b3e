//! Prefix caching against references written here: the Mooncake trace's requests one
//! at a time on one replica, each request's cached tokens (requests.parquet) equal to
//! an independent count of its leading already-seen blocks (a cache that never
//! evicts), and to a per-block LRU cache kept here (a cache that does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use infersim::output::MetricCell;
use infersim::runner::{TraceSpec, run_replication};
use infersim::scenario::Scenario;

use crate::common::{ACCOUNTING, floats, infersim_ok, optional_floats, read, s, strings};

const BLOCK_TOKENS: usize = 16;

const HASH_BLOCK_TOKENS: usize = 512;

struct Request {
    input: usize,
    output: usize,
    hash_ids: Vec<u64>,
}

fn mooncake() -> Vec<Request> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/llm-serving/workloads/mooncake-synthetic.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Request {
                input: v["input_length"].as_u64().unwrap() as usize,
                output: v["output_length"].as_u64().unwrap() as usize,
                hash_ids: v["hash_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect(),
            }
        })
        .collect()
}

/// A block's name: a hash (std's SipHash) of the ids of the 512-token blocks up to
/// the one it ends in, and its place (16 divides 512, so no block straddles two ids).
type Name = (u64, usize);

/// The names of a request's full prompt blocks.
fn block_names(r: &Request) -> Vec<Name> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let prefixes: Vec<u64> = (0..r.hash_ids.len())
        .map(|k| {
            let mut h = DefaultHasher::new();
            r.hash_ids[..=k].hash(&mut h);
            h.finish()
        })
        .collect();
    (0..r.input / BLOCK_TOKENS).map(|j| (prefixes[((j + 1) * BLOCK_TOKENS - 1) / HASH_BLOCK_TOKENS], j)).collect()
}

/// Each request's prompt tokens found in a cache that never evicts: its longest run
/// of leading full blocks that some earlier request had (never its last prompt token).
fn seen_hits(requests: &[Request]) -> Vec<usize> {
    let mut seen: HashSet<Name> = HashSet::new();
    requests
        .iter()
        .map(|r| {
            let names = block_names(r);
            let hit = names[..(r.input - 1) / BLOCK_TOKENS].iter().take_while(|n| seen.contains(n)).count();
            seen.extend(names);
            hit * BLOCK_TOKENS
        })
        .collect()
}

/// Each request's prompt tokens found cached, served one at a time by vLLM V1's block
/// pool of `blocks` blocks: a request reuses its longest run of leading full blocks
/// that have a cached copy (the first copy cached), never its last prompt token; takes
/// the rest from the head of the LRU free queue, evicting the copy a block held; names
/// its full prompt blocks once computed (a name may have several copies); and frees
/// all its blocks last first to the tail.
fn lru_hits(requests: &[Request], blocks: usize) -> Vec<usize> {
    let mut name_of: Vec<Option<Name>> = vec![None; blocks];
    let mut copies: HashMap<Name, Vec<usize>> = HashMap::new();
    // Free blocks by their place in the queue, oldest first, and each free block's place.
    let mut free: BTreeMap<u64, usize> = (0..blocks).map(|b| (b as u64, b)).collect();
    let mut place: Vec<Option<u64>> = (0..blocks).map(|b| Some(b as u64)).collect();
    let mut next = blocks as u64;
    let mut hits = Vec::new();
    for r in requests {
        let names = block_names(r);
        let reusable = (r.input - 1) / BLOCK_TOKENS;
        let hit = names[..reusable].iter().take_while(|n| copies.contains_key(n)).count();
        hits.push(hit * BLOCK_TOKENS);
        let mut table: Vec<usize> = names[..hit].iter().map(|n| copies[n][0]).collect();
        for &b in &table {
            free.remove(&place[b].take().expect("one request at a time: cached copies are free"));
        }
        // Its blocks over its life: every token computed but the last one sampled.
        let total = (r.input + r.output - 1).div_ceil(BLOCK_TOKENS);
        for j in hit..total {
            let (_, b) = free.pop_first().expect("the cache holds one request");
            place[b] = None;
            if let Some(old) = name_of[b].take() {
                let list = copies.get_mut(&old).expect("a named block is listed");
                list.retain(|&c| c != b);
                if list.is_empty() {
                    copies.remove(&old);
                }
            }
            if let Some(&name) = names.get(j) {
                name_of[b] = Some(name);
                copies.entry(name).or_default().push(b);
            }
            table.push(b);
        }
        for &b in table.iter().rev() {
            free.insert(next, b);
            place[b] = Some(next);
            next += 1;
        }
    }
    hits
}

/// Runs the trace's requests 100 s apart on one H100 replica with `num_gpu_blocks`
/// blocks; returns each request's cached tokens and the run's prefix_hit_rate.
fn simulated_hits(dir: &Path, num_gpu_blocks: usize) -> (Vec<usize>, f64) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/llm-serving/workloads/mooncake-synthetic.jsonl"),
    )
    .unwrap();
    let spaced: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["timestamp"] = serde_json::json!(i as u64 * 100_000);
            v.to_string()
        })
        .collect();
    std::fs::write(dir.join("spaced.jsonl"), spaced.join("\n")).unwrap();
    let scenario = format!(
        r#"world = "serving"
description = "the Mooncake trace one request at a time"
[simulation]
duration_s = 400000
[serving]
gpu = "H100"
model = "Llama-3.1-8B"
nodes = 1
routing = "round_robin"
context_limit_tokens = 262144
tasks = [{{ name = "chat", weight = 1.0, prompt_tokens = {{ kind = "fixed", tokens = 100 }}, output_tokens = {{ kind = "fixed", tokens = 10 }}, slo_s = 1000.0 }}]
[serving.engine]
kind = "continuous"
num_gpu_blocks = {num_gpu_blocks}
[serving.step_time]
kind = "affine"
base_s = 0.001
per_token_s = 0.000001
[serving.arrivals]
kind = "trace"
path = "spaced.jsonl"
{ACCOUNTING}"#
    );
    let path = dir.join(format!("mooncake-{num_gpu_blocks}.toml"));
    std::fs::write(&path, scenario).unwrap();
    let out = dir.join(format!("out-{num_gpu_blocks}"));
    infersim_ok(&["run", s(&path), "--reps", "1", "--trace", "requests", "--out", s(&out)]);
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    assert!(strings(&requests, "outcome").iter().all(|o| o.as_deref() == Some("served")));
    let ids = floats(&requests, "request_id");
    let cached = optional_floats(&requests, "cached_tokens");
    let mut by_id: Vec<(usize, usize)> =
        ids.iter().zip(cached).map(|(&id, c)| (id as usize, c.expect("served") as usize)).collect();
    by_id.sort_unstable();
    let replications = read(out.join("replications.parquet"));
    (by_id.into_iter().map(|(_, c)| c).collect(), floats(&replications, "prefix_hit_rate")[0])
}

#[test]
fn prefix_hits_on_the_mooncake_trace_equal_independent_references() {
    let requests = mooncake();
    let dir = tempfile::tempdir().unwrap();
    let prompt_tokens: usize = requests.iter().map(|r| r.input).sum();

    // A cache that never evicts: the leading already-seen blocks.
    let expected = seen_hits(&requests);
    let (hits, rate) = simulated_hits(dir.path(), 2_000_000);
    assert_eq!(hits.len(), requests.len());
    let first_wrong = hits.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_wrong, None, "request {first_wrong:?}");
    let expected_rate = expected.iter().sum::<usize>() as f64 / prompt_tokens as f64;
    assert!((rate - expected_rate).abs() < 1e-12, "{rate} vs {expected_rate}");
    // The data README's count of what an unbounded cache could skip: 65.1%.
    assert!((expected_rate - 0.651).abs() < 0.0015, "{expected_rate}");

    // A cache of 100,000 blocks (1.6 M tokens, 7% of the trace's 1.4 M distinct
    // blocks): the per-block LRU reference, request by request.
    let blocks = 100_000;
    let expected = lru_hits(&requests, blocks - 1);
    let (hits, rate) = simulated_hits(dir.path(), blocks);
    let first_wrong = hits.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_wrong, None, "request {first_wrong:?}");
    let expected_rate = expected.iter().sum::<usize>() as f64 / prompt_tokens as f64;
    assert!((rate - expected_rate).abs() < 1e-12, "{rate} vs {expected_rate}");
    // Eviction cost hits, and left some.
    assert!(rate > 0.1 && rate < 0.6, "{rate}");
}

/// The built-in mooncake-replay (the trace on four H100 replicas): routing that weighs
/// each replica's cached blocks against its load finds more of the prompts cached than
/// round robin or least outstanding requests, and answers sooner.
#[test]
fn prefix_aware_routing_beats_cache_blind_routing_on_the_mooncake_trace() {
    let s = Scenario::builtin("mooncake-replay").unwrap();
    let results: Vec<(f64, f64, f64)> = (0..3)
        .map(|point| {
            let m = metrics(&s, point, &["prefix_hit_rate", "ttft_p50_s", "ttft_mean_s"]);
            (m[0], m[1], m[2])
        })
        .collect();
    let (aware, blind) = (results[2], &results[..2]);
    for other in blind {
        assert!(aware.0 > 1.5 * other.0, "hit rate {aware:?} vs {other:?}");
        assert!(aware.1 < other.1 && aware.2 < other.2, "TTFT {aware:?} vs {other:?}");
    }
}

/// Conversations of four turns behind a shared 400-token system prompt, on four
/// replicas: sending each turn where the conversation's history is cached
/// (session_affinity) finds most of every prompt cached, prefix_aware (which weighs
/// the history against load) less, round robin the system prompt and a quarter of the
/// histories; every request is accounted for.
#[test]
fn conversations_find_their_history_where_they_were_served() {
    let text = r#"
description = "chat conversations behind a system prompt"
world = "serving"
[sweep]
"serving.routing" = ["round_robin", "session_affinity", "prefix_aware"]
[serving]
nodes = 1
replicas_per_node = 4
routing = "round_robin"
model = "Llama-3.1-8B"
gpu = "H100"
[serving.engine]
kind = "continuous"
[serving.step_time]
kind = "roofline"
[serving.arrivals]
kind = "poisson"
rate_per_s = 2.0
[[serving.tasks]]
name = "chat"
weight = 1.0
slo_s = 60.0
shared_prefix_tokens = 400
session = { turns = 4, think_time_s = 5.0 }
prompt_tokens = { kind = "lognormal", mean = 200.0, cv = 1.0 }
output_tokens = { kind = "lognormal", mean = 200.0, cv = 1.0 }
[simulation]
duration_s = 600
warmup_s = 60
"#;
    let s = Scenario::parse("chat.toml", &format!("{text}{ACCOUNTING}")).unwrap();
    let rates: Vec<f64> = (0..3)
        .map(|point| {
            let names = ["served", "timed_out", "lost", "rejected", "arrived", "prefix_hit_rate"];
            let m = metrics(&s, point, &names);
            // Four turns per conversation: arrivals are conversations, requests turns.
            let ended: f64 = m[..4].iter().sum();
            assert!(m[4] >= ended && m[4] > 2.5 * 2.0 * 540.0, "point {point}: {m:?}");
            m[5]
        })
        .collect();
    let (round_robin, affinity, aware) = (rates[0], rates[1], rates[2]);
    // Affinity finds the history unless it was evicted; prefix_aware trades it against
    // load (each block booked on a replica weighs as much as a block it would save).
    assert!(affinity > 0.75 && aware > round_robin + 0.1, "{rates:?}");
    assert!(round_robin < affinity - 0.2, "{rates:?}");
    // Weighing a block to compute more than a block held sends more turns home.
    let mut heavier = s.clone();
    heavier.apply_overrides(&["serving.kv_overlap_score_weight=8".to_string()]).unwrap();
    let weighted = metrics(&heavier, 2, &["prefix_hit_rate"])[0];
    assert!(weighted > aware + 0.05, "{weighted} vs {aware}");
}

/// Replication 0 of `point` of `scenario`: the named metrics (an empty one as 0).
fn metrics(scenario: &Scenario, point: u32, names: &[&str]) -> Vec<f64> {
    let record = run_replication(&scenario.point(point).unwrap(), scenario.seed, 0, &TraceSpec::none());
    assert!(record.error.is_none(), "{:?}", record.error);
    let value = |name: &&str| match record.metrics.iter().find(|(n, _)| n == name) {
        Some((_, MetricCell::Number(x))) => x.unwrap_or(0.0),
        other => panic!("{name}: {other:?}"),
    };
    names.iter().map(value).collect()
}
