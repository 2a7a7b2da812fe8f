//! The faults, one every few seconds in a seeded order, each undone before the next: the
//! leader SIGKILLed (and restarted), the leader SIGSTOPped past its lease (and resumed),
//! both controllers down for a while, the API server's own faults (a kube-apiserver restart
//! on the real world; dropped watches, 410s and failed writes on the sim), and a BIG-IP
//! answering 503.

use super::world::World;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillLeader,
    PauseLeader,
    BothDown,
    ApiServer,
    BigIp503,
}

const KINDS: [Kind; 5] = [
    Kind::KillLeader,
    Kind::PauseLeader,
    Kind::BothDown,
    Kind::ApiServer,
    Kind::BigIp503,
];

/// Something to undo at a time.
enum Pending {
    Restart(usize),
    RestartBoth,
    Resume(u32),
    ClearSim,
}

pub struct Faults {
    rng: StdRng,
    /// Every kind once per round, in a seeded order, so a short run meets them all.
    round: Vec<Kind>,
    next: Instant,
    pending: Vec<(Instant, Pending)>,
    counts: BTreeMap<Kind, u32>,
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            rng: StdRng::seed_from_u64(seed ^ 0xfa017),
            round: Vec::new(),
            next: Instant::now() + Duration::from_secs(5),
            pending: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Undoes what is due, and injects the next fault when its time has come.
    pub async fn maybe_inject(&mut self, w: &mut World) {
        let now = Instant::now();
        let due: Vec<Pending> = {
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.pending = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for p in due {
            self.undo(w, p).await;
        }
        // A leader that resumed after losing its Lease exits on purpose; like a Deployment,
        // start it again.
        for i in 0..2 {
            if w.controllers[i]
                .as_mut()
                .is_some_and(|c| c.child.try_wait().ok().flatten().is_some())
            {
                w.stop_controller(i);
                w.start_controller(i).await;
            }
        }
        if now < self.next || !self.pending.is_empty() {
            return;
        }
        if self.round.is_empty() {
            let mut order = KINDS.to_vec();
            for i in (1..order.len()).rev() {
                order.swap(i, self.rng.random_range(0..=i));
            }
            self.round = order;
        }
        let kind = self.round.remove(0);
        *self.counts.entry(kind).or_default() += 1;
        let later = |s: u64| now + Duration::from_secs(s);
        match kind {
            Kind::KillLeader => {
                if let Some(i) = w.leader().await {
                    w.stop_controller(i);
                    self.pending.push((later(3), Pending::Restart(i)));
                }
            }
            Kind::PauseLeader => {
                if let Some(pid) = w.leader().await.and_then(|i| w.pid(i)) {
                    signal(pid, "-STOP");
                    // Past the 3 s lease: the standby takes over meanwhile.
                    self.pending.push((later(5), Pending::Resume(pid)));
                }
            }
            Kind::BothDown => {
                w.stop_controller(0);
                w.stop_controller(1);
                self.pending.push((later(5), Pending::RestartBoth));
            }
            Kind::ApiServer => match (w.cluster.real(), w.cluster.sim()) {
                (Some(real), _) => {
                    if let Err(e) = real.restart_apiserver().await {
                        eprintln!("chaos: restarting kube-apiserver: {e}");
                    }
                }
                (None, Some(sim)) => {
                    sim.faults().fail_fraction(0.1, 500);
                    sim.faults().expire_next_watches(2);
                    sim.faults().drop_watches();
                    self.pending.push((later(3), Pending::ClearSim));
                }
                (None, None) => {}
            },
            Kind::BigIp503 => w.bigip.fail_next_503(15),
        }
        self.next = now + Duration::from_secs(self.rng.random_range(6..12));
    }

    async fn undo(&mut self, w: &mut World, p: Pending) {
        match p {
            Pending::Restart(i) => w.start_controller(i).await,
            Pending::RestartBoth => {
                w.start_controller(0).await;
                w.start_controller(1).await;
            }
            Pending::Resume(pid) => signal(pid, "-CONT"),
            Pending::ClearSim => {
                if let Some(sim) = w.cluster.sim() {
                    sim.faults().clear();
                }
            }
        }
    }

    /// Undoes everything pending and makes sure both controllers run.
    pub async fn clear(&mut self, w: &mut World) {
        for (_, p) in std::mem::take(&mut self.pending) {
            self.undo(w, p).await;
        }
        if let Some(sim) = w.cluster.sim() {
            sim.faults().clear();
        }
        // A resumed leader that lost its Lease exits: start whatever is not running.
        for i in 0..2 {
            if w.controllers[i]
                .as_mut()
                .is_some_and(|c| c.child.try_wait().ok().flatten().is_some())
            {
                w.stop_controller(i);
            }
            w.start_controller(i).await;
        }
    }

    pub fn summary(&self) -> String {
        let total: u32 = self.counts.values().sum();
        let each: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k:?}:{n}"))
            .collect();
        format!("{total}[{}]", each.join(","))
    }
}
