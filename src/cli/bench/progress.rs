//! The live view while a run goes: one progress bar on stderr (hidden with `--json` or when
//! stderr is not a terminal), fed from the groups' and publishers' atomic counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::publisher::PublishCounters;
use super::subscriber::GroupCounters;

/// The sums of every live counter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub connected: u64,
    pub connect_failed: u64,
    pub received: u64,
    pub disconnected: u64,
    pub acked: u64,
    pub failed: u64,
}

/// Every counter of the run, for the bar and for the orchestrator's waits.
pub struct Live {
    pub groups: Vec<Arc<GroupCounters>>,
    pub publishes: Arc<PublishCounters>,
}

impl Live {
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            acked: self.publishes.acked.load(Ordering::Relaxed),
            failed: self.publishes.failed.load(Ordering::Relaxed),
            ..Totals::default()
        };
        for group in &self.groups {
            totals.connected += group.connected.load(Ordering::Relaxed);
            totals.connect_failed += group.connect_failed.load(Ordering::Relaxed);
            totals.received += group.received.load(Ordering::Relaxed);
            totals.disconnected += group.disconnected.load(Ordering::Relaxed);
        }
        totals
    }

    /// Waits until `done` holds for the totals (it sees them every 5 ms, for a progress bar
    /// too), deliveries stall for `stall`, or `cap` has passed.
    pub async fn drain(
        &self,
        cap: std::time::Duration,
        stall: std::time::Duration,
        mut done: impl FnMut(&Totals) -> bool,
    ) {
        let started = tokio::time::Instant::now();
        let mut last = (self.totals().received, tokio::time::Instant::now());
        loop {
            let totals = self.totals();
            if done(&totals) || started.elapsed() >= cap {
                return;
            }
            if totals.received != last.0 {
                last = (totals.received, tokio::time::Instant::now());
            } else if last.1.elapsed() >= stall {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// A bar of `length` steps with `label`, or a hidden one.
pub fn bar(visible: bool, length: u64, label: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{elapsed_precise}] {bar:30.cyan/blue} {percent:>3}% {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The message shown during the load.
pub fn load_message(totals: &Totals) -> String {
    format!(
        "published {} ({} failed), delivered {}, dropped {}",
        totals.acked, totals.failed, totals.received, totals.disconnected
    )
}
