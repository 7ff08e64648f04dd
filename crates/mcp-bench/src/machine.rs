//! What the figures were measured on: CPUs, memory, kernel, Docker, load before and after,
//! date, build profile and commit; plus the process probes the benchmarks use (peak RSS and
//! CPU time, read without unsafe code).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The machine and the conditions of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Machine {
    pub(crate) date: String,
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) docker: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) profile: String,
    pub(crate) rustc: String,
    pub(crate) commit: String,
    pub(crate) duration: Duration,
}

impl Machine {
    /// Reads everything but Docker (filled in by the caller) and the load after the run.
    pub(crate) fn probe(workspace: &Path) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kib_to_gib(kb)))
            .unwrap_or_default();
        Self {
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu_model,
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            docker: "not used".to_owned(),
            load_before: load(),
            load_after: String::new(),
            profile: if cfg!(debug_assertions) {
                "dev (unoptimized)".to_owned()
            } else {
                "release".to_owned()
            },
            rustc: output("rustc", &["-V"], workspace),
            commit: output("git", &["rev-parse", "--short", "HEAD"], workspace),
            duration: Duration::ZERO,
        }
    }

    /// The machine as a Markdown list.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.fields() {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out
    }

    /// The machine as `key: value` lines for the terminal.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.fields() {
            let _ = writeln!(out, "  {k}: {v}");
        }
        out
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("date", self.date.clone()),
            ("CPUs", format!("{} ({})", self.cpus, self.cpu_model)),
            ("memory", self.memory.clone()),
            ("kernel", self.kernel.clone()),
            ("Docker engine", self.docker.clone()),
            (
                "load average (1/5/15 min) before / after",
                format!("{} / {}", self.load_before, self.load_after),
            ),
            ("build profile of the bench binary", self.profile.clone()),
            ("rustc", self.rustc.clone()),
            ("commit", self.commit.clone()),
            ("run time", format!("{:.0} s", self.duration.as_secs_f64())),
        ]
    }
}

// KiB to GiB for display; memory sizes are far below f64's exact-integer range.
#[allow(clippy::cast_precision_loss)]
fn kib_to_gib(kb: u64) -> f64 {
    kb as f64 / 1024.0 / 1024.0
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(program: &str, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

/// This process's peak resident set size (`VmHWM`), in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system, every thread) this process has used so far.
pub(crate) fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_this_process() {
        assert!(peak_rss().is_some_and(|b| b > 1024 * 1024));
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_time() > before);
        let m = Machine::probe(Path::new("."));
        assert!(m.cpus > 0);
        assert!(m.markdown().contains("- kernel: "));
    }
}
