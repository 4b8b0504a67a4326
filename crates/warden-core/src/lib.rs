//! Warden's pure core: the domain model, rule validation, access decisions, the review state
//! machine and the audit hash chain.
//!
//! # Layout
//! - [`model`]: users, connections, rules, reviews, approvals — plain data, serde-ready.
//! - [`duration`]: human durations (`30m`, `8h`, `1h30m`) parsed and printed.
//! - [`rule`]: validated rule specs (`RuleSpec::validate`) and the `--reviewers` shorthand.
//! - [`decision`]: what happens when a user wants to use a connection (`evaluate`).
//! - [`review`]: the review state machine and quorum (`Review::approve`, `reject`, …).
//! - [`audit`]: typed audit events and the SHA-256 hash chain.
//! - [`fingerprint`]: normalising commands for analytics (literals replaced).
//! - [`evidence`]: exports verifiable offline, signed checkpoints and their log.
//! - [`merkle`]: the RFC 6962 tree over the chain: inclusion and consistency proofs.
//! - [`ocsf`]: each audit entry as one OCSF 1.1 event line for SIEMs (`docs/siem.md`).
//! - [`text`]: commands and reasons rendered for people, hidden code points escaped.
//! - [`timefmt`]: the one time format written everywhere (RFC 3339, UTC, milliseconds).
//!
//! # What this crate must never do
//! No I/O, no async, no clock: every function that depends on time takes `now` as an argument.
//! It never knows about SQL, HTTP or a wire protocol. Everything here is deterministic and unit-tested.

pub mod audit;
pub mod classify;
pub mod decision;
pub mod duration;
pub mod evidence;
pub mod fingerprint;
pub mod limiter;
pub mod merkle;
pub mod model;
pub mod ocsf;
pub mod review;
pub mod rule;
pub mod secret;
pub mod text;
pub mod timefmt;

pub use model::*;

/// SHA-256 of a command, hex-encoded: recorded at request time, proven at execution time.
pub fn command_sha256(command: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(command.as_bytes()))
}
