//! The sweeper: a background loop that expires PENDING reviews past their timeout, closes JIT
//! windows at their end, and recovers approved reviews a crash left unexecuted. It runs on every
//! replica; transitions are version-checked so replicas never double-apply.

use std::sync::Arc;
use std::time::Duration;

use warden_core::ReviewStatus;
use warden_core::audit::AuditEvent;
use warden_store::AuditCtx;

use super::{App, AppResult};

/// How often the retention policy is applied.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl App {
    /// One pass of the sweeper (tests call this directly).
    pub async fn sweep(self: &Arc<Self>) -> AppResult<()> {
        let now = self.now();
        for r in self.store.reviews_to_expire(now).await? {
            self.expire_review(r).await?;
        }
        for r in self.store.windows_to_finish(now).await? {
            let id = r.id;
            let Ok(next) = r.finish_window(now) else {
                continue;
            };
            match self
                .store
                .update_review(
                    &next,
                    AuditCtx::new(
                        "system",
                        now,
                        vec![AuditEvent::WindowEnded { review_id: id }],
                    ),
                )
                .await
            {
                Ok(_) => {
                    self.publish(id, ReviewStatus::Executed);
                    self.close_grant(id, "access window ended");
                }
                Err(warden_store::StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Only approvals a few seconds old: younger ones belong to the request that approved
        // them (which runs them at once); the sweeper recovers what a crash left behind.
        let recover_before = now - time::Duration::seconds(2);
        for r in self.store.unclaimed_approved(recover_before).await? {
            let app = self.clone();
            tokio::spawn(async move {
                if let Err(e) = app.execute_review(r.id).await {
                    tracing::error!(review = %r.id, error = %e, "recovering an approved review failed");
                }
            });
        }
        // Claimed long ago and never finished: the gateway died mid-execution. Never re-run
        // (the command may have had effects); record the unknown outcome instead.
        let stale_before = now - time::Duration::seconds(self.config.exec_timeout_sec as i64 + 60);
        for r in self.store.stale_claims(stale_before).await? {
            let s = self
                .failed_session(&r, "execution was interrupted (gateway stopped); outcome unknown — check the target before resubmitting")
                .await?;
            let ev = AuditEvent::ReviewExecuted {
                review_id: r.id,
                session_id: s.id,
                exit_code: 2,
                output_sha256: s.output_sha256.clone().unwrap_or_default(),
                duration_ms: 0,
            };
            self.mark_review_executed(r.id, ev).await?;
        }
        Ok(())
    }

    /// Runs the sweeper until `shutdown` fires.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.sweep_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checkpoint_every =
            Duration::from_secs(self.config.checkpoint_interval_sec.max(1) as u64);
        let mut last_checkpoint = tokio::time::Instant::now();
        let mut last_retention: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::error!(error = %e, "sweeper pass failed");
                    }
                    if self.config.checkpoint_key.is_some() && last_checkpoint.elapsed() >= checkpoint_every {
                        last_checkpoint = tokio::time::Instant::now();
                        match self.checkpoint_now().await {
                            Ok(Some(cp)) => tracing::info!(seq = cp.seq, "signed audit checkpoint"),
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
                        }
                    }
                    if self.config.audit_retention_sec.is_some() && last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                        last_retention = Some(tokio::time::Instant::now());
                        match self.apply_retention().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(sessions = n, "pruned session outputs past retention"),
                            Err(e) => tracing::error!(error = %e, "retention pass failed"),
                        }
                    }
                }
            }
        }
    }
}
