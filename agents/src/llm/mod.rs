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
pub use replica::{EngineLimits, Replica, Sequence, TokenEvent};
pub use step_time::{Affine, Roofline, StepModel, StepShape, StepTime};

impl GpuSpec {
    /// Power of one GPU during a step that computes `tokens` tokens (W):
    /// `active_base_w + (active_max_w - active_base_w) x (1 - exp(-tokens / power_tokens_scale))`.
    /// Small decode batches move weights and little else; large batches and prefills
    /// keep the tensor cores busy and draw close to the limit.
    pub fn step_power_w(&self, tokens: u32) -> f64 {
        let saturation = 1.0 - (-f64::from(tokens) / self.power_tokens_scale).exp();
        self.active_base_w + (self.active_max_w - self.active_base_w) * saturation
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
    fn step_power_rises_from_the_floor_to_the_maximum() {
        let h100 = gpu("g", "H100").unwrap();
        assert!((h100.step_power_w(8) - 486.0).abs() < 2.0);
        assert!(h100.step_power_w(1) < h100.step_power_w(64) && h100.step_power_w(4096) <= h100.active_max_w);
    }
}
