//! Brute-force protection for proxy logins: failures are counted per client IP and per user in
//! a fixed window; past the limit, logins are refused before the backend is asked.
//!
//! It only counts and answers "blocked or not"; it never authenticates anyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    User(String),
}

/// Counts authentication failures.
pub(crate) struct FailureLimiter {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<Key, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// True when the peer or the user has reached the failure limit in the current window.
    pub fn blocked(&self, ip: IpAddr, user: &str, now: Instant) -> bool {
        let Ok(counts) = self.counts.lock() else {
            return true;
        };
        [Key::Ip(ip), Key::User(user.to_lowercase())]
            .iter()
            .any(|k| {
                counts.get(k).is_some_and(|(start, n)| {
                    now.duration_since(*start) < self.window && *n >= self.max
                })
            })
    }

    pub fn failed(&self, ip: IpAddr, user: &str, now: Instant) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        if counts.len() > 100_000 {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        for k in [Key::Ip(ip), Key::User(user.to_lowercase())] {
            let e = counts.entry(k).or_insert((now, 0));
            if now.duration_since(e.0) >= self.window {
                *e = (now, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
    }

    /// A successful login clears the user's count (not the IP's: one good account must not
    /// launder guesses against others from the same address).
    pub fn succeeded(&self, user: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(&Key::User(user.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_then_window_passes() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t = Instant::now();
        for _ in 0..3 {
            assert!(!l.blocked(ip, "a@x", t));
            l.failed(ip, "a@x", t);
        }
        assert!(l.blocked(ip, "a@x", t));
        assert!(
            l.blocked([10, 0, 0, 1].into(), "A@X", t),
            "per user, case-insensitive"
        );
        assert!(l.blocked(ip, "b@x", t), "per IP");
        assert!(!l.blocked(ip, "a@x", t + Duration::from_secs(61)));
    }
}
