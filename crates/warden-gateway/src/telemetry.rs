//! Telemetry: the process-wide Prometheus recorder and the HELP line of every metric the
//! gateway exports. Handlers and use cases record through the `metrics` macros; this module
//! only installs and describes. It never labels a metric with a secret or a command.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Time from a request to its decision (approved, rejected, withdrawn, expired…), a histogram.
pub const DECISION_SECONDS: &str = "warden_review_decision_seconds";

/// From "approved while the requester still waits" to "decided the next day".
const DECISION_BUCKETS_SEC: [f64; 10] = [
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
    7.0 * 86400.0,
];

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed once, shared by every gateway in a process).
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(DECISION_SECONDS.into()),
                    &DECISION_BUCKETS_SEC,
                )
                .and_then(|b| b.install_recorder())
                .ok();
            describe_metrics();
            handle
        })
        .as_ref()
}

/// The HELP line of every metric the gateway exports (what each number answers).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        DECISION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a request to its decision, by outcome (approved, force_approved, rejected, withdrawn, expired)."
    );
    describe_counter!(
        "warden_reviews_created_total",
        "Reviews requested, by type (command or jit)."
    );
    describe_counter!(
        "warden_review_transitions_total",
        "Review state changes (approved, rejected, expired, revoked, executed…)."
    );
    describe_counter!(
        "warden_executions_total",
        "Commands run by an executor, by connection type and success."
    );
    describe_counter!(
        "warden_proxy_sessions_total",
        "PostgreSQL proxy sessions started (their start recorded)."
    );
    describe_counter!(
        "warden_proxy_statements_total",
        "Statements of proxy sessions chained into the audit log."
    );
    describe_counter!(
        "warden_proxy_audit_failures_total",
        "Statement batches the store could not record (the proxy holds its sessions and retries)."
    );
    describe_counter!(
        "warden_audit_checkpoints_witnessed_total",
        "Audit checkpoints a witness acknowledged."
    );
    describe_counter!(
        "warden_audit_checkpoints_refused_total",
        "Audit checkpoints a witness refused."
    );
    describe_counter!(
        "warden_audit_checkpoint_witness_failures_total",
        "Audit checkpoints that could not reach their witness."
    );
    describe_gauge!(
        "warden_reviews_pending",
        "Reviews waiting for a decision now (all connections)."
    );
    describe_gauge!(
        "warden_proxy_sessions_live",
        "PostgreSQL proxy sessions open now."
    );
    describe_gauge!(
        "warden_store_writes",
        "Writes the store committed since the gateway started."
    );
    describe_gauge!(
        "warden_store_commits",
        "Store transactions that committed those writes (fewer than writes: group commit)."
    );
}
