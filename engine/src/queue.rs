//! The future-event list.
//!
//! Events are ordered by the key `(time, seq)`, where `seq` grows by one with every
//! schedule (and reschedule) call. Events at the same instant therefore run in the
//! order they were scheduled (FIFO), and a run is reproducible to the event.
//!
//! Two implementations share one contract, [`EventQueue`]:
//! - [`HeapQueue`]: a 4-ary min-heap of small `(time, seq, slot)` keys, with
//!   payloads in a slot arena and lazy cancellation (a cancelled key stays in the heap
//!   and is skipped when it surfaces). The engine's default, chosen by the benchmarks
//!   in `benches/README.md`. Events [posted](EventQueue::post) without a handle skip
//!   the arena: they sit in a second heap with their payloads, and the two heaps'
//!   tops are compared on each pop.
//! - [`IndexedQueue`]: the `priority-queue` crate's indexed heap, which removes and
//!   re-prioritises keys in place.
//!
//! ```
//! use infersim_engine::{EventQueue, HeapQueue, SimTime};
//! let mut q = HeapQueue::new();
//! let t = SimTime::from_nanos(5);
//! q.push(t, "first");
//! let second = q.push(t, "second");
//! q.push(SimTime::from_nanos(1), "earliest");
//! assert_eq!(q.cancel(second), Some("second"));
//! let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|s| s.event)).collect();
//! assert_eq!(order, ["earliest", "first"]);
//! ```

use std::cmp::{Ordering, Reverse};

use priority_queue::PriorityQueue;
use rustc_hash::FxBuildHasher;

use crate::time::SimTime;

/// Handle of a scheduled event, for cancelling or rescheduling it.
///
/// A handle outlives its event harmlessly: once the event has run or been cancelled,
/// operations on the handle report that it is not pending. A [posted](EventQueue::post)
/// event's handle (seen only by event hooks) is never pending: it carries its sequence
/// number and nothing to cancel it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    slot: u32,
    seq: u64,
}

impl EventId {
    /// The scheduling sequence number: the FIFO tie-breaker among equal times.
    pub fn seq(self) -> u64 {
        self.seq
    }
}

/// An event taken from the queue.
#[derive(Debug, PartialEq)]
pub struct Scheduled<E> {
    /// When it is due.
    pub time: SimTime,
    /// Its handle (now stale).
    pub id: EventId,
    /// The payload.
    pub event: E,
}

/// The contract every future-event list meets.
pub trait EventQueue<E> {
    /// Schedules `event` at `time` and returns its handle.
    fn push(&mut self, time: SimTime, event: E) -> EventId;
    /// Schedules `event` at `time` for good: it cannot be cancelled, moved or looked up,
    /// which lets a queue keep it more cheaply. It takes its sequence number from the
    /// same counter as [`EventQueue::push`], so the order of events is the same either
    /// way.
    fn post(&mut self, time: SimTime, event: E) {
        self.push(time, event);
    }
    /// Schedules `event` at `time` for good, like [`EventQueue::post`], but after
    /// every event at that instant that was not itself posted last, whenever those are
    /// scheduled (events posted last keep FIFO order among themselves): for a round
    /// that must see everything that happens at its instant.
    fn post_last(&mut self, time: SimTime, event: E);
    /// Removes and returns the event with the smallest `(time, seq)`.
    fn pop(&mut self) -> Option<Scheduled<E>>;
    /// The time of the next event without removing it.
    fn peek_time(&mut self) -> Option<SimTime>;
    /// Removes a pending event and returns its payload; `None` if it is not pending.
    fn cancel(&mut self, id: EventId) -> Option<E>;
    /// Moves a pending event to `time`. It gets a fresh sequence number, so it runs
    /// after events already scheduled at that instant. Returns the new handle, or
    /// `None` if `id` is not pending.
    fn reschedule(&mut self, id: EventId, time: SimTime) -> Option<EventId>;
    /// The time a pending event is due, or `None` if it is not pending.
    fn time_of(&self, id: EventId) -> Option<SimTime>;
    /// Number of pending events.
    fn len(&self) -> usize;
    /// Whether no event is pending.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Payload storage shared by both queues: a slot per pending event, recycled through
/// a free list, so the ordered structure only moves 24-byte keys.
#[derive(Debug)]
struct Slots<E> {
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

#[derive(Debug)]
struct Slot<E> {
    /// Sequence number of the event that occupies (or last occupied) the slot.
    seq: u64,
    time: SimTime,
    event: Option<E>,
}

impl<E> Default for Slots<E> {
    fn default() -> Self {
        Slots { slots: Vec::new(), free: Vec::new(), next_seq: 0 }
    }
}

/// The bit of a sequence number that puts an event after every event without it at
/// the same instant ([`EventQueue::post_last`]); the counter never reaches it.
const LAST_AT_INSTANT: u64 = 1 << 63;

impl<E> Slots<E> {
    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Pending events: every slot not on the free list (a cancelled event's slot is
    /// freed at once; its stale heap key fails the seq check when it surfaces).
    fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    #[inline]
    fn insert(&mut self, time: SimTime, event: E) -> EventId {
        self.insert_seq(time, event, 0)
    }

    /// [`Slots::insert`] with `flag` or-ed into the sequence number.
    #[inline]
    fn insert_seq(&mut self, time: SimTime, event: E, flag: u64) -> EventId {
        let seq = self.next_seq() | flag;
        let slot = Slot { seq, time, event: Some(event) };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = slot;
                index
            }
            None => self.grow(slot),
        };
        EventId { slot: index, seq }
    }

