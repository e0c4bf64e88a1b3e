//! A paged KV cache with prefix caching, as vLLM's block pool keeps it: blocks of
//! `block_size` tokens; freed blocks join the tail of an LRU free queue and keep their
//! contents until they are taken from its head. A preempted sequence's blocks are freed
//! last block first, so eviction eats its tail and what survives is a prefix, which the
//! sequence finds again when it is readmitted. Sequences share no prefixes with each
//! other (traces carry no token ids), so a finished sequence's blocks are plain free
//! blocks.
//!
//! The free queue is kept as runs of blocks (a run per preempted sequence, and runs of
//! anonymous blocks), so every operation costs the number of runs, not of blocks.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    owner: Option<u64>,
    blocks: u32,
}

/// The block pool of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCache {
    block_size: u32,
    usable_blocks: u32,
    free_blocks: u32,
    queue: VecDeque<Run>,
}

impl KvCache {
    /// A pool of `num_gpu_blocks` blocks, one of them reserved (vLLM's null block).
    pub fn new(num_gpu_blocks: u32, block_size: u32) -> KvCache {
        let usable_blocks = num_gpu_blocks.saturating_sub(1);
        let mut queue = VecDeque::new();
        if usable_blocks > 0 {
            queue.push_back(Run { owner: None, blocks: usable_blocks });
        }
        KvCache { block_size, usable_blocks, free_blocks: usable_blocks, queue }
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
            let head = self.queue.front_mut().expect("free blocks are in the queue");
            if head.blocks > left {
                head.blocks -= left;
                left = 0;
            } else {
                left -= head.blocks;
                self.queue.pop_front();
            }
        }
        true
    }

    /// Frees a sequence's blocks: `cached` full blocks that keep `owner`'s prefix (a
    /// preempted sequence) and `plain` blocks that keep nothing of use.
    pub fn release(&mut self, owner: u64, cached: u32, plain: u32) {
        self.push(None, plain);
        self.push(Some(owner), cached);
        self.free_blocks += cached + plain;
    }

    fn push(&mut self, owner: Option<u64>, blocks: u32) {
        if blocks == 0 {
            return;
        }
        match self.queue.back_mut() {
            Some(last) if owner.is_none() && last.owner.is_none() => last.blocks += blocks,
            _ => self.queue.push_back(Run { owner, blocks }),
        }
    }

    /// Blocks of `owner`'s prefix still cached in the free queue.
    pub(crate) fn cached_blocks(&self, owner: u64) -> u32 {
        self.queue.iter().filter(|r| r.owner == Some(owner)).map(|r| r.blocks).sum()
    }

    /// Takes `owner`'s cached blocks (up to `blocks` of them) out of the free queue for
    /// it to hold again; the rest of its cache becomes plain free blocks.
    pub(crate) fn reuse_cached(&mut self, owner: u64, blocks: u32) {
        let mut taken = 0;
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].owner == Some(owner) {
                let run = self.queue[i].blocks;
                let take = run.min(blocks - taken);
                taken += take;
                if take == run {
                    self.queue.remove(i);
                    continue;
                }
                self.queue[i] = Run { owner: None, blocks: run - take };
            }
            i += 1;
        }
        self.free_blocks -= taken;
    }

    /// Forgets `owner`'s cache (the sequence has finished or left): its blocks stay free.
    pub(crate) fn forget(&mut self, owner: u64) {
        for run in self.queue.iter_mut().filter(|r| r.owner == Some(owner)) {
            run.owner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_is_reserved_and_allocation_is_all_or_nothing() {
        let mut kv = KvCache::new(11, 16);
        assert_eq!((kv.usable_blocks(), kv.free_blocks()), (10, 10));
        assert!(kv.allocate(7));
        assert!(!kv.allocate(4));
        assert_eq!(kv.free_blocks(), 3);
        assert!((kv.usage() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn eviction_eats_a_preempted_prefix_from_its_tail() {
        let mut kv = KvCache::new(11, 16);
        assert!(kv.allocate(10));
        kv.release(1, 6, 1); // a preempted sequence: 6 full blocks cached, 1 partial
        assert_eq!((kv.free_blocks(), kv.cached_blocks(1)), (7, 6));
        assert!(kv.allocate(3)); // takes the plain block, then 2 of the cached ones
        assert_eq!(kv.cached_blocks(1), 4);
        kv.reuse_cached(1, 4);
        assert_eq!((kv.free_blocks(), kv.cached_blocks(1)), (0, 0));
    }
}
