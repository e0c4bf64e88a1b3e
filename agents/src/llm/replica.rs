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
//!
//! A step's cost does not grow with the sequences in steady decode. A running sequence
//! that produced a token at the end of the last step and will compute one token in the
//! next is a *decoder*; decoders join a cohort that is kept in aggregate: how many
//! there are, the sum of their cached tokens, how many need a new KV block at each
//! step (by the step's residue modulo the block size), and when each finishes (a
//! heap). Each decoder is stored as it was when it joined, and its state at any later
//! step follows from the steps since. Only the other running sequences (those still
//! prefilling) are visited one by one. Whenever the cohort could
//! change what the per-sequence rules decide (the token budget or the free blocks run
//! short, so order matters and someone may be preempted), it is dissolved back into
//! individual sequences for that step, so the results are those of the per-sequence
//! rules exactly (a test runs both on random workloads and compares every step).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use infersim_engine::{Id, Slab};

use super::kv::{Chain, Holding, KvCache, Prefix, splitmix64};
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
    /// Whether freed blocks keep their contents for others to find (vLLM's
    /// `enable_prefix_caching`, on by default in V1).
    pub prefix_caching: bool,
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
    /// Its place in the running order: admissions counted on this replica (a
    /// readmitted sequence gets a new one).
    admission: u64,
    /// Whether it produced a token in the step being completed and goes on decoding.
    decoding: bool,
    /// Its share of the energy of the steps it ran in, by tokens (J): see
    /// [`Replica::set_step_energy`].
    pub energy_j: f64,
    /// The name of its own tokens in the KV cache (those after its chain's segments):
    /// from its `uid`, or a conversation turn's, which the next turn's chain names.
    pub own: u64,
    /// Whether its own blocks stay named when it finishes (a conversation goes on).
    pub keep_own: bool,
    /// Its chain of shared segments, kept by the replica it is on.
    chain: Option<Id<Chain>>,
    /// Its blocks held through the cache's names.
    holding: Holding,
    /// Prompt tokens found in the cache when it was first admitted.
    pub cached_tokens: u32,
    /// KV blocks a router booked for it on this replica when it sent it there (see
    /// [`Replica::booked_blocks`]).
    pub booked_blocks: u32,
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
            admission: 0,
            decoding: false,
            energy_j: 0.0,
            own: splitmix64(uid),
            keep_own: false,
            chain: None,
            holding: Holding::default(),
            cached_tokens: 0,
            booked_blocks: 0,
        }
    }

    /// The same sequence whose own tokens are named `own` and, with `keep_own`, stay
    /// named when it finishes (a conversation's turn, which the next turn's chain
    /// names).
    pub fn owning(self, own: u64, keep_own: bool) -> Self {
        Sequence { own, keep_own, ..self }
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

    /// The same request sent to another replica after its own failed: nothing of it is
    /// computed or held there, so the new replica recomputes its prompt and the output
    /// so far (as after a preemption) and goes on from there; the energy it had is the
    /// caller's to keep.
    pub fn moved(self) -> Self {
        Sequence {
            computed: 0,
            blocks: 0,
            preloaded: 0,
            admission: 0,
            decoding: false,
            energy_j: 0.0,
            chain: None,
            holding: Holding::default(),
            booked_blocks: 0,
            ..self
        }
    }

    /// The same sequence with `blocks` booked for it by the router that sends it.
    pub fn booking(self, blocks: u32) -> Self {
        Sequence { booked_blocks: blocks, ..self }
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

/// The running sequences in steady decode, in aggregate (see the [module docs](self)).
/// A member is stored as it was at the start of the step it joined for; at the start
/// of step `g` it has computed `computed + (g - joined)` tokens and generated
/// `generated + (g - joined)`.
#[derive(Clone, Debug)]
struct Cohort<K> {
    /// Members, with the step they joined for.
    members: Slab<Member<K>>,
    /// (step at whose end it finishes, admission, member), earliest first.
    finishing: BinaryHeap<Reverse<Finish<K>>>,
    /// The step of the earliest finish (`u64::MAX` with no members): kept beside the
    /// heap so that a step no member finishes in leaves the heap untouched.
    next_finish: u64,
    /// Members that need a new block at a step, by the step's residue modulo the block
    /// size (a decoder needs one whenever its cached tokens fill whole blocks).
    due_blocks: Vec<u32>,
    len: u32,
    /// Members whose tokens count in the statistics.
    measured: u32,
    /// Sum over members of (computed - joined): their cached tokens at step `g` sum to
    /// this plus `len * g`.
    kv_offset: i64,
    /// At least the newest member's admission.
    newest_admission: u64,
    /// Energy per token of every step the cohort took, summed: each member computed
    /// one token in each, so a member's share is this less its value when it joined.
    energy_per_member_j: f64,
}

/// A cohort member as it joined, the step it joined for, and the cohort's
/// `energy_per_member_j` then.
type Member<K> = (Sequence<K>, u64, f64);

/// When a member finishes: (step at whose end, its admission, the member).
type Finish<K> = (u64, u64, Id<Member<K>>);

impl<K: Copy> Cohort<K> {
    fn new(block_size: u32) -> Self {
        Cohort {
            members: Slab::new(),
            finishing: BinaryHeap::new(),
            next_finish: u64::MAX,
            due_blocks: vec![0; block_size.max(1) as usize],
            len: 0,
            measured: 0,
            kv_offset: 0,
            newest_admission: 0,
            energy_per_member_j: 0.0,
        }
    }

    /// The members' cached tokens read at step `step`: each has one more than at the
    /// step before.
    fn decode_kv(&self, step: u64) -> u64 {
        (self.kv_offset + i64::from(self.len) * step as i64) as u64
    }

    /// Every member produces a token at the end of a step of `energy_per_token_j` per
    /// token computed that ended `itl_ns` after the last: its share of the energy, and
    /// the inter-token latency of the measured ones added to `itls`.
    fn produce(&mut self, energy_per_token_j: f64, itl_ns: u64, itls: &mut Vec<(u64, u32)>) -> StepTokens {
        self.energy_per_member_j += energy_per_token_j;
        if self.measured > 0 {
            itls.push((itl_ns, self.measured));
        }
        StepTokens { tokens: self.len, measured_tokens: self.measured }
    }

    fn residue(&self, step: u64) -> usize {
        (step % self.due_blocks.len() as u64) as usize
    }

    /// The residue class of the steps at which a member needs a new block.
    fn block_class(&self, seq: &Sequence<K>, joined: u64) -> usize {
        let m = self.due_blocks.len() as u64;
        ((joined % m + m - u64::from(seq.computed) % m) % m) as usize
    }

    /// Adds a decoder as it stands at the start of step `joined`.
    fn join(&mut self, seq: Sequence<K>, joined: u64) {
        debug_assert!(seq.computed + 1 == seq.known() && seq.generated >= 1 && seq.generated < seq.output);
        let class = self.block_class(&seq, joined);
        self.due_blocks[class] += 1;
        self.len += 1;
        self.measured += u32::from(seq.measured);
        let (computed, joined_i) = (i64::from(seq.computed), joined as i64);
        self.kv_offset += computed - joined_i;
        self.newest_admission = self.newest_admission.max(seq.admission);
        let finish_step = joined + u64::from(seq.output - seq.generated) - 1;
        let member = self.members.insert((seq, joined, self.energy_per_member_j));
        self.finishing.push(Reverse((finish_step, seq.admission, member)));
        self.next_finish = self.next_finish.min(finish_step);
    }

    /// Removes a member, returning it as stored (with its share of the cohort's
    /// energy added) and its step of joining.
    fn leave(&mut self, member: Id<Member<K>>) -> (Sequence<K>, u64) {
        let (mut seq, joined, energy_at_join) = self.members.remove(member);
        seq.energy_j += self.energy_per_member_j - energy_at_join;
        let class = self.block_class(&seq, joined);
        self.due_blocks[class] -= 1;
        self.len -= 1;
        self.measured -= u32::from(seq.measured);
        let (computed, joined_i) = (i64::from(seq.computed), joined as i64);
        self.kv_offset -= computed - joined_i;
        if self.len == 0 {
            self.newest_admission = 0;
        }
        (seq, joined)
    }

    /// Every member as it stands at the start of step `step`, in no particular order,
    /// holding the block for that step's token too if the step is `scheduled`; the
    /// cohort is left empty.
    fn dissolve(&mut self, step: u64, scheduled: bool, last_token_ns: u64, kv: &KvCache, into: &mut Vec<Sequence<K>>) {
        for (mut seq, joined, energy_at_join) in self.members.drain() {
            seq.energy_j += self.energy_per_member_j - energy_at_join;
            let mut seq = decoded(seq, step - joined, last_token_ns, kv);
            seq.blocks = kv.blocks_for(seq.computed + u32::from(scheduled));
            into.push(seq);
        }
        *self = Cohort::new(self.due_blocks.len() as u32);
    }
}

/// A member as it joined, after `steps` more decode steps whose last ended at
/// `last_token_ns`: each computed one token and produced one.
fn decoded<K>(seq: Sequence<K>, steps: u64, last_token_ns: u64, kv: &KvCache) -> Sequence<K> {
    let steps = steps as u32;
    let computed = seq.computed + steps;
    Sequence { computed, generated: seq.generated + steps, blocks: kv.blocks_for(computed), last_token_ns, ..seq }
}

/// The cache's view of a sequence: its chain (kept in `chains`) and its own name.
fn prefix_of<'a, K>(chains: &'a Slab<Chain>, seq: &Sequence<K>) -> Prefix<'a> {
    Prefix { chain: seq.chain.map_or(&[][..], |c| &chains[c][..]), own: seq.own }
}