    #[cold]
    fn grow(&mut self, slot: Slot<E>) -> u32 {
        let index =
            u32::try_from(self.slots.len()).expect("more than 2^32 pending events: the model is leaking events");
        self.slots.push(slot);
        index
    }

    /// The slot of a pending event, if `(slot, seq)` still names one.
    fn pending_mut(&mut self, slot: u32, seq: u64) -> Option<&mut Slot<E>> {
        self.slots.get_mut(slot as usize).filter(|s| s.seq == seq && s.event.is_some())
    }

    fn pending(&self, id: EventId) -> Option<&Slot<E>> {
        self.slots.get(id.slot as usize).filter(|s| s.seq == id.seq && s.event.is_some())
    }

    /// Takes the payload of a pending event and frees its slot.
    #[inline]
    fn take(&mut self, slot: u32, seq: u64) -> Option<(SimTime, E)> {
        let entry = self.pending_mut(slot, seq)?;
        let time = entry.time;
        let event = entry.event.take()?;
        self.free.push(slot);
        Some((time, event))
    }
}

/// Heap key: ordered so that `BinaryHeap` (a max-heap) pops the smallest `(time, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeapKey {
    time: SimTime,
    seq: u64,
    slot: u32,
}

impl Ord for HeapKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

impl PartialOrd for HeapKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `(time, seq)` as one number, smaller first: the order of every heap here.
#[inline(always)]
fn pack(time: SimTime, seq: u64) -> u128 {
    (u128::from(time.as_nanos()) << 64) | u128::from(seq)
}

/// The `(time, seq)` that [`pack`] packed.
#[inline(always)]
fn unpack(order: u128) -> (SimTime, u64) {
    (SimTime::from_nanos((order >> 64) as u64), order as u64)
}

impl HeapKey {
    /// `(time, seq)` as one number, smaller first.
    #[inline(always)]
    fn order(&self) -> u128 {
        pack(self.time, self.seq)
    }
}

/// What a [`QuaternaryHeap`] orders: `(time, seq)` as one number, smaller first.
trait Ordered {
    fn order(&self) -> u128;
}

impl Ordered for HeapKey {
    #[inline(always)]
    fn order(&self) -> u128 {
        HeapKey::order(self)
    }
}

/// A posted event: its order and its payload, kept together.
#[derive(Debug)]
struct Posted<E> {
    order: u128,
    event: E,
}

impl<E> Ordered for Posted<E> {
    #[inline(always)]
    fn order(&self) -> u128 {
        self.order
    }
}

