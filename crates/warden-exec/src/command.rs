//! Command executor: runs the connection's argv directly (argv[0] is the program, no shell),
//! with a clean environment (only [`PASSED_ENV`] is passed through from the gateway, so gateway
//! secrets such as `WARDEN_SECRET_KEY` never reach a command) plus the connection's secret env
//! vars, the approved input
//! written to its stdin (then closed), and stdout and stderr captured.
//!
//! Output: stdout and stderr share ONE pipe (both are the same pipe's write end in the child), so
//! they arrive interleaved in the order the program wrote them, as in a terminal. Only the first
//! `output_cap` bytes are kept; the pipe is drained to the end regardless, so the program never
//! blocks on a full pipe.
//!
//! The program runs in its own process group. On timeout the whole group gets SIGTERM, then
//! SIGKILL two seconds later; the exit code is 124 and the output ends with
//! `… killed after Ns timeout`. If the caller drops the future, the group is killed too. A
//! program killed by a signal exits with 128+signal (shell convention); a program that cannot be
//! found exits 127, one that cannot be run 126. Background processes the program leaves behind
//! after a normal exit are not killed; their output is read for at most a second more.
//!
//! The exact values of the connection's secrets (its env values) are masked in the output as it
//! streams ([`Masker`]): an approved `echo $SECRET` prints `[redacted]`.
//!
//! The program runs with least privilege ([`crate::sandbox`]): as an unprivileged user when the
//! gateway can switch users, in a scratch working directory (its `HOME` and `TMPDIR`), under
//! resource limits.
//!
//! Executors never decide access: the gateway approved this command before calling us.

/// The only variables of the gateway's own environment a command inherits.
pub const PASSED_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "USER", "LOGNAME", "SHELL",
    "TMPDIR",
];

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use warden_core::secret::Secret;

use crate::output::{CappedText, Masker, fmt_duration};
use crate::sandbox::Scratch;
use crate::{ExecOptions, RunResult};

/// Time between SIGTERM and SIGKILL on timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read after the program exited (background children may hold the
/// pipe open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Kills the process group on drop unless disarmed (caller cancelled the future).
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = kill_process_group(pgid, sig);
        }
    }
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

pub(crate) async fn run(
    argv: &[String],
    env: &[(String, Secret<String>)],
    secrets: &[String],
    input: &str,
    opts: &ExecOptions,
) -> RunResult {
    let cap = opts.output_cap;
    let Some(program) = argv.first() else {
        return RunResult::failed(2, "warden: the connection has no command configured", cap);
    };

    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return RunResult::failed(2, &format!("warden: cannot create a pipe: {e}"), cap),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return RunResult::failed(2, &format!("warden: cannot create a pipe: {e}"), cap),
    };
    let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(r) => r,
        Err(e) => return RunResult::failed(2, &format!("warden: cannot create a pipe: {e}"), cap),
    };

    let sandbox = opts.isolation.sandbox().cloned();
    let scratch = match Scratch::new(opts.isolation.scratch_root(), sandbox.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            return RunResult::failed(
                2,
                &format!("warden: cannot create the command's scratch directory: {e}"),
                cap,
            );
        }
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(
            PASSED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .env("HOME", &scratch.path)
        .env("TMPDIR", &scratch.path)
        .current_dir(&scratch.path);
    if let Some(s) = &sandbox {
        // The gateway's PATH may name directories the exec user cannot enter (e.g. under
        // /root), which turns "not found" into "permission denied"; a connection's own `PATH`
        // env var still wins.
        cmd.env("PATH", crate::sandbox::SYSTEM_PATH)
            .env("USER", &s.user)
            .env("LOGNAME", &s.user)
            .uid(s.uid)
            .gid(s.gid);
    }
    let dropped = sandbox.is_some();
    // SAFETY: the closure runs in the child between fork and exec; it only makes setrlimit
    // system calls (no allocation, no locks), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || crate::sandbox::apply_limits(dropped));
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.expose().as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end must be closed, or the read side never sees EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "command not found".to_string()),
                std::io::ErrorKind::PermissionDenied => (126, "permission denied".to_string()),
                _ => (126, format!("cannot run: {e}")),
            };
            return RunResult::failed(code, &format!("warden: {what}: {program}"), cap);
        }
    };
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .filter(|id| *id > 1)
            .and_then(Pid::from_raw),
    };

    if let Some(mut stdin) = child.stdin.take() {
        let data = input.as_bytes().to_vec();
        tokio::spawn(async move {
            // A program that does not read its stdin closes the pipe: ignore the error.
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }

    let mut kept: Vec<u8> = Vec::new();
    // Secrets are masked as the output streams, before the cap can cut one in half.
    let mut masker = Masker::new(secrets);
    let mut dropped = false;
    let mut total: u64 = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut eof = false;
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let deadline = Instant::now() + opts.timeout;
    let mut timed_out = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);

    loop {
        if eof && status.is_some() {
            break;
        }
        tokio::select! {
            r = reader.read(&mut chunk), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    total += n as u64;
                    let shown = masker.push(&chunk[..n]);
                    let room = cap.saturating_sub(kept.len());
                    dropped |= shown.len() > room;
                    kept.extend_from_slice(&shown[..shown.len().min(room)]);
                }
            },
            s = child.wait(), if status.is_none() => {
                if timed_out {
                    // Whatever is left of the group goes too.
                    guard.signal(Signal::KILL);
                }
                status = Some(s);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            },
            _ = sleep_until(deadline), if !timed_out && status.is_none() => {
                timed_out = true;
                guard.signal(Signal::TERM);
                if guard.pgid.is_none() {
                    let _ = child.start_kill();
                }
                kill_at = Some(Instant::now() + KILL_GRACE);
            },
            _ = sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && status.is_none() => {
                guard.signal(Signal::KILL);
                let _ = child.start_kill();
                kill_at = None;
            },
            _ = sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && !eof => break,
        }
    }
    guard.disarm();
    let rest = masker.finish();
    let room = cap.saturating_sub(kept.len());
    dropped |= rest.len() > room;
    kept.extend_from_slice(&rest[..rest.len().min(room)]);

    let mut out = CappedText::new(cap);
    out.push_str(&String::from_utf8_lossy(&kept));
    if total > cap as u64 || dropped {
        out.mark_truncated();
    }
    let (exit_code, trailer) = if timed_out {
        (
            124,
            Some(format!(
                "… killed after {} timeout",
                fmt_duration(opts.timeout)
            )),
        )
    } else {
        match status {
            Some(Ok(s)) => match (s.code(), s.signal()) {
                (Some(c), _) => (c, None),
                (None, Some(sig)) => (128 + sig, None),
                (None, None) => (2, None),
            },
            Some(Err(e)) => (
                2,
                Some(format!("warden: waiting for the command failed: {e}")),
            ),
            None => (2, None),
        }
    };
    RunResult {
        out,
        exit_code,
        rows_json: None,
        trailer,
    }
}
