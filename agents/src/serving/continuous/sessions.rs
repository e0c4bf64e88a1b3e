//! Multi-turn conversations: a task with a `session` opens one at each arrival; when a
//! turn is answered the next follows a think time later, its prompt the conversation
//! so far plus a new message. Each turn's own tokens (its message and answer) are one
//! segment, named so that the next turn's chain names it too: while the replica that
//! served a turn keeps its blocks, the next turn finds its whole history cached there.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration, StreamId};
use rand::RngExt;

use super::{LlmEvent, LlmRequest, LlmServing, NewRequest};
use crate::llm::kv::{Chain, Segment, chain_hash, splitmix64};
use crate::requests::{RequestOutcome, RequestRecord};
use crate::serving::ServingSample;

/// Stream of conversations' later turns: think times and new messages' lengths (the
/// first turns come from the request stream, as any request).
pub const SESSION_STREAM: StreamId = StreamId(3);

/// A conversation under way.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    task: u16,
    /// A number of its own (its first request's).
    uid: u64,
    /// Turns sent so far.
    turns: u32,
    /// Its segments so far: the task's system prompt, then one per answered turn.
    chain: Vec<Segment>,
    /// The current turn's own name.
    current: u64,
    /// The replica that served its last turn.
    pub(super) replica: Option<u32>,
}

impl Session {
    /// The name of turn `turn`'s own tokens, after a chain whose last segment is
    /// `previous` (0 for none).
    fn turn_name(&self, previous: u64, turn: u32) -> u64 {
        chain_hash(previous, splitmix64(self.uid) ^ u64::from(turn))
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Opens a conversation for a new request of `task` (number `uid`) whose prompt
    /// begins with `chain`, if the task has conversations: the conversation and the
    /// request's own name, kept cached if more turns follow.
    pub(super) fn open_session(
        &mut self,
        task: usize,
        uid: u64,
        chain: Option<&[Segment]>,
    ) -> (Option<Id<Session>>, Option<(u64, bool)>) {
        let Some(spec) = self.config.tasks[task].session else { return (None, None) };
        let chain = chain.unwrap_or(&[]).to_vec();
        let mut session = Session { task: task as u16, uid, turns: 1, chain, current: 0, replica: None };
        session.current = session.turn_name(session.chain.last().map_or(0, |s| s.hash), 1);
        let own = (session.current, spec.turns > 1);
        (Some(self.sessions.insert(session)), Some(own))
    }

    /// A turn of `session` left (as `r`, with `outcome`): an answered turn with turns
    /// to come schedules the next after a think time; otherwise the conversation ends.
    pub(super) fn turn_ended(
        &mut self,
        session: Id<Session>,
        r: &LlmRequest,
        outcome: RequestOutcome,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let spec = self.config.tasks[usize::from(r.task)].session.expect("a conversation's task has one");
        if outcome != RequestOutcome::Served || self.sessions[session].turns >= spec.turns {
            self.sessions.remove(session);
            return Ok(());
        }
        let s = &mut self.sessions[session];
        s.chain.push(Segment { hash: s.current, end_tokens: r.prompt.saturating_add(r.output) });
        s.replica = r.replica;
        let think_s = if spec.think_time_s > 0.0 {
            let u: f64 = ctx.rng(SESSION_STREAM).random();
            -spec.think_time_s * (1.0 - u).ln()
        } else {
            0.0
        };
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(think_s)?).ok_or(ScheduleError::Overflow)?;
        if at < self.horizon {
            ctx.schedule(at, LlmEvent::NextTurn(session))?;
        } else {
            self.sessions.remove(session);
        }
        Ok(())
    }

    /// `session` sends its next turn: the conversation so far and a new message.
    pub(super) fn next_turn(
        &mut self,
        session: Id<Session>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let task = usize::from(self.sessions[session].task);
        let (message_sampler, output_sampler) = self.token_samplers[task];
        let rng = ctx.rng(SESSION_STREAM);
        let (message, output) = (message_sampler.sample(rng), output_sampler.sample(rng));
        let spec = self.config.tasks[task].session.expect("a conversation's task has one");
        let s = &mut self.sessions[session];
        s.turns += 1;
        let history = s.chain.last().map_or(0, |seg| seg.end_tokens);
        s.current = s.turn_name(s.chain.last().map_or(0, |seg| seg.hash), s.turns);
        let chain: Chain = s.chain.as_slice().into();
        let own = Some((s.current, s.turns < spec.turns));
        let prompt = history.saturating_add(message);
        let group = self.task_groups[task];
        let new =
            NewRequest { task, group, prompt, output, chain: Some(chain), client: None, session: Some(session), own };
        self.admit(new, ctx)
    }
}
