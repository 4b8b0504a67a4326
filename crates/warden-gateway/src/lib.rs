//! The Warden gateway: the application layer and its adapters.
//!
//! # Layout
//! - [`config`]: environment → `Config`.
//! - [`app`]: use cases (identities, connections, rules, exec, reviews, sweeper) over the pure
//!   core (`warden-core`), the store (`warden-store`) and the executors (`warden-exec`).
//! - [`http`]: what the HTTP adapters share (state, errors, extractors); [`api`]: the JSON HTTP
//!   API; [`web`]: the server-rendered web app; [`integrations`]: Slack and webhook endpoints.
//!   Only these know HTTP, and none imports another: [`server`] assembles their routers.
//! - [`telemetry`]: the Prometheus recorder and every metric's description.
//! - [`proxy`]: the PostgreSQL proxy backend (authentication, statement decisions, audit) for
//!   the `warden-pgwire` listener. The proxy never decides access itself: it asks [`app`].
//! - [`secrets`]: connection secrets sealed at rest; [`auth`]: passwords and tokens.
//! - [`server`]: start/stop of listeners and background tasks; [`datadir`]: the private data
//!   dir (0700, files 0600), checked at every start.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod datadir;
pub mod http;
pub mod integrations;
pub mod openapi;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod web;
