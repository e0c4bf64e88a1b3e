//! Nodes joining, failing, being repaired and leaving, and the queries they drop.

use super::*;

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// A node of class `class` joins: hidden traits drawn from its own stream, one
    /// contender per task, its life events scheduled.
    pub(super) fn add_node(&mut self, class: usize, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let id = Id::<Node>::from_index(self.nodes.len() as u32);
        let c = &self.config.node_classes[class];
        let rng = ctx.rng(Self::node_stream(id));
        let mut uniform = |r: [f64; 2]| r[0] + (r[1] - r[0]) * rng.random::<f64>();
        let (speed, quality, reliability) = (uniform(c.speed), uniform(c.quality), uniform(c.reliability));
        let node = self.nodes.push(Node {
            class: class as u16,
            speed,
            quality,
            reliability,
            state: NodeState::Up,
            in_flight: Vec::new(),
            joined: now,
            left: None,
        });
        debug_assert_eq!(node, id);
        let unit = self.life.push();
        debug_assert_eq!(unit, id.index() as usize, "a node's unit is its index");
        let capacity = f64::from(c.capacity);
        let task_ids: Vec<u16> =
            c.tasks.iter().map(|name| self.config.task_index(name).expect("validated task name") as u16).collect();
        for task in task_ids {
            let estimates = Estimates { latency_est_s: self.config.tasks[usize::from(task)].work_s, answered_est: 1.0 };
            let contender = self.book.add(node.index(), task, capacity, estimates);
            if let Some(ranks) = &mut self.ranks {
                ranks[usize::from(task)].push(contender.index(), Reverse((0, contender.index())));
            }
            self.update_rank(contender);
        }
        let class = &self.config.node_classes[class];
        let (leave_per_h, failures) = (class.leave_per_h, class.failures());
        let rng = ctx.rng(Self::life_stream(node));
        let leave_after_h = (leave_per_h > 0.0).then(|| Distribution::<f64>::sample(&Exp1, rng) / leave_per_h);
        let fail_after_h = failures.map(|f| f.time_to_failure_h(rng));
        if let Some(h) = leave_after_h {
            self.schedule_within(ctx, h, NetworkEvent::NodeLeaves(node))?;
        }
        if let Some(h) = fail_after_h {
            self.schedule_within(ctx, h, NetworkEvent::NodeFails { node, epoch: 0 })?;
        }
        Ok(())
    }

    /// Every query in flight at a failing or departing node gets a 500 now.
    pub(super) fn drop_in_flight(
        &mut self,
        node_id: Id<Node>,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let in_flight = self.nodes[node_id].in_flight.clone();
        for q in in_flight {
            let (_, start, done) = self.queries[q].serving.take().expect("in flight");
            ctx.cancel(done);
            self.release(node_id, q, start, now);
            let c = self.queries[q].candidates[self.queries[q].tried - 1];
            self.queries[q].last_outcome = QueryOutcome::Failed;
            self.refused(c, QueryOutcome::Failed);
            ctx.schedule(self.rtt, NetworkEvent::Retry(q))?;
        }
        Ok(())
    }

    pub(super) fn fail_node(
        &mut self,
        node_id: Id<Node>,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = node_id.index() as usize;
        if self.nodes[node_id].state != NodeState::Up || self.life.is_down(unit) {
            return Ok(());
        }
        let epoch = self.life.fail(unit, ctx.now());
        let failures = self.config.node_classes[usize::from(self.nodes[node_id].class)].failures();
        self.drop_in_flight(node_id, ctx)?;
        let failures = failures.expect("a node fails only when its class has failures");
        let repair_h = failures.time_to_repair_h(ctx.rng(Self::life_stream(node_id)));
        self.schedule_within(ctx, repair_h, NetworkEvent::NodeRepaired { node: node_id, epoch })
    }

    pub(super) fn on_repaired(
        &mut self,
        node_id: Id<Node>,
        epoch: u32,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = node_id.index() as usize;
        if !self.life.is_down(unit) || self.life.epoch(unit) != epoch {
            return Ok(());
        }
        let epoch = self.life.repair(unit, ctx.now());
        if let Some(failures) = self.config.node_classes[usize::from(self.nodes[node_id].class)].failures() {
            let up_h = failures.time_to_failure_h(ctx.rng(Self::life_stream(node_id)));
            self.schedule_within(ctx, up_h, NetworkEvent::NodeFails { node: node_id, epoch })?;
        }
        Ok(())
    }

    pub(super) fn leave(
        &mut self,
        node_id: Id<Node>,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        if self.nodes[node_id].state == NodeState::Gone {
            return Ok(());
        }
        self.stats.nodes_left += 1;
        self.drop_in_flight(node_id, ctx)?;
        // Its life ends: a repair it was waiting for is stale.
        self.life.retire(node_id.index() as usize, ctx.now());
        let node = &mut self.nodes[node_id];
        node.state = NodeState::Gone;
        node.left = Some(ctx.now());
        self.book.retire(node_id.index());
        if let Some(ranks) = &mut self.ranks {
            for &c in self.book.of_node(node_id.index()) {
                ranks[usize::from(self.book[c].task)].remove(&c.index());
            }
        }
        Ok(())
    }

    pub(super) fn on_scheduled(
        &mut self,
        index: u32,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let event = self.config.events[index as usize].clone();
        let class = self.config.class_index(&event.class).expect("validated class name");
        match event.action {
            NodeAction::Join => {
                for _ in 0..event.count {
                    self.add_node(class, ctx)?;
                    self.stats.nodes_joined += 1;
                }
            }
            NodeAction::Leave | NodeAction::Fail => {
                let life = &self.life;
                let targets: Vec<Id<Node>> = self
                    .nodes
                    .iter()
                    .filter(|(id, n)| {
                        usize::from(n.class) == class && n.state == NodeState::Up && !life.is_down(id.index() as usize)
                    })
                    .map(|(id, _)| id)
                    .take(event.count as usize)
                    .collect();
                for node in targets {
                    if event.action == NodeAction::Leave {
                        self.leave(node, ctx)?;
                    } else {
                        self.fail_node(node, ctx)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_join(&mut self, class: u16, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        self.add_node(usize::from(class), ctx)?;
        self.stats.nodes_joined += 1;
        self.schedule_join(class, ctx)
    }

    pub(super) fn schedule_join(&self, class: u16, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let rate = self.config.node_classes[usize::from(class)].join_per_h;
        if rate > 0.0 {
            let after_h =
                Distribution::<f64>::sample(&Exp1, ctx.rng(StreamId(JOIN_STREAM_BASE + u32::from(class)))) / rate;
            self.schedule_within(ctx, after_h, NetworkEvent::NodeJoins { class })?;
        }
        Ok(())
    }
}
