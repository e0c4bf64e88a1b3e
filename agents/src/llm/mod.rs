//! LLM replicas at the level of engine iterations: the shared agent behind the serving
//! world's `continuous` engine, built to be reused by any world that runs LLM
//! inference.
//!
//! A [`Replica`] holds a vLLM-V1 scheduler ([`replica`]) and a paged KV cache with
//! prefix caching ([`kv`]); a step-time model ([`step_time`]: measured
//! [`profile`] tables, a roofline from the [`catalog`] of GPUs and models, or a
//! formula) says how long each step takes, and the GPU's [`step power`](GpuSpec::step_power_w)
//! what it draws.
//!
//! ```
//! use infersim_agents::llm::{EngineLimits, Replica, Sequence, StepTime, Roofline, catalog};
//! let roofline = Roofline { gpu: catalog::gpu("gpu", "H100")?, model: catalog::model("model", "Llama-3.1-8B")?, tp: 1 };
//! let mut replica = Replica::new(EngineLimits { max_num_seqs: 8, max_num_batched_tokens: 2048, block_size: 16, num_gpu_blocks: 4096, prefix_caching: true });
//! replica.enqueue(Sequence::new("hello", 0, 500, 20));
//! let (mut t_s, mut tokens) = (0.0, 0);
//! while let Some(step) = replica.schedule() {
//!     t_s += roofline.step_s(&step);
//!     tokens += replica.complete_step((t_s * 1e9) as u64, |_, _| {}).tokens;
//! }
//! assert_eq!(tokens, 20);
//! // A 500-token prefill and 19 decodes of an 8B model on an H100: about 0.15 s.
//! assert!((0.1..0.2).contains(&t_s), "{t_s}");
//! # Ok::<(), infersim_agents::error::ConfigError>(())
//! ```

pub mod catalog;
pub mod kv;
pub mod profile;
pub mod replica;
pub mod step_time;

pub use catalog::{GpuSpec, ModelSpec};

/// The LLM serving reference data, by the name scenarios use (its path under the
/// project's data/): measured per-layer profiles, the replayed workloads and a measured
/// vLLM run (sources: data/README.md).
pub const BUILTIN_DATA: &[(&str, &str)] = &[
    (
        "llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/attention.csv",
        include_str!("../../../data/llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/attention.csv"),
    ),
    (
        "llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/dense.csv",
        include_str!("../../../data/llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/dense.csv"),
    ),
    (
        "llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/per_sequence.csv",
        include_str!("../../../data/llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1/per_sequence.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/attention.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/attention.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/dense.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/dense.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/per_sequence.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1/per_sequence.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/attention.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/attention.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/dense.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/dense.csv"),
    ),
    (
        "llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/per_sequence.csv",
        include_str!("../../../data/llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2/per_sequence.csv"),
    ),
    (
        "llm-serving/vllm/RTXPRO6000-Llama-3.1-8B/requests.jsonl",
        include_str!("../../../data/llm-serving/vllm/RTXPRO6000-Llama-3.1-8B/requests.jsonl"),
    ),
    (
        "llm-serving/vllm/RTXPRO6000-Llama-3.1-8B/timeseries.csv",
        include_str!("../../../data/llm-serving/vllm/RTXPRO6000-Llama-3.1-8B/timeseries.csv"),
    ),
    (
        "llm-serving/workloads/mooncake-synthetic.jsonl",
        include_str!("../../../data/llm-serving/workloads/mooncake-synthetic.jsonl"),
    ),
    (
        "llm-serving/workloads/sharegpt-llama-3.1-8b-300-sps10.csv",
        include_str!("../../../data/llm-serving/workloads/sharegpt-llama-3.1-8b-300-sps10.csv"),
    ),
    (
        "llm-serving/workloads/sharegpt-qwen3-32b-300-sps10.csv",
        include_str!("../../../data/llm-serving/workloads/sharegpt-qwen3-32b-300-sps10.csv"),
    ),
];
pub use profile::Profile;
pub use replica::{EngineLimits, Replica, Sequence, StepTokens, TokenEvent, cacheable_blocks};
pub use step_time::{Affine, Demand, Roofline, RooflineTerms, StepModel, StepShape, StepTime};

/// Lowest clock a power limit can bring the tensor cores to, as a share of the full
/// clock (the H100's lowest supported SM clock, 210 MHz, over its 1,980 MHz boost).
pub const MIN_CLOCK: f64 = 210.0 / 1980.0;

