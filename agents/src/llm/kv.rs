//! A paged KV cache with prefix caching, as vLLM's block pool keeps it: blocks of
//! `block_size` tokens; a full block is named by a hash of its tokens and of every token
//! before it, so that two sequences with the same leading tokens find the same blocks;
//! freed blocks join the tail of an LRU free queue and keep their contents until they
//! are taken from its head. A sequence's blocks are freed last block first, so
//! eviction eats a prefix from its tail and what survives is a prefix.
//!
//! Traces carry no token ids, so content is named by *segments*: a [`Segment`] is a
//! stretch of tokens (a shared system prompt, a block of a Mooncake trace's `hash_ids`,
//! a turn of a conversation) named by a hash of its content and of all before it. A
//! sequence is its chain of known segments followed by its own tokens, a segment of
//! its own that nobody else shares (named by [`Sequence::own`](super::Sequence)).
//! Block `i` of a sequence belongs to the segment in which the block ends, and is
//! named by (that segment's hash, `i`'s offset in the segment): the same name a
//! per-block hash chain would give, so hit and eviction counts are those of vLLM's
//! per-block cache, while the cache keeps one entry per segment and every operation
//! costs the number of segments, not of blocks.
//!
//! Per segment the cache knows how many of its leading blocks are computed here
//! (`cached`) and how many each sequence holding it holds; blocks beyond the largest
//! holding are free (in the LRU queue, as runs), and since a segment's blocks are freed
//! and evicted from the tail, its free blocks are always its highest ones. Two
//! sequences that compute the same blocks at once (neither found them cached) keep
//! two copies, as vLLM does; here only the first to finish a block names it, and the
//! other's copy is a plain block from there on (vLLM names both; the counts differ
//! only when the named copy is evicted while the plain one survives).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A stretch of a sequence's tokens with known content: from the previous segment's
/// end (0 for the first) up to `end_tokens`, named by `hash`, a hash of its content and
/// of every token before it (two chains share a segment only if they share all before
/// it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The name of the tokens up to `end_tokens`.
    pub hash: u64,
    /// Where the segment ends (tokens from the start of the sequence).
    pub end_tokens: u32,
}

/// A request's known leading segments, ends increasing.
pub type Chain = Arc<[Segment]>;

/// The hash of segment `id` after a chain whose last segment is named `previous` (0
/// for none): how trace ids and synthetic prefixes become chain names.
pub fn chain_hash(previous: u64, id: u64) -> u64 {
    splitmix64(previous.rotate_left(29) ^ splitmix64(id ^ 0x9e37_79b9_7f4a_7c15))
}

/// SplitMix64's finaliser: a bijection of u64 that spreads every input bit.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A sequence as the cache sees it: its chain and its own segment's name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefix<'a> {
    pub chain: &'a [Segment],
    pub own: u64,
}

impl Prefix<'_> {
    /// Segment `k` (the own segment at `k = chain.len()`): (hash, first block, end
    /// block), blocks numbered from the sequence's start; the own segment never ends.
    fn span(&self, k: usize, block_size: u32) -> (u64, u32, u32) {
        let first = if k == 0 { 0 } else { self.chain[k - 1].end_tokens / block_size };
        match self.chain.get(k) {
            Some(s) => (s.hash, first, s.end_tokens / block_size),
            None => (self.own, first, u32::MAX),
        }
    }

    /// Each segment with blocks, its own last, as [`Prefix::span`] gives them; in
    /// reverse order with `reversed`.
    fn spans(&self, block_size: u32, reversed: bool) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        let n = self.chain.len();
        (0..=n)
            .map(move |i| if reversed { n - i } else { i })
            .map(move |k| self.span(k, block_size))
            .filter(|(_, first, end)| end > first)
    }

    /// The first block of the own segment.
    fn own_first(&self, block_size: u32) -> u32 {
        self.chain.last().map_or(0, |s| s.end_tokens / block_size)
    }
}

/// What a sequence holds through the cache's names: its leading `named` blocks (the
/// rest of its blocks are plain), and whether it stopped naming blocks because
/// another sequence named the same ones first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holding {
    pub named: u32,
    pub unnamed_from_here: bool,
}

/// A cache lookup: the leading blocks of a sequence found here, and how many of them
/// are free (in the LRU queue; taking them uses free blocks up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hit {
    pub blocks: u32,
    pub free: u32,
}

/// Free blocks in a row in the LRU queue: a segment's (its highest cached ones) or
/// plain ones that keep nothing of use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    segment: Option<u64>,
    blocks: u32,
}

/// What the cache holds of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// Its leading blocks computed here.
    cached: u32,
    /// (blocks held, sequences holding that many), ascending.
    holders: Vec<(u32, u32)>,
    /// Its free runs' places in the queue, oldest (highest blocks) first.
    free_runs: Vec<u64>,
}

