//! Iterative pre-copy migration (the PF-Docker idea): move what can move while the container
//! runs, stop it only for the last small delta.
//!
//! Round 1 pre-dumps all memory (and syncs the rootfs); each following round pre-dumps only the
//! pages dirtied since the previous one (soft-dirty tracking), until one of the stopping rules
//! holds: the delta is under the threshold (converged), it did not shrink enough against the
//! previous round (the workload dirties memory as fast as we copy it: more rounds only waste
//! time), or the round limit. Then the final dump (the container is frozen from here), the last
//! rootfs sync, and the restore at the destination. Downtime is from the start of the final dump
//! to the end of the restore.
//!
//! The container-specific work is behind [`Steps`], so this loop and its rules are tested
//! without CRIU.

use std::time::{Duration, Instant};

use serde::Serialize;

pub type StepError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration: {phase} (round {round}): {source}")]
    Step {
        phase: Phase,
        round: u32,
        source: StepError,
    },
    #[error("migration policy: {0}")]
    Policy(String),
}

/// When to stop pre-copying.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Policy {
    /// Most pre-dump rounds before the final dump.
    pub max_rounds: u32,
    /// A pre-dump that wrote at most this many bytes of memory is small enough to cut over.
    pub threshold_bytes: u64,
    /// A round must write less than this fraction of the previous one to count as progress.
    pub min_shrink: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_rounds: 8,
            threshold_bytes: 4 << 20,
            min_shrink: 0.8,
        }
    }
}

impl Policy {
    pub fn check(&self) -> Result<(), MigrateError> {
        if !(self.min_shrink > 0.0 && self.min_shrink <= 1.0) {
            return Err(MigrateError::Policy(format!(
                "shrink ratio {}: want a fraction in (0, 1]",
                self.min_shrink
            )));
        }
        Ok(())
    }

    /// Whether pre-copy stops after the rounds so far (bytes of memory each wrote).
    pub fn stop(&self, written: &[u64]) -> Option<Stop> {
        let last = *written.last()?;
        if last <= self.threshold_bytes {
            return Some(Stop::Converged);
        }
        if let [.., prev, _] = written {
            if last as f64 >= *prev as f64 * self.min_shrink {
                return Some(Stop::NotShrinking);
            }
        }
        if written.len() as u32 >= self.max_rounds {
            return Some(Stop::RoundLimit);
        }
        None
    }
}

/// Why pre-copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    Converged,
    NotShrinking,
    RoundLimit,
    /// Stop-and-copy: no pre-copy at all.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    PreDump,
    FinalDump,
    Restore,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::PreDump => "pre-dump",
            Phase::FinalDump => "final dump",
            Phase::Restore => "restore",
        })
    }
}

/// What one step moved and took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepFigures {
    /// Memory pages written (bytes).
    pub memory_bytes: u64,
    /// Every image file written, pages included.
    pub image_bytes: u64,
    /// Rootfs bytes copied.
    pub rootfs_bytes: u64,
    /// CRIU's own: how long the tasks were frozen in this step (a pre-dump freezes briefly too).
    #[serde(with = "ms")]
    pub frozen: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub phase: Phase,
    #[serde(flatten)]
    pub figures: StepFigures,
    #[serde(with = "ms")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub policy: Policy,
    pub stop: Stop,
    pub rounds: Vec<Round>,
    #[serde(with = "ms")]
    pub total: Duration,
    /// From the start of the final dump to the end of the restore.
    #[serde(with = "ms")]
    pub downtime: Duration,
    /// Everything moved: images and rootfs, every round.
    pub bytes: u64,
}

mod ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
    }
}

/// The container-specific work of a migration.
pub trait Steps {
    /// Pre-dump round `round` (1-based; round 1 has no parent), with a rootfs sync.
    fn pre_dump(&mut self, round: u32) -> Result<StepFigures, StepError>;
    /// The final dump (stops the container), chained on round `last_round` (0: none), and the
    /// last rootfs sync.
    fn final_dump(&mut self, last_round: u32) -> Result<StepFigures, StepError>;
    /// Restore at the destination.
    fn restore(&mut self) -> Result<StepFigures, StepError>;
}

