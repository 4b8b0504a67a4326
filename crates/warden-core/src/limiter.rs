//! Brute-force protection for every login (web, API, PostgreSQL proxy): failures are counted in
//! a fixed window per user *at* an address, per user (from any address) and per address (any
//! user); past a limit, logins are refused before any credential is checked.
//!
//! The limits are layered so one shared address (NAT, CI, a bastion) cannot lock out everyone
//! behind it: a user guessing wrong blocks that user at that address first; an address blocks
//! as a whole only at the much higher spraying limit.
//!
//! It only counts and answers "blocked or not"; it never authenticates anyone. Time is passed
//! in (`now`), like everywhere in the core.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// One user from one address.
    Pair(IpAddr, String),
    /// One user, from anywhere (a distributed guess at one account).
    User(String),
    /// One address, any user (spraying many accounts).
    Ip(IpAddr),
}

/// The limits, each within `window`.
///
/// The defaults (5 per user at an address, 20 per user, 100 per address, in a minute) are
/// what `WARDEN_LOGIN_FAILURES` and `WARDEN_PG_LOGIN_FAILURES` start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_user_and_address: u32,
    pub per_user: u32,
    pub per_address: u32,
    pub window: Duration,
}

/// Counts authentication failures.
pub struct FailureLimiter {
    limits: Limits,
    /// Per key: when its window started (ms on the caller's clock) and the failures in it.
    counts: Mutex<HashMap<Key, (i64, u32)>>,
}

impl FailureLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// `now_ms` is inside the window that started at `start_ms` (a clock stepping back keeps
    /// the window open rather than resetting it).
    fn within(&self, start_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(start_ms) < self.window_ms()
    }

    /// The three counters one attempt touches, each with its limit.
    fn keys(&self, ip: IpAddr, user: &str) -> [(Key, u32); 3] {
        let user = user.to_lowercase();
        let l = &self.limits;
        [
            (Key::Pair(ip, user.clone()), l.per_user_and_address),
            (Key::User(user), l.per_user),
            (Key::Ip(ip), l.per_address),
        ]
    }

    /// True when any of the user-at-address, user or address counts reached its limit in the
    /// current window (fail closed on a poisoned lock).
    pub fn blocked(&self, ip: IpAddr, user: &str, now_ms: i64) -> bool {
        let Ok(counts) = self.counts.lock() else {
            return true;
        };
        self.keys(ip, user).iter().any(|(k, limit)| {
            counts
                .get(k)
                .is_some_and(|(start, n)| self.within(*start, now_ms) && *n >= *limit)
        })
    }

    pub fn failed(&self, ip: IpAddr, user: &str, now_ms: i64) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        if counts.len() > 100_000 {
            let window = self.window_ms();
            counts.retain(|_, (start, _)| now_ms.saturating_sub(*start) < window);
        }
        for (k, _) in self.keys(ip, user) {
            let e = counts.entry(k).or_insert((now_ms, 0));
            if !self.within(e.0, now_ms) {
                *e = (now_ms, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
    }

    /// A successful login clears the user's counts (not the address's: one good account must
    /// not launder guesses against others from the same address).
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            let user = user.to_lowercase();
            counts.remove(&Key::Pair(ip, user.clone()));
            counts.remove(&Key::User(user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_user_and_address: 3,
            per_user: 6,
            per_address: 10,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_user_guessing_wrong_blocks_only_that_user_at_that_address() {
        let l = FailureLimiter::new(limits());
        let nat: IpAddr = [10, 0, 0, 1].into();
        let t = 1_000_000i64;
        for _ in 0..3 {
            assert!(!l.blocked(nat, "a@x", t));
            l.failed(nat, "a@x", t);
        }
        assert!(l.blocked(nat, "A@X", t), "case-insensitive");
        assert!(
            !l.blocked(nat, "b@x", t),
            "others behind the same address log in"
        );
        assert!(
            !l.blocked([10, 0, 0, 2].into(), "a@x", t),
            "same user elsewhere"
        );
        assert!(!l.blocked(nat, "a@x", t + 61_000));
    }

    #[test]
    fn one_account_guessed_from_many_addresses_and_spraying_from_one_are_blocked() {
        let l = FailureLimiter::new(limits());
        let t = 1_000_000i64;
        for i in 0..6u8 {
            l.failed([10, 0, 1, i].into(), "victim@x", t);
        }
        assert!(l.blocked([10, 0, 9, 9].into(), "victim@x", t), "per user");
        let ip: IpAddr = [10, 0, 0, 7].into();
        for i in 0..10 {
            l.failed(ip, &format!("u{i}@x"), t);
        }
        assert!(
            l.blocked(ip, "fresh@x", t),
            "per address, at the spraying limit"
        );
    }

    #[test]
    fn success_clears_the_user_not_the_address() {
        let l = FailureLimiter::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = 1_000_000i64;
        for _ in 0..2 {
            l.failed(ip, "a@x", t);
        }
        l.succeeded(ip, "a@x");
        for _ in 0..2 {
            l.failed(ip, "a@x", t);
        }
        assert!(!l.blocked(ip, "a@x", t), "the count started over");
        for i in 0..6 {
            l.failed(ip, &format!("o{i}@x"), t);
        }
        l.succeeded(ip, "a@x");
        assert!(l.blocked(ip, "z@x", t), "the address count is not cleared");
    }
}
