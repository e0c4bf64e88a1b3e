//! Pools that grow and shrink: a pool's autoscaler decides every interval how many
//! replicas it wants from what its replicas report (running, waiting, KV usage, or
//! the TTFT of its requests), starts replicas that serve after a cold start (drawing
//! idle power meanwhile), and drains replicas it no longer wants (no new requests;
//! off once empty). A pool has a slot for each replica it may have; slots that are
//! off draw nothing and cost nothing.

use infersim_engine::{Context, EventId, Observer, ScheduleError, SimDuration, SimTime};

use super::{Autoscale, LlmEvent, LlmServing, ScaleSignal};
use crate::requests::RequestRecord;
use crate::serving::ServingSample;

/// What a replica slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Taking requests.
    Serving,
    /// Loading its weights and starting its engine, until the event.
    Starting(EventId),
    /// Finishing what it has; no new requests.
    Draining,
    /// Not provisioned.
    Off,
    /// A training pool's replica between jobs: provisioned, idle, serving nothing.
    Reserved,
    /// Taken by a retraining job: no new requests; it trains once drained.
    ToTrain,
    /// Training.
    Training,
}

/// An autoscaled pool's state between decisions.
#[derive(Clone, Debug, Default)]
pub(super) struct Scaler {
    /// Since when fewer replicas have been wanted than there are.
    below_since: Option<SimTime>,
    /// TTFTs of the pool's requests since the last decision (s), for `ttft_p90`.
    ttfts_s: Vec<f64>,
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Whether replica `r` takes new requests.
    pub(super) fn accepting(&self, r: usize) -> bool {
        self.replicas[r].mode == Mode::Serving && !self.life.is_down(r)
    }

    /// Schedules every autoscaled pool's first decision.
    pub(super) fn start_autoscalers(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        for (p, pool) in self.config.pools.iter().enumerate() {
            if let Some(a) = pool.autoscale {
                ctx.schedule(SimDuration::from_secs_f64(a.interval_s)?, LlmEvent::Autoscale(p as u16))?;
            }
        }
        Ok(())
    }

    /// Notes a first token of a request served by replica `r`, for a pool that scales
    /// on TTFT.
    pub(super) fn note_ttft(&mut self, r: usize, ttft_s: f64) {
        let pool = usize::from(self.replicas[r].pool);
        if self.config.pools[pool].autoscale.is_some_and(|a| a.signal == ScaleSignal::TtftP90) {
            self.scalers[pool].ttfts_s.push(ttft_s);
        }
    }

    /// Pool `p`'s decision: how many replicas it wants, and the starts and drains
    /// that get it there.
    pub(super) fn on_autoscale(&mut self, p: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let a = self.config.pools[p].autoscale.expect("an autoscaled pool");
        let slots: Vec<usize> = (0..self.replicas.len()).filter(|&r| usize::from(self.replicas[r].pool) == p).collect();
        // Its signals read the replicas as they are now.
        for &r in &slots {
            self.materialise(r, now);
        }
        let serving: Vec<usize> = slots.iter().copied().filter(|&r| self.accepting(r)).collect();
        let starting = slots.iter().filter(|&&r| matches!(self.replicas[r].mode, Mode::Starting(_))).count() as u32;
        let current = serving.len() as u32 + starting;
        let wanted = match self.wanted(p, a, &serving) {
            Some(w) => w.clamp(a.min_replicas, a.max_replicas),
            None => current.clamp(a.min_replicas, a.max_replicas),
        };
        if wanted > current {
            self.scalers[p].below_since = None;
            let mut to_add = wanted - current;
            // Draining replicas come back first, at once; then slots that are off start.
            for &r in &slots {
                if to_add > 0 && self.replicas[r].mode == Mode::Draining && !self.life.is_down(r) {
                    self.set_mode(r, Mode::Serving);
                    to_add -= 1;
                }
            }
            for &r in &slots {
                if to_add > 0 && self.replicas[r].mode == Mode::Off {
                    self.cold_start(r, ctx)?;
                    to_add -= 1;
                }
            }
        } else if wanted < current {
            let since = *self.scalers[p].below_since.get_or_insert(now);
            if (now - since).as_secs_f64() >= a.scale_down_delay_s {
                self.scalers[p].below_since = None;
                let mut to_remove = current - wanted;
                // Replicas still starting are cancelled first, the newest slots first;
                // then the serving replicas with the fewest requests drain.
                for &r in slots.iter().rev() {
                    if to_remove > 0 && self.cancel_start(r, ctx) {
                        to_remove -= 1;
                    }
                }
                self.drain_least_loaded(serving, to_remove as usize, ctx)?;
            }
        } else {
            self.scalers[p].below_since = None;
        }
        let next = now.checked_add(SimDuration::from_secs_f64(a.interval_s)?).ok_or(ScheduleError::Overflow)?;
        if next < self.horizon {
            ctx.schedule(next, LlmEvent::Autoscale(p as u16))?;
        }
        Ok(())
    }

