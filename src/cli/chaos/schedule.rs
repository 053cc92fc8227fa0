//! The faults `herald chaos` injects, and the schedule it draws from `--seed`.
//!
//! A schedule is a sequence of episodes: a fault held for `--fault-for`, then healed, then
//! `--calm` without faults (publishing goes on throughout), until `--duration` is used up.
//! Each episode's fault kind and victims are drawn from a seeded generator, so the same seed,
//! node count, fault list and timings give the same schedule (`--seed` replays a run).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A kind of fault, as named in `--faults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL a node, restart it on its data after the hold.
    Kill,
    /// SIGSTOP a node for the hold (longer than the failure detector's timeout), then SIGCONT.
    Pause,
    /// Cut the network between a minority of the nodes and the rest, then heal.
    Partition,
    /// Drop a share of the packets on every link between nodes (and delay them, where the
    /// kernel can).
    Loss,
    /// Stop a node, delete its data directory, start it again.
    Wipe,
    /// Copy a node's database when the fault begins (online, as a backup is taken) and let
    /// the node run on; at the heal, kill it, put the older copy back and start it again: its
    /// peers hold its own events past the copy.
    Restore,
}

impl FaultKind {
    /// Faults that change the network between nodes (they need a testbed).
    pub fn needs_network(self) -> bool {
        matches!(self, Self::Partition | Self::Loss)
    }

    /// Faults that start nodes again (they need nodes this run spawned).
    pub fn needs_spawned_nodes(self) -> bool {
        matches!(
            self,
            Self::Kill | Self::Wipe | Self::Restore | Self::Partition | Self::Loss
        )
    }
}

/// Which partitions a run draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionMode {
    /// Neither side hears the other.
    Symmetric,
    /// The minority's packets to the others are dropped; it still hears them.
    OneWay,
    /// Each partition is symmetric or one-way at random.
    Mixed,
}

/// One fault, with the nodes it hits (0-based indexes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    Kill {
        node: usize,
    },
    Pause {
        node: usize,
    },
    /// `minority` is cut from every other node; with `one_way`, only its packets to them are
    /// dropped.
    Partition {
        minority: Vec<usize>,
        one_way: bool,
    },
    Loss {
        percent: u8,
    },
    Wipe {
        node: usize,
    },
    Restore {
        node: usize,
    },
}

impl Fault {
    #[cfg(test)]
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Kill { .. } => FaultKind::Kill,
            Self::Pause { .. } => FaultKind::Pause,
            Self::Partition { .. } => FaultKind::Partition,
            Self::Loss { .. } => FaultKind::Loss,
            Self::Wipe { .. } => FaultKind::Wipe,
            Self::Restore { .. } => FaultKind::Restore,
        }
    }

    /// A short description for the progress line and the report.
    pub fn describe(&self) -> String {
        let name = |node: &usize| format!("n{}", node + 1);
        match self {
            Self::Kill { node } => format!("kill {}", name(node)),
            Self::Pause { node } => format!("pause {}", name(node)),
            Self::Wipe { node } => format!("wipe {}", name(node)),
            Self::Restore { node } => format!("restore {} from a copy taken now", name(node)),
            Self::Loss { percent } => format!("loss {percent}% on every link"),
            Self::Partition { minority, one_way } => format!(
                "partition {} from the rest{}",
                minority.iter().map(name).collect::<Vec<_>>().join("+"),
                if *one_way { " (one-way)" } else { "" }
            ),
        }
    }
}

/// One fault, when it starts (from the start of the run) and how long it is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// What a schedule is drawn from.
#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    pub seed: u64,
    pub nodes: usize,
    pub kinds: Vec<FaultKind>,
    pub duration: Duration,
    pub fault_for: Duration,
    pub calm: Duration,
    pub partition_mode: PartitionMode,
    pub loss_percent: u8,
}

