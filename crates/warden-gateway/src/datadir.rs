//! The data dir is private: it holds the SQLite store, the secret key that decrypts every
//! connection's credentials, and the checkpoints. [`prepare`] runs at every start, before the
//! store is opened: it creates the dir 0700 (and the SQLite store file 0600, so that SQLite
//! gives its `-wal`/`-shm`/`-journal` files the same mode), then refuses to start when the dir,
//! anything in it, or the store file elsewhere is readable or writable by group or others —
//! naming the exact `chmod` command that fixes it. Files the gateway writes later (the key file,
//! checkpoints) are created 0600 by [`create_private`].
//!
//! # What it must never do
//! Change the mode of an existing file or dir by itself (an operator who widened it must see
//! it), or let the gateway start on a data dir others can read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// The store file of a `sqlite:` database URL (`None` for PostgreSQL or `:memory:`).
pub fn sqlite_store_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// Creates the data dir (0700) and the SQLite store file (0600) when missing, then checks that
/// none of it is group/world accessible. Call before opening the store.
pub fn prepare(config: &Config) -> Result<()> {
    let dir = &config.data_dir;
    if !dir.exists() {
        create_private_dir(dir)?;
    }
    let store = sqlite_store_file(config.database_url.expose());
    if let Some(store) = &store
        && !store.exists()
    {
        if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            create_private_dir(parent)?;
        }
        // An empty file is a valid empty SQLite database; SQLite keeps this mode for its
        // journal, WAL and shared-memory files.
        create_private(store).map(drop)?;
    }
    check(dir, store.as_deref())
}

#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))
}

/// Creates a new file readable and writable by the gateway's user only (0600); fails if it
/// exists.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Opens `path` for appending, creating it 0600 when missing.
pub fn append_private(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Refuses a data dir (or anything in it, or the store file) that group or others can access.
#[cfg(unix)]
pub fn check(dir: &Path, store: Option<&Path>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &Path| -> Result<u32> {
        Ok(std::fs::metadata(p)
            .with_context(|| format!("checking the mode of {}", p.display()))?
            .permissions()
            .mode()
            & 0o777)
    };
    let mut wide_dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut wide_files: Vec<(PathBuf, u32)> = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let mode = mode_of(&d)?;
        if mode & 0o077 != 0 {
            wide_dirs.push((d.clone(), mode));
        }
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("reading data dir {}", d.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading data dir {}", d.display()))?
                .path();
            // A symlink's own mode means nothing; what it points at is checked through it.
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("checking the mode of {}", path.display()))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.permissions().mode() & 0o077 != 0 {
                wide_files.push((path, meta.permissions().mode() & 0o777));
            }
        }
    }
    if let Some(store) = store.filter(|s| !s.starts_with(dir) && s.exists()) {
        let mode = mode_of(store)?;
        if mode & 0o077 != 0 {
            wide_files.push((store.to_path_buf(), mode));
        }
    }
    if wide_dirs.is_empty() && wide_files.is_empty() {
        return Ok(());
    }
    let list = |items: &[(PathBuf, u32)]| {
        items
            .iter()
            .map(|(p, m)| format!("{} (mode {m:04o})", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let quoted = |items: &[(PathBuf, u32)]| {
        items
            .iter()
            .map(|(p, _)| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut what = Vec::new();
    let mut fix = Vec::new();
    if !wide_dirs.is_empty() {
        what.push(list(&wide_dirs));
        fix.push(format!("chmod 700 {}", quoted(&wide_dirs)));
    }
    if !wide_files.is_empty() {
        what.push(list(&wide_files));
        fix.push(format!("chmod 600 {}", quoted(&wide_files)));
    }
    bail!(
        "refusing to start: the data dir holds the store and the key that decrypts every connection's credentials, and {} can be read or changed by other users. Fix it with: {}",
        what.join(", "),
        fix.join(" && ")
    )
}

#[cfg(not(unix))]
pub fn check(_dir: &Path, _store: Option<&Path>) -> Result<()> {
    Ok(())
}

/// `path` quoted for a POSIX shell when it needs it.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_file_of_urls() {
        assert_eq!(
            sqlite_store_file("sqlite:///var/lib/w/warden.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/w/warden.db"))
        );
        assert_eq!(sqlite_store_file("sqlite::memory:"), None);
        assert_eq!(sqlite_store_file("postgres://u@h/db"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/a/b.db")), "/a/b.db");
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
