//! One engine replica with vLLM V1's iteration scheduler.
//!
//! A step schedules running sequences first, in admission order, then waiting ones in
//! FCFS order, within a budget of `max_num_batched_tokens` tokens and at most
//! `max_num_seqs` running sequences. A sequence is given as many of its uncomputed
//! tokens as the budget has left, so long prompts are prefilled in chunks. When a
//! running sequence cannot get the blocks its tokens need, the most recently admitted
//! running sequence is preempted (its blocks freed, keeping its prefix cached; it goes
//! to the front of the waiting queue to be recomputed), and no waiting sequence is
//! admitted in that step. A waiting sequence is admitted only if its whole current
//! sequence fits in the free blocks, though only the blocks of this step's chunk are
//! taken. At the end of a step every sequence whose known tokens are all computed
//! samples one token: its first at the end of the step that completes its prefill.

use std::collections::VecDeque;

use super::kv::KvCache;
use super::step_time::StepShape;

/// The engine's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most running sequences.
    pub max_num_seqs: u32,
    /// Most tokens computed in one step.
    pub max_num_batched_tokens: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// KV blocks (one of them reserved).
    pub num_gpu_blocks: u32,
}

/// A request on a replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sequence<K> {
    /// The caller's handle for it.
    pub key: K,
    /// Unique number of the request (names its KV prefix in the cache).
    pub uid: u64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Output tokens it will produce.
    pub output: u32,
    /// Tokens whose KV is computed.
    computed: u32,
    /// Output tokens produced.
    pub generated: u32,
    /// KV blocks held.
    blocks: u32,
    /// Times preempted.
    pub preemptions: u32,
    /// Tokens whose KV arrives with the sequence (computed elsewhere and transferred):
    /// counted as computed when it is first admitted.
    preloaded: u32,
}

impl<K> Sequence<K> {
    /// A request with nothing computed.
    pub fn new(key: K, uid: u64, prompt: u32, output: u32) -> Self {
        Sequence { key, uid, prompt, output, computed: 0, generated: 0, blocks: 0, preemptions: 0, preloaded: 0 }
    }

    /// A request whose prompt was prefilled elsewhere (disaggregated serving): its
    /// prompt's KV comes with it and its first token is already produced.
    pub fn prefilled(key: K, uid: u64, prompt: u32, output: u32) -> Self {
        Sequence { generated: 1, preloaded: prompt, ..Sequence::new(key, uid, prompt, output) }
    }

    /// Tokens known: the prompt and the output so far.
    fn known(&self) -> u32 {
        self.prompt + self.generated
    }
}

/// What happened to a sequence at the end of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    /// It produced a token (`first`: its first).
    Token {
        /// Its first token.
        first: bool,
    },
    /// It produced its last token and left the replica.
    Finished,
}

/// A replica's scheduler state and KV cache.
#[derive(Clone, Debug)]
pub struct Replica<K> {
    limits: EngineLimits,
    kv: KvCache,
    waiting: VecDeque<Sequence<K>>,
    running: Vec<Sequence<K>>,
    /// This step's (index in `running`, tokens) pairs.
    plan: Vec<(usize, u32)>,
    /// Preemptions, whole run.
    pub preemptions: u64,
}

impl<K: Copy> Replica<K> {
    /// An idle replica.
    pub fn new(limits: EngineLimits) -> Self {
        Replica {
            limits,
            kv: KvCache::new(limits.num_gpu_blocks, limits.block_size),
            waiting: VecDeque::new(),
            running: Vec::new(),
            plan: Vec::new(),
            preemptions: 0,
        }
    }

    /// Queues a request.
    pub fn enqueue(&mut self, seq: Sequence<K>) {
        self.waiting.push_back(seq);
    }

    /// Sequences waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The KV cache.
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// Tokens still to compute or generate, all sequences here: a load measure for
    /// routers.
    pub fn outstanding_tokens(&self) -> u64 {
        self.waiting
            .iter()
            .chain(&self.running)
            .map(|s| u64::from(s.prompt + s.output - s.computed.min(s.prompt + s.output)))
            .sum()
    }

    /// Whether a sequence this long could ever be admitted (its prompt and output fit
    /// the cache).
    pub fn fits(&self, prompt: u32, output: u32) -> bool {
        self.kv.blocks_for(prompt + output) <= self.kv.usable_blocks()
    }

