//! What a server's exit means, written once for every backend: exit code x restart policy ->
//! phase, reason and message.
//!
//! | Restart follows | Exit code | Phase       | Reason             | Message                                        |
//! |-----------------|-----------|-------------|--------------------|------------------------------------------------|
//! | yes             | any       | `Pending`   | `CrashLoopBackOff` | `exited with code N; restarting[ <when>]`      |
//! | no              | 0         | `Succeeded` | `Completed`        | none                                           |
//! | no              | not 0     | `Failed`    | `Error`            | `exited with code N`                           |
//!
//! A restart follows under [`RestartPolicy::Always`], under [`RestartPolicy::OnFailure`] after a
//! non-zero code, and never under [`RestartPolicy::Never`]. A server that will be restarted is
//! not terminal ([`Phase::is_terminal`] promises that nothing follows a terminal phase), so a
//! crash loop is `Pending`, never `Failed`. A backend may know more than the code (why the
//! program could not start, an engine's own reason such as `OOMKilled`) and says so through
//! [`RunExit::with_detail`] or its own reason; the phase always comes from here.

use crate::instance::{InstanceStatus, Phase, reasons};
use crate::spec::RestartPolicy;

impl RestartPolicy {
    /// Whether a run that exited with `code` is started again.
    pub fn restarts_after(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

/// What follows the exit of one run of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AfterExit {
    /// Exited 0 and stays down.
    Completed,
    /// Exited non-zero (or was killed) and stays down.
    Failed,
    /// Will be started again, after a back-off.
    Restart,
}

impl AfterExit {
    /// The decision of `policy` for a run that exited with `code`.
    pub fn decide(policy: RestartPolicy, code: i32) -> Self {
        if policy.restarts_after(code) {
            Self::Restart
        } else {
            Self::without_restart(code)
        }
    }

    /// The outcome of a run that exited with `code` when it is known that no restart follows
    /// (an engine that applies the policy itself and reports the container as exited).
    pub fn without_restart(code: i32) -> Self {
        if code == 0 {
            Self::Completed
        } else {
            Self::Failed
        }
    }

    /// Whether a restart follows.
    pub fn restarts(self) -> bool {
        self == Self::Restart
    }

    /// The phase reported meanwhile: `Pending` until the restart, else terminal.
    pub fn phase(self) -> Phase {
        match self {
            Self::Completed => Phase::Succeeded,
            Self::Failed => Phase::Failed,
            Self::Restart => Phase::Pending,
        }
    }

    /// The reason reported with [`AfterExit::phase`].
    pub fn reason(self) -> &'static str {
        match self {
            Self::Completed => reasons::COMPLETED,
            Self::Failed => reasons::ERROR,
            Self::Restart => reasons::CRASH_LOOP_BACKOFF,
        }
    }
}

/// The reason of a terminated run by its code alone, whatever follows: `Completed` for 0,
/// `Error` otherwise (the reason Kubernetes gives a terminated container).
pub fn exit_reason(code: i32) -> &'static str {
    AfterExit::without_restart(code).reason()
}

/// The message of a run that exited with `code`: `exited with code N`.
pub fn exit_message(code: i32) -> String {
    format!("exited with code {code}")
}

/// One run's exit as reported in an [`InstanceStatus`]: its code, what follows and what else
/// the backend knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunExit {
    /// The exit code (128 + the signal for a killed process, by the shell's convention).
    pub code: i32,
    /// What follows.
    pub after: AfterExit,
    /// Replaces `exited with code N` in the message (for example why the program could not
    /// be started).
    pub detail: Option<String>,
    /// When the restart comes (`in 200ms`, `(restart 3)`), appended to `restarting`.
    pub next_start: Option<String>,
}

impl RunExit {
    /// A run that exited with `code`, followed by `after`.
    pub fn new(code: i32, after: AfterExit) -> Self {
        Self {
            code,
            after,
            detail: None,
            next_start: None,
        }
    }

    /// A run that exited with `code` under `policy`.
    pub fn under(policy: RestartPolicy, code: i32) -> Self {
        Self::new(code, AfterExit::decide(policy, code))
    }

    /// Sets the detail that replaces `exited with code N`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets when the restart comes.
    #[must_use]
    pub fn with_next_start(mut self, when: impl Into<String>) -> Self {
        self.next_start = Some(when.into());
        self
    }

    /// The message: none for a completed run, else the detail (or `exited with code N`),
    /// followed by `; restarting` and when, if a restart follows.
    pub fn message(&self) -> Option<String> {
        let what = || {
            self.detail
                .clone()
                .unwrap_or_else(|| exit_message(self.code))
        };
        match self.after {
            AfterExit::Completed => None,
            AfterExit::Failed => Some(what()),
            AfterExit::Restart => Some(match &self.next_start {
                Some(when) => format!("{}; restarting {when}", what()),
                None => format!("{}; restarting", what()),
            }),
        }
    }