    /// The replicas pool `p` wants from what its `serving` replicas report, before
    /// its bounds: `ceil(serving x signal / target)`; `None` with nothing to go on.
    fn wanted(&mut self, p: usize, a: Autoscale, serving: &[usize]) -> Option<u32> {
        let total: f64 = match a.signal {
            ScaleSignal::Running => serving.iter().map(|&r| self.replicas[r].engine.running() as f64).sum(),
            ScaleSignal::Waiting => serving.iter().map(|&r| self.replicas[r].engine.waiting() as f64).sum(),
            ScaleSignal::KvUsage => serving.iter().map(|&r| self.replicas[r].engine.kv().usage()).sum(),
            ScaleSignal::TtftP90 => {
                let mut ttfts = std::mem::take(&mut self.scalers[p].ttfts_s);
                if ttfts.is_empty() {
                    return None;
                }
                ttfts.sort_by(f64::total_cmp);
                let p90 = ttfts[((ttfts.len() as f64 * 0.9).ceil() as usize).clamp(1, ttfts.len()) - 1];
                p90 * serving.len() as f64
            }
        };
        // Within the tolerance of the target, the replicas stay as they are (the
        // HPA's rule: it does not chase noise).
        if !serving.is_empty() && (total / (serving.len() as f64 * a.target) - 1.0).abs() <= a.tolerance {
            return None;
        }
        Some((total / a.target).ceil().min(f64::from(u32::MAX)) as u32)
    }

    /// Replica `r`, off, starts now: provisioned at once, serving after its pool's cold
    /// start (counted in `cold_starts`).
    pub(super) fn cold_start(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let (now, p) = (ctx.now(), usize::from(self.replicas[r].pool));
        let cold_start = SimDuration::from_secs_f64(self.config.pools[p].cold_start_s())?;
        let started =
            ctx.schedule(now.checked_add(cold_start).ok_or(ScheduleError::Overflow)?, LlmEvent::Started(r as u32))?;
        self.set_mode(r, Mode::Starting(started));
        self.provision_replica(r, now);
        self.tally(true, Some(p), None, |s| s.cold_starts += 1);
        Ok(())
    }

    /// Replica `r`, if it is still starting, is called off (no longer paid); whether it
    /// was.
    pub(super) fn cancel_start(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> bool {
        let Mode::Starting(event) = self.replicas[r].mode else { return false };
        ctx.cancel(event);
        self.set_mode(r, Mode::Off);
        self.unprovision_replica(r, ctx.now());
        true
    }

    /// The `count` of `serving` replicas with the fewest requests (the later slot on
    /// ties) drain.
    pub(super) fn drain_least_loaded(
        &mut self,
        mut serving: Vec<usize>,
        count: usize,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        serving
            .sort_by_key(|&r| (self.replicas[r].engine.waiting() + self.replicas[r].engine.running(), usize::MAX - r));
        for r in serving.into_iter().take(count) {
            self.set_mode(r, Mode::Draining);
            self.kick(r, ctx)?;
        }
        Ok(())
    }

    /// Replica `r` has loaded its weights and started its engine.
    pub(super) fn on_started(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        self.set_mode(r, Mode::Serving);
        self.miner_started(r, ctx)?;
        self.kick(r, ctx)
    }

    /// A draining replica with nothing left goes off.
    pub(super) fn off_if_drained(&mut self, r: usize, now: SimTime) {
        let engine = &self.replicas[r].engine;
        if self.replicas[r].mode == Mode::Draining && engine.waiting() + engine.running() == 0 {
            self.set_mode(r, Mode::Off);
            self.unprovision_replica(r, now);
        }
    }

    pub(super) fn set_mode(&mut self, r: usize, mode: Mode) {
        let was_serving = self.replicas[r].mode == Mode::Serving;
        self.replicas[r].mode = mode;
        match (was_serving, mode == Mode::Serving) {
            (true, false) => self.not_serving += 1,
            (false, true) => self.not_serving -= 1,
            _ => {}
        }
        self.refresh_load(r);
    }

    /// Replica `r` is provisioned from `now`: it draws idle power and is paid for.
    pub(super) fn provision_replica(&mut self, r: usize, now: SimTime) {
        self.replicas[r].provisioned_since = Some(now);
        let pool = self.pool(r);
        self.set_power(now, r, pool.gpu.idle_w * f64::from(pool.tp));
    }

    /// Replica `r` is given back at `now`: it draws nothing.
    pub(super) fn unprovision_replica(&mut self, r: usize, now: SimTime) {
        if let Some(since) = self.replicas[r].provisioned_since.take() {
            self.replicas[r].provisioned_s += (now - since).as_secs_f64();
        }
        self.set_power(now, r, 0.0);
    }

    /// Replica-seconds provisioned up to `end`, per pool.
    pub(super) fn provisioned_s(&self, end: SimTime) -> Vec<f64> {
        let mut per_pool = vec![0.0; self.config.pools.len()];
        for s in &self.replicas {
            let open = s.provisioned_since.map_or(0.0, |since| (end - since).as_secs_f64());
            per_pool[usize::from(s.pool)] += s.provisioned_s + open;
        }
        per_pool
    }
}