    /// Plans the next step; `None` if there is nothing to do.
    pub fn schedule(&mut self) -> Option<StepShape> {
        self.plan.clear();
        let mut budget = self.limits.max_num_batched_tokens;
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = self.running[i];
            let tokens = (seq.known() - seq.computed).min(budget);
            if tokens == 0 {
                i += 1;
                continue;
            }
            let needed = self.kv.blocks_for(seq.computed + tokens).saturating_sub(seq.blocks);
            let mut scheduled = true;
            while !self.kv.allocate(needed) {
                let victim = self.running.pop().expect("the sequence itself is running");
                self.preempt(victim);
                preempted = true;
                if self.running.len() == i {
                    scheduled = false;
                    break;
                }
            }
            if !scheduled {
                break;
            }
            self.running[i].blocks += needed;
            self.plan.push((i, tokens));
            budget -= tokens;
            i += 1;
        }
        if !preempted {
            while budget > 0 && self.running.len() < self.limits.max_num_seqs as usize {
                let Some(seq) = self.waiting.front() else { break };
                let known = seq.known();
                // Full-sequence reservation: the whole current sequence must fit.
                if self.kv.blocks_for(known) > self.kv.free_blocks() {
                    break;
                }
                let bs = self.kv.block_size();
                // A cache hit covers whole blocks and leaves the last token to compute.
                let hit_blocks = self.kv.cached_blocks(seq.uid).min((known - 1) / bs);
                // Transferred KV is written into fresh blocks as it is admitted.
                let computed = (hit_blocks * bs).max(seq.preloaded.min(known - 1));
                let tokens = (known - computed).min(budget);
                let mut seq = self.waiting.pop_front().expect("peeked");
                seq.preloaded = 0;
                self.kv.reuse_cached(seq.uid, hit_blocks);
                self.kv.forget(seq.uid);
                let needed = self.kv.blocks_for(computed + tokens).saturating_sub(hit_blocks);
                let ok = self.kv.allocate(needed);
                debug_assert!(ok, "the reservation check covers this chunk");
                seq.computed = computed;
                seq.blocks = hit_blocks + needed;
                self.running.push(seq);
                self.plan.push((self.running.len() - 1, tokens));
                budget -= tokens;
            }
        }
        if self.plan.is_empty() {
            return None;
        }
        let mut shape = StepShape::default();
        for &(i, tokens) in &self.plan {
            let seq = &self.running[i];
            if seq.generated > 0 && tokens == 1 && seq.computed + 1 == seq.known() {
                shape.decodes += 1;
                shape.decode_kv += u64::from(seq.computed);
            } else {
                shape.prefills += 1;
                shape.prefill_tokens += tokens;
                shape.prefill_kv += u64::from(seq.computed);
                shape.prefill_pairs += f64::from(tokens) * (f64::from(seq.computed) + (f64::from(tokens) + 1.0) / 2.0);
            }
        }
        Some(shape)
    }

    /// The sequences of the planned step.
    pub fn planned_keys(&self) -> impl Iterator<Item = K> + '_ {
        self.plan.iter().map(|&(i, _)| self.running[i].key)
    }

    fn preempt(&mut self, mut victim: Sequence<K>) {
        let full = (victim.computed / self.kv.block_size()).min(victim.blocks);
        self.kv.release(victim.uid, full, victim.blocks - full);
        victim.blocks = 0;
        victim.computed = 0;
        victim.preemptions += 1;
        self.preemptions += 1;
        self.waiting.push_front(victim);
    }

    /// Ends the planned step: computes its tokens, samples a token for every sequence
    /// whose known tokens are all computed, and hands `on_token` each sequence that
    /// produced one (finished ones have left the replica).
    pub fn complete_step(&mut self, mut on_token: impl FnMut(&Sequence<K>, TokenEvent)) {
        let mut any_finished = false;
        for &(i, tokens) in &self.plan {
            let seq = &mut self.running[i];
            seq.computed += tokens;
            if seq.computed == seq.known() {
                seq.generated += 1;
                if seq.generated >= seq.output {
                    any_finished = true;
                    on_token(seq, TokenEvent::Finished);
                } else {
                    on_token(seq, TokenEvent::Token { first: seq.generated == 1 });
                }
            }
        }
        self.plan.clear();
        if any_finished {
            let kv = &mut self.kv;
            self.running.retain(|s| {
                let done = s.generated >= s.output;
                if done {
                    kv.release(s.uid, 0, s.blocks);
                }
                !done
            });
        }
    }

    /// Removes every sequence (the replica failed), handing each to `on_lost`.
    pub fn drain(&mut self, mut on_lost: impl FnMut(Sequence<K>)) {
        self.plan.clear();
        for s in self.running.drain(..) {
            self.kv.release(s.uid, 0, s.blocks);
            on_lost(s);
        }
        for s in self.waiting.drain(..) {
            self.kv.forget(s.uid);
            on_lost(s);
        }
    }

    /// Removes a waiting sequence (it gave up); true if it was waiting.
    pub fn withdraw(&mut self, key_matches: impl Fn(&K) -> bool) -> Option<Sequence<K>> {
        let at = self.waiting.iter().position(|s| key_matches(&s.key))?;
        let s = self.waiting.remove(at)?;
        self.kv.forget(s.uid);
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(blocks: u32) -> EngineLimits {
        EngineLimits { max_num_seqs: 4, max_num_batched_tokens: 64, block_size: 16, num_gpu_blocks: blocks }
    }

    fn run_to_end(r: &mut Replica<u32>) -> (Vec<(u32, TokenEvent)>, Vec<StepShape>) {
        let (mut events, mut shapes) = (Vec::new(), Vec::new());
        while let Some(shape) = r.schedule() {
            shapes.push(shape);
            r.complete_step(|s, e| events.push((s.key, e)));
            assert!(shapes.len() < 10_000, "no progress");
        }
        (events, shapes)
    }

    #[test]
    fn long_prompts_are_chunked_and_the_first_token_ends_the_prefill() {
        let mut r = Replica::new(limits(1000));
        r.enqueue(Sequence::new(0, 0, 100, 3));
        let (events, shapes) = run_to_end(&mut r);
        // 100 prompt tokens in chunks of 64 and 36, then two decode steps.
        assert_eq!(shapes.iter().map(StepShape::tokens).collect::<Vec<_>>(), [64, 36, 1, 1]);
        assert_eq!(shapes[1].prefill_kv, 64);
        assert_eq!(shapes[2].decodes, 1);
        assert_eq!(
            events,
            [
                (0, TokenEvent::Token { first: true }),
                (0, TokenEvent::Token { first: false }),
                (0, TokenEvent::Finished)
            ]
        );
        assert_eq!(r.kv().free_blocks(), 999);
    }

    #[test]
    fn a_prefilled_sequence_only_decodes() {
        let mut r = Replica::new(limits(1000));
        r.enqueue(Sequence::prefilled(0, 0, 100, 3));
        let (events, shapes) = run_to_end(&mut r);
        // Its prompt's KV came with it: two decode steps for the second and third token.
        assert_eq!(shapes.iter().map(|s| (s.decodes, s.decode_kv)).collect::<Vec<_>>(), [(1, 100), (1, 101)]);
        assert_eq!(events, [(0, TokenEvent::Token { first: false }), (0, TokenEvent::Finished)]);
    }

    #[test]
    fn running_sequences_go_first_and_the_cap_holds() {
        let mut r = Replica::new(limits(1000));
        for k in 0..6_u32 {
            r.enqueue(Sequence::new(k, u64::from(k), 10, 5));
        }
        let first = r.schedule().unwrap();
        assert_eq!((first.prefills, r.running(), r.waiting()), (4, 4, 2));
        r.complete_step(|_, _| {});
        let second = r.schedule().unwrap();
        assert_eq!((second.decodes, second.prefills), (4, 0));
    }

    #[test]
    fn a_full_cache_preempts_the_newest_and_it_resumes_from_its_cached_prefix() {
        // 9 usable blocks of 16 tokens; two sequences of 64 prompt tokens (4 blocks
        // each) that grow past 4.5 blocks each.
        let mut r = Replica::new(EngineLimits {
            max_num_seqs: 4,
            max_num_batched_tokens: 256,
            block_size: 16,
            num_gpu_blocks: 10,
        });
        r.enqueue(Sequence::new(0, 0, 64, 40));
        r.enqueue(Sequence::new(1, 1, 64, 40));
        let (events, shapes) = run_to_end(&mut r);
        assert!(r.preemptions >= 1);
        let finished: Vec<u32> = events.iter().filter(|e| e.1 == TokenEvent::Finished).map(|e| e.0).collect();
        assert_eq!(finished, [0, 1]);
        // Every output token was produced exactly once per sequence.
        for k in [0, 1] {
            assert_eq!(events.iter().filter(|e| e.0 == k).count(), 40);
        }
        // The preempted sequence recomputed less than its whole context: its prefix
        // was still cached.
        let recompute = shapes.iter().filter(|s| s.prefills > 0 && s.prefill_kv > 0).count();
        assert!(recompute >= 1, "{shapes:?}");
        assert_eq!(r.kv().free_blocks(), 9);
    }
}
