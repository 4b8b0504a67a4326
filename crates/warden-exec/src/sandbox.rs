//! Least privilege for what a `command` connection runs: the program must not reach the
//! gateway's store, its key, its environment or its other sessions.
//!
//! - **Another OS user.** When the gateway runs as root, children run as a dedicated
//!   unprivileged user (`WARDEN_EXEC_USER`, default [`DEFAULT_USER`], created with `useradd`
//!   when missing), with no supplementary groups: the data dir (0700, the gateway's) and the
//!   gateway's `/proc` entries are out of its reach. When the gateway is not root it cannot
//!   switch users; [`Isolation::SameUser`] says so, and the gateway says it loudly at start and
//!   in `/api/health`.
//! - **The gateway is not dumpable** ([`harden_gateway`]): its `/proc/<pid>/environ`, `mem` and
//!   friends belong to root and it cannot be ptrace-attached by a process of its own user, so
//!   even a same-user child cannot read the gateway's environment.
//! - **A scratch working directory** per run (0700, owned by the run's user, removed after),
//!   which is also the child's `HOME` and `TMPDIR`.
//! - **Resource limits** ([`LIMITS`]) and no core dumps; every descriptor the gateway holds is
//!   close-on-exec (Rust's standard library and tokio open them so), so the child inherits
//!   only its stdin and its output pipe.
//!
//! Users are looked up with the system's own `getent passwd` (whatever NSS says), because
//! rustix offers no `getpwnam` and this lookup runs once, at start.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::{Resource, Rlimit};

/// `PATH` of commands run as the dedicated user (unless the connection sets its own).
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user commands run as when the gateway runs as root and `WARDEN_EXEC_USER` is unset.
pub const DEFAULT_USER: &str = "warden-exec";

/// Limits every command runs under: (resource, soft and hard limit).
pub const LIMITS: &[(Resource, u64)] = &[
    // No core files (they would hold the command's secrets).
    (Resource::Core, 0),
    (Resource::Nofile, 1024),
    // Files it writes (scratch dir or elsewhere): 1 GiB each.
    (Resource::Fsize, 1 << 30),
    // Address space: 8 GiB.
    (Resource::As, 8 << 30),
];

/// Processes per user, applied only under the dedicated user (the limit counts every process
/// of the user, so it would count the gateway's own threads otherwise).
pub const MAX_PROCESSES: u64 = 512;

/// Who a command runs as, and where.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Per-run scratch directories are made here (0711, the gateway's).
    pub scratch_root: PathBuf,
}

/// How the gateway isolates commands, decided once at start.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Commands run as another, unprivileged user.
    Dropped(Sandbox),
    /// Commands run as the gateway's own user; the reason says why and what to do.
    SameUser { why: String, scratch_root: PathBuf },
}

impl Isolation {
    pub fn sandbox(&self) -> Option<&Sandbox> {
        match self {
            Isolation::Dropped(s) => Some(s),
            Isolation::SameUser { .. } => None,
        }
    }

    pub fn scratch_root(&self) -> &Path {
        match self {
            Isolation::Dropped(s) => &s.scratch_root,
            Isolation::SameUser { scratch_root, .. } => scratch_root,
        }
    }

    /// One line for logs and `/api/health`.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Dropped(s) => format!(
                "commands run as the unprivileged user {} (uid {}), in a scratch directory, \
                 with resource limits",
                s.user, s.uid
            ),
            Isolation::SameUser { why, .. } => why.clone(),
        }
    }
}

/// Makes the gateway process non-dumpable (see the module docs), and marks every descriptor
/// it inherited close-on-exec (its own are opened so; one inherited from whoever started it —
/// a supervisor, a jobserver pipe — would otherwise reach every command). Linux only.
pub fn harden_gateway() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        close_inherited_on_exec()?;
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(|e| format!("could not make the gateway non-dumpable: {e}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("non-dumpable processes are a Linux feature".into())
    }
}

#[cfg(target_os = "linux")]
fn close_inherited_on_exec() -> Result<(), String> {
    use std::os::fd::BorrowedFd;
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("cannot list the gateway's descriptors: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: the descriptor is only borrowed for one fcntl; one that closed since it was
        // listed (the listing's own) makes fcntl fail with EBADF, which is ignored.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = rustix::io::fcntl_getfd(borrowed) {
            let _ = rustix::io::fcntl_setfd(borrowed, flags | rustix::io::FdFlags::CLOEXEC);
        }
    }
    Ok(())
}

