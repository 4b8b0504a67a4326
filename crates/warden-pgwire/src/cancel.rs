//! Maps the cancel keys the proxy hands its clients to the upstream servers' keys.
//!
//! The client sees the upstream server's real backend pid (so `pg_terminate_backend`,
//! `pg_stat_activity` look-ups and notification pids work as direct) with a secret of the
//! proxy's own: a client's `CancelRequest` carries (pid, proxy secret), and the upstream's own
//! secret never leaves the proxy. Pids of different upstream servers may coincide; the secret
//! tells them apart. Entries live exactly as long as their session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::UpstreamTls;

/// Where to send a cancel for one session.
#[derive(Debug, Clone)]
pub(crate) struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Default)]
pub(crate) struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), CancelTarget>>,
}

/// Removes its entry when the session ends.
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    key: (i32, i32),
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.map.lock() {
            m.remove(&self.key);
        }
    }
}

fn random_i32() -> i32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl CancelRegistry {
    /// Registers a session's upstream key; returns the (pid, secret) for the client: the
    /// upstream's pid and a fresh secret of the proxy's.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> (i32, i32, CancelGuard) {
        let pid = target.pid;
        let Ok(mut m) = self.map.lock() else {
            // A poisoned registry only disables cancel; the session still works.
            return (
                pid,
                random_i32(),
                CancelGuard {
                    registry: self.clone(),
                    key: (0, 0),
                },
            );
        };
        let mut secret = random_i32();
        while m.contains_key(&(pid, secret)) {
            secret = random_i32();
        }
        m.insert((pid, secret), target);
        (
            pid,
            secret,
            CancelGuard {
                registry: self.clone(),
                key: (pid, secret),
            },
        )
    }

    /// The upstream target for a client's key, if the key is live (pid and secret both match).
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let m = self.map.lock().ok()?;
        m.get(&(pid, secret)).cloned()
    }
}
