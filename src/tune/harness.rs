//! The launch harness: start an engine in its own process group, wait until
//! it is healthy, and stop the whole group on every exit path.
//!
//! The engine runs as `sh -c TEMPLATE` with `process_group(0)`, so the shell,
//! the engine and anything the engine forks share one group whose id is the
//! shell's pid. [`EngineGuard`]'s `Drop` sends SIGTERM to the group, waits
//! up to the grace for the group to empty, then sends SIGKILL; it runs on
//! success, on error, on Ctrl-C (the pipeline future is dropped) and on a
//! trial timeout. Nothing is ever stopped by name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of the engine log quoted when it fails.
pub const LOG_TAIL_LINES: usize = 8;

/// How long to wait for a SIGKILLed group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How often the health route is polled.
const POLL: Duration = Duration::from_millis(100);

/// Why an engine did not become ready.
#[derive(Debug, Clone, PartialEq)]
pub enum StartFailure {
    /// The process exited (a bad flag, out of memory, …).
    Exited {
        /// Exit status as text.
        status: String,
        /// The log line that says why (the last error-looking line).
        reason: String,
    },
    /// Nothing listened on the port before the start-up timeout.
    PortNeverOpened,
    /// The port opened but the health route never answered 200.
    NotHealthy {
        /// Last HTTP status seen per route.
        last: String,
    },
    /// The process could not be spawned at all.
    Spawn(String),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::Exited { status, reason } => {
                write!(f, "the engine exited during start-up ({status}): {reason}")
            }
            StartFailure::PortNeverOpened => f.write_str(
                "the port never opened before --startup-timeout; does the template pass {port} to the engine?",
            ),
            StartFailure::NotHealthy { last } => write!(
                f,
                "the engine listens but its health route never answered 200 before --startup-timeout ({last}); set --health-path to the engine's readiness route"
            ),
            StartFailure::Spawn(e) => write!(f, "cannot start 'sh -c …': {e}"),
        }
    }
}

/// A running engine; stops its whole process group when dropped.
pub struct EngineGuard {
    child: Child,
    pgid: i32,
    grace: Duration,
    log: PathBuf,
}

/// Picks a free port: binds 127.0.0.1:0, reads the port and closes it.
/// Another process could take it before the engine binds; the engine then
/// fails to start and the trial says so.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl EngineGuard {
    /// Starts `command` under `sh -c` in a new process group, its stdout
    /// and stderr appended to `log`.
    pub fn launch(command: &str, log: &Path, grace: Duration) -> Result<Self, StartFailure> {
        let spawn = |e: std::io::Error| StartFailure::Spawn(e.to_string());
        let out = File::create(log).map_err(spawn)?;
        let err = out.try_clone().map_err(spawn)?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(spawn)?;
        let pgid = child.id() as i32;
        Ok(Self {
            child,
            pgid,
            grace,
            log: log.to_owned(),
        })
    }

    /// The process group id (the shell's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The exit status if the shell has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `url` + each of `paths` until one answers 200, the process exits,
    /// or `timeout` passes.
    pub async fn wait_healthy(
        &mut self,
        url: &str,
        paths: &[String],
        timeout: Duration,
    ) -> Result<(), StartFailure> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| StartFailure::Spawn(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let mut last: Vec<String> = Vec::new();
        let mut opened = false;
        loop {
            if let Some(status) = self.exited() {
                return Err(StartFailure::Exited {
                    status: status.to_string(),
                    reason: failure_reason(&log_tail(&self.log, LOG_TAIL_LINES)),
                });
            }
            last.clear();
            for p in paths {
                match client.get(format!("{url}{p}")).send().await {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => {
                        opened = true;
                        last.push(format!("{p}: {}", r.status().as_u16()));
                    }
                    Err(e) if e.is_connect() => last.push(format!("{p}: connection refused")),
                    Err(_) => {
                        opened = true;
                        last.push(format!("{p}: no answer"));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(if opened {
                    StartFailure::NotHealthy {
                        last: last.join(", "),
                    }
                } else {
                    StartFailure::PortNeverOpened
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Why the engine exited (its log line), if it has.
    pub fn exit_reason(&mut self) -> Option<String> {
        let status = self.exited()?;
        Some(format!(
            "{status}: {}",
            failure_reason(&log_tail(&self.log, LOG_TAIL_LINES))
        ))
    }

    /// Stops the group now (also what `Drop` does).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        signal_group(self.pgid, libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            // Reap the shell first: a zombie still counts as a group member.
            let _ = self.child.try_wait();
            if !group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pgid, libc::SIGKILL);
        let _ = self.child.wait();
        // SIGKILL is delivered asynchronously: wait (briefly) until every
        // member is gone, so that "stopped" means stopped when this returns.
        let deadline = Instant::now() + KILL_WAIT;
        while group_alive(self.pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: a plain syscall; a negative pid addresses the process group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Whether any process of group `pgid` is alive: `kill(-pgid, 0)`, and on
/// Linux a member in `/proc` that is not a zombie. Orphans of the engine are
/// re-parented to PID 1, which in a container may never reap them: their
/// zombies still answer `kill(0)` but are no longer running.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    live_member(pgid).unwrap_or(true)
}

#[cfg(target_os = "linux")]
fn live_member(pgid: i32) -> Option<bool> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state, ppid, pgrp, …
        let mut f = stat
            .rsplit_once(')')
            .map(|x| x.1)
            .unwrap_or("")
            .split_whitespace();
        let (state, _ppid, pgrp) = (f.next(), f.next(), f.next());
        if pgrp.and_then(|p| p.parse::<i32>().ok()) == Some(pgid) && state != Some("Z") {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(not(target_os = "linux"))]
fn live_member(_pgid: i32) -> Option<bool> {
    None
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The line of a failed start that says why: the last one that looks like an
/// error (`Error`, `ValueError`, `out of memory`, …), else the last line.
pub fn failure_reason(tail: &[String]) -> String {
    let looks_bad = |l: &&String| {
        let l = l.to_ascii_lowercase();
        [
            "error",
            "out of memory",
            "oom",
            "fatal",
            "panic",
            "unrecognized",
            "invalid",
        ]
        .iter()
        .any(|w| l.contains(w))
    };
    tail.iter()
        .rev()
        .find(looks_bad)
        .or_else(|| tail.last())
        .cloned()
        .unwrap_or_else(|| "(the engine logged nothing)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reason_prefers_the_error_line() {
        let t: Vec<String> = [
            "INFO loading",
            "ValueError: No available memory",
            "INFO bye",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(failure_reason(&t), "ValueError: No available memory");
        assert_eq!(failure_reason(&t[..1]), "INFO loading");
        assert!(failure_reason(&[]).contains("nothing"));
    }

    #[test]
    fn issue13_guard_kills_the_whole_group_including_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("e.log");
        // The shell forks a child that ignores TERM: KILL after the grace ends it.
        let g = EngineGuard::launch(
            "trap '' TERM; sleep 30 & sleep 30; wait",
            &log,
            Duration::from_millis(300),
        )
        .unwrap();
        let pgid = g.pgid();
        std::thread::sleep(Duration::from_millis(100));
        assert!(group_alive(pgid));
        drop(g);
        assert!(!group_alive(pgid), "group {pgid} survived");
    }
}