/// A 4-ary min-heap: half the levels of a binary heap, and each level's four children
/// of a small key sit in one cache line. Sifts swap an entry down or up its path.
#[derive(Debug)]
struct QuaternaryHeap<T> {
    keys: Vec<T>,
}

impl<T> Default for QuaternaryHeap<T> {
    fn default() -> Self {
        QuaternaryHeap { keys: Vec::new() }
    }
}

impl<T: Ordered> QuaternaryHeap<T> {
    #[inline(always)]
    fn push(&mut self, key: T) {
        let order = key.order();
        let mut hole = self.keys.len();
        self.keys.push(key);
        while hole > 0 {
            let parent = (hole - 1) / 4;
            if order >= self.keys[parent].order() {
                break;
            }
            self.keys.swap(hole, parent);
            hole = parent;
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<T> {
        let last = self.keys.pop()?;
        if self.keys.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.keys[0], last);
        self.sift_down(0);
        Some(top)
    }

    /// Moves the entry at `hole` down until no child is smaller.
    #[inline]
    fn sift_down(&mut self, mut hole: usize) {
        let n = self.keys.len();
        let order = self.keys[hole].order();
        loop {
            let first = 4 * hole + 1;
            if first >= n {
                break;
            }
            let (child, child_order) = if first + 3 < n {
                // All four children: a tournament of pairs, which compiles to
                // conditional moves rather than branches.
                let k = &self.keys[first..first + 4];
                let (o0, o1, o2, o3) = (k[0].order(), k[1].order(), k[2].order(), k[3].order());
                let (a, oa) = if o1 < o0 { (first + 1, o1) } else { (first, o0) };
                let (b, ob) = if o3 < o2 { (first + 3, o3) } else { (first + 2, o2) };
                if ob < oa { (b, ob) } else { (a, oa) }
            } else {
                // One to three children (the last parent): unrolled, as a loop over
                // a range costs more than the comparisons in the small heaps of
                // queueing models.
                let k = &self.keys[first..n];
                let (mut child, mut child_order) = (first, k[0].order());
                if let Some(o) = k.get(1).map(T::order).filter(|&o| o < child_order) {
                    (child, child_order) = (first + 1, o);
                }
                if let Some(o) = k.get(2).map(T::order).filter(|&o| o < child_order) {
                    (child, child_order) = (first + 2, o);
                }
                (child, child_order)
            };
            if child_order >= order {
                break;
            }
            self.keys.swap(hole, child);
            hole = child;
        }
    }

    fn peek(&self) -> Option<&T> {
        self.keys.first()
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Keeps the keys `keep` accepts and restores the heap order in linear time
    /// (Floyd: sift down every parent, last first).
    fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.keys.retain(keep);
        for parent in (0..self.keys.len().div_ceil(4)).rev() {
            self.sift_down(parent);
        }
    }
}

/// A 4-ary heap of keys with lazy cancellation; see the [module docs](self).
#[derive(Debug)]
pub struct HeapQueue<E> {
    heap: QuaternaryHeap<HeapKey>,
    posted: QuaternaryHeap<Posted<E>>,
    slots: Slots<E>,
}

impl<E> Default for HeapQueue<E> {
    fn default() -> Self {
        HeapQueue { heap: QuaternaryHeap::default(), posted: QuaternaryHeap::default(), slots: Slots::default() }
    }
}

/// The slot a posted event's handle names: no slot at all.
const POSTED_SLOT: u32 = u32::MAX;

impl<E> HeapQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops keys of cancelled events from the top, so the top is a pending event.
    fn skip_stale(&mut self) {
        while let Some(top) = self.heap.peek() {
            if self.slots.pending(EventId { slot: top.slot, seq: top.seq }).is_some() {
                return;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from pending keys once stale keys outnumber them, so heavy
    /// cancellation cannot grow the heap without bound.
    fn compact_if_needed(&mut self) {
        if self.heap.len() > 2 * self.slots.live() + 64 {
            let slots = &self.slots;
            self.heap.retain(|k| slots.pending(EventId { slot: k.slot, seq: k.seq }).is_some());
        }
    }
}

impl<E> EventQueue<E> for HeapQueue<E> {
    #[inline]
    fn push(&mut self, time: SimTime, event: E) -> EventId {
        let id = self.slots.insert(time, event);
        self.heap.push(HeapKey { time, seq: id.seq, slot: id.slot });
        id
    }

    #[inline(always)]
    fn post(&mut self, time: SimTime, event: E) {
        let seq = self.slots.next_seq();
        self.posted.push(Posted { order: pack(time, seq), event });
    }

    fn post_last(&mut self, time: SimTime, event: E) {
        let seq = self.slots.next_seq() | LAST_AT_INSTANT;
        self.posted.push(Posted { order: pack(time, seq), event });
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<Scheduled<E>> {
        loop {
            let posted_first = match (self.heap.peek(), self.posted.peek()) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(key), Some(posted)) => posted.order < key.order(),
            };
            if posted_first {
                let Posted { order, event } = self.posted.pop().expect("peeked");
                let (time, seq) = unpack(order);
                return Some(Scheduled { time, id: EventId { slot: POSTED_SLOT, seq }, event });
            }
            let key = self.heap.pop().expect("peeked");
            if let Some((time, event)) = self.slots.take(key.slot, key.seq) {
                return Some(Scheduled { time, id: EventId { slot: key.slot, seq: key.seq }, event });
            }
        }
    }

    fn peek_time(&mut self) -> Option<SimTime> {
        self.skip_stale();
        let posted = self.posted.peek().map(|p| unpack(p.order).0);
        match (self.heap.peek().map(|k| k.time), posted) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn cancel(&mut self, id: EventId) -> Option<E> {
        let (_, event) = self.slots.take(id.slot, id.seq)?;
        self.compact_if_needed();
        Some(event)
    }

    fn reschedule(&mut self, id: EventId, time: SimTime) -> Option<EventId> {
        let seq = self.slots.next_seq();
        let slot = self.slots.pending_mut(id.slot, id.seq)?;
        // The old key now names a stale seq and is skipped when it surfaces.
        slot.seq = seq;
        slot.time = time;
        self.heap.push(HeapKey { time, seq, slot: id.slot });
        self.compact_if_needed();
        Some(EventId { slot: id.slot, seq })
    }

    fn time_of(&self, id: EventId) -> Option<SimTime> {
        self.slots.pending(id).map(|s| s.time)
    }

    fn len(&self) -> usize {
        self.slots.live() + self.posted.len()
    }
}

/// The `priority-queue` crate's indexed binary heap: cancellation and rescheduling
/// act in place, with no stale keys left behind.
pub struct IndexedQueue<E> {
    queue: PriorityQueue<u32, Reverse<(SimTime, u64)>, FxBuildHasher>,
    slots: Slots<E>,
}

impl<E> std::fmt::Debug for IndexedQueue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedQueue").field("pending", &self.slots.live()).finish()
    }
}

impl<E> Default for IndexedQueue<E> {
    fn default() -> Self {
        IndexedQueue { queue: PriorityQueue::with_default_hasher(), slots: Slots::default() }
    }
}

impl<E> IndexedQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<E> EventQueue<E> for IndexedQueue<E> {
    fn push(&mut self, time: SimTime, event: E) -> EventId {
        let id = self.slots.insert(time, event);
        self.queue.push(id.slot, Reverse((time, id.seq)));
        id
    }