/// Frees the blocks of a sequence that leaves the replica (finished, lost or given up:
/// its own blocks stay named only if it finished and `keep_own`) and returns its chain.
fn leave<K>(kv: &mut KvCache, chains: &mut Slab<Chain>, booked: &mut u64, seq: &mut Sequence<K>) -> Option<Chain> {
    *booked -= u64::from(seq.booked_blocks);
    let chain = seq.chain.take().map(|c| chains.remove(c));
    let prefix = Prefix { chain: chain.as_deref().unwrap_or(&[]), own: seq.own };
    let keep_own = seq.keep_own && seq.generated >= seq.output;
    kv.release(prefix, seq.holding, seq.blocks, seq.computed / kv.block_size(), keep_own);
    seq.holding = Holding::default();
    seq.blocks = 0;
    chain
}

/// A replica's scheduler state and KV cache.
#[derive(Clone, Debug)]
pub struct Replica<K> {
    limits: EngineLimits,
    kv: KvCache,
    waiting: VecDeque<Sequence<K>>,
    /// Running sequences outside the cohort, in admission order.
    running: Vec<Sequence<K>>,
    /// Running sequences in steady decode.
    cohort: Cohort<K>,
    /// Whether decoders join the cohort (always, except in the test that checks the
    /// cohort against the per-sequence rules).
    use_cohort: bool,
    /// Steps completed.
    steps: u64,
    /// When the last step ended (the caller's clock, nanoseconds).
    last_step_end_ns: u64,
    /// Admissions so far.
    admissions: u64,
    /// Whether a step is planned and not yet completed.
    in_flight: bool,
    /// This step's (index in `running`, tokens) pairs.
    plan: Vec<(usize, u32)>,
    /// Keys of the sequences this step admits for the first time, with the prompt
    /// tokens each found cached.
    first_admitted: Vec<(K, u32)>,
    /// Members finishing in the step being completed, in admission order.
    finished_members: Vec<Sequence<K>>,
    /// The last completed step's inter-token latencies of measured sequences, as
    /// (nanoseconds, count): nearly every sequence shares one value, the step's length.
    itls: Vec<(u64, u32)>,
    /// Preemptions, whole run.
    pub preemptions: u64,
    /// The energy of the planned step per token it computes (J), shared out to its
    /// sequences when it completes.
    step_energy_per_token_j: f64,
    /// The chains of the sequences here that have one.
    chains: Slab<Chain>,
    /// The blocks booked for the sequences here ([`Replica::booked_blocks`]).
    booked: u64,
}

