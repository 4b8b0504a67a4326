//! Decisions at rate (issue 17 item 4), against a running gateway over its HTTP API, as the CLI
//! and the web app reach it: every cycle is a held command (`POST /api/exec` → 202), an
//! approval by someone else (`PUT /api/reviews/{id}/approve`) and the requester's long-poll
//! (`GET /api/reviews/{id}/wait`) returning the executed result.
//!
//! 1. `RATE_REQUESTERS` requesters (default 50) loop for `RATE_SECONDS` (default 10): cycles/s.
//! 2. `BURST` requesters (default 1000) each hold a command and wait on it at once; then every
//!    review is approved in a burst (`BURST_APPROVERS` concurrent approvals, default 50):
//!    approve→result p50/p99, from the approval's request to the waiter's executed answer.
//! 3. The same with approvals arriving at `BURST_PACE` per second (default 100), below the
//!    gateway's ceiling: what one approval costs while the others wait.
//!
//! Usage: `decide_rate GATEWAY_URL CONNECTION REQUESTER_TOKEN APPROVER_TOKEN` (started by
//! `bench/decide.sh`, which prints the gateway's RSS). Prints, never asserts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

fn env_num(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Api {
    http: reqwest::Client,
    base: String,
    connection: String,
    requester: String,
    approver: String,
}

impl Api {
    /// Holds a command; returns its review id.
    async fn hold(&self, n: u64) -> Result<String> {
        let res = self
            .http
            .post(format!("{}/api/exec", self.base))
            .bearer_auth(&self.requester)
            .json(&json!({ "connection": self.connection, "command": format!("SELECT {n}") }))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("exec answered {status}: {body}");
        }
        body["review"]["id"]
            .as_str()
            .map(str::to_string)
            .context("no review id in the exec answer")
    }

    async fn approve(&self, id: &str) -> Result<()> {
        let res = self
            .http
            .put(format!("{}/api/reviews/{id}/approve", self.base))
            .bearer_auth(&self.approver)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("approve answered {}: {}", res.status(), res.text().await?);
        }
        Ok(())
    }

    /// Long-polls until the review is executed successfully (anything else is an error).
    async fn wait_executed(&self, id: &str) -> Result<()> {
        loop {
            let res = self
                .http
                .get(format!("{}/api/reviews/{id}/wait?timeout=55", self.base))
                .bearer_auth(&self.requester)
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            if !status.is_success() {
                bail!("wait answered {status}: {body}");
            }
            match body["status"].as_str() {
                // A run that could not reach the target is EXECUTED too: not a result.
                Some("EXECUTED") => {
                    return match body["result"]["exit_code"].as_i64() {
                        Some(0) => Ok(()),
                        code => bail!(
                            "review {id} ran with exit code {code:?}: {}",
                            body["result"]["output"].as_str().unwrap_or_default().trim()
                        ),
                    };
                }
                Some("PENDING" | "APPROVED") => continue,
                other => bail!("review {id} settled as {other:?}"),
            }
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, connection, requester, approver] = args.as_slice() else {
        bail!("usage: decide_rate GATEWAY_URL CONNECTION REQUESTER_TOKEN APPROVER_TOKEN");
    };
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(2_000)
            .timeout(Duration::from_secs(120))
            .build()?,
        base: base.trim_end_matches('/').to_string(),
        connection: connection.clone(),
        requester: requester.clone(),
        approver: approver.clone(),
    });

    // 1. Cycles at rate.
    let requesters = env_num("RATE_REQUESTERS", 50);
    let seconds = env_num("RATE_SECONDS", 10);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..requesters {
        let (api, done) = (api.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = r * 1_000_000;
            let mut cycle_ms = Vec::new();
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                let id = api.hold(n).await?;
                let (waited, approved) = tokio::join!(api.wait_executed(&id), api.approve(&id));
                approved?;
                waited?;
                cycle_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(cycle_ms)
        }));
    }
    let mut cycle_ms = Vec::new();
    for t in tasks {
        cycle_ms.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cycles = done.load(Ordering::Relaxed);
    println!(
        "rate: {cycles} held→approved→executed cycles in {elapsed:.1} s with {requesters} concurrent requesters = {:.0}/s; cycle p50 {:.1} ms, p99 {:.1} ms",
        cycles as f64 / elapsed,
        pct(&mut cycle_ms, 0.5),
        pct(&mut cycle_ms, 0.99)
    );

    // 2. A burst: everyone waits at once, then every review is approved as fast as
    //    BURST_APPROVERS concurrent approvers can (the gateway saturated: latency is queueing).
    let burst = env_num("BURST", 1_000);
    let approvers = env_num("BURST_APPROVERS", 50).max(1);
    let (sent_in, all_in, mut lat) =
        approve_all(&api, burst, Pace::Concurrent(approvers), 900_000_000).await?;
    println!(
        "burst: {burst} waiting, approved {approvers} at a time in {sent_in:.2} s, every result in by {all_in:.2} s; approve→result p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    // 3. The same, with approvals arriving at BURST_PACE per second (below the rate measured
    //    in 1.): what one approval costs while a thousand others wait.
    let pace = env_num("BURST_PACE", 100).max(1);
    let (sent_in, all_in, mut lat) =
        approve_all(&api, burst, Pace::PerSecond(pace), 950_000_000).await?;
    println!(
        "paced: {burst} waiting, approved at {pace}/s in {sent_in:.2} s, every result in by {all_in:.2} s; approve→result p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Pace {
    /// This many approvers, each sending its next approval when the last one answered.
    Concurrent(u64),
    /// One approval every 1/n s, each on its own.
    PerSecond(u64),
}

/// Holds `burst` commands, long-polls each, approves them all at `pace`; returns the seconds
/// until every approval was sent and every result was in, and each approve→result latency (ms).
async fn approve_all(
    api: &Arc<Api>,
    burst: u64,
    pace: Pace,
    first: u64,
) -> Result<(f64, f64, Vec<f64>)> {
    let mut ids = Vec::new();
    let mut holds = Vec::new();
    for n in 0..burst {
        let api = api.clone();
        holds.push(tokio::spawn(async move { api.hold(first + n).await }));
    }
    for h in holds {
        ids.push(h.await??);
    }
    // Every requester long-polls; the time its answer arrives is compared with the time its
    // approval was sent.
    let mut waiters = Vec::new();
    for id in &ids {
        let (api, id) = (api.clone(), id.clone());
        waiters.push(tokio::spawn(async move {
            api.wait_executed(&id).await?;
            anyhow::Ok(Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let every long-poll arrive
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; ids.len()]));
    let start = Instant::now();
    let mut approving = Vec::new();
    match pace {
        Pace::Concurrent(approvers) => {
            let queue = Arc::new(tokio::sync::Mutex::new(ids.clone().into_iter().enumerate()));
            for _ in 0..approvers {
                let (api, queue, sent) = (api.clone(), queue.clone(), sent.clone());
                approving.push(tokio::spawn(async move {
                    loop {
                        let Some((i, id)) = queue.lock().await.next() else {
                            return anyhow::Ok(());
                        };
                        if let Ok(mut s) = sent.lock() {
                            s[i] = Some(Instant::now());
                        }
                        api.approve(&id).await?;
                    }
                }));
            }
        }
        Pace::PerSecond(n) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / n as f64));
            for (i, id) in ids.iter().cloned().enumerate() {
                tick.tick().await;
                let (api, sent) = (api.clone(), sent.clone());
                if let Ok(mut s) = sent.lock() {
                    s[i] = Some(Instant::now());
                }
                approving.push(tokio::spawn(async move { api.approve(&id).await }));
            }
        }
    }
    for a in approving {
        a.await??;
    }
    let sent_in = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for (i, w) in waiters.into_iter().enumerate() {
        let answered = w.await??;
        let sent_at = sent
            .lock()
            .ok()
            .and_then(|s| s[i])
            .context("never approved")?;
        latencies.push(answered.duration_since(sent_at).as_secs_f64() * 1000.0);
    }
    Ok((sent_in, start.elapsed().as_secs_f64(), latencies))
}
