//! A request's way in: drawn as it arrives (its task, lengths, shared prefix and
//! model), counted, then routed (at once, or at the router's next round) and queued
//! at a replica; and a disaggregated fleet's prefilled request, whose KV crosses to the
//! decode pool and is routed there.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration};

use super::routing::Routed;
use super::{LlmEvent, LlmRequest, LlmServing, NewRequest, REQUEST_STREAM, ToRoute};
use crate::llm::Sequence;
use crate::llm::kv::{Chain, Segment};
use crate::requests::{RequestOutcome, RequestRecord, draw_request};
use crate::serving::ServingSample;

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    pub(super) fn new_request(
        &mut self,
        client: Option<u32>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let index = self.stats.arrivals as usize;
        let replayed = self.arrivals.replayed(index);
        let rng = ctx.rng(REQUEST_STREAM);
        let (task, mut prompt, output) = draw_request(replayed, rng, &self.cumulative_weights, &self.token_samplers);
        // A task's system prompt goes in front of the prompt; a trace's ids name its own.
        let chain = match &self.task_chains[task] {
            Some(chain) => {
                prompt = prompt.saturating_add(chain[0].end_tokens);
                Some(chain.clone())
            }
            None => self.arrivals.replayed_chain(index).filter(|c| !c.is_empty()).map(|c| within_prompt(c, prompt)),
        };
        let (session, own) = self.open_session(task, index as u64, chain.as_deref());
        // A trace's model column, where it has one, says which pools serve the request.
        let group = match self.arrivals.replayed_model(index) {
            Some(model) => {
                self.name_groups[self.served_names.iter().position(|n| *n == model).expect("validated: a served model")]
            }
            None => self.task_groups[task],
        };
        self.admit(NewRequest { task, group, prompt, output, chain, client, session, own }, ctx)
    }

    /// Routes and queues a request that has just arrived.
    pub(super) fn admit(&mut self, new: NewRequest, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let NewRequest { task, group, prompt, output, chain, client, session, own } = new;
        let (model, counted) = (self.group_models[group], now >= self.warmup);
        self.tally(true, None, Some(model), |s| s.arrived(now, counted));
        let id = self.requests.insert(LlmRequest {
            id: self.stats.arrivals - 1,
            task: task as u16,
            prompt,
            output,
            arrival: now,
            first_scheduled: None,
            first_token: None,
            replica: None,
            client,
            timeout: None,
            preemptions: 0,
            retries: 0,
            transferring: false,
            waiting_for_round: false,
            energy_j: 0.0,
            cached_tokens: None,
            model: model as u16,
            session,
            attempt: None,
            contender: None,
        });
        // Longer than any pool of its model takes (as vLLM refuses it).
        if self.groups[group].context_limit_tokens.is_some_and(|limit| prompt.saturating_add(output) > limit) {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        if self.validator.is_some() {
            return self.ask_contenders(id, chain, own, ctx);
        }
        let new = NewRequest { task, group, prompt, output, chain, client, session, own };
        match self.round_every {
            Some(_) => self.wait_for_round(ToRoute::New(id, new), ctx),
            None => self.send_new(id, new, ctx),
        }
    }

    /// Routes a new request and queues it at its replica.
    pub(super) fn send_new(
        &mut self,
        id: Id<LlmRequest>,
        new: NewRequest,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let NewRequest { task, group, prompt, output, chain, session, own, .. } = new;
        let (uid, arrival) = (self.requests[id].id, self.requests[id].arrival);
        let counted = arrival >= self.warmup;
        // Its timeout runs from its arrival: one that passed while it waited for the
        // router's round gives up at the router, before any replica is chosen.
        let deadline = match self.config.tasks[task].timeout_s {
            Some(timeout_s) => {
                Some(arrival.checked_add(SimDuration::from_secs_f64(timeout_s)?).ok_or(ScheduleError::Overflow)?)
            }
            None => None,
        };
        if deadline.is_some_and(|d| d < ctx.now()) {
            return self.finish(id, RequestOutcome::TimedOut, ctx);
        }
        let previous = session.and_then(|s| self.sessions[s].replica);
        let routed = Routed { chain: chain.as_deref().unwrap_or(&[]), prompt, previous };
        let Some(replica) = self.route(group, routed, ctx) else {
            return self.finish(id, RequestOutcome::Lost, ctx);
        };
        self.requests[id].replica = Some(replica);
        self.cut_run(replica as usize, ctx)?;
        self.tally(false, self.pool_of(Some(replica)), None, |s| s.arrived(arrival, counted));
        // Longer than its pool takes or than the whole KV cache (it could never run), or
        // a full queue.
        if !self.takes(replica as usize, prompt, output) {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        if let Some(deadline) = deadline {
            self.requests[id].timeout = Some(ctx.schedule(deadline, LlmEvent::Timeout(id))?);
        }
        // A prefill replica produces the first token only.
        let here = if self.replicas[replica as usize].prefill { 1 } else { output };
        let booked = self.booking(replica as usize, chain.as_deref().unwrap_or(&[]), prompt);
        let mut sequence = Sequence::new(id, uid, prompt, here).measured(counted).booking(booked);
        if let Some((own, keep_own)) = own {
            sequence = sequence.owning(own, keep_own);
        }
        match chain {
            Some(chain) => self.replicas[replica as usize].engine.enqueue_with_chain(sequence, chain),
            None => self.replicas[replica as usize].engine.enqueue(sequence),
        }
        self.refresh_load(replica as usize);
        self.kick(replica as usize, ctx)
    }

    /// Disaggregated: a prefill finished; its KV crosses to the decode pool.
    pub(super) fn send_kv(&mut self, id: Id<LlmRequest>, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let d = self.config.disaggregation.expect("disaggregated");
        let now = ctx.now();
        let request = &mut self.requests[id];
        request.transferring = true;
        let prefill = request.replica.expect("a prefilled request was routed") as usize;
        let bytes = f64::from(request.prompt)
            * self.config.pools[usize::from(self.replicas[prefill].pool)].model.kv_bytes_per_token();
        let link = &mut self.replicas[prefill].link_free;
        let start = (*link).max(now);
        let busy_s = bytes / (d.link_gb_per_s * 1e9);
        *link = start.checked_add(SimDuration::from_secs_f64(busy_s)?).ok_or(ScheduleError::Overflow)?;
        let done =
            link.checked_add(SimDuration::from_secs_f64(d.link_latency_us * 1e-6)?).ok_or(ScheduleError::Overflow)?;
        let transfer = done - now;
        self.tally(true, Some(usize::from(self.replicas[prefill].pool)), None, |s| {
            s.kv_transfers += 1;
            s.kv_transfer_gb.add(bytes / 1e9);
            s.kv_transfer_s.add(transfer);
        });
        ctx.schedule(done, LlmEvent::KvArrives(id))?;
        Ok(())
    }

    pub(super) fn on_kv_arrives(
        &mut self,
        id: Id<LlmRequest>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        self.requests[id].transferring = false;
        match self.round_every {
            Some(_) => self.wait_for_round(ToRoute::Decode(id), ctx),
            None => self.send_to_decode(id, ctx),
        }
    }

    /// Routes a prefilled request to its decode pool and queues it there.
    pub(super) fn send_to_decode(
        &mut self,
        id: Id<LlmRequest>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let routed = Routed { chain: &[], prompt: self.requests[id].prompt, previous: None };
        // The decode group of the group its prefill replica is in.
        let prefill = self.requests[id].replica.expect("a prefilled request was routed") as usize;
        let group =
            self.decode_groups[self.replicas[prefill].group as usize].expect("a prefill group decodes somewhere");
        let Some(replica) = self.route(group, routed, ctx) else {
            return self.finish(id, RequestOutcome::Lost, ctx);
        };
        self.cut_run(replica as usize, ctx)?;
        let r = &mut self.requests[id];
        r.replica = Some(replica);
        let (prompt, output, uid) = (r.prompt, r.output, r.id);
        let first_token_ns = r.first_token.expect("a prefilled request has its first token").as_nanos();
        let measured = r.arrival >= self.warmup;
        if !self.takes(replica as usize, prompt, output) {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        let booked = self.booking(replica as usize, &[], prompt);
        let sequence = Sequence::prefilled(id, uid, prompt, output, first_token_ns).measured(measured).booking(booked);
        self.replicas[replica as usize].engine.enqueue(sequence);
        self.refresh_load(replica as usize);
        self.kick(replica as usize, ctx)
    }
}

/// `chain` cut to a prompt of `prompt` tokens (a trace's ids may run past a prompt
/// whose length was drawn).
fn within_prompt(chain: &Chain, prompt: u32) -> Chain {
    if chain.last().is_none_or(|s| s.end_tokens <= prompt) {
        return chain.clone();
    }
    let mut start = 0;
    let mut cut = Vec::with_capacity(chain.len());
    for s in chain.iter() {
        if start >= prompt {
            break;
        }
        cut.push(Segment { end_tokens: s.end_tokens.min(prompt), ..*s });
        start = s.end_tokens;
    }
    cut.into()
}