    fn post_last(&mut self, time: SimTime, event: E) {
        let id = self.slots.insert_seq(time, event, LAST_AT_INSTANT);
        self.queue.push(id.slot, Reverse((time, id.seq)));
    }

    fn pop(&mut self) -> Option<Scheduled<E>> {
        let (slot, Reverse((_, seq))) = self.queue.pop()?;
        let (time, event) =
            self.slots.take(slot, seq).expect("indexed queue and slot arena disagree: broken invariant");
        Some(Scheduled { time, id: EventId { slot, seq }, event })
    }

    fn peek_time(&mut self) -> Option<SimTime> {
        self.queue.peek().map(|(_, Reverse((t, _)))| *t)
    }

    fn cancel(&mut self, id: EventId) -> Option<E> {
        let (_, event) = self.slots.take(id.slot, id.seq)?;
        self.queue.remove(&id.slot);
        Some(event)
    }

    fn reschedule(&mut self, id: EventId, time: SimTime) -> Option<EventId> {
        let seq = self.slots.next_seq();
        let slot = self.slots.pending_mut(id.slot, id.seq)?;
        slot.seq = seq;
        slot.time = time;
        self.queue.change_priority(&id.slot, Reverse((time, seq)));
        Some(EventId { slot: id.slot, seq })
    }

