//! Warm upstream connections: logins opened ahead of need, so a session does not wait for the
//! server to start a backend (on a small machine that is most of what a connect costs).
//!
//! Reset semantics: there are none to get wrong, because nothing is ever reused. Each warm
//! connection is a fresh login that has never carried a statement; one session takes it, and
//! it is closed when that session ends, exactly as a connection opened on demand would be.
//! What differs is only *when* the login happened: up to [`IDLE_TTL`] before the session
//! (PostgreSQL's `backend_start` shows that instant).
//!
//! A warm connection is keyed by everything that shaped its login: the upstream (host, port,
//! user, a digest of the password, database, TLS mode), the startup parameters the session
//! would send, and the relay thread that opened it (a socket stays with the runtime that
//! registered it). Only a session whose key is identical takes it, so a reviewed session's
//! pinned settings, a client's `application_name` or a rotated password each get their own.
//! Connections are only ever opened after a login of that key was granted: an unauthenticated
//! client cannot make the proxy open anything.
//!
//! This module never decides access; it only keeps sockets.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::backend::{Upstream, UpstreamTls};
use crate::upstream::{self, Connected};

/// A warm connection older than this is closed instead of handed out (well under the idle
/// timeouts servers and middleboxes commonly apply).
pub(crate) const IDLE_TTL: Duration = Duration::from_secs(30);

#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    thread: std::thread::ThreadId,
    host: String,
    port: u16,
    user: String,
    password_sha256: String,
    database: String,
    tls: UpstreamTls,
    params: Vec<(String, String)>,
}

impl Key {
    pub(crate) fn new(upstream: &Upstream, params: &[(String, String)]) -> Key {
        let password_sha256 = upstream
            .password
            .as_ref()
            .map(|p| warden_core::command_sha256(p.expose()))
            .unwrap_or_default();
        Key {
            thread: std::thread::current().id(),
            host: upstream.host.clone(),
            port: upstream.port,
            user: upstream.user.clone(),
            password_sha256,
            database: upstream.database.clone(),
            tls: upstream.tls.clone(),
            params: params.to_vec(),
        }
    }
}

#[derive(Default)]
struct Slot {
    idle: VecDeque<(Instant, Connected)>,
    /// Logins being opened for this key right now.
    opening: usize,
}

/// Up to `per_key` warm connections per key; `0` turns the pool off.
pub(crate) struct WarmPool {
    per_key: usize,
    connect_timeout: Duration,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl WarmPool {
    pub(crate) fn new(per_key: usize, connect_timeout: Duration) -> Arc<WarmPool> {
        Arc::new(WarmPool {
            per_key,
            connect_timeout,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// A warm connection for `key`, if one is alive; it is the caller's alone from now on.
    pub(crate) fn take(&self, key: &Key) -> Option<Connected> {
        if self.per_key == 0 {
            return None;
        }
        let mut slots = self.slots.lock().ok()?;
        let slot = slots.get_mut(key)?;
        while let Some((opened, conn)) = slot.idle.pop_front() {
            if opened.elapsed() < IDLE_TTL && alive(&conn) {
                return Some(conn);
            }
            // Expired, or the server closed it (or sent something unasked): dropped, closed.
        }
        None
    }

    /// Opens logins for `key` (on the calling runtime) until `per_key` are warm or being
    /// opened. Called after a granted session took or opened its own connection.
    pub(crate) fn refill(self: &Arc<Self>, key: Key, upstream: Upstream) {
        if self.per_key == 0 {
            return;
        }
        let want = {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            let slot = slots.entry(key.clone()).or_default();
            let want = self.per_key.saturating_sub(slot.idle.len() + slot.opening);
            slot.opening += want;
            want
        };
        for _ in 0..want {
            let (pool, key, upstream) = (self.clone(), key.clone(), upstream.clone());
            tokio::spawn(async move {
                let opened = tokio::time::timeout(
                    pool.connect_timeout,
                    upstream::connect(&upstream, &key.params),
                )
                .await;
                let Ok(mut slots) = pool.slots.lock() else {
                    return;
                };
                let slot = slots.entry(key).or_default();
                slot.opening = slot.opening.saturating_sub(1);
                match opened {
                    Ok(Ok(conn)) if conn.leftover.is_empty() => {
                        slot.idle.push_back((Instant::now(), conn))
                    }
                    // A server that cannot be reached now is tried again by the next session.
                    Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {}
                }
            });
        }
    }

    /// Closes every warm connection past [`IDLE_TTL`] and forgets empty keys.
    pub(crate) fn prune(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            for slot in slots.values_mut() {
                slot.idle.retain(|(opened, _)| opened.elapsed() < IDLE_TTL);
            }
            slots.retain(|_, s| !s.idle.is_empty() || s.opening > 0);
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.slots
            .lock()
            .map(|s| s.values().map(|s| s.idle.len()).sum())
            .unwrap_or(0)
    }
}

/// Whether a warm connection's server is still there and silent: a server that closed it (or
/// sent an error, such as an idle timeout's FATAL) has made its socket readable.
fn alive(conn: &Connected) -> bool {
    let Some(tcp) = conn.stream.tcp() else {
        return false;
    };
    let mut byte = [0u8; 1];
    // Pending (nothing to read) is the only healthy answer.
    tcp.peek(&mut byte).now_or_never().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::secret::Secret;

    fn upstream(password: &str) -> Upstream {
        Upstream {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: Some(Secret::new(password.into())),
            database: "test".into(),
            tls: UpstreamTls::Disable,
        }
    }

    #[test]
    fn keys_differ_by_everything_that_shaped_the_login() {
        let p = vec![("application_name".to_string(), "a".to_string())];
        let k = Key::new(&upstream("one"), &p);
        assert!(k == Key::new(&upstream("one"), &p));
        assert!(k != Key::new(&upstream("two"), &p), "a rotated password");
        assert!(
            k != Key::new(&upstream("one"), &[]),
            "other startup parameters"
        );
        let other_thread = std::thread::spawn(move || Key::new(&upstream("one"), &p))
            .join()
            .unwrap();
        assert!(k != other_thread, "another relay thread");
    }

    /// Against the real PostgreSQL: a warm login is handed out once, a closed one never.
    #[tokio::test(flavor = "current_thread")]
    async fn warm_logins_are_taken_once_and_dead_ones_never() {
        let pool = WarmPool::new(2, Duration::from_secs(10));
        let up = upstream("unused-under-trust");
        let key = Key::new(&up, &[]);
        assert!(
            pool.take(&key).is_none(),
            "nothing is opened before a grant"
        );
        pool.refill(key.clone(), up.clone());
        for _ in 0..100 {
            if pool.idle() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.idle(), 2, "PostgreSQL must run at 127.0.0.1:5432");
        let a = pool.take(&key).expect("a warm login");
        let b = pool.take(&key).expect("another");
        assert_ne!(a.key, b.key, "two distinct server backends");
        assert!(pool.take(&key).is_none(), "each is handed out once");

        // The server ends one that is waiting: it is never handed out.
        pool.refill(key.clone(), up.clone());
        for _ in 0..100 {
            if pool.idle() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pids: Vec<i32> = {
            let slots = pool.slots.lock().unwrap();
            slots[&key]
                .idle
                .iter()
                .filter_map(|(_, c)| c.key.map(|k| k.0))
                .collect()
        };
        let (client, conn) = tokio_postgres::connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test",
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for pid in &pids {
            client
                .execute("SELECT pg_terminate_backend($1)", &[pid])
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            pool.take(&key).is_none(),
            "terminated logins are closed, not handed out"
        );
    }
}
