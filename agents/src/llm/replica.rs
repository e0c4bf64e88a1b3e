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
    /// Whether its tokens count in the step statistics (false during a warm-up).
    pub measured: bool,
    /// When it produced its latest token (the caller's clock, nanoseconds).
    last_token_ns: u64,
    /// Whether it has ever been admitted.
    admitted: bool,
}

impl<K> Sequence<K> {
    /// A request with nothing computed.
    pub fn new(key: K, uid: u64, prompt: u32, output: u32) -> Self {
        Sequence {
            key,
            uid,
            prompt,
            output,
            computed: 0,
            generated: 0,
            blocks: 0,
            preemptions: 0,
            preloaded: 0,
            measured: true,
            last_token_ns: 0,
            admitted: false,
        }
    }

    /// A request whose prompt was prefilled elsewhere (disaggregated serving): its
    /// prompt's KV comes with it and its first token was produced at `first_token_ns`.
    pub fn prefilled(key: K, uid: u64, prompt: u32, output: u32, first_token_ns: u64) -> Self {
        Sequence {
            generated: 1,
            preloaded: prompt,
            last_token_ns: first_token_ns,
            ..Sequence::new(key, uid, prompt, output)
        }
    }

    /// The same sequence, counted in the step statistics or not.
    pub fn measured(self, measured: bool) -> Self {
        Sequence { measured, ..self }
    }

    /// Tokens known: the prompt and the output so far.
    fn known(&self) -> u32 {
        self.prompt + self.generated
    }
}

/// What happened to a sequence at the end of a step, when it is worth telling: every
/// other token is only counted ([`StepTokens`], [`Replica::step_itls`]), so that a
/// step's cost to the caller does not grow with the sequences it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    /// It produced its first token (and has more to produce).
    First,
    /// It produced its last token and left the replica.
    Finished,
}