impl<K: Copy> Replica<K> {
    /// An idle replica.
    pub fn new(limits: EngineLimits) -> Self {
        Replica {
            limits,
            kv: KvCache::new(limits.num_gpu_blocks, limits.block_size, limits.prefix_caching),
            waiting: VecDeque::new(),
            running: Vec::new(),
            cohort: Cohort::new(limits.block_size),
            use_cohort: true,
            steps: 0,
            last_step_end_ns: 0,
            admissions: 0,
            in_flight: false,
            plan: Vec::new(),
            first_admitted: Vec::new(),
            finished_members: Vec::new(),
            itls: Vec::new(),
            preemptions: 0,
            step_energy_per_token_j: 0.0,
            chains: Slab::new(),
            booked: 0,
        }
    }

    /// Changes the most sequences it runs at once; takes effect at the next step
    /// (sequences already running above a lowered limit finish as they are).
    pub fn set_max_num_seqs(&mut self, max_num_seqs: u32) {
        self.limits.max_num_seqs = max_num_seqs.max(1);
    }

    /// The most sequences it runs at once now.
    pub fn max_num_seqs(&self) -> u32 {
        self.limits.max_num_seqs
    }

    /// Sets the energy of the planned step (J, all the replica's GPUs): when the step
    /// completes, each sequence in it is given its share by tokens
    /// ([`Sequence::energy_j`]), so that the shares of all sequences add up to the
    /// energy of the steps. Steps whose energy is not set give nothing.
    pub fn set_step_energy(&mut self, energy_j: f64, tokens: u32) {
        self.step_energy_per_token_j = if tokens > 0 { energy_j / f64::from(tokens) } else { 0.0 };
    }

    /// Queues a request.
    pub fn enqueue(&mut self, seq: Sequence<K>) {
        self.booked += u64::from(seq.booked_blocks);
        self.waiting.push_back(seq);
    }

    /// Queues a request whose prompt begins with `chain`'s segments.
    pub fn enqueue_with_chain(&mut self, mut seq: Sequence<K>, chain: Chain) {
        if !chain.is_empty() {
            seq.chain = Some(self.chains.insert(chain));
        }
        self.booked += u64::from(seq.booked_blocks);
        self.waiting.push_back(seq);
    }

    /// The leading blocks of a request with this chain (and no own tokens cached) that
    /// this replica's cache holds: what a prefix-aware router sees.
    pub fn cached_blocks(&self, chain: &[super::kv::Segment], prompt: u32) -> u32 {
        self.kv.lookup(Prefix { chain, own: 0 }, cacheable_blocks(chain, prompt, self.kv.block_size())).blocks
    }

    /// Sequences waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences running.
    pub fn running(&self) -> usize {
        self.running.len() + self.cohort.len as usize
    }

    /// The KV cache.
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// Prompt tokens of the sequences here that have no first token yet: the prefill
    /// work a router can see (it knows what it sent and what has answered; not how
    /// far a prefill has got, nor any output length). Decoders (the cohort's members
    /// included) have answered.
    pub(crate) fn unanswered_prompt_tokens(&self) -> u64 {
        self.waiting.iter().chain(&self.running).filter(|s| s.generated == 0).map(|s| u64::from(s.prompt)).sum()
    }

    /// The KV blocks a router booked here for the requests it sent that have not left
    /// (each [`Sequence::booked_blocks`]): its own account of the replica's KV load, as
    /// NVIDIA Dynamo's KV router keeps one from what it routed. It changes only when a
    /// request arrives or leaves, never as a decode step fills a block.
    pub fn booked_blocks(&self) -> u64 {
        self.booked
    }

    /// Whether a sequence this long could ever be admitted (its prompt and output fit
    /// the cache).
    pub fn fits(&self, prompt: u32, output: u32) -> bool {
        self.kv.blocks_for(prompt + output) <= self.kv.usable_blocks()
    }