impl Entry {
    fn max_held(&self) -> u32 {
        self.holders.last().map_or(0, |h| h.0)
    }

    fn hold(&mut self, blocks: u32) {
        match self.holders.binary_search_by_key(&blocks, |h| h.0) {
            Ok(i) => self.holders[i].1 += 1,
            Err(i) => self.holders.insert(i, (blocks, 1)),
        }
    }

    fn unhold(&mut self, blocks: u32) {
        let i = self.holders.binary_search_by_key(&blocks, |h| h.0).expect("a holder of that many blocks");
        self.holders[i].1 -= 1;
        if self.holders[i].1 == 0 {
            self.holders.remove(i);
        }
    }
}

/// Segment hashes are already well mixed: hash them as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// The block pool of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCache {
    block_size: u32,
    usable_blocks: u32,
    free_blocks: u32,
    /// Whether blocks keep their names (vLLM's `enable_prefix_caching`): without it
    /// every freed block is plain and nothing is ever found.
    prefix_caching: bool,
    /// Free runs by their place in the LRU order, oldest first.
    queue: BTreeMap<u64, Run>,
    next_place: u64,
    entries: HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>,
}

impl KvCache {
    /// A pool of `num_gpu_blocks` blocks, one of them reserved (vLLM's null block).
    pub fn new(num_gpu_blocks: u32, block_size: u32, prefix_caching: bool) -> KvCache {
        let usable_blocks = num_gpu_blocks.saturating_sub(1);
        let mut kv = KvCache {
            block_size,
            usable_blocks,
            free_blocks: 0,
            prefix_caching,
            queue: BTreeMap::new(),
            next_place: 0,
            entries: HashMap::default(),
        };
        kv.push(None, usable_blocks);
        kv.free_blocks = usable_blocks;
        kv
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Blocks that sequences can hold.
    pub(crate) fn usable_blocks(&self) -> u32 {
        self.usable_blocks
    }

    /// Blocks in the free queue (cached or not).
    pub(crate) fn free_blocks(&self) -> u32 {
        self.free_blocks
    }

    /// Share of the usable blocks held by sequences, in [0, 1].
    pub fn usage(&self) -> f64 {
        if self.usable_blocks == 0 {
            return 0.0;
        }
        f64::from(self.usable_blocks - self.free_blocks) / f64::from(self.usable_blocks)
    }

    /// Blocks needed to hold `tokens` tokens.
    pub(crate) fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.block_size)
    }

    /// Takes `blocks` blocks from the head of the free queue (evicting what they
    /// cached); false, and nothing taken, if there are not enough.
    pub(crate) fn allocate(&mut self, blocks: u32) -> bool {
        if blocks > self.free_blocks {
            return false;
        }
        self.free_blocks -= blocks;
        let mut left = blocks;
        while left > 0 {
            let mut head = self.queue.first_entry().expect("free blocks are in the queue");
            let run = head.get_mut();
            let take = run.blocks.min(left);
            run.blocks -= take;
            left -= take;
            let (segment, emptied) = (run.segment, run.blocks == 0);
            if emptied {
                head.remove();
            }
            if let Some(hash) = segment {
                let entry = self.entries.get_mut(&hash).expect("a named run has its entry");
                entry.cached -= take;
                if emptied {
                    entry.free_runs.remove(0);
                }
                if entry.cached == 0 {
                    self.entries.remove(&hash);
                }
            }
        }
        true
    }

    /// The leading blocks of `prefix` cached here, at most `max_blocks`.
    pub(crate) fn lookup(&self, prefix: Prefix<'_>, max_blocks: u32) -> Hit {
        let mut hit = Hit::default();
        if !self.prefix_caching {
            return hit;
        }
        for (hash, first, end) in prefix.spans(self.block_size, false) {
            if first >= max_blocks {
                break;
            }
            let Some(entry) = self.entries.get(&hash) else { break };
            let wanted = end.min(max_blocks) - first;
            let got = entry.cached.min(wanted);
            hit.blocks = first + got;
            hit.free += got.saturating_sub(entry.max_held());
            if got < wanted {
                break;
            }
        }
        hit
    }

    /// Holds the leading `blocks` blocks of `prefix` (a [`KvCache::lookup`]'s hit),
    /// taking those that were free out of the queue; the rest of its own segment's
    /// cache becomes plain free blocks.
    pub(crate) fn acquire(&mut self, prefix: Prefix<'_>, blocks: u32) -> Holding {
        for (hash, first, end) in prefix.spans(self.block_size, false) {
            if first >= blocks {
                break;
            }
            let take = end.min(blocks) - first;
            let entry = self.entries.get_mut(&hash).expect("a hit's segments are cached");
            let free_from = entry.max_held();
            entry.hold(take);
            let mut needed = take.saturating_sub(free_from);
            self.free_blocks -= needed;
            // The lowest free blocks are in the newest runs.
            while needed > 0 {
                let place = *entry.free_runs.last().expect("free blocks are in runs");
                let run = self.queue.get_mut(&place).expect("a run's place is in the queue");
                if run.blocks > needed {
                    run.blocks -= needed;
                    needed = 0;
                } else {
                    needed -= run.blocks;
                    self.queue.remove(&place);
                    entry.free_runs.pop();
                }
            }
        }
        self.drop_free(prefix.own);
        Holding { named: blocks, unnamed_from_here: false }
    }

    /// Names the blocks a sequence has computed in its chain's segments, up to its
    /// first `full_blocks` blocks, so that others find them; a block another sequence
    /// named first leaves this one's blocks plain from there on.
    pub(crate) fn register(&mut self, prefix: Prefix<'_>, holding: &mut Holding, full_blocks: u32) {
        if !self.prefix_caching || holding.unnamed_from_here {
            return;
        }
        let own_first = prefix.own_first(self.block_size);
        for (hash, first, end) in prefix.spans(self.block_size, false) {
            if first >= full_blocks.min(own_first) {
                break;
            }
            if end <= holding.named {
                continue;
            }
            let (have, upto) = (holding.named - first, end.min(full_blocks) - first);
            let entry = self.entries.entry(hash).or_default();
            if entry.cached > have {
                // More of the segment is cached than this sequence found: copies
                // computed since it was admitted, or older copies left behind when an
                // earlier segment was evicted.
                if entry.max_held() > have {
                    // Held by another sequence: this one's copies stay plain.
                    holding.unnamed_from_here = true;
                    return;
                }
                // Free older copies: this sequence's copies, freed later, outlive them,
                // so they take the names, and the older copies of the same blocks
                // become plain.
                let doubled = upto.min(entry.cached) - have;
                self.unname_lowest_free(hash, doubled);
            }
            let entry = self.entries.get_mut(&hash).expect("just found");
            if have > 0 {
                entry.unhold(have);
            }
            entry.hold(upto);
            entry.cached = entry.cached.max(upto);
            holding.named = first + upto;
            if first + upto < end {
                break;
            }
        }
    }

    /// Frees a sequence's `blocks` blocks, last block first (named blocks only when
    /// nobody else holds them). With `keep_own` its full blocks among its own tokens
    /// (of its first `full_blocks`) are named first, so that it (preempted) or a later
    /// turn of its conversation finds them; otherwise they are plain.
    pub(crate) fn release(
        &mut self,
        prefix: Prefix<'_>,
        holding: Holding,
        blocks: u32,
        full_blocks: u32,
        keep_own: bool,
    ) {
        let mut named = holding.named;
        let own_first = prefix.own_first(self.block_size);
        if keep_own && self.prefix_caching && !holding.unnamed_from_here && named >= own_first {
            let have = named - own_first;
            let upto = full_blocks.min(blocks).saturating_sub(own_first).max(have);
            if upto > have {
                let entry = self.entries.entry(prefix.own).or_default();
                debug_assert_eq!(entry.cached, have, "nobody else names a sequence's own blocks");
                if have > 0 {
                    entry.unhold(have);
                }
                entry.hold(upto);
                entry.cached = upto;
                named = own_first + upto;
            }
        }
        self.push(None, blocks - named);
        self.free_blocks += blocks - named;
        for (hash, first, end) in prefix.spans(self.block_size, true) {
            if named <= first {
                continue;
            }
            let held = named.min(end) - first;
            let entry = self.entries.get_mut(&hash).expect("held segments are cached");
            entry.unhold(held);
            let freed = held.saturating_sub(entry.max_held());
            if freed > 0 {
                entry.free_runs.push(self.next_place);
                self.free_blocks += freed;
                self.push(Some(hash), freed);
            }
        }
        if !keep_own {
            self.forget(prefix.own);
        }
    }

    /// Makes the lowest `blocks` free blocks of segment `hash` plain. They are in its
    /// newest runs; a run split in two keeps its named (higher) blocks where it was,
    /// to be evicted first, and its plain ones just after.
    fn unname_lowest_free(&mut self, hash: u64, mut blocks: u32) {
        let entry = self.entries.get_mut(&hash).expect("a segment with free blocks");
        while blocks > 0 {
            let place = *entry.free_runs.last().expect("free blocks are in runs");
            let run = self.queue.get_mut(&place).expect("a run's place is in the queue");
            if run.blocks <= blocks {
                blocks -= run.blocks;
                run.segment = None;
                entry.free_runs.pop();
            } else {
                run.blocks -= blocks;
                // Places of pushed runs are even: the odd one after is for plain halves.
                self.queue.entry(place + 1).or_insert(Run { segment: None, blocks: 0 }).blocks += blocks;
                blocks = 0;
            }
        }
    }

    fn push(&mut self, segment: Option<u64>, blocks: u32) {
        if blocks == 0 {
            return;
        }
        if segment.is_none()
            && let Some(mut last) = self.queue.last_entry()
            && last.get().segment.is_none()
        {
            last.get_mut().blocks += blocks;
            return;
        }
        self.queue.insert(self.next_place, Run { segment, blocks });
        self.next_place += 2;
    }

    /// Makes the free blocks of segment `hash` plain: what it caches beyond what is
    /// held is of no more use.
    fn drop_free(&mut self, hash: u64) {
        let Some(entry) = self.entries.get_mut(&hash) else { return };
        for place in entry.free_runs.drain(..) {
            self.queue.get_mut(&place).expect("a run's place is in the queue").segment = None;
        }
        entry.cached = entry.max_held();
        if entry.cached == 0 {
            self.entries.remove(&hash);
        }
    }

    /// Forgets segment `hash` (a sequence's own, once it has finished or left): its
    /// free blocks stay free, plain.
    pub(crate) fn forget(&mut self, hash: u64) {
        self.drop_free(hash);
        debug_assert!(self.entries.get(&hash).is_none_or(|e| e.holders.is_empty()), "forgotten while held");
        self.entries.remove(&hash);
    }

    /// Checks the bookkeeping (tests): the runs add up to the free blocks, and each
    /// segment's runs to what it caches beyond what is held.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let in_runs: u32 = self.queue.values().map(|r| r.blocks).sum();
        assert_eq!(in_runs, self.free_blocks);
        for (hash, entry) in &self.entries {
            let runs: u32 = entry.free_runs.iter().map(|p| self.queue[p].blocks).sum();
            assert_eq!(runs, entry.cached - entry.max_held(), "segment {hash}");
            assert!(entry.free_runs.iter().all(|p| self.queue[p].segment == Some(*hash)));
            assert!(entry.free_runs.windows(2).all(|w| w[0] < w[1]));
        }
        let named = self.queue.values().filter(|r| r.segment.is_some()).count();
        assert_eq!(named, self.entries.values().map(|e| e.free_runs.len()).sum::<usize>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(k: u64) -> Prefix<'static> {
        Prefix { chain: &[], own: k }
    }

    #[test]
    fn one_block_is_reserved_and_allocation_is_all_or_nothing() {
        let mut kv = KvCache::new(11, 16, true);
        assert_eq!((kv.usable_blocks(), kv.free_blocks()), (10, 10));
        assert!(kv.allocate(7));
        assert!(!kv.allocate(4));
        assert_eq!(kv.free_blocks(), 3);
        assert!((kv.usage() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn eviction_eats_a_preempted_prefix_from_its_tail() {
        let mut kv = KvCache::new(11, 16, true);
        assert!(kv.allocate(10));
        // A preempted sequence: 6 full blocks of its own named, 1 partial.
        kv.release(own(1), Holding::default(), 7, 6, true);
        assert_eq!((kv.free_blocks(), kv.lookup(own(1), 100).blocks), (7, 6));
        assert!(kv.allocate(3)); // takes the plain block, then 2 of the cached ones
        assert_eq!(kv.lookup(own(1), 100), Hit { blocks: 4, free: 4 });
        kv.acquire(own(1), 4);
        assert_eq!(kv.free_blocks(), 0);
        kv.check();
    }

    #[test]
    fn a_shared_prefix_is_found_held_by_two_and_freed_by_the_last() {
        let mut kv = KvCache::new(101, 16, true);
        let chain = [Segment { hash: chain_hash(0, 7), end_tokens: 100 }];
        let (a, b) = (Prefix { chain: &chain, own: 1 }, Prefix { chain: &chain, own: 2 });
        // A computes 130 tokens: 6 full blocks of the shared 100 tokens (the 7th ends
        // past it, in its own tokens), 8 full blocks in all, 9 held.
        assert!(kv.allocate(9));
        let mut held_a = Holding::default();
        kv.register(a, &mut held_a, 8);
        assert_eq!(held_a.named, 6);
        // B finds the 6 (capped below its 120-token prompt's last token: 7 blocks).
        assert_eq!(kv.lookup(b, 119 / 16), Hit { blocks: 6, free: 0 });
        let held_b = kv.acquire(b, 6);
        assert!(kv.allocate(2));
        kv.release(a, held_a, 9, 8, false);
        assert_eq!(kv.free_blocks(), 100 - 8);
        kv.release(b, held_b, 8, 7, false);
        assert_eq!(kv.free_blocks(), 100);
        // Nobody holds them now, and they are still there, at the queue's tail.
        assert_eq!(kv.lookup(b, 100), Hit { blocks: 6, free: 6 });
        kv.check();
    }
}
