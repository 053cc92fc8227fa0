//! The chaos verdict: what was acknowledged, what was lost, duplicated or reordered, how the
//! cluster recovered, printed for people or as JSON (`--json`).
//!
//! A run passes only when no acknowledged event is missing from any live node's log or from
//! any subscriber, no subscriber got an event twice or out of per-origin order, the nodes
//! converged after the last heal, and they ended with identical logs and materialized state.

use serde::Serialize;

use super::ledger::EventKey;
use super::schedule::Fault;

/// Missing events listed in the verdict at most.
pub const SHOWN: usize = 10;

/// One injected fault and how the cluster recovered from it.
#[derive(Debug, Serialize)]
pub struct EpisodeReport {
    pub fault: Fault,
    pub description: String,
    /// From the start of the run.
    pub started_ms: u64,
    pub healed_ms: u64,
    /// From the start of the fault until a node reported it (a peer unreachable, or for
    /// Redis, not ready): the failure detector's time. `None` when it did not show.
    pub observed_after_ms: Option<u64>,
    /// Whether this fault must show while held (loss need not).
    pub expected_symptom: bool,
    /// From the heal until every node held everything published before it; `None` when that
    /// did not happen within the convergence timeout.
    pub converged_after_ms: Option<u64>,
    /// For a pause: whether the woken node answered ready while it held less than the others
    /// held as it woke (`None`: not checked, or it did not turn ready in time).
    pub ready_while_behind: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Publishes {
    pub acknowledged: u64,
    /// Timed out or refused: maybe committed, expected by nobody.
    pub failed: u64,
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Convergence {
    pub p50_ms: Option<u64>,
    pub max_ms: Option<u64>,
    /// Heals after which the nodes did not converge in time.
    pub not_converged: usize,
    /// From the end of the run (every fault healed, publishing stopped) until every node
    /// reported the same position.
    pub final_ms: Option<u64>,
}

/// How long the nodes took to notice the faults that must show.
#[derive(Debug, Default, Serialize)]
pub struct Detection {
    pub p50_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Clients {
    pub subscribers: usize,
    pub received: u64,
    pub resumes: u64,
    /// Events resumed connections delivered that were published before they connected.
    pub replayed: u64,
    /// Subscribers that never got every end marker (the wait for them timed out).
    pub without_markers: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub seed: u64,
    pub nodes: usize,
    pub backplane: String,
    /// How the faults were injected (namespaces and nftables, or only signals).
    pub network: String,
    /// Whether packet delay was injected with loss, or why not.
    pub delay: String,
    pub duration_secs: f64,
    pub faults: Vec<EpisodeReport>,
    pub publishes: Publishes,
    /// Acknowledged events absent from some live node's log (events x nodes).
    pub lost_in_logs: u64,
    /// Acknowledged events some subscriber of their channel never received (events x
    /// subscribers).
    pub lost_in_clients: u64,
    pub lost_examples: Vec<EventKey>,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub clients: Clients,
    pub convergence: Convergence,
    pub detection: Detection,
    pub logs_identical: bool,
    pub state_identical: bool,
    /// Whether every node listed exactly the connected subscribers, then nobody.
    pub presence: super::presence::PresenceReport,
    /// Everything that made the run fail, in words.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Decides `passed` and lists the problems.
    pub fn decide(&mut self) {
        let mut problems = Vec::new();
        if self.lost_in_logs > 0 {
            problems.push(format!(
                "{} acknowledged events missing from node logs",
                self.lost_in_logs
            ));
        }
        if self.lost_in_clients > 0 {
            problems.push(format!(
                "{} acknowledged events never delivered to a subscriber",
                self.lost_in_clients
            ));
        }
        if self.duplicates > 0 {
            problems.push(format!("{} duplicate deliveries", self.duplicates));
        }
        if self.out_of_order > 0 {
            problems.push(format!("{} deliveries out of order", self.out_of_order));
        }
        if self.convergence.final_ms.is_none() {
            problems.push("the nodes did not converge after the last heal".into());
        }
        if !self.logs_identical {
            problems.push("the nodes' logs differ".into());
        }
        if !self.state_identical {
            problems.push("the nodes' materialized state differs".into());
        }
        if self.publishes.acknowledged == 0 {
            problems.push("no publish was acknowledged: nothing was tested".into());
        }
        problems.append(&mut self.problems);
        self.passed = problems.is_empty();
        self.problems = problems;
    }

    /// The verdict for people.
    pub fn human(&self) -> String {
        let mut text = String::new();
        let line = |text: &mut String, s: String| {
            text.push_str(&s);
            text.push('\n');
        };
        line(
            &mut text,
            format!(
                "herald chaos: {} nodes ({}), seed {}, {:.0} s",
                self.nodes, self.backplane, self.seed, self.duration_secs
            ),
        );
        line(&mut text, format!("  network: {}", self.network));
        line(&mut text, format!("  delay: {}", self.delay));
        for episode in &self.faults {
            let converged = match episode.converged_after_ms {
                Some(ms) => format!("converged {ms} ms after healing"),
                None => "did not converge in time".into(),
            };
            let noticed = match (episode.expected_symptom, episode.observed_after_ms) {
                (_, Some(ms)) => format!("noticed after {ms} ms, "),
                (true, None) => "never noticed, ".into(),
                (false, None) => String::new(),
            };
            line(
                &mut text,
                format!(
                    "  {:>7.1}s {:<40} {noticed}healed at {:.1}s, {converged}",
                    episode.started_ms as f64 / 1000.0,
                    episode.description,
                    episode.healed_ms as f64 / 1000.0
                ),
            );
        }
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
        line(
            &mut text,
            format!(
                "  publishes: {} acknowledged, {} failed (maybe committed)",
                self.publishes.acknowledged, self.publishes.failed
            ),
        );
        line(
            &mut text,
            format!(
                "  lost: {} in logs, {} at subscribers; duplicates {}; out of order {}",
                self.lost_in_logs, self.lost_in_clients, self.duplicates, self.out_of_order
            ),
        );
        line(
            &mut text,
            format!(
                "  subscribers: {} received {} events, {} resumes replayed {}",
                self.clients.subscribers,
                self.clients.received,
                self.clients.resumes,
                self.clients.replayed
            ),
        );
        line(
            &mut text,
            format!(
                "  convergence after healing: p50 {}, max {}, final {}",
                ms(self.convergence.p50_ms),
                ms(self.convergence.max_ms),
                ms(self.convergence.final_ms)
            ),
        );
        line(
            &mut text,
            format!(
                "  faults noticed by the nodes after: p50 {}, max {}",
                ms(self.detection.p50_ms),
                ms(self.detection.max_ms)
            ),
        );
        line(
            &mut text,
            format!(
                "  logs identical: {}; state identical: {}",
                self.logs_identical, self.state_identical
            ),
        );
        let presence = if !self.presence.checked {
            "not checked (the channel has no presence on these nodes)".to_string()
        } else if self.presence.disagreement.is_some() {
            "the nodes disagreed".to_string()
        } else {
            format!(
                "every node listed exactly the connected subscribers after {}, and nobody {} \
                 after they left",
                ms(self.presence.agreed_after_ms),
                ms(self.presence.emptied_after_ms)
            )
        };
        line(&mut text, format!("  presence: {presence}"));
        if self.passed {
            line(
                &mut text,
                "PASS: nothing lost, duplicated or reordered".into(),
            );
        } else {
            line(&mut text, "FAIL:".into());
            for problem in &self.problems {
                line(&mut text, format!("  - {problem}"));
            }
            if !self.lost_examples.is_empty() {
                line(
                    &mut text,
                    format!("  lost (channel, publisher, n): {:?}", self.lost_examples),
                );
            }
        }
        text
    }
}

/// The median and maximum of `values`.
pub fn p50_max(values: &mut [u64]) -> (Option<u64>, Option<u64>) {
    values.sort_unstable();
    (
        values.get(values.len() / 2).copied(),
        values.last().copied(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Verdict {
        Verdict {
            publishes: Publishes {
                acknowledged: 10,
                ..Publishes::default()
            },
            convergence: Convergence {
                final_ms: Some(5),
                ..Convergence::default()
            },
            logs_identical: true,
            state_identical: true,
            ..Verdict::default()
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let mut verdict = clean();
        verdict.decide();
        assert!(verdict.passed, "{:?}", verdict.problems);
        assert!(verdict.human().contains("PASS"));
    }

    #[test]
    fn any_loss_duplicate_reorder_or_divergence_fails() {
        let breakages: [fn(&mut Verdict); 7] = [
            |v| v.lost_in_logs = 1,
            |v| v.lost_in_clients = 1,
            |v| v.duplicates = 1,
            |v| v.out_of_order = 1,
            |v| v.logs_identical = false,
            |v| v.state_identical = false,
            |v| v.convergence.final_ms = None,
        ];
        for breakage in breakages {
            let mut verdict = clean();
            breakage(&mut verdict);
            verdict.decide();
            assert!(!verdict.passed);
            assert!(verdict.human().contains("FAIL"));
        }
    }

    #[test]
    fn a_run_that_acknowledged_nothing_proves_nothing() {
        let mut verdict = clean();
        verdict.publishes.acknowledged = 0;
        verdict.decide();
        assert!(!verdict.passed);
    }

    #[test]
    fn medians() {
        assert_eq!(p50_max(&mut [30, 10, 20]), (Some(20), Some(30)));
        assert_eq!(p50_max(&mut []), (None, None));
    }
}