/// The episodes of a run: as many `fault_for + calm` periods as fit in `duration` (at least
/// one when any fault kind is given).
pub fn draw(spec: &ScheduleSpec) -> Vec<Episode> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut episodes = Vec::new();
    if spec.kinds.is_empty() || spec.nodes == 0 {
        return episodes;
    }
    let period = (spec.fault_for + spec.calm).max(Duration::from_millis(1));
    let mut at = Duration::ZERO;
    while episodes.is_empty() || at + spec.fault_for <= spec.duration {
        let kind = spec.kinds[rng.random_range(0..spec.kinds.len())];
        let fault = match kind {
            FaultKind::Kill => Fault::Kill {
                node: rng.random_range(0..spec.nodes),
            },
            FaultKind::Pause => Fault::Pause {
                node: rng.random_range(0..spec.nodes),
            },
            FaultKind::Wipe => Fault::Wipe {
                node: rng.random_range(0..spec.nodes),
            },
            FaultKind::Restore => Fault::Restore {
                node: rng.random_range(0..spec.nodes),
            },
            FaultKind::Loss => Fault::Loss {
                percent: spec.loss_percent,
            },
            FaultKind::Partition => {
                let most = ((spec.nodes - 1) / 2).max(1);
                let size = rng.random_range(1..=most);
                let mut minority: Vec<usize> = (0..spec.nodes).collect();
                for i in 0..size {
                    let j = rng.random_range(i..minority.len());
                    minority.swap(i, j);
                }
                minority.truncate(size);
                minority.sort_unstable();
                let one_way = match spec.partition_mode {
                    PartitionMode::Symmetric => false,
                    PartitionMode::OneWay => true,
                    PartitionMode::Mixed => rng.random_bool(0.5),
                };
                Fault::Partition { minority, one_way }
            }
        };
        episodes.push(Episode {
            at,
            hold: spec.fault_for,
            fault,
        });
        at += period;
    }
    episodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, kinds: &[FaultKind]) -> ScheduleSpec {
        ScheduleSpec {
            seed,
            nodes: 3,
            kinds: kinds.to_vec(),
            duration: Duration::from_secs(60),
            fault_for: Duration::from_secs(4),
            calm: Duration::from_secs(2),
            partition_mode: PartitionMode::Mixed,
            loss_percent: 20,
        }
    }

    const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Wipe,
        FaultKind::Restore,
    ];

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        assert_eq!(draw(&spec(7, &ALL)), draw(&spec(7, &ALL)));
        assert_ne!(draw(&spec(7, &ALL)), draw(&spec(8, &ALL)));
    }

    #[test]
    fn episodes_fill_the_duration_with_only_the_chosen_kinds() {
        let episodes = draw(&spec(1, &[FaultKind::Kill, FaultKind::Pause]));
        assert_eq!(episodes.len(), 10, "6 s periods in 60 s");
        assert!(
            episodes
                .iter()
                .all(|e| matches!(e.fault.kind(), FaultKind::Kill | FaultKind::Pause))
        );
        assert!(
            episodes
                .windows(2)
                .all(|w| w[1].at - w[0].at == Duration::from_secs(6))
        );
        assert!(episodes.last().unwrap().at + Duration::from_secs(4) <= Duration::from_secs(60));
    }

    #[test]
    fn a_partition_cuts_a_minority_and_honours_the_mode() {
        let mut one_way = spec(3, &[FaultKind::Partition]);
        one_way.partition_mode = PartitionMode::OneWay;
        one_way.nodes = 5;
        for episode in draw(&one_way) {
            let Fault::Partition { minority, one_way } = episode.fault else {
                panic!("not a partition");
            };
            assert!(one_way);
            assert!((1..=2).contains(&minority.len()), "{minority:?}");
            assert!(minority.iter().all(|&n| n < 5));
        }
    }

    #[test]
    fn a_short_run_still_gets_one_fault() {
        let mut short = spec(1, &[FaultKind::Wipe]);
        short.duration = Duration::from_secs(1);
        assert_eq!(draw(&short).len(), 1);
        assert!(draw(&spec(1, &[])).is_empty());
    }
}