    /// Whether the cohort can take its step ahead of the other running sequences
    /// without changing what the per-sequence rules decide: its tokens fit the budget,
    /// its blocks are free, and the others are all newer, so they come after it in the
    /// running order anyway (they always are: a step serves a prefix of the running
    /// order, and only the sequences it served join the cohort).
    fn cohort_steps_alone(&self) -> bool {
        let cohort = &self.cohort;
        let due = cohort.due_blocks[cohort.residue(self.steps)];
        cohort.len <= self.limits.max_num_batched_tokens
            && due <= self.kv.free_blocks()
            && self.running.first().is_none_or(|first| first.admission > cohort.newest_admission)
    }

    /// Plans the next step; `None` if there is nothing to do.
    pub fn schedule(&mut self) -> Option<StepShape> {
        self.plan.clear();
        self.first_admitted.clear();
        let mut budget = self.limits.max_num_batched_tokens;
        if self.cohort.len > 0 && !self.cohort_steps_alone() {
            self.cohort.dissolve(self.steps, false, self.last_step_end_ns, &self.kv, &mut self.running);
            self.running.sort_unstable_by_key(|s| s.admission);
        }
        let members = self.cohort.len;
        if members > 0 {
            let due = self.cohort.due_blocks[self.cohort.residue(self.steps)];
            let ok = self.kv.allocate(due);
            debug_assert!(ok, "checked by cohort_steps_alone");
            budget -= members;
        }
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
                // The cohort is older than every sequence here (or it was dissolved).
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
            while budget > 0 && self.running() < self.limits.max_num_seqs as usize {
                let Some(seq) = self.waiting.front() else { break };
                let known = seq.known();
                let bs = self.kv.block_size();
                // A cache hit covers whole blocks and leaves the last token to compute.
                let hit = self.kv.lookup(prefix_of(&self.chains, seq), (known - 1) / bs);
                // Full-sequence reservation: the whole current sequence must fit, its
                // blocks found free counting as taken from the free ones.
                if self.kv.blocks_for(known) - hit.blocks + hit.free > self.kv.free_blocks() {
                    break;
                }
                // Transferred KV is written into fresh blocks as it is admitted.
                let computed = (hit.blocks * bs).max(seq.preloaded.min(known - 1));
                let tokens = (known - computed).min(budget);
                let mut seq = self.waiting.pop_front().expect("peeked");
                seq.preloaded = 0;
                seq.holding = self.kv.acquire(prefix_of(&self.chains, &seq), hit.blocks);
                let needed = self.kv.blocks_for(computed + tokens).saturating_sub(hit.blocks);
                let ok = self.kv.allocate(needed);
                debug_assert!(ok, "the reservation check covers this chunk");
                seq.computed = computed;
                seq.blocks = hit.blocks + needed;
                seq.admission = self.admissions;
                self.admissions += 1;
                if !seq.admitted {
                    seq.admitted = true;
                    seq.cached_tokens = hit.blocks * bs;
                    self.first_admitted.push((seq.key, seq.cached_tokens));
                }
                self.running.push(seq);
                self.plan.push((self.running.len() - 1, tokens));
                budget -= tokens;
            }
        }
        if self.plan.is_empty() && members == 0 {
            return None;
        }
        self.in_flight = true;
        let mut shape =
            StepShape { decodes: members, decode_kv: self.cohort.decode_kv(self.steps), ..StepShape::default() };
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

    /// The shapes of the steps that follow the planned one while the replica stays in
    /// steady decode, appended to `shapes` (at most `max`): when the planned step runs
    /// the cohort alone, nothing waits and no member finishes at its end, the next
    /// step runs the same members one token further, and so on while their new blocks
    /// are free, up to the step at whose end the first member finishes. Nothing is
    /// appended otherwise. The state is left as it is: [`Replica::schedule`] and
    /// [`Replica::complete_step`] take those steps as usual and give these shapes, as
    /// long as nothing is queued or changed here in between. This is what lets a
    /// caller post one event for a run of steps instead of one per step.
    pub fn steady_shapes(&self, max: usize, shapes: &mut Vec<StepShape>) {
        let cohort = &self.cohort;
        if !self.in_flight || cohort.len == 0 || !self.running.is_empty() || !self.waiting.is_empty() {
            return;
        }
        let mut free = self.kv.free_blocks();
        let mut step = self.steps;
        while cohort.next_finish != step && shapes.len() < max {
            step += 1;
            let due = cohort.due_blocks[cohort.residue(step)];
            if due > free {
                break;
            }
            free -= due;
            shapes.push(StepShape { decodes: cohort.len, decode_kv: cohort.decode_kv(step), ..StepShape::default() });
        }
    }

    /// The sequences the planned step admits for the first time, with the prompt
    /// tokens each found cached.
    pub(crate) fn first_admitted(&self) -> &[(K, u32)] {
        &self.first_admitted
    }

    /// The inter-token latencies of the last completed step (measured sequences, every
    /// token but a first), as (nanoseconds, count).
    pub fn step_itls(&self) -> &[(u64, u32)] {
        &self.itls
    }

