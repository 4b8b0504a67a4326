//! Maps the cancel keys the proxy hands its clients to the upstream servers' keys.
//!
//! A client's `CancelRequest` carries the (pid, secret) from the proxy's `BackendKeyData`; the
//! upstream's own key never leaves the proxy. Entries live exactly as long as their session.

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
    map: Mutex<HashMap<i32, (i32, CancelTarget)>>,
}

/// Removes its entry when the session ends.
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.map.lock() {
            m.remove(&self.pid);
        }
    }
}

fn random_i32() -> i32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl CancelRegistry {
    /// Registers a session's upstream key; returns the proxy's own (pid, secret) for the client.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> (i32, i32, CancelGuard) {
        let secret = random_i32();
        let Ok(mut m) = self.map.lock() else {
            // A poisoned registry only disables cancel; the session still works.
            return (
                0,
                secret,
                CancelGuard {
                    registry: self.clone(),
                    pid: 0,
                },
            );
        };
        let mut pid = random_i32() & 0x7fff_ffff;
        while pid == 0 || m.contains_key(&pid) {
            pid = random_i32() & 0x7fff_ffff;
        }
        m.insert(pid, (secret, target));
        (
            pid,
            secret,
            CancelGuard {
                registry: self.clone(),
                pid,
            },
        )
    }

    /// The upstream target for a client's key, if the key is live and the secret matches.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let m = self.map.lock().ok()?;
        let (s, t) = m.get(&pid)?;
        // Constant-time-ish comparison is moot for 32 bits; a mismatch is simply ignored.
        (*s == secret).then(|| t.clone())
    }
}
