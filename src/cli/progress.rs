//! What `watch` and `run` show while an experiment runs: on a terminal, one
//! bar for the rounds done and one per running round (a round's bar goes
//! when it ends, so a thousand rounds still fit a screen); elsewhere, one
//! line per event (stderr), or one JSON object per event (stdout). An event
//! the coordinator sends again after a reconnect is shown once.

use super::remote::{state_name, Show};
use crossfold_proto::v1;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};

/// What makes two events of one job the same to show.
type Seen = (i32, u32, Option<(u32, u32, u64)>, String);

pub struct View {
    show: Show,
    tty: bool,
    bars: MultiProgress,
    style: ProgressStyle,
    /// Rounds done out of rounds known.
    overall: Option<ProgressBar>,
    /// One bar per running round.
    running: BTreeMap<String, ProgressBar>,
    /// Every round's last state.
    states: BTreeMap<String, &'static str>,
    last: HashMap<String, Seen>,
    /// Without a terminal: per job, what its last line showed (state,
    /// attempt, epoch, message) and when.
    printed: HashMap<String, (Seen, std::time::Instant)>,
}

/// Without a terminal, a running round's progress within one epoch gets a
/// line at most this often (a heartbeat every 2 s would fill a CI log).
const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl View {
    pub fn new(show: Show, tty: bool) -> View {
        View {
            show,
            tty: tty && show == Show::Text,
            bars: MultiProgress::new(),
            style: ProgressStyle::with_template("{prefix:>16} {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            overall: None,
            running: BTreeMap::new(),
            states: BTreeMap::new(),
            last: HashMap::new(),
            printed: HashMap::new(),
        }
    }

    /// Without a terminal: whether `ev` is worth a line (a new state,
    /// attempt, epoch or message, or [`LINE_EVERY`] since the job's last).
    fn worth_a_line(&mut self, ev: &v1::ExperimentEvent) -> bool {
        let shown: Seen = (
            ev.state,
            ev.attempt,
            // An epoch's first report and its last (with the validation
            // AUC) each get a line.
            ev.progress
                .as_ref()
                .map(|p| (p.epoch, u32::from(p.step >= p.steps_per_epoch), 0)),
            ev.message.clone(),
        );
        let now = std::time::Instant::now();
        if let Some((last, at)) = self.printed.get(&ev.job_key) {
            if *last == shown && now.duration_since(*at) < LINE_EVERY {
                return false;
            }
        }
        self.printed.insert(ev.job_key.clone(), (shown, now));
        true
    }

    /// A message about the connection: above the bars on a terminal.
    pub fn say(&self, message: &str) {
        if self.tty {
            let _ = self.bars.println(message);
        } else if self.show != Show::Nothing {
            eprintln!("{message}");
        }
    }

    /// Show one event (once: a repeat after a reconnect is dropped).
    pub fn event(&mut self, ev: &v1::ExperimentEvent) {
        let seen: Seen = (
            ev.state,
            ev.attempt,
            ev.progress.as_ref().map(|p| (p.epoch, p.step, p.preparing)),
            ev.message.clone(),
        );
        if self.last.get(&ev.job_key) == Some(&seen) {
            return;
        }
        self.last.insert(ev.job_key.clone(), seen);
        let state = state_name(ev.state);
        self.states.insert(ev.job_key.clone(), state);
        match self.show {
            Show::Nothing => {}
            Show::Json => println!("{}", event_json(ev, state)),
            Show::Text if self.tty => self.draw(ev, state),
            Show::Text => {
                if self.worth_a_line(ev) {
                    eprintln!("{}", event_line(ev, state))
                }
            }
        }
    }

    fn draw(&mut self, ev: &v1::ExperimentEvent, state: &'static str) {
        if state == "leased" {
            let bar = self.running.entry(ev.job_key.clone()).or_insert_with(|| {
                let b = self.bars.add(ProgressBar::new(1));
                b.set_style(self.style.clone());
                b.set_prefix(ev.job_key.clone());
                b
            });
            if let Some(p) = &ev.progress {
                // In u64: the counts come from the network.
                let per = u64::from(p.steps_per_epoch);
                bar.set_length((u64::from(p.epochs).saturating_mul(per)).max(1));
                bar.set_position(
                    u64::from(p.epoch.saturating_sub(1))
                        .saturating_mul(per)
                        .saturating_add(u64::from(p.step)),
                );
            }
            bar.set_message(format!("#{} {}", ev.attempt, progress_text(ev)));
        } else {
            if let Some(bar) = self.running.remove(&ev.job_key) {
                bar.finish_and_clear();
                self.bars.remove(&bar);
            }
            // Failures, and an attempt that failed and will be tried again,
            // are said once, above the bars.
            if state == "failed" || (state == "pending" && !ev.message.is_empty()) {
                let _ = self.bars.println(event_line(ev, state));
            }
        }
        let overall = self.overall.get_or_insert_with(|| {
            let b = self.bars.insert(0, ProgressBar::new(1));
            b.set_style(self.style.clone());
            b.set_prefix("rounds done");
            b
        });
        let count = |s: &str| self.states.values().filter(|v| **v == s).count();
        overall.set_length(self.states.len().max(1) as u64);
        overall.set_position(count("succeeded") as u64);
        let parts: Vec<String> = [
            ("running", "leased"),
            ("failed", "failed"),
            ("cancelled", "cancelled"),
        ]
        .iter()
        .map(|(word, s)| (word, count(s)))
        .filter(|(_, n)| *n > 0)
        .map(|(word, n)| format!("{n} {word}"))
        .collect();
        overall.set_message(parts.join(", "));
    }
}

impl Drop for View {
    /// Bars left are abandoned where they stand: indicatif would otherwise
    /// fill them to 100 % (a failed or interrupted round shown as done).
    fn drop(&mut self) {
        for bar in self.running.values() {
            bar.abandon();
        }
        if let Some(b) = &self.overall {
            b.abandon();
        }
    }
}

fn progress_text(ev: &v1::ExperimentEvent) -> String {
    match &ev.progress {
        // Before epoch 1: getting the data set and its images ready.
        Some(p) if p.epoch == 0 => format!(
            "getting ready: {} file(s) fetched or checked, image(s) decoded",
            p.preparing
        ),
        Some(p) => format!(
            "epoch {}/{} step {}/{} loss {} val AUC {} {:.0} img/s ETA {:.0} s",
            p.epoch,
            p.epochs,
            p.step,
            p.steps_per_epoch,
            if p.train_loss.is_finite() {
                format!("{:.4}", p.train_loss)
            } else {
                "-".into()
            },
            p.validation_auc
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            p.images_per_second,
            p.eta_seconds
        ),
        None => String::new(),
    }
}

/// One event as a line: "screening-r01 leased attempt 1 epoch 3/30 ...".
fn event_line(ev: &v1::ExperimentEvent, state: &str) -> String {
    // A queued or running job's message is its previous attempt's error.
    let about = if matches!(state, "pending" | "leased") {
        "last attempt"
    } else {
        "error"
    };
    let err = if ev.message.is_empty() {
        String::new()
    } else {
        format!(" {about}: {}", ev.message)
    };
    format!(
        "{} {} attempt {} {}{}",
        ev.job_key,
        state,
        ev.attempt,
        progress_text(ev),
        err
    )
}

fn event_json(ev: &v1::ExperimentEvent, state: &str) -> serde_json::Value {
    let p = ev.progress.as_ref().map(|p| {
        serde_json::json!({
            "epoch": p.epoch, "epochs": p.epochs, "step": p.step,
            "steps_per_epoch": p.steps_per_epoch,
            "train_loss": p.train_loss.is_finite().then_some(p.train_loss),
            "validation_auc": p.validation_auc, "images_per_second": p.images_per_second,
            "eta_seconds": p.eta_seconds, "preparing": p.preparing,
        })
    });
    serde_json::json!({
        "experiment_id": ev.experiment_id, "job": ev.job_key, "state": state,
        "attempt": ev.attempt, "progress": p,
        "message": (!ev.message.is_empty()).then_some(&ev.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(job: &str, state: v1::JobState, attempt: u32, step: Option<u32>) -> v1::ExperimentEvent {
        v1::ExperimentEvent {
            experiment_id: "e".into(),
            job_key: job.into(),
            state: state as i32,
            attempt,
            progress: step.map(|step| v1::Progress {
                epoch: 1,
                epochs: 2,
                step,
                steps_per_epoch: 4,
                ..Default::default()
            }),
            message: String::new(),
        }
    }

    #[test]
    fn an_event_sent_again_after_a_reconnect_is_shown_once_and_bars_follow_running_rounds() {
        // Bars drawn to a hidden target, as on a terminal.
        let mut v = View::new(Show::Text, true);
        v.bars
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        v.event(&ev("a", v1::JobState::Leased, 1, Some(2)));
        v.event(&ev("b", v1::JobState::Pending, 0, None));
        assert_eq!(v.running.len(), 1);
        assert_eq!(v.running["a"].position(), 2);
        // The same event again (a reconnect's snapshot): nothing changes.
        let before = v.last.len();
        v.event(&ev("a", v1::JobState::Leased, 1, Some(2)));
        assert_eq!((v.last.len(), v.running.len()), (before, 1));
        // A round that ends loses its bar; the overall bar counts it.
        v.event(&ev("a", v1::JobState::Succeeded, 1, None));
        assert!(v.running.is_empty());
        let overall = v.overall.as_ref().unwrap();
        assert_eq!((overall.position(), overall.length()), (1, Some(2)));
        // A failed round is not shown as done.
        v.event(&ev("b", v1::JobState::Leased, 1, Some(1)));
        v.event(&ev("b", v1::JobState::Failed, 1, None));
        let overall = v.overall.as_ref().unwrap();
        assert_eq!(overall.position(), 1);
        assert_eq!(overall.message(), "1 failed");
    }

    #[test]
    fn without_a_terminal_a_rounds_steps_within_an_epoch_get_one_line() {
        let mut v = View::new(Show::Text, false);
        let step = |s| ev("a", v1::JobState::Leased, 1, Some(s));
        assert!(v.worth_a_line(&step(1)));
        assert!(!v.worth_a_line(&step(2)));
        assert!(!v.worth_a_line(&step(3)));
        // The epoch's last step (its validation AUC) gets its line.
        assert!(v.worth_a_line(&step(4)));
        let mut next_epoch = step(1);
        next_epoch.progress.as_mut().unwrap().epoch = 2;
        assert!(v.worth_a_line(&next_epoch));
        assert!(v.worth_a_line(&ev("a", v1::JobState::Succeeded, 1, None)));
        // Another job has lines of its own.
        assert!(v.worth_a_line(&ev("b", v1::JobState::Leased, 1, Some(3))));
        assert!(!v.worth_a_line(&ev("b", v1::JobState::Leased, 1, Some(2))));
        // A minute on, the same epoch gets a line again.
        let (seen, at) = v.printed["b"].clone();
        v.printed.insert("b".into(), (seen, at - LINE_EVERY));
        assert!(v.worth_a_line(&ev("b", v1::JobState::Leased, 1, Some(2))));
    }

    #[test]
    fn counts_from_the_network_do_not_overflow_the_bars() {
        let mut v = View::new(Show::Text, true);
        v.bars
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let mut huge = ev("a", v1::JobState::Leased, 1, Some(u32::MAX));
        if let Some(p) = huge.progress.as_mut() {
            (p.epoch, p.epochs, p.steps_per_epoch) = (u32::MAX, u32::MAX, u32::MAX);
        }
        v.event(&huge);
        assert_eq!(
            v.running["a"].length(),
            Some(u64::from(u32::MAX) * u64::from(u32::MAX))
        );
    }
}