    fn preempt(&mut self, mut victim: Sequence<K>) {
        // Its full blocks stay named, for it to find when it is readmitted.
        let full = victim.computed / self.kv.block_size();
        self.kv.release(prefix_of(&self.chains, &victim), victim.holding, victim.blocks, full, true);
        victim.holding = Holding::default();
        victim.blocks = 0;
        victim.computed = 0;
        victim.preemptions += 1;
        self.preemptions += 1;
        self.waiting.push_front(victim);
    }

    /// Ends the planned step at `now_ns` and plans the next, for a replica in steady
    /// decode (the planned step runs the cohort alone, nothing waits, and no member
    /// finishes at its end; [`Replica::steady_shapes`] gave the next step, so its blocks
    /// are free): what [`Replica::complete_step`] then [`Replica::schedule`] do in that
    /// state, without their general paths. Returns the tokens produced (their
    /// inter-token latencies in [`Replica::step_itls`]) and the next step's shape.
    pub fn step_steady(&mut self, now_ns: u64) -> (StepTokens, StepShape) {
        let cohort = &mut self.cohort;
        debug_assert!(self.in_flight && self.plan.is_empty() && self.running.is_empty() && self.waiting.is_empty());
        debug_assert!(cohort.len > 0 && cohort.next_finish != self.steps, "no member finishes at its end");
        self.itls.clear();
        let energy_per_token_j = std::mem::take(&mut self.step_energy_per_token_j);
        let produced = cohort.produce(energy_per_token_j, now_ns.saturating_sub(self.last_step_end_ns), &mut self.itls);
        self.steps += 1;
        self.last_step_end_ns = now_ns;
        let due = cohort.due_blocks[cohort.residue(self.steps)];
        let ok = self.kv.allocate(due);
        debug_assert!(ok, "a steady step's blocks are free");
        (produced, StepShape { decodes: cohort.len, decode_kv: cohort.decode_kv(self.steps), ..StepShape::default() })
    }

    /// Ends the planned step at `now_ns` (the caller's clock): computes its tokens,
    /// samples a token for every sequence whose known tokens are all computed, and hands
    /// `on_event` each sequence that produced its first or its last token (finished
    /// ones have left the replica), in admission order. The rest are counted in the
    /// returned [`StepTokens`] and their inter-token latencies in
    /// [`Replica::step_itls`].
    pub fn complete_step(&mut self, now_ns: u64, mut on_event: impl FnMut(&Sequence<K>, TokenEvent)) -> StepTokens {
        let (step, last_step_end_ns, use_cohort) = (self.steps, self.last_step_end_ns, self.use_cohort);
        let energy_per_token_j = std::mem::take(&mut self.step_energy_per_token_j);
        let mut produced = StepTokens::default();
        self.itls.clear();
        self.in_flight = false;
        let Replica { kv, running, cohort, plan, finished_members, itls, chains, booked, .. } = &mut *self;
        // The cohort: every member produces a token, one step after its last.
        finished_members.clear();
        if cohort.len > 0 {
            produced = cohort.produce(energy_per_token_j, now_ns.saturating_sub(last_step_end_ns), itls);
            debug_assert!(cohort.next_finish >= step, "a member outlived its last token");
            while cohort.next_finish == step {
                let Some(Reverse((_, _, member))) = cohort.finishing.pop() else {
                    unreachable!("the earliest finish is a member's")
                };
                cohort.next_finish = cohort.finishing.peek().map_or(u64::MAX, |Reverse((s, ..))| *s);
                let (seq, joined) = cohort.leave(member);
                // It leaves the cache after the step's blocks are named, below.
                finished_members.push(decoded(seq, step + 1 - joined, now_ns, kv));
            }
        }
        // The others, one by one; events interleaved with the members' in admission
        // order.
        let mut members_told = 0;
        let mut any_left = false;
        for &(i, tokens) in plan.iter() {
            let seq = &mut running[i];
            seq.computed += tokens;
            seq.energy_j += f64::from(tokens) * energy_per_token_j;
            if let Some(chain) = seq.chain {
                let full = seq.computed / kv.block_size();
                if full > seq.holding.named {
                    kv.register(Prefix { chain: &chains[chain], own: seq.own }, &mut seq.holding, full);
                }
            }
            if seq.computed != seq.known() {
                continue;
            }
            seq.generated += 1;
            produced.tokens += 1;
            if seq.measured {
                produced.measured_tokens += 1;
                if seq.generated > 1 {
                    let itl = now_ns.saturating_sub(seq.last_token_ns);
                    match itls.iter_mut().find(|(v, _)| *v == itl) {
                        Some((_, n)) => *n += 1,
                        None => itls.push((itl, 1)),
                    }
                }
            }
            seq.last_token_ns = now_ns;
            // It finishes or decodes on: either way `running` is revisited below.
            any_left = true;
            let event = if seq.generated >= seq.output {
                TokenEvent::Finished
            } else {
                seq.decoding = true;
                if seq.generated > 1 {
                    continue;
                }
                TokenEvent::First
            };
            while let Some(member) = finished_members.get(members_told).filter(|m| m.admission < seq.admission) {
                on_event(member, TokenEvent::Finished);
                members_told += 1;
            }
            on_event(seq, event);
        }
        for member in &finished_members[members_told..] {
            on_event(member, TokenEvent::Finished);
        }
        // Sequences that finished free their blocks once the step's blocks are named,
        // in admission order (the members are older than the others).
        for member in finished_members.iter_mut() {
            leave(kv, chains, booked, member);
        }
        plan.clear();
        if any_left {
            let joined = step + 1;
            running.retain_mut(|s| {
                if s.generated >= s.output {
                    leave(kv, chains, booked, s);
                    return false;
                }
                if std::mem::take(&mut s.decoding) && use_cohort {
                    cohort.join(*s, joined);
                    return false;
                }
                true
            });
        }
        self.steps += 1;
        self.last_step_end_ns = now_ns;
        produced
    }