    fn time_of(&self, id: EventId) -> Option<SimTime> {
        self.slots.pending(id).map(|s| s.time)
    }

    fn len(&self) -> usize {
        self.slots.live()
    }
}

/// Which future-event list a [`Simulation`](crate::Simulation) uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueKind {
    /// [`HeapQueue`]: the default, fastest in the benchmarks.
    #[default]
    BinaryHeap,
    /// [`IndexedQueue`]: the `priority-queue` crate.
    PriorityQueue,
}

/// The future-event list of a simulation: a closed set of implementations, so the
/// handler's context dispatches with a predictable branch that inlines, rather than
/// through a vtable.
#[derive(Debug)]
pub enum FutureEvents<E> {
    /// See [`HeapQueue`].
    Heap(HeapQueue<E>),
    /// See [`IndexedQueue`].
    Indexed(IndexedQueue<E>),
}

impl<E> FutureEvents<E> {
    /// An empty list of the given kind.
    pub fn new(kind: QueueKind) -> Self {
        match kind {
            QueueKind::BinaryHeap => FutureEvents::Heap(HeapQueue::new()),
            QueueKind::PriorityQueue => FutureEvents::Indexed(IndexedQueue::new()),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $body:expr) => {
        match $self {
            FutureEvents::Heap($q) => $body,
            FutureEvents::Indexed($q) => $body,
        }
    };
}

impl<E> EventQueue<E> for FutureEvents<E> {
    #[inline]
    fn push(&mut self, time: SimTime, event: E) -> EventId {
        dispatch!(self, q => q.push(time, event))
    }
    #[inline(always)]
    fn post(&mut self, time: SimTime, event: E) {
        dispatch!(self, q => q.post(time, event))
    }
    fn post_last(&mut self, time: SimTime, event: E) {
        dispatch!(self, q => q.post_last(time, event))
    }
    #[inline(always)]
    fn pop(&mut self) -> Option<Scheduled<E>> {
        dispatch!(self, q => q.pop())
    }
    #[inline]
    fn peek_time(&mut self) -> Option<SimTime> {
        dispatch!(self, q => q.peek_time())
    }
    fn cancel(&mut self, id: EventId) -> Option<E> {
        dispatch!(self, q => q.cancel(id))
    }
    fn reschedule(&mut self, id: EventId, time: SimTime) -> Option<EventId> {
        dispatch!(self, q => q.reschedule(id, time))
    }
    fn time_of(&self, id: EventId) -> Option<SimTime> {
        dispatch!(self, q => q.time_of(id))
    }
    fn len(&self) -> usize {
        dispatch!(self, q => q.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> SimTime {
        SimTime::from_nanos(n)
    }

    fn drain<Q: EventQueue<u32>>(q: &mut Q) -> Vec<(u64, u32)> {
        std::iter::from_fn(|| q.pop().map(|s| (s.time.as_nanos(), s.event))).collect()
    }

    fn contract<Q: EventQueue<u32> + Default>() {
        let mut q = Q::default();
        let a = q.push(t(10), 1);
        q.push(t(5), 2);
        let c = q.push(t(10), 3);
        q.push(t(10), 4);
        assert_eq!(q.len(), 4);
        assert_eq!(q.time_of(c), Some(t(10)));
        // Rescheduling to the same time moves the event behind its peers (fresh seq).
        let a2 = q.reschedule(a, t(10)).unwrap();
        assert_eq!(q.reschedule(a, t(1)), None, "the old handle is stale");
        assert_eq!(q.cancel(c), Some(3));
        assert_eq!(q.cancel(c), None);
        assert_eq!(q.peek_time(), Some(t(5)));
        assert_eq!(drain(&mut q), vec![(5, 2), (10, 4), (10, 1)]);
        assert_eq!(q.cancel(a2), None, "a handled event cannot be cancelled");
        assert!(q.is_empty());
        assert_eq!(q.peek_time(), None);
    }

    #[test]
    fn heap_queue_meets_the_contract() {
        contract::<HeapQueue<u32>>();
    }

    #[test]
    fn indexed_queue_meets_the_contract() {
        contract::<IndexedQueue<u32>>();
    }

    #[test]
    fn heap_queue_compacts_under_heavy_cancellation() {
        let mut q = HeapQueue::new();
        for i in 0..10_000u32 {
            let id = q.push(t(u64::from(i)), i);
            q.cancel(id);
        }
        assert!(q.heap.len() <= 64 + 1, "stale keys were not compacted: {}", q.heap.len());
        assert!(q.is_empty());
    }

    #[test]
    fn slot_reuse_never_revives_a_stale_handle() {
        let mut q = HeapQueue::new();
        let old = q.push(t(1), 1);
        assert_eq!(q.pop().map(|s| s.event), Some(1));
        let new = q.push(t(2), 2); // reuses the slot of `old`
        assert_eq!(q.cancel(old), None);
        assert_eq!(q.time_of(new), Some(t(2)));
    }

    /// Posted and pushed events interleave in one `(time, seq)` order, whatever is
    /// cancelled; a posted event's handle is never pending.
    fn posted_contract<Q: EventQueue<u32> + Default>() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let mut q = Q::default();
        // (time, seq, event, cancelled), as scheduled.
        let mut expected: Vec<(u64, u64, u32, bool)> = Vec::new();
        let mut handles = Vec::new();
        let (mut now, mut popped) = (0, Vec::new());
        for event in 0..5_000_u32 {
            let time = now + rng.random_range(0..20_u64);
            if rng.random_bool(0.5) {
                q.post(t(time), event);
            } else {
                handles.push((expected.len(), q.push(t(time), event)));
            }
            expected.push((time, expected.len() as u64, event, false));
            if rng.random_bool(0.2) && !handles.is_empty() {
                let (at, id) = handles.swap_remove(rng.random_range(0..handles.len()));
                if q.cancel(id).is_some() {
                    expected[at].3 = true;
                }
            }
            if rng.random_bool(0.4)
                && let Some(s) = q.pop()
            {
                assert_eq!(q.time_of(s.id), None);
                assert_eq!(q.cancel(s.id), None);
                now = s.time.as_nanos();
                popped.push((now, s.id.seq(), s.event));
            }
        }
        while let Some(s) = q.pop() {
            popped.push((s.time.as_nanos(), s.id.seq(), s.event));
        }
        // Each pop took the smallest pending key, so the pops are in key order and
        // are exactly the events never cancelled.
        assert!(popped.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        let mut kept: Vec<_> = expected.iter().filter(|e| !e.3).map(|e| (e.0, e.1, e.2)).collect();
        kept.sort_unstable();
        assert_eq!(popped, kept);
        assert!(q.is_empty());
    }

    /// An event posted last runs after every other event at its instant, even those
    /// scheduled after it; events posted last run FIFO among themselves.
    fn last_contract<Q: EventQueue<u32> + Default>() {
        let mut q = Q::default();
        q.post_last(t(10), 1);
        q.push(t(10), 2);
        q.post_last(t(10), 3);
        q.post(t(10), 4);
        q.push(t(11), 5);
        q.push(t(9), 6);
        assert_eq!(drain(&mut q), vec![(9, 6), (10, 2), (10, 4), (10, 1), (10, 3), (11, 5)]);
    }

    #[test]
    fn events_posted_last_run_after_their_instant() {
        last_contract::<HeapQueue<u32>>();
        last_contract::<IndexedQueue<u32>>();
    }

    #[test]
    fn posted_events_share_the_order_of_scheduled_ones() {
        posted_contract::<HeapQueue<u32>>();
        posted_contract::<IndexedQueue<u32>>();
    }
}
