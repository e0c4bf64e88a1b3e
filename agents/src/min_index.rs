//! The argmin of a set of keys that change one at a time: a tournament tree, so a
//! router that sends each request to the least-loaded of N nodes pays O(log N) per
//! change and O(1) per choice instead of scanning all N per request.
//!
//! ```
//! use infersim_agents::min_index::MinIndex;
//! let mut loads = MinIndex::new(4);
//! loads.set(0, 3);
//! loads.set(2, 1);
//! loads.set(3, 1);
//! // Node 1 still has 0; among equal keys the lowest index wins.
//! assert_eq!(loads.argmin(), Some(1));
//! loads.set(1, 5);
//! assert_eq!(loads.argmin(), Some(2));
//! ```

/// Keys of `len` items (all 0 at first) with their minimum kept current. Ties go to the
/// lowest index, as `iter().min_by_key(|(i, k)| (k, i))` would choose.
/// `Default` is the index of no items, which allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct MinIndex {
    len: usize,
    /// Leaves start at `leaves`; node `i`'s children are `2i` and `2i + 1`. Each node
    /// holds the winner of its subtree as `key << 32 | index`: one integer comparison
    /// orders by key, then index.
    tree: Vec<u64>,
    leaves: usize,
}

impl MinIndex {
    /// `len` items, every key 0.
    pub fn new(len: usize) -> MinIndex {
        let leaves = len.max(1).next_power_of_two();
        assert!(u32::try_from(len).is_ok_and(|n| n < u32::MAX), "fewer than 2^32 - 1 items");
        // Padding leaves never win: the largest key.
        let mut tree = vec![u64::MAX; 2 * leaves];
        for i in 0..len {
            tree[leaves + i] = i as u64;
        }
        for i in (1..leaves).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        MinIndex { len, tree, leaves }
    }

    /// `len` items, every key `key` (below 2^32 - 1).
    pub fn filled(len: usize, key: u64) -> MinIndex {
        let mut index = MinIndex::new(len);
        for i in 0..len {
            index.set(i, key);
        }
        index
    }

    /// Sets item `i`'s key (below 2^32 - 1).
    #[inline]
    pub fn set(&mut self, i: usize, key: u64) {
        assert!(i < self.len, "item {i} of {}", self.len);
        assert!(key < u64::from(u32::MAX), "key {key} must be below 2^32 - 1");
        let mut node = self.leaves + i;
        let entry = key << 32 | i as u64;
        if self.tree[node] == entry {
            return;
        }
        self.tree[node] = entry;
        while node > 1 {
            node /= 2;
            let winner = self.tree[2 * node].min(self.tree[2 * node + 1]);
            if self.tree[node] == winner {
                break;
            }
            self.tree[node] = winner;
        }
    }

    /// Item `i`'s key.
    pub fn key(&self, i: usize) -> u64 {
        self.tree[self.leaves + i] >> 32
    }

    /// The item with the smallest key (lowest index among equals); `None` when empty.
    pub fn argmin(&self) -> Option<usize> {
        (self.len > 0).then(|| (self.tree[1] & u64::from(u32::MAX)) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infersim_engine::{StreamId, derive_stream};
    use rand::RngExt;

    #[test]
    fn filled_starts_every_key_at_the_value() {
        let mut index = MinIndex::filled(5, 7);
        assert_eq!((0..5).map(|i| index.key(i)).collect::<Vec<_>>(), [7; 5]);
        assert_eq!(index.argmin(), Some(0));
        index.set(3, 2);
        assert_eq!(index.argmin(), Some(3));
        index.set(3, 9);
        assert_eq!(index.argmin(), Some(0));
    }

    #[test]
    fn agrees_with_a_scan() {
        let mut rng = derive_stream(11, 0, StreamId(0));
        for len in [1usize, 2, 3, 5, 8, 13, 125] {
            let mut index = MinIndex::new(len);
            let mut keys = vec![0u64; len];
            for _ in 0..2_000 {
                let i = rng.random_range(0..len);
                keys[i] = rng.random_range(0..6);
                index.set(i, keys[i]);
                let scan = keys.iter().enumerate().min_by_key(|(i, k)| (**k, *i)).map(|(i, _)| i);
                assert_eq!(index.argmin(), scan, "len {len}");
                assert_eq!(index.key(i), keys[i]);
            }
        }
        assert_eq!(MinIndex::new(0).argmin(), None);
    }
}