    /// Removes every sequence (the replica failed), handing each to `on_lost` with its
    /// chain (if it was given one), and empties the KV cache.
    pub fn drain(&mut self, mut on_lost: impl FnMut(Sequence<K>, Option<Chain>)) {
        self.plan.clear();
        let scheduled = std::mem::take(&mut self.in_flight);
        self.cohort.dissolve(self.steps, scheduled, self.last_step_end_ns, &self.kv, &mut self.running);
        self.running.sort_unstable_by_key(|s| s.admission);
        for mut s in self.running.drain(..) {
            let chain = leave(&mut self.kv, &mut self.chains, &mut self.booked, &mut s);
            on_lost(s, chain);
        }
        for mut s in self.waiting.drain(..) {
            let chain = leave(&mut self.kv, &mut self.chains, &mut self.booked, &mut s);
            on_lost(s, chain);
        }
        // The GPUs' memory is lost with them: the replica comes back with an empty cache.
        self.kv = KvCache::new(self.limits.num_gpu_blocks, self.limits.block_size, self.limits.prefix_caching);
    }

    /// Removes a waiting sequence (it gave up); true if it was waiting.
    pub(crate) fn withdraw(&mut self, key_matches: impl Fn(&K) -> bool) -> Option<Sequence<K>> {
        let at = self.waiting.iter().position(|s| key_matches(&s.key))?;
        let mut s = self.waiting.remove(at)?;
        leave(&mut self.kv, &mut self.chains, &mut self.booked, &mut s);
        Some(s)
    }
}