/// The tokens a step produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepTokens {
    /// Tokens produced, every sequence.
    pub tokens: u32,
    /// Of those, tokens of measured sequences.
    pub measured_tokens: u32,
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
    /// Keys of the sequences this step admits for the first time.
    first_admitted: Vec<K>,
    /// The last completed step's inter-token latencies of measured sequences, as
    /// (nanoseconds, count): nearly every sequence shares one value, the step's length.
    itls: Vec<(u64, u32)>,
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
            first_admitted: Vec::new(),
            itls: Vec::new(),
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
        self.first_admitted.clear();
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
                if !seq.admitted {
                    seq.admitted = true;
                    self.first_admitted.push(seq.key);
                }
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

    /// The sequences the planned step admits for the first time.
    pub fn first_admitted(&self) -> &[K] {
        &self.first_admitted
    }

    /// The inter-token latencies of the last completed step (measured sequences, every
    /// token but a first), as (nanoseconds, count).
    pub fn step_itls(&self) -> &[(u64, u32)] {
        &self.itls
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

    /// Ends the planned step at `now_ns` (the caller's clock): computes its tokens,
    /// samples a token for every sequence whose known tokens are all computed, and hands
    /// `on_event` each sequence that produced its first or its last token (finished
    /// ones have left the replica). The rest are counted in the returned
    /// [`StepTokens`] and their inter-token latencies in [`Replica::step_itls`].
    pub fn complete_step(&mut self, now_ns: u64, mut on_event: impl FnMut(&Sequence<K>, TokenEvent)) -> StepTokens {
        let mut any_finished = false;
        let mut produced = StepTokens::default();
        self.itls.clear();
        for &(i, tokens) in &self.plan {
            let seq = &mut self.running[i];
            seq.computed += tokens;
            if seq.computed != seq.known() {
                continue;
            }
            seq.generated += 1;
            produced.tokens += 1;
            if seq.measured {
                produced.measured_tokens += 1;
                if seq.generated > 1 {
                    let itl = now_ns.saturating_sub(seq.last_token_ns);
                    match self.itls.iter_mut().find(|(v, _)| *v == itl) {
                        Some((_, n)) => *n += 1,
                        None => self.itls.push((itl, 1)),
                    }
                }
            }
            seq.last_token_ns = now_ns;
            if seq.generated >= seq.output {
                any_finished = true;
                on_event(seq, TokenEvent::Finished);
            } else if seq.generated == 1 {
                on_event(seq, TokenEvent::First);
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
        produced
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

    /// Runs every step (step k ends at k x 10 ns); returns the events, the shapes,
    /// the tokens counted and every inter-token latency.
    type Events = Vec<(u32, TokenEvent)>;

    fn run_to_end(r: &mut Replica<u32>) -> (Events, Vec<StepShape>, StepTokens, Vec<u64>) {
        let (mut events, mut shapes, mut tokens, mut itls) =
            (Vec::new(), Vec::new(), StepTokens::default(), Vec::new());
        while let Some(shape) = r.schedule() {
            shapes.push(shape);
            let step = r.complete_step(10 * shapes.len() as u64, |s, e| events.push((s.key, e)));
            tokens.tokens += step.tokens;
            tokens.measured_tokens += step.measured_tokens;
            for &(itl, n) in r.step_itls() {
                itls.extend(std::iter::repeat_n(itl, n as usize));
            }
            assert!(shapes.len() < 10_000, "no progress");
        }
        (events, shapes, tokens, itls)
    }

    #[test]
    fn long_prompts_are_chunked_and_the_first_token_ends_the_prefill() {
        let mut r = Replica::new(limits(1000));
        r.enqueue(Sequence::new(0, 0, 100, 3));
        let (events, shapes, tokens, itls) = run_to_end(&mut r);
        // 100 prompt tokens in chunks of 64 and 36, then two decode steps.
        assert_eq!(shapes.iter().map(StepShape::tokens).collect::<Vec<_>>(), [64, 36, 1, 1]);
        assert_eq!(shapes[1].prefill_kv, 64);
        assert_eq!(shapes[2].decodes, 1);
        // First token at the end of step 2 (20 ns), then 30 and 40 ns: the middle token
        // is only counted.
        assert_eq!(events, [(0, TokenEvent::First), (0, TokenEvent::Finished)]);
        assert_eq!(tokens, StepTokens { tokens: 3, measured_tokens: 3 });
        assert_eq!(itls, [10, 10]);
        assert_eq!(r.kv().free_blocks(), 999);
    }

    #[test]
    fn a_prefilled_sequence_only_decodes() {
        let mut r = Replica::new(limits(1000));
        // Its first token came at 4 ns, elsewhere; it is not measured.
        r.enqueue(Sequence::prefilled(0, 0, 100, 3, 4).measured(false));
        r.enqueue(Sequence::prefilled(1, 1, 100, 3, 4));
        let (events, shapes, tokens, itls) = run_to_end(&mut r);
        // Its prompt's KV came with it: two decode steps for the second and third token.
        assert_eq!(shapes.iter().map(|s| (s.decodes, s.decode_kv)).collect::<Vec<_>>(), [(2, 200), (2, 202)]);
        assert_eq!(events, [(0, TokenEvent::Finished), (1, TokenEvent::Finished)]);
        assert_eq!(tokens, StepTokens { tokens: 4, measured_tokens: 2 });
        // The measured one: 10 - 4 ns, then 20 - 10 ns.
        assert_eq!(itls, [6, 10]);
    }

    #[test]
    fn running_sequences_go_first_and_the_cap_holds() {
        let mut r = Replica::new(limits(1000));
        for k in 0..6_u32 {
            r.enqueue(Sequence::new(k, u64::from(k), 10, 5));
        }
        let first = r.schedule().unwrap();
        assert_eq!((first.prefills, r.running(), r.waiting()), (4, 4, 2));
        assert_eq!(r.first_admitted(), [0, 1, 2, 3]);
        r.complete_step(10, |_, _| {});
        let second = r.schedule().unwrap();
        assert_eq!((second.decodes, second.prefills), (4, 0));
        assert!(r.first_admitted().is_empty());
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
        let (events, shapes, tokens, itls) = run_to_end(&mut r);
        assert!(r.preemptions >= 1);
        let finished: Vec<u32> = events.iter().filter(|e| e.1 == TokenEvent::Finished).map(|e| e.0).collect();
        assert_eq!(finished, [0, 1]);
        // Every output token was produced exactly once per sequence: a first, a last,
        // and 38 inter-token latencies each; the preempted one's spans its recompute.
        assert_eq!(events.iter().filter(|e| e.1 == TokenEvent::First).count(), 2);
        assert_eq!(tokens.tokens, 80);
        assert_eq!(itls.len(), 78);
        assert!(itls.iter().any(|&itl| itl > 10), "{itls:?}");
        // The preempted sequence recomputed less than its whole context: its prefix
        // was still cached.
        let recompute = shapes.iter().filter(|s| s.prefills > 0 && s.prefill_kv > 0).count();
        assert!(recompute >= 1, "{shapes:?}");
        assert_eq!(r.kv().free_blocks(), 9);
    }
}
