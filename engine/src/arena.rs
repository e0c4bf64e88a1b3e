//! Agents live in arenas addressed by typed ids.
//!
//! An [`Id<T>`] is a `u32` index that only indexes an `Arena<T>`: passing a GPU id
//! where a request id is expected does not compile. Ids are `Copy`, small enough for
//! event payloads, and `Send` whatever `T` is.
//!
//! ```
//! use infersim_engine::{Arena, Id};
//! struct Gpu { busy: bool }
//! let mut gpus = Arena::new();
//! let g: Id<Gpu> = gpus.push(Gpu { busy: false });
//! gpus[g].busy = true;
//! assert!(gpus[g].busy);
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// Typed index into an [`Arena<T>`].
pub struct Id<T> {
    index: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    /// The id of the `index`-th element.
    pub const fn from_index(index: u32) -> Self {
        Id { index, _marker: PhantomData }
    }

    /// The position in the arena.
    pub const fn index(self) -> u32 {
        self.index
    }
}

// Manual impls: derives would demand the same traits of `T`.
impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Id<T> {}
impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<T> Eq for Id<T> {}
impl<T> PartialOrd for Id<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Id<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index.cmp(&other.index)
    }
}
impl<T> Hash for Id<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}
impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.index)
    }
}

/// A growable store of agents of one kind.
#[derive(Clone, Debug)]
pub struct Arena<T> {
    items: Vec<T>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena { items: Vec::new() }
    }
}

impl<T> Arena<T> {
    /// An empty arena.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty arena with room for `n` agents.
    pub fn with_capacity(n: usize) -> Self {
        Arena { items: Vec::with_capacity(n) }
    }

    /// Adds an agent and returns its id.
    pub fn push(&mut self, item: T) -> Id<T> {
        let index = u32::try_from(self.items.len()).expect("arena holds at most 2^32 agents");
        self.items.push(item);
        Id::from_index(index)
    }

    /// The agent with id `id`, if it exists.
    pub fn get(&self, id: Id<T>) -> Option<&T> {
        self.items.get(id.index as usize)
    }

    /// The agent with id `id`, mutably, if it exists.
    pub fn get_mut(&mut self, id: Id<T>) -> Option<&mut T> {
        self.items.get_mut(id.index as usize)
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Agents with their ids, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (Id<T>, &T)> {
        self.items.iter().enumerate().map(|(i, t)| (Id::from_index(i as u32), t))
    }

    /// All ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = Id<T>> + use<T> {
        (0..self.items.len() as u32).map(Id::from_index)
    }
}

impl<T> Index<Id<T>> for Arena<T> {
    type Output = T;
    fn index(&self, id: Id<T>) -> &T {
        &self.items[id.index as usize]
    }
}

impl<T> IndexMut<Id<T>> for Arena<T> {
    fn index_mut(&mut self, id: Id<T>) -> &mut T {
        &mut self.items[id.index as usize]
    }
}

/// A store of short-lived agents (requests, jobs) whose slots are reused: memory
/// follows the number alive at once, not the number ever created, so a run with
/// millions of requests stays small.
///
/// A removed agent's id may be handed out again, so an id must not outlive its agent:
/// using one after [`Slab::remove`] and before the slot is reused panics (a broken
/// invariant, not a recoverable error). Reuse is last-freed first, which is
/// deterministic.
///
/// ```
/// use infersim_engine::Slab;
/// let mut requests = Slab::new();
/// let a = requests.insert("a");
/// let b = requests.insert("b");
/// assert_eq!(requests.remove(a), "a");
/// let c = requests.insert("c"); // reuses a's slot
/// assert_eq!((c, requests[b], requests.len()), (a, "b", 2));
/// ```
#[derive(Clone, Debug)]
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent and returns its id, reusing the most recently freed slot.
    pub fn insert(&mut self, item: T) -> Id<T> {
        match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(item);
                Id::from_index(index)
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("a slab holds at most 2^32 live agents");
                self.slots.push(Some(item));
                Id::from_index(index)
            }
        }
    }

    /// Removes an agent; its id becomes free for reuse.
    ///
    /// # Panics
    /// If the slot is empty: the id outlived its agent.
    pub fn remove(&mut self, id: Id<T>) -> T {
        let item = self.slots[id.index as usize].take().unwrap_or_else(|| panic!("slab id {id:?} used after removal"));
        self.free.push(id.index);
        item
    }

    /// The agent in `id`'s slot, if the slot holds one (which may be a later agent
    /// that reused the slot: keep an identity in the agent to tell them apart).
    pub fn get(&self, id: Id<T>) -> Option<&T> {
        self.slots.get(id.index as usize).and_then(Option::as_ref)
    }

    /// Agents alive now.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no agent is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every agent, in slot order, leaving the slab empty.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.free.clear();
        self.slots.drain(..).flatten()
    }

    /// Slots allocated: the most agents ever alive at once.
    pub fn capacity_used(&self) -> usize {
        self.slots.len()
    }
}

impl<T> Index<Id<T>> for Slab<T> {
    type Output = T;
    fn index(&self, id: Id<T>) -> &T {
        self.slots[id.index as usize].as_ref().unwrap_or_else(|| panic!("slab id {id:?} used after removal"))
    }
}

impl<T> IndexMut<Id<T>> for Slab<T> {
    fn index_mut(&mut self, id: Id<T>) -> &mut T {
        self.slots[id.index as usize].as_mut().unwrap_or_else(|| panic!("slab id {id:?} used after removal"))
    }
}

#[cfg(test)]
mod slab_tests {
    use super::*;

    #[test]
    fn drain_takes_the_live_agents_in_slot_order_and_empties_the_slab() {
        let mut slab = Slab::new();
        let ids: Vec<_> = (0..4).map(|i| slab.insert(i)).collect();
        slab.remove(ids[1]);
        assert_eq!(slab.drain().collect::<Vec<_>>(), [0, 2, 3]);
        assert!(slab.is_empty());
        assert_eq!((slab.insert(9), slab.capacity_used()), (Id::from_index(0), 1));
        assert_eq!(slab.get(ids[1]), None);
    }

    #[test]
    fn slots_are_reused_and_memory_follows_the_live_count() {
        let mut slab = Slab::new();
        for round in 0..1000u32 {
            let ids: Vec<_> = (0..3).map(|k| slab.insert(round * 3 + k)).collect();
            for id in ids {
                slab.remove(id);
            }
        }
        assert_eq!((slab.len(), slab.capacity_used()), (0, 3));
    }

    #[test]
    #[should_panic(expected = "used after removal")]
    fn a_removed_id_cannot_be_read() {
        let mut slab = Slab::new();
        let id = slab.insert(1);
        slab.remove(id);
        let _ = slab[id];
    }
}