/// A step as a GPU under a power limit runs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoweredStep {
    /// Its duration (s), host time included.
    pub step_s: f64,
    /// Each GPU's mean power over it (W).
    pub power_w: f64,
    /// The tensor cores' clock, as a share of the full clock.
    pub clock: f64,
}

impl GpuSpec {
    /// Power of one GPU during a step of `step_s` seconds (host time included) that
    /// asks `demand` of it, at full clock (W): `static_w + (compute_w x compute_s +
    /// memory_w x memory_s + link_w x link_s) / step_s`, each term a share of the
    /// step's time that one part of the GPU works. Host time between kernels dilutes
    /// the shares toward static power.
    pub fn step_power_w(&self, demand: &Demand, step_s: f64) -> f64 {
        self.power_at(demand, step_s, 1.0)
    }

    /// [`GpuSpec::step_power_w`] at `clock`: a FLOP costs `clock²` of its energy at
    /// full clock (dynamic energy goes with the voltage squared, and the voltage with
    /// the clock), memory and link traffic cost the same.
    fn power_at(&self, d: &Demand, step_s: f64, clock: f64) -> f64 {
        if step_s <= 0.0 {
            return self.static_w;
        }
        let dynamic_j =
            self.compute_w * d.compute_s * clock * clock + self.memory_w * d.memory_s + self.link_w * d.link_s;
        self.static_w + dynamic_j / step_s
    }

    /// The step of `step_s` seconds asking `demand` under a power limit of `limit_w`
    /// per GPU (the board's `tdp_w`, or a cap below it): at full clock if it draws no
    /// more; else at the highest clock that keeps it within the limit (compute-bound
    /// work stretches as 1 / clock, memory traffic does not); and if even
    /// [`MIN_CLOCK`] draws more, the whole step stretches until it does not. Its power
    /// never exceeds the limit. `limit_w` must exceed `static_w`.
    pub fn run_step(&self, demand: &Demand, step_s: f64, limit_w: f64) -> PoweredStep {
        debug_assert!(limit_w > self.static_w, "a power limit at or below static power (checked when configured)");
        let full_w = self.power_at(demand, step_s, 1.0);
        if full_w <= limit_w {
            return PoweredStep { step_s, power_w: full_w, clock: 1.0 };
        }
        let at = |clock: f64| {
            let s = step_s + demand.stretch_s(clock);
            (s, self.power_at(demand, s, clock))
        };
        let (slowest_s, slowest_w) = at(MIN_CLOCK);
        if slowest_w > limit_w {
            // Memory-bound past what the clock can save: everything waits.
            let dynamic_j = (slowest_w - self.static_w) * slowest_s;
            let s = dynamic_j / (limit_w - self.static_w);
            return PoweredStep { step_s: s, power_w: self.power_at(demand, s, MIN_CLOCK), clock: MIN_CLOCK };
        }
        // Power falls as the clock does: bisect for the highest clock within the limit.
        let (mut low, mut high) = (MIN_CLOCK, 1.0);
        for _ in 0..40 {
            let mid = 0.5 * (low + high);
            if at(mid).1 > limit_w { high = mid } else { low = mid }
        }
        let (s, power_w) = at(low);
        PoweredStep { step_s: s, power_w, clock: low }
    }

    /// KV blocks of `block_size` tokens that fit a replica of `tp` of these GPUs:
    /// `memory x utilisation - weights - activation reserve`, over the bytes of a
    /// block. The reserve stands for what vLLM's profiling run peaks at: the fp32
    /// activations of a `max_num_batched_tokens` step, `tokens x (2 x intermediate / tp
    /// + 4 x hidden) x 4 bytes` per GPU (the gated MLP's and the residual stream's),
    /// plus the fp32 logits of `max_num_seqs` sequences. `limits` is
    /// (`max_num_batched_tokens`, `max_num_seqs`).
    pub fn kv_blocks(&self, model: &ModelSpec, tp: u32, utilisation: f64, limits: (u32, u32), block_size: u32) -> u32 {
        let (max_tokens, max_seqs) = (f64::from(limits.0), f64::from(limits.1));
        let tp_f = f64::from(tp);
        let memory = self.memory_gb * 1e9 * tp_f * utilisation;
        let activations =
            tp_f * max_tokens * (2.0 * f64::from(model.intermediate) / tp_f + 4.0 * f64::from(model.hidden)) * 4.0
                + max_seqs * f64::from(model.vocab) * 4.0;
        let for_kv = memory - model.weight_bytes() - activations;
        let block_bytes = model.kv_bytes_per_token() * f64::from(block_size);
        if for_kv <= 0.0 { 0 } else { (for_kv / block_bytes).floor().min(f64::from(u32::MAX)) as u32 }
    }
}

