//! The points a `[sweep]` table spans, computed from a point's index rather than
//! listed: a sweep of millions of points costs the memory of its value lists.
//!
//! Keys are in alphabetical order; point `p` takes, for each key, the value at the
//! digit of `p` written in mixed radix (the list lengths), the last key varying
//! fastest.
//!
//! ```
//! use infersim::sweep::SweepGrid;
//! use toml::Value;
//! let grid = SweepGrid::new(vec![
//!     ("a".into(), vec![Value::Integer(1), Value::Integer(2)]),
//!     ("b".into(), vec![Value::from("x"), Value::from("y"), Value::from("z")]),
//! ]);
//! assert_eq!(grid.len(), Some(6));
//! assert_eq!(grid.params(4), vec![Value::Integer(2), Value::from("y")]);
//! ```

use toml::Value;

/// Swept keys and their values (TOML values in a scenario, JSON in a manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepGrid<V = Value> {
    keys: Vec<String>,
    values: Vec<Vec<V>>,
}

impl<V> Default for SweepGrid<V> {
    fn default() -> Self {
        SweepGrid { keys: Vec::new(), values: Vec::new() }
    }
}

impl<V: Clone> SweepGrid<V> {
    /// The grid of `(key, values)` pairs, in the order given (every list non-empty).
    pub fn new(entries: Vec<(String, Vec<V>)>) -> SweepGrid<V> {
        debug_assert!(entries.iter().all(|(_, v)| !v.is_empty()), "a swept key has values");
        let (keys, values) = entries.into_iter().unzip();
        SweepGrid { keys, values }
    }

    /// No sweep: one point.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The swept keys, in order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Key `k`'s values.
    pub fn values(&self, k: usize) -> &[V] {
        &self.values[k]
    }

    /// (key, values) pairs.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Vec<V>)> {
        self.keys.iter().zip(&self.values)
    }

    /// Points, or `None` when there are more than a 64-bit count holds.
    pub fn len(&self) -> Option<u64> {
        self.values.iter().try_fold(1u64, |n, v| n.checked_mul(v.len() as u64))
    }

    /// Key `k`'s value at `point`.
    pub fn value(&self, point: u64, k: usize) -> &V {
        let below: u64 = self.values[k + 1..].iter().map(|v| v.len() as u64).product();
        let values = &self.values[k];
        &values[((point / below) % values.len() as u64) as usize]
    }

    /// Every key's value at `point`, in key order.
    pub fn params(&self, point: u64) -> Vec<V> {
        (0..self.keys.len()).map(|k| self.value(point, k).clone()).collect()
    }

    /// Drops `key` from the sweep (a `--set` pins it); returns whether it was swept.
    pub fn pin(&mut self, key: &str) -> bool {
        match self.keys.iter().position(|k| k == key) {
            Some(i) => {
                self.keys.remove(i);
                self.values.remove(i);
                true
            }
            None => false,
        }
    }

    /// The points that between them take every value of every key at least once: the
    /// first point, then each other value of each key with the other keys at their
    /// first value. Checking these finds any value that is bad on its own.
    pub fn covering_points(&self) -> Vec<u64> {
        let mut points = vec![0];
        for k in 0..self.keys.len() {
            let below: u64 = self.values[k + 1..].iter().map(|v| v.len() as u64).product();
            points.extend((1..self.values[k].len() as u64).map(|i| i * below));
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_mixed_radix_with_the_last_key_fastest() {
        let ints = |n: i64| (0..n).map(Value::Integer).collect::<Vec<_>>();
        let grid = SweepGrid::new(vec![("a".into(), ints(2)), ("b".into(), ints(3)), ("c".into(), ints(4))]);
        assert_eq!(grid.len(), Some(24));
        let all: Vec<Vec<Value>> = (0..24).map(|p| grid.params(p)).collect();
        let mut expected = Vec::new();
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    expected.push(vec![Value::Integer(a), Value::Integer(b), Value::Integer(c)]);
                }
            }
        }
        assert_eq!(all, expected);
        let covering = grid.covering_points();
        assert_eq!(covering.len(), 1 + 1 + 2 + 3);
        for k in 0..3 {
            let seen: std::collections::BTreeSet<i64> =
                covering.iter().map(|&p| grid.value(p, k).as_integer().unwrap()).collect();
            assert_eq!(seen.len(), grid.values(k).len(), "every value of key {k} is covered");
        }
        // Fifty million points cost three short lists.
        let big = SweepGrid::new(vec![("x".into(), ints(5000)), ("y".into(), ints(10_000))]);
        assert_eq!(big.len(), Some(50_000_000));
        assert_eq!(big.params(49_999_999), vec![Value::Integer(4999), Value::Integer(9999)]);
        let none = SweepGrid::<Value>::default();
        assert_eq!((none.len(), none.params(0)), (Some(1), vec![]));
    }
}
