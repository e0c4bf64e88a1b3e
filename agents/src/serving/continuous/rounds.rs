//! The router's rounds (`serving.routing_interval_s` > 0): instead of routing each
//! request the moment it arrives, the router routes in rounds at the multiples of the
//! interval. A request that arrives between rounds (a new request, a retry after its
//! replica failed, a prefilled request bound for the decode pool) waits for the next
//! round; a round runs after everything else that happens at its instant and routes
//! its requests in the order they arrived, on the replicas as they are then. Its wait
//! is part of the request's TTFT and counts towards its timeout.
//!
//! Between two rounds nothing passes between replicas: each runs on what it was sent
//! at the last round, which is what splitting one replication's replicas between
//! threads would need (measured in a prototype, not built: benches/README.md). With an
//! interval of 0 (the default) every request is routed as it arrives.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration, SimTime};

use super::{LlmEvent, LlmRequest, LlmServing, NewRequest};
use crate::llm::Sequence;
use crate::llm::kv::Chain;
use crate::requests::{RequestOutcome, RequestRecord};
use crate::serving::ServingSample;

/// What waits for the router's next round.
pub(super) enum ToRoute {
    /// A request that has just arrived.
    New(Id<LlmRequest>, NewRequest),
    /// A prefilled request for its decode pool.
    Decode(Id<LlmRequest>),
    /// A request whose replica `failed` failed, with its sequence as it stood there.
    Retry { seq: Sequence<Id<LlmRequest>>, chain: Option<Chain>, failed: usize },
}

impl ToRoute {
    fn request(&self) -> Id<LlmRequest> {
        match self {
            ToRoute::New(id, _) | ToRoute::Decode(id) => *id,
            ToRoute::Retry { seq, .. } => seq.key,
        }
    }
}

/// The requests waiting for the next round, and when it is (none while none wait).
#[derive(Default)]
pub(super) struct Rounds {
    waiting: Vec<ToRoute>,
    next: Option<SimTime>,
}

/// The first multiple of `every` at or after `now`.
fn next_round(now: SimTime, every: SimDuration) -> Result<SimTime, ScheduleError> {
    let every_ns = every.as_nanos().max(1);
    now.as_nanos().div_ceil(every_ns).checked_mul(every_ns).map(SimTime::from_nanos).ok_or(ScheduleError::Overflow)
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Holds `item` for the router's next round, which is posted if it is not yet.
    pub(super) fn wait_for_round(
        &mut self,
        item: ToRoute,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let every = self.round_every.expect("rounds only with an interval");
        self.requests[item.request()].waiting_for_round = true;
        self.rounds.waiting.push(item);
        if self.rounds.next.is_none() {
            let at = next_round(ctx.now(), every)?;
            self.rounds.next = Some(at);
            ctx.post_last(at, LlmEvent::Round)?;
        }
        Ok(())
    }

    /// The router's round: routes every request waiting, in the order they came.
    pub(super) fn on_round(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        self.rounds.next = None;
        let waiting = std::mem::take(&mut self.rounds.waiting);
        for item in waiting {
            self.requests[item.request()].waiting_for_round = false;
            match item {
                ToRoute::New(id, new) => self.send_new(id, new, ctx)?,
                ToRoute::Decode(id) => self.send_to_decode(id, ctx)?,
                ToRoute::Retry { seq, chain, failed } => self.retry(seq, chain, failed, ctx)?,
            }
        }
        Ok(())
    }

    /// A request waiting for the round reached its timeout: it leaves the router's
    /// queue timed out. Whether it was waiting there.
    pub(super) fn time_out_before_round(
        &mut self,
        id: Id<LlmRequest>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<bool, ScheduleError> {
        if !self.requests[id].waiting_for_round {
            return Ok(false);
        }
        let at = self.rounds.waiting.iter().position(|item| item.request() == id).expect("a waiting request is queued");
        if let ToRoute::Retry { seq, .. } = self.rounds.waiting.remove(at) {
            // It ran on the replica that failed.
            self.requests[id].energy_j += seq.energy_j;
        }
        self.requests[id].waiting_for_round = false;
        self.finish(id, RequestOutcome::TimedOut, ctx)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_falls_on_the_first_multiple_at_or_after_now() {
        let ms = SimDuration::from_nanos(1_000_000);
        let at = |ns| next_round(SimTime::from_nanos(ns), ms).unwrap().as_nanos();
        assert_eq!(at(0), 0);
        assert_eq!(at(1), 1_000_000);
        assert_eq!(at(999_999), 1_000_000);
        assert_eq!(at(1_000_000), 1_000_000);
        assert_eq!(at(1_000_001), 2_000_000);
        assert!(next_round(SimTime::from_nanos(u64::MAX - 1), ms).is_err());
    }
}