/// Run a migration: pre-copy rounds under `policy` (none when `precopy` is false:
/// stop-and-copy), then the final dump and the restore. `progress` sees every round as it ends.
pub fn run(
    policy: &Policy,
    precopy: bool,
    steps: &mut dyn Steps,
    progress: &mut dyn FnMut(&Round),
) -> Result<Report, MigrateError> {
    policy.check()?;
    let t0 = Instant::now();
    let mut rounds = Vec::new();
    let mut written = Vec::new();
    let mut stop = Stop::Disabled;
    let mut n = 0;
    // `precopy` false: no pre-dump round at all (stop-and-copy).
    let mut more = precopy;
    while more {
        n += 1;
        let _s = tracing::info_span!("pre-dump", round = n).entered();
        let t = Instant::now();
        let figures = steps.pre_dump(n).map_err(|source| MigrateError::Step {
            phase: Phase::PreDump,
            round: n,
            source,
        })?;
        written.push(figures.memory_bytes);
        let r = Round {
            round: n,
            phase: Phase::PreDump,
            figures,
            duration: t.elapsed(),
        };
        progress(&r);
        rounds.push(r);
        if let Some(s) = policy.stop(&written) {
            stop = s;
            more = false;
        }
    }
    let down = Instant::now();
    let step = |phase, round, r: Result<StepFigures, StepError>| {
        r.map_err(|source| MigrateError::Step {
            phase,
            round,
            source,
        })
    };
    let figures = step(Phase::FinalDump, n + 1, steps.final_dump(n))?;
    let r = Round {
        round: n + 1,
        phase: Phase::FinalDump,
        figures,
        duration: down.elapsed(),
    };
    progress(&r);
    rounds.push(r);
    let t = Instant::now();
    let figures = step(Phase::Restore, n + 1, steps.restore())?;
    let r = Round {
        round: n + 1,
        phase: Phase::Restore,
        figures,
        duration: t.elapsed(),
    };
    progress(&r);
    rounds.push(r);
    let downtime = down.elapsed();
    let bytes = rounds
        .iter()
        .map(|r| r.figures.image_bytes + r.figures.rootfs_bytes)
        .sum();
    Ok(Report {
        policy: *policy,
        stop,
        rounds,
        total: t0.elapsed(),
        downtime,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn stopping_rules() {
        let p = Policy {
            max_rounds: 4,
            threshold_bytes: 4 * MB,
            min_shrink: 0.8,
        };
        assert_eq!(p.stop(&[]), None);
        assert_eq!(p.stop(&[200 * MB]), None);
        assert_eq!(p.stop(&[200 * MB, 20 * MB]), None);
        assert_eq!(p.stop(&[200 * MB, 20 * MB, 3 * MB]), Some(Stop::Converged));
        // a fast dirtier: the delta does not shrink
        assert_eq!(p.stop(&[200 * MB, 190 * MB]), Some(Stop::NotShrinking));
        assert_eq!(
            p.stop(&[200 * MB, 100 * MB, 90 * MB]),
            Some(Stop::NotShrinking)
        );
        assert_eq!(
            p.stop(&[200 * MB, 100 * MB, 50 * MB, 25 * MB]),
            Some(Stop::RoundLimit)
        );
        assert!(Policy {
            min_shrink: 1.5,
            ..p
        }
        .check()
        .is_err());
    }

    /// A simulated workload: the first round writes everything, later ones what was dirtied
    /// while the previous round ran (rate x duration, at most the whole memory).
    struct Sim {
        memory: u64,
        dirty_per_round: f64,
        last: u64,
        log: Vec<String>,
    }

    impl Steps for Sim {
        fn pre_dump(&mut self, round: u32) -> Result<StepFigures, StepError> {
            let w = if round == 1 {
                self.memory
            } else {
                ((self.last as f64) * self.dirty_per_round).min(self.memory as f64) as u64
            };
            self.last = w;
            self.log.push(format!("pre{round}"));
            Ok(StepFigures {
                memory_bytes: w,
                image_bytes: w,
                ..StepFigures::default()
            })
        }
        fn final_dump(&mut self, last: u32) -> Result<StepFigures, StepError> {
            self.log.push(format!("final{last}"));
            Ok(StepFigures::default())
        }
        fn restore(&mut self) -> Result<StepFigures, StepError> {
            self.log.push("restore".into());
            Ok(StepFigures::default())
        }
    }

    #[test]
    fn slow_dirtier_converges_fast_one_is_cut_over() -> Result<(), MigrateError> {
        let p = Policy::default();
        let mut slow = Sim {
            memory: 200 * MB,
            dirty_per_round: 0.1,
            last: 0,
            log: vec![],
        };
        let r = run(&p, true, &mut slow, &mut |_| {})?;
        assert_eq!(r.stop, Stop::Converged);
        assert_eq!(slow.log, ["pre1", "pre2", "pre3", "final3", "restore"]);
        let mut fast = Sim {
            memory: 200 * MB,
            dirty_per_round: 1.0,
            last: 0,
            log: vec![],
        };
        let r = run(&p, true, &mut fast, &mut |_| {})?;
        assert_eq!(r.stop, Stop::NotShrinking);
        assert_eq!(fast.log, ["pre1", "pre2", "final2", "restore"]);
        let mut sc = Sim {
            memory: 1,
            dirty_per_round: 1.0,
            last: 0,
            log: vec![],
        };
        let r = run(&p, false, &mut sc, &mut |_| {})?;
        assert_eq!(r.stop, Stop::Disabled);
        assert_eq!(sc.log, ["final0", "restore"]);
        let j = serde_json::to_value(&r).map_err(|e| MigrateError::Policy(e.to_string()))?;
        assert_eq!(j["rounds"][0]["phase"], "final-dump");
        Ok(())
    }
}