#[cfg(test)]
mod tests {
    use super::catalog::{gpu, model};

    #[test]
    fn derived_kv_capacity_is_near_what_a_real_engine_reported() {
        // vLLM on an RTX 4090 with Llama-3.1-8B (utilisation 0.9, 2048 batched tokens,
        // 128 sequences) reported 41,408 KV tokens (LLMServingSim's replay notes).
        let blocks =
            gpu("g", "RTX4090").unwrap().kv_blocks(&model("m", "Llama-3.1-8B").unwrap(), 1, 0.9, (2048, 128), 16);
        let tokens = f64::from(blocks * 16);
        assert!((tokens - 41_408.0).abs() / 41_408.0 < 0.08, "{blocks} blocks, {tokens} tokens");
        assert_eq!(blocks, 2434);
    }

    #[test]
    fn step_power_follows_what_the_step_asks_of_the_gpu() {
        use super::{Roofline, StepShape, StepTime};
        let h100 = gpu("g", "H100").unwrap();
        let roofline = Roofline { gpu: h100.clone(), model: model("m", "Llama-3.1-8B").unwrap(), tp: 1 };
        let power = |shape: &StepShape| h100.step_power_w(&roofline.demand(shape), roofline.step_s(shape));
        let decode = |n: u32| StepShape { decodes: n, decode_kv: u64::from(n) * 500, ..StepShape::default() };
        let (small, large) = (power(&decode(8)), power(&decode(256)));
        // The model's power at full clock (the engine stops it at the board limit).
        assert!(h100.static_w < small && small < large, "{small} {large}");
        // Host time between kernels dilutes the dynamic part toward static power.
        let d = roofline.demand(&decode(8));
        assert!(h100.step_power_w(&d, 1.0) - h100.static_w < 0.01 * (small - h100.static_w));
    }

    #[test]
    fn a_power_cap_slows_compute_bound_steps_and_is_never_exceeded() {
        use super::{Roofline, StepShape, StepTime};
        let h100 = gpu("g", "H100").unwrap();
        let roofline = Roofline { gpu: h100.clone(), model: model("m", "Llama-3.1-8B").unwrap(), tp: 1 };
        let prefill = StepShape {
            prefill_tokens: 8192,
            prefills: 4,
            prefill_pairs: 4.0 * 2048.0 * 1024.0,
            ..StepShape::default()
        };
        let decode = StepShape { decodes: 8, decode_kv: 4000, ..StepShape::default() };
        for shape in [prefill, decode] {
            let (d, s) = (roofline.demand(&shape), roofline.step_s(&shape));
            let free = h100.run_step(&d, s, f64::INFINITY);
            assert_eq!((free.step_s, free.clock), (s, 1.0));
            for cap in [200.0, 250.0, 300.0, 450.0, 600.0] {
                let capped = h100.run_step(&d, s, cap);
                assert!(capped.power_w <= cap + 1e-9, "{cap}: {capped:?}");
                assert!(capped.step_s >= s && capped.clock <= 1.0);
                if free.power_w <= cap {
                    assert_eq!(capped, free);
                } else {
                    // Within the cap's last watt: the clock is as high as it can be.
                    assert!(capped.power_w > cap - 1.0 || capped.clock == super::MIN_CLOCK, "{cap}: {capped:?}");
                }
            }
        }
        // At a lower clock, compute-bound work stretches and memory-bound work does not.
        let (p, d) = (roofline.demand(&prefill), roofline.demand(&decode));
        assert!(p.stretch_s(0.8) > 0.2 * p.compute_bound_s && d.stretch_s(0.8) == 0.0);
        // So a compute-bound step sheds power cheaply (its power goes with the clock
        // cubed): taking 30% of its dynamic power away costs it about 1 / 0.7^(1/3) - 1
        // = 13% of its time, while a memory-bound step, whose power the clock barely
        // moves, must wait out the whole cut.
        let stretch = |shape: &StepShape| {
            let (d, s) = (roofline.demand(shape), roofline.step_s(shape));
            let p = h100.step_power_w(&d, s);
            h100.run_step(&d, s, h100.static_w + 0.7 * (p - h100.static_w)).step_s / s
        };
        assert!((stretch(&prefill) - 0.7f64.powf(-1.0 / 3.0)).abs() < 0.02, "{}", stretch(&prefill));
        assert!(stretch(&decode) > stretch(&prefill), "{} {}", stretch(&decode), stretch(&prefill));
    }
}