    /// Writes phase, reason, message and exit code into `status`, leaving its restart count
    /// and times alone.
    pub fn apply_to(&self, status: &mut InstanceStatus) {
        status.phase = self.after.phase();
        status.reason = Some(self.after.reason().to_owned());
        status.message = self.message();
        status.exit_code = Some(self.code);
    }

    /// A status holding only what the exit says (phase, reason, message, exit code).
    pub fn status(&self) -> InstanceStatus {
        let mut status = InstanceStatus::default();
        self.apply_to(&mut status);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    use RestartPolicy::{Always, Never, OnFailure};

    #[rstest]
    #[case::always_zero(
        Always,
        0,
        Phase::Pending,
        reasons::CRASH_LOOP_BACKOFF,
        Some("exited with code 0; restarting")
    )]
    #[case::always_error(
        Always,
        3,
        Phase::Pending,
        reasons::CRASH_LOOP_BACKOFF,
        Some("exited with code 3; restarting")
    )]
    #[case::on_failure_zero(OnFailure, 0, Phase::Succeeded, reasons::COMPLETED, None)]
    #[case::on_failure_error(
        OnFailure,
        1,
        Phase::Pending,
        reasons::CRASH_LOOP_BACKOFF,
        Some("exited with code 1; restarting")
    )]
    #[case::on_failure_killed(
        OnFailure,
        137,
        Phase::Pending,
        reasons::CRASH_LOOP_BACKOFF,
        Some("exited with code 137; restarting")
    )]
    #[case::never_zero(Never, 0, Phase::Succeeded, reasons::COMPLETED, None)]
    #[case::never_error(Never, 2, Phase::Failed, reasons::ERROR, Some("exited with code 2"))]
    #[case::never_negative(Never, -1, Phase::Failed, reasons::ERROR, Some("exited with code -1"))]
    #[case::never_killed(
        Never,
        143,
        Phase::Failed,
        reasons::ERROR,
        Some("exited with code 143")
    )]
    fn policy_and_code_decide_phase_reason_and_message(
        #[case] policy: RestartPolicy,
        #[case] code: i32,
        #[case] phase: Phase,
        #[case] reason: &str,
        #[case] message: Option<&str>,
    ) {
        let exit = RunExit::under(policy, code);
        assert_eq!(exit.after.restarts(), phase == Phase::Pending);
        assert_eq!(exit.after.restarts(), policy.restarts_after(code));
        let status = exit.status();
        assert_eq!(status.phase, phase);
        assert_eq!(status.reason.as_deref(), Some(reason));
        assert_eq!(status.message.as_deref(), message);
        assert_eq!(status.exit_code, Some(code));
        assert!(status.phase.is_terminal() != exit.after.restarts());
    }

    #[rstest]
    #[case(0, reasons::COMPLETED)]
    #[case(1, reasons::ERROR)]
    #[case(-9, reasons::ERROR)]
    fn reason_by_code_alone(#[case] code: i32, #[case] reason: &str) {
        assert_eq!(exit_reason(code), reason);
        assert_eq!(AfterExit::without_restart(code).reason(), reason);
        assert!(AfterExit::without_restart(code).phase().is_terminal());
    }

    #[test]
    fn detail_and_next_start_shape_the_message() {
        let restarting = RunExit::under(Always, 127)
            .with_detail("cannot start /x: not found")
            .with_next_start("in 200ms");
        assert_eq!(
            restarting.message().as_deref(),
            Some("cannot start /x: not found; restarting in 200ms")
        );
        let failed = RunExit::under(Never, 127).with_detail("cannot start /x: not found");
        assert_eq!(
            failed.message().as_deref(),
            Some("cannot start /x: not found")
        );
        let completed = RunExit::under(Never, 0)
            .with_detail("ignored")
            .with_next_start("never");
        assert_eq!(completed.message(), None);
    }

    #[test]
    fn apply_keeps_counts_and_times() {
        let mut status = InstanceStatus {
            restart_count: 4,
            started_at: Some(crate::Timestamp::UNIX_EPOCH),
            message: Some("stale".into()),
            ..InstanceStatus::phase(Phase::Running)
        };
        RunExit::under(Never, 0).apply_to(&mut status);
        assert_eq!(status.phase, Phase::Succeeded);
        assert_eq!(status.message, None, "a stale message is cleared");
        assert_eq!(status.restart_count, 4);
        assert_eq!(status.started_at, Some(crate::Timestamp::UNIX_EPOCH));
    }
}