/// Decides how commands are isolated: `configured` is `WARDEN_EXEC_USER`.
pub fn prepare(configured: Option<&str>) -> Isolation {
    let scratch_root = std::env::temp_dir().join(format!("warden-exec-{}", std::process::id()));
    if let Err(e) = make_dir(&scratch_root, 0o711) {
        return Isolation::SameUser {
            why: format!(
                "commands are NOT isolated: cannot create {}: {e}",
                scratch_root.display()
            ),
            scratch_root,
        };
    }
    if !rustix::process::geteuid().is_root() {
        let what = match configured {
            Some(u) => format!("WARDEN_EXEC_USER={u} is set, but "),
            None => String::new(),
        };
        return Isolation::SameUser {
            why: format!(
                "commands are NOT isolated from the gateway's user: {what}the gateway does not run \
                 as root, so it cannot run them as another user (start it as root, with \
                 WARDEN_EXEC_USER naming an unprivileged user, or the default {DEFAULT_USER})"
            ),
            scratch_root,
        };
    }
    let name = configured.unwrap_or(DEFAULT_USER);
    let found = match lookup(name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) if configured.is_none() => create(name)
            .and_then(|()| lookup(name)?.ok_or_else(|| format!("useradd did not create {name}"))),
        Ok(None) => Err(format!("the user {name} (WARDEN_EXEC_USER) does not exist")),
        Err(e) => Err(e),
    };
    match found {
        Ok((0, _)) => Isolation::SameUser {
            why: format!(
                "commands are NOT isolated: WARDEN_EXEC_USER={name} is root; name an \
                 unprivileged user"
            ),
            scratch_root,
        },
        Ok((uid, gid)) => Isolation::Dropped(Sandbox {
            user: name.to_string(),
            uid,
            gid,
            scratch_root,
        }),
        Err(e) => Isolation::SameUser {
            why: format!("commands are NOT isolated: {e}"),
            scratch_root,
        },
    }
}

fn make_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// (uid, gid) of `name`, from `getent passwd`.
fn lookup(name: &str) -> Result<Option<(u32, u32)>, String> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map_err(|e| format!("cannot run getent to look up {name}: {e}"))?;
    // getent exits 2 for "not found".
    if out.status.code() == Some(2) {
        return Ok(None);
    }
    if !out.status.success() {
        return Err(format!("getent passwd {name} failed ({})", out.status));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (
        fields.get(2).and_then(|v| v.parse().ok()),
        fields.get(3).and_then(|v| v.parse().ok()),
    ) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err(format!("getent passwd {name} printed an unreadable entry")),
    }
}

fn create(name: &str) -> Result<(), String> {
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .map_err(|e| format!("cannot run useradd to create {name}: {e}"))?;
    // 9: the user appeared meanwhile (another gateway started at the same time).
    if out.status.success() || out.status.code() == Some(9) {
        Ok(())
    } else {
        Err(format!(
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A run's scratch directory: made before the run (owned by the run's user), removed after.
pub(crate) struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(root: &Path, owner: Option<&Sandbox>) -> std::io::Result<Scratch> {
        let path = root.join(format!("run-{}", uuid_like()));
        make_dir(&path, 0o700)?;
        if let Some(s) = owner {
            std::os::unix::fs::chown(&path, Some(s.uid), Some(s.gid))?;
        }
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A name no other run has: time and a counter (the directory is private anyway).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Applies [`LIMITS`] (and [`MAX_PROCESSES`] when `dropped`) to the calling process. Runs in
/// the child between fork and exec: only direct system calls, no allocation.
pub(crate) fn apply_limits(dropped: bool) -> std::io::Result<()> {
    for (resource, max) in LIMITS {
        set_limit(*resource, *max)?;
    }
    if dropped {
        set_limit(Resource::Nproc, MAX_PROCESSES)?;
    }
    Ok(())
}

fn set_limit(resource: Resource, max: u64) -> std::io::Result<()> {
    let current = rustix::process::getrlimit(resource);
    // Never raise a limit the gateway already runs under.
    let cap = |v: Option<u64>| Some(v.map_or(max, |v| v.min(max)));
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: cap(current.current),
            maximum: cap(current.maximum),
        },
    )
    .map_err(std::io::Error::from)
}