/// The most leading blocks of a prompt of `prompt` tokens whose shared segments are
/// `chain` that a cache can hold for it: whole blocks of the chain, never the block of
/// the last prompt token (which must be computed to give the first token).
pub fn cacheable_blocks(chain: &[super::kv::Segment], prompt: u32, block_size: u32) -> u32 {
    let chain_blocks = chain.last().map_or(0, |s| s.end_tokens / block_size);
    (prompt.saturating_sub(1) / block_size).min(chain_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(blocks: u32) -> EngineLimits {
        EngineLimits {
            max_num_seqs: 4,
            max_num_batched_tokens: 64,
            block_size: 16,
            num_gpu_blocks: blocks,
            prefix_caching: true,
        }
    }

    /// Runs every step (step k ends at k x 10 ns); returns the events, the shapes,
    /// the tokens counted and every inter-token latency.
    type Events = Vec<(u32, TokenEvent)>;

    #[test]
    fn the_booked_blocks_change_only_when_requests_come_and_go() {
        // A cache of 6 blocks: the third request preempts, the booking stays.
        let mut r = Replica::new(limits(6));
        for k in 0..3 {
            r.enqueue(Sequence::new(k, u64::from(k), 20, 30).booking(2 + k));
        }
        assert_eq!(r.booked_blocks(), 9);
        let (mut left, mut step) = (0, 0);
        while r.schedule().is_some() {
            step += 1;
            r.complete_step(10 * step, |s, e| {
                if e == TokenEvent::Finished {
                    left += s.booked_blocks;
                }
            });
            assert_eq!(r.booked_blocks(), 9 - u64::from(left), "each finished request takes its booking away");
        }
        assert!(r.preemptions > 0, "the small cache preempts");
        assert_eq!(left, 9);
        assert_eq!(r.booked_blocks(), 0);
        // A request that gives up or is lost with its replica takes its booking too.
        r.enqueue(Sequence::new(7, 7, 20, 30).booking(4));
        r.enqueue(Sequence::new(8, 8, 20, 30).booking(5));
        assert!(r.withdraw(|&k| k == 8).is_some());
        assert_eq!(r.booked_blocks(), 4);
        r.schedule();
        r.drain(|_, _| {});
        assert_eq!(r.booked_blocks(), 0);
        // A sequence moved elsewhere is booked anew by the router that sends it.
        assert_eq!(Sequence::new(9, 9, 20, 30).booking(3).moved().booked_blocks, 0);
    }

    #[test]
    fn what_a_router_sees_does_not_depend_on_output_lengths() {
        // Two replicas with the same prompts; one's requests answer in 3 tokens, the
        // other's in 40. Until the short ones finish, a router sees the same on both.
        let (mut short, mut long) = (Replica::new(limits(100)), Replica::new(limits(100)));
        for k in 0..3 {
            short.enqueue(Sequence::new(k, u64::from(k), 40, 3));
            long.enqueue(Sequence::new(k, u64::from(k), 40, 40));
        }
        assert_eq!(short.unanswered_prompt_tokens(), 120);
        for step in 1..=3 {
            let seen = |r: &Replica<u32>| (r.unanswered_prompt_tokens(), r.waiting(), r.running());
            assert_eq!(seen(&short), seen(&long), "before step {step}");
            for r in [&mut short, &mut long] {
                r.schedule();
                r.complete_step(10 * step, |_, _| {});
            }
        }
        // 64 tokens a step: two prompts prefilled in the first, the third in the second.
        assert_eq!(long.unanswered_prompt_tokens(), 0);
    }

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
    fn steady_shapes_are_the_steps_the_scheduler_takes_up_to_the_next_token_event() {
        // Three decoders of different lengths in a cache with room for a few blocks
        // more than they hold: each plan is checked step by step against what
        // `schedule` gives, and ends at a finish or where blocks run short. A copy
        // takes the planned steps with `step_steady` and must stay the same.
        let mut r = Replica::new(EngineLimits { max_num_seqs: 8, ..limits(14) });
        for (k, output) in [(0u32, 40), (1, 25), (2, 60)] {
            r.enqueue(Sequence::new(k, u64::from(k), 30, output));
        }
        let (mut now, mut planned, mut ends) = (0, Vec::new(), Vec::new());
        let (mut runs, mut longest) = (0, 0);
        while let Some(first) = r.schedule() {
            planned.clear();
            r.steady_shapes(64, &mut planned);
            if !planned.is_empty() {
                runs += 1;
                longest = longest.max(planned.len());
            }
            let mut fast = r.clone();
            r.set_step_energy(f64::from(first.tokens()), first.tokens());
            fast.set_step_energy(f64::from(first.tokens()), first.tokens());
            let mut events = 0;
            for (i, &next) in planned.iter().enumerate() {
                now += 10 + i as u64;
                let tokens = r.complete_step(now, |_, _| events += 1);
                assert_eq!(events, 0, "a planned step's predecessor has no token event");
                assert_eq!(r.schedule(), Some(next), "planned step {i} of run {runs}");
                assert_eq!(fast.step_steady(now), (tokens, next), "step_steady, step {i} of run {runs}");
                assert_eq!(fast.step_itls(), r.step_itls());
                assert_eq!(fast.kv().free_blocks(), r.kv().free_blocks());
                r.set_step_energy(f64::from(next.tokens()) * 1.5, next.tokens());
                fast.set_step_energy(f64::from(next.tokens()) * 1.5, next.tokens());
            }
            now += 10;
            let mut fast_ends = Vec::new();
            fast.complete_step(now, |s, e| fast_ends.push((s.key, e, s.energy_j.to_bits())));
            let from = ends.len();
            r.complete_step(now, |s, e| ends.push((s.key, e, s.energy_j.to_bits())));
            assert_eq!(fast_ends, ends[from..], "the run ends the same either way");
            assert!(now < 100_000, "no progress");
        }
        assert!(runs >= 3 && longest >= 10, "{runs} runs, the longest {longest} steps");
        assert_eq!(ends.iter().filter(|&&(_, e, _)| e == TokenEvent::Finished).count(), 3);
        // Something queued ends steady decode: nothing is planned past it.
        let mut r = Replica::new(limits(100));
        r.enqueue(Sequence::new(0, 0, 10, 50));
        r.schedule();
        r.complete_step(10, |_, _| {});
        r.schedule();
        let mut planned = Vec::new();
        r.steady_shapes(64, &mut planned);
        assert_eq!(planned.len(), 48, "up to the step that ends with the last token");
        r.enqueue(Sequence::new(1, 1, 10, 50));
        planned.clear();
        r.steady_shapes(64, &mut planned);
        assert!(planned.is_empty());
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
        assert_eq!(r.first_admitted(), [(0, 0), (1, 0), (2, 0), (3, 0)]);
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
            prefix_caching: true,
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

    /// Each sequence is given its share of every step it ran in, by tokens, so that
    /// the shares add up to the energy of the steps.
    #[test]
    fn step_energy_is_shared_by_tokens() {
        let mut r = Replica::new(limits(1000));
        r.enqueue(Sequence::new(0, 0, 100, 3));
        r.enqueue(Sequence::new(1, 1, 20, 10));
        let (mut total_j, mut shares) = (0.0, vec![0.0; 2]);
        let mut step = 0;
        while let Some(shape) = r.schedule() {
            step += 1;
            let energy_j = step as f64;
            r.set_step_energy(energy_j, shape.tokens());
            total_j += energy_j;
            r.complete_step(10 * step, |s, e| {
                if e == TokenEvent::Finished {
                    shares[s.key as usize] = s.energy_j;
                }
            });
        }
        assert!((shares[0] + shares[1] - total_j).abs() < 1e-9 * total_j, "{shares:?} vs {total_j}");
        // Step 1 spends its budget of 64 tokens on the first prompt: all of its energy
        // is the first sequence's.
        assert!(shares[0] > 1.0 && shares[1] > 0.0);
    }

    /// Everything a caller can see of one step.
    #[derive(Debug, PartialEq)]
    struct Seen {
        shape: Option<StepShape>,
        first_admitted: Vec<(u32, u32)>,
        events: Vec<(u32, TokenEvent, u32, u32)>,
        tokens: StepTokens,
        itls: Vec<(u64, u32)>,
        /// The energy each sequence with an event has had (J), rounded to 1e-9 J: the
        /// cohort sums per-member shares in another order than the per-sequence rules.
        energies: Vec<(u32, i64)>,
        kv: KvCache,
        running: usize,
        waiting: usize,
        unanswered_prompt_tokens: u64,
        preemptions: u64,
    }

    fn observe_step(r: &mut Replica<u32>, now_ns: u64) -> Seen {
        let shape = r.schedule();
        let first_admitted = r.first_admitted().to_vec();
        let (mut events, mut tokens, mut itls, mut energies) =
            (Vec::new(), StepTokens::default(), Vec::new(), Vec::new());
        if let Some(shape) = shape {
            // A step's energy varies from step to step.
            r.set_step_energy(0.5 + (now_ns % 7) as f64 * 0.125, shape.tokens());
            tokens = r.complete_step(now_ns, |s, e| {
                events.push((s.key, e, s.generated, s.preemptions));
                energies.push((s.key, (s.energy_j * 1e9).round() as i64));
            });
            itls = r.step_itls().to_vec();
            itls.sort_unstable();
        }
        Seen {
            shape,
            first_admitted,
            events,
            tokens,
            itls,
            energies,
            kv: r.kv().clone(),
            running: r.running(),
            waiting: r.waiting(),
            unanswered_prompt_tokens: r.unanswered_prompt_tokens(),
            preemptions: r.preemptions,
        }
    }

    /// One of three shared prefixes (37 tokens; 37 + 50; 37 + 50 + 64), cut to
    /// `prompt` tokens.
    fn shared_chain(which: usize, prompt: u32) -> Chain {
        let segments = [(1, 37), (2, 87), (3, 151)];
        let mut hash = 0;
        let mut chain = Vec::new();
        for &(id, end) in &segments[..=which] {
            let start = chain.last().map_or(0, |s: &super::super::kv::Segment| s.end_tokens);
            if start >= prompt {
                break;
            }
            hash = super::super::kv::chain_hash(hash, id);
            chain.push(super::super::kv::Segment { hash, end_tokens: end.min(prompt) });
        }
        chain.into()
    }

    /// The cohort of steady decoders changes nothing: random workloads, many with a
    /// cache or a token budget too small for what they hold (so sequences are preempted
    /// and passed over), give the same steps, events, counts, latencies and cache state
    /// as the per-sequence rules, step by step.
    #[test]
    fn the_cohort_gives_what_the_per_sequence_rules_give() {
        use rand::RngExt;
        let (mut steps_with_members, mut preempted_members, mut prefix_hits) = (0, 0, 0);
        for case in 0..60_u64 {
            let mut rng = infersim_engine::derive_stream(case, 0, infersim_engine::StreamId(0));
            let limits = EngineLimits {
                max_num_seqs: rng.random_range(1..=48),
                max_num_batched_tokens: rng.random_range(4..=384),
                block_size: [1, 3, 16][rng.random_range(0..3_usize)],
                num_gpu_blocks: rng.random_range(30..=1500),
                prefix_caching: rng.random_bool(0.8),
            };
            let mut fast = Replica::new(limits);
            let mut slow = Replica::new(limits);
            slow.use_cohort = false;
            let (mut now_ns, mut uid) = (0, 0);
            for _ in 0..1500 {
                for _ in 0..rng.random_range(0..3) {
                    let (prompt, output) = (rng.random_range(1..=200), rng.random_range(1..=120));
                    if !fast.fits(prompt, output) {
                        continue;
                    }
                    let seq = if rng.random_bool(0.1) {
                        Sequence::prefilled(uid as u32, uid, prompt, output.max(2), now_ns)
                    } else {
                        Sequence::new(uid as u32, uid, prompt, output)
                    };
                    let seq = seq.measured(rng.random_bool(0.9));
                    // Some begin with one of three system prompts, one of which two
                    // others extend; some are conversations whose next turn follows.
                    let chain = rng.random_bool(0.5).then(|| shared_chain(rng.random_range(0..3), prompt));
                    let seq = if rng.random_bool(0.2) { seq.owning(uid ^ 0xabc, true) } else { seq };
                    match chain {
                        Some(chain) => {
                            fast.enqueue_with_chain(seq, chain.clone());
                            slow.enqueue_with_chain(seq, chain);
                        }
                        None => {
                            fast.enqueue(seq);
                            slow.enqueue(seq);
                        }
                    }
                    uid += 1;
                }
                if rng.random_bool(0.002) {
                    // A failure mid-step: the planned step never completes.
                    let (a, b) = (fast.schedule(), slow.schedule());
                    assert_eq!(a, b);
                    let (mut lost_fast, mut lost_slow) = (Vec::new(), Vec::new());
                    fast.drain(|s, _| lost_fast.push((s.key, s.generated, s.preemptions)));
                    slow.drain(|s, _| lost_slow.push((s.key, s.generated, s.preemptions)));
                    assert_eq!(lost_fast, lost_slow);
                    assert_eq!(fast.kv(), slow.kv());
                }
                now_ns += rng.random_range(1..50);
                let (members, preemptions) = (fast.cohort.len, fast.preemptions);
                let (a, b) = (observe_step(&mut fast, now_ns), observe_step(&mut slow, now_ns));
                assert_eq!(a, b, "case {case}, {limits:?}");
                fast.kv().check();
                prefix_hits += a.first_admitted.iter().filter(|(_, cached)| *cached > 0).count();
                steps_with_members += u32::from(members > 0);
                preempted_members += u32::from(members > 0 && fast.preemptions > preemptions);
            }
        }
        // Both paths were taken: the cohort, and its dissolution to preempt.
        assert!(steps_with_members > 10_000 && preempted_members > 100, "{steps_with_members} {preempted_members}");
        // And requests found shared prefixes.
        assert!(prefix_hits > 1_000, "{prefix_hits}");
    }
}
