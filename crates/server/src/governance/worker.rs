//! The workers: due work (expiry, reminders, escalations, timeouts, scheduled starts) and the
//! outbox (mail, custom-extension calls).
//!
//! Due jobs are claimed inside the serialized write that does their work and deleted in it, so a
//! job is done exactly once, on one node, or not at all if the node dies first (then another
//! node, or this one after a restart, does it). The outbox leases messages, sends them, and marks
//! them sent; a message whose node died between sending and marking is sent again after its
//! lease runs out, under the same id (Message-ID, `X-Gatehouse-Event-Id`), so a receiver can
//! recognise the repeat. Nothing here is needed for correctness at the instant an assignment
//! ends: access ends then because reads check validity (`AppState::snapshot_at`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use gatehouse_core::governance::engine::{self, JobKind};
use gatehouse_core::governance::model::{AssignmentState, RequestType};
use tokio::task::JoinSet;

use super::{Loaded, load, mail, webhook, write_effects};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::governance::{Kind, OutboxRow};

/// Jobs done in one transaction.
pub const JOB_BATCH: i64 = 500;
/// Messages leased at a time, and sent at once.
pub const OUTBOX_BATCH: i64 = 200;
pub const SEND_CONCURRENCY: usize = 16;
/// How long a leased message is left to its sender before another may retry it.
pub const LEASE_MS: i64 = 60_000;
/// A mail is tried this many times (backing off up to an hour), a webhook for a day.
pub const MAIL_ATTEMPTS: i64 = 12;
pub const WEBHOOK_GIVE_UP_MS: i64 = 24 * 3_600_000;

/// Does one batch of due jobs; returns how many were done.
pub async fn run_due_batch(state: &AppState) -> Result<usize, StoreError> {
    let mut w = state.begin_write().await?;
    let now = state.now();
    let jobs = w.claim_due_jobs(now, JOB_BATCH).await?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let zone = state.governance.zone.clone();
    let mut cache: HashMap<String, Option<Loaded>> = HashMap::new();
    let mut changes = Vec::new();
    let mut audits = Vec::new();
    let done = jobs.len();
    for (subject, kind, _due) in jobs {
        w.cancel_job(&subject, &kind.key()).await?;
        let (policy_id, request, assignment) = if kind.is_request_job() {
            match w.request(&subject).await? {
                Some(r) => (r.policy_id.clone(), Some(r), None),
                None => continue,
            }
        } else {
            match w.assignment(&subject).await? {
                Some(a) => (a.policy_id.clone(), None, Some(a)),
                None => continue,
            }
        };
        if !cache.contains_key(&policy_id) {
            let l = load(&mut w, &policy_id, &zone).await?;
            cache.insert(policy_id.clone(), l);
        }
        let Some(loaded) = cache.get(&policy_id).and_then(Option::as_ref) else {
            tracing::warn!(subject, job = kind.key(), "policy {policy_id} is gone; job dropped");
            continue;
        };
        let fx = {
            let dir = state.dir();
            let mut ids = crate::random::guid;
            let mut ctx = loaded.ctx(&dir, now, None, &mut ids);
            match (kind, request, assignment) {
                (JobKind::Escalate(i), Some(r), _) => engine::escalate(&mut ctx, r, i),
                (JobKind::AutoDeny(i), Some(r), _) => engine::time_out(&mut ctx, r, i),
                (JobKind::Deliver, Some(r), _) => engine::start_reached(&mut ctx, r),
                (JobKind::CalloutTimeout(id), Some(r), _) => {
                    engine::callout_timed_out(&mut ctx, r, &id)
                }
                (JobKind::Expire, _, Some(a)) => engine::expire(&mut ctx, a, false),
                (JobKind::AutoRemove, _, Some(a)) => engine::expire(&mut ctx, a, true),
                (JobKind::Remind(d), _, Some(a)) => engine::remind(&mut ctx, a, d),
                _ => continue,
            }
        };
        let (c, a) = write_effects(state, &mut w, &fx, loaded, &None, None, now).await?;
        changes.extend(c);
        audits.extend(a);
    }
    super::commit(state, w, &changes, &audits).await?;
    Ok(done)
}

/// Does due jobs until none is due.
pub async fn run_due(state: &AppState) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = run_due_batch(state).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// What sends the outbox's messages.
#[derive(Clone)]
pub struct Senders {
    pub mail: mail::Sender,
    pub from: String,
    pub http: reqwest::Client,
}

impl Senders {
    pub fn from_config(config: &crate::Config) -> anyhow::Result<Senders> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
        Ok(Senders {
            mail: mail::Sender::from_config(config)?,
            from: config.mail.from.clone(),
            http,
        })
    }
}

/// Sends one leased batch; returns how many were leased.
pub async fn run_outbox_batch(state: &AppState, senders: &Senders) -> Result<usize, StoreError> {
    let now = state.now();
    let rows = state.store.lease_outbox(now, LEASE_MS, OUTBOX_BATCH).await?;
    let leased = rows.len();
    let mut set = JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(SEND_CONCURRENCY));
    for row in rows {
        let (state, senders, semaphore) = (state.clone(), senders.clone(), semaphore.clone());
        set.spawn(async move {
            let _permit = semaphore.acquire().await;
            let result = send(&state, &senders, &row).await;
            (row, result)
        });
    }
    // Each send is recorded as soon as it is known, together with every other that finished
    // meanwhile: one transaction per group, not one per message. Every mark is a write that
    // waits its turn behind the node's other writes (on SQLite, the single writer); marked one
    // by one under load, a batch sent in a moment took seconds to record, and the due jobs that
    // run after the batch, and the repeats after a crash (sent, not yet marked), grew with it.
    // Measured by `governance_crash` (seven clients writing): an expiry's mail came ~1.0-1.3 s
    // after its end on SQLite and ~0.6-0.9 s on PostgreSQL, now ~0.3-0.45 s on both.
    while let Some(joined) = set.join_next().await {
        let mut finished = vec![joined];
        while let Some(more) = set.try_join_next() {
            finished.push(more);
        }
        let mut sent = Vec::new();
        for (row, result) in finished.into_iter().flatten() {
            match result {
                Ok(()) => sent.push(row.id),
                Err(e) => {
                    // Backing off from the attempt's start, so a retry's time does not depend
                    // on how long the failing call took.
                    let retry = retry_at(&row, now);
                    tracing::warn!(
                        id = row.id,
                        channel = row.channel,
                        attempts = row.attempts,
                        "send failed: {e}"
                    );
                    state.store.outbox_failed(&row.id, &e, retry, now).await?;
                }
            }
        }
        state.store.outbox_sent(&sent, now).await?;
    }
    Ok(leased)
}

/// Exponential backoff from one second, capped at an hour; `None` once it is time to give up.
fn retry_at(row: &OutboxRow, now: i64) -> Option<i64> {
    let give_up = match row.channel.as_str() {
        "webhook" => now - row.created_at > WEBHOOK_GIVE_UP_MS,
        _ => row.attempts >= MAIL_ATTEMPTS,
    };
    if give_up {
        return None;
    }
    let exp = row.attempts.clamp(1, 20) - 1;
    let delay = 1000_i64.saturating_mul(1_i64 << exp).min(3_600_000);
    Some(now + delay)
}

async fn send(state: &AppState, senders: &Senders, row: &OutboxRow) -> Result<(), String> {
    match row.channel.as_str() {
        "mail" => senders.mail.send(&senders.from, &row.id, &row.body).await,
        "webhook" => post(state, senders, row).await,
        other => Err(format!("unknown outbox channel `{other}`")),
    }
}

async fn post(state: &AppState, senders: &Senders, row: &OutboxRow) -> Result<(), String> {
    let b = &row.body;
    let url = b.get("url").and_then(|v| v.as_str()).unwrap_or_default();
    webhook::check_endpoint(url, &state.config.governance.insecure_webhook_hosts)?;
    let ext = b.get("extensionId").and_then(|v| v.as_str()).unwrap_or_default();
    let secret = state
        .store
        .extension_secret(ext)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("custom extension `{ext}` no longer exists"))?;
    let payload = b.get("payload").cloned().unwrap_or_default().to_string();
    let timeout = b.get("timeoutMs").and_then(|v| v.as_u64()).unwrap_or(1000);
    let resp = senders
        .http
        .post(url)
        .timeout(StdDuration::from_millis(timeout))
        .header("content-type", "application/json")
        .header(webhook::EVENT_ID_HEADER, row.id.as_str())
        .header(webhook::SIGNATURE_HEADER, webhook::sign(&secret, state.now(), payload.as_bytes()))
        .body(payload)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("POST {url}: {}", resp.status())) }
}

/// Sends messages until none is due.
pub async fn run_outbox(state: &AppState, senders: &Senders) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = run_outbox_batch(state, senders).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Everything due now: jobs first (they may write messages), automatic assignments if the
/// directory or a policy changed, then one batch of the outbox, and again until none has
/// anything left. Tests call this after moving their clock.
///
/// The jobs are looked at again after every batch of messages, not once the outbox is empty:
/// while requests keep writing mail, the outbox is never empty, and expiries, approval timeouts
/// and scheduled deliveries waited behind it for as long as the traffic lasted (a request past
/// its deadline could still be approved meanwhile). Found by `governance_crash`: during a burst
/// of requests, no assignment whose end had passed was recorded expired until the burst ended.
pub async fn drain(state: &AppState, senders: &Senders) -> Result<(usize, usize), StoreError> {
    let (mut jobs, mut sent) = (0, 0);
    loop {
        let mut j = run_due(state).await?;
        j += reconcile_if_needed(state).await?;
        let s = run_outbox_batch(state, senders).await?;
        jobs += j;
        sent += s;
        if j == 0 && s == 0 {
            return Ok((jobs, sent));
        }
    }
}

/// Automatic assignment, when the directory moved or a policy changed since the last round.
async fn reconcile_if_needed(state: &AppState) -> Result<usize, StoreError> {
    let version = state.applied_version();
    let wanted = state.reconcile.swap(false, Ordering::SeqCst);
    if !wanted && state.reconciled.load(Ordering::SeqCst) == version {
        return Ok(0);
    }
    let mut done = 0;
    loop {
        let n = reconcile_automatic(state).await?;
        done += n;
        if n < AUTO_BATCH {
            break;
        }
    }
    state.reconciled.store(version, Ordering::SeqCst);
    Ok(done)
}

/// Requests made per automatic-assignment round (the rest in the next round).
pub const AUTO_BATCH: usize = 1_000;

/// Brings automatic-assignment policies (`automaticRequestSettings`) in line with the
/// directory: a `systemAdd` request for every user in scope without an assignment, a removal
/// after the grace period for every assignee who left the scope (canceled if they come back).
/// Returns how many requests and removals it made.
pub async fn reconcile_automatic(state: &AppState) -> Result<usize, StoreError> {
    let docs = state.store.docs(Kind::Policy, None).await?;
    let automatic: Vec<_> = docs
        .into_iter()
        .filter(|d| {
            d.body
                .get("automaticRequestSettings")
                .and_then(|a| a.get("requestAccessForAllowedTargets"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        })
        .collect();
    if automatic.is_empty() {
        return Ok(0);
    }
    let zone = state.governance.zone.clone();
    let mut w = state.begin_write().await?;
    let now = state.now();
    let leaving: BTreeSet<String> =
        w.jobs_of_kind(&JobKind::AutoRemove).await?.into_iter().collect();
    let (mut changes, mut audits, mut done) = (Vec::new(), Vec::new(), 0);
    for doc in automatic {
        let Some(loaded) = load(&mut w, &doc.id, &zone).await? else { continue };
        let live: Vec<_> = w
            .live_assignments(&loaded.package_id, None)
            .await?
            .into_iter()
            .filter(|a| a.policy_id == doc.id && a.state_at(now) != AssignmentState::Expired)
            .collect();
        let plan = engine::plan_automatic(&loaded.policy, &state.dir(), &live, &leaving, now);
        for (assignment, at) in &plan.remove_at {
            w.put_job(&engine::Job {
                kind: JobKind::AutoRemove,
                subject: assignment.clone(),
                due: *at,
            })
            .await?;
            done += 1;
        }
        for assignment in &plan.keep {
            w.cancel_job(assignment, &JobKind::AutoRemove.key()).await?;
        }
        for target in plan.add.iter().take(AUTO_BATCH.saturating_sub(done)) {
            if w.open_request_for(&loaded.package_id, target).await?.is_some() {
                continue;
            }
            let fx = {
                let dir = state.dir();
                let prepared = engine::prepare(
                    engine::NewRequest {
                        id: crate::random::guid(),
                        new_assignment_id: crate::random::guid(),
                        request_type: RequestType::SystemAdd,
                        caller: target,
                        target,
                        existing: None,
                        answers: &[],
                        justification: None,
                        schedule: None,
                    },
                    &dir,
                    &loaded.policy,
                    now,
                );
                let Ok(mut req) = prepared else { continue };
                req.requestor_id = None;
                let mut ids = crate::random::guid;
                let mut ctx = loaded.ctx(&dir, now, None, &mut ids);
                engine::submit(&mut ctx, req, None)
            };
            let (c, a) = write_effects(state, &mut w, &fx, &loaded, &None, None, now).await?;
            changes.extend(c);
            audits.extend(a);
            done += 1;
        }
    }
    super::commit(state, w, &changes, &audits).await?;
    Ok(done)
}

/// The workers' loop: wakes when this node wrote work, when the next job or message falls due
/// (to the millisecond, on the clock's time), and every `poll` for work other nodes wrote.
pub async fn run(state: AppState, senders: Senders) {
    let poll = StdDuration::from_millis(state.config.governance.poll_millis.max(10));
    let mut backoff = StdDuration::from_millis(100);
    loop {
        let notified = state.work.notified();
        match drain(&state, &senders).await {
            Ok(_) => backoff = StdDuration::from_millis(100),
            Err(e) => {
                tracing::warn!(code = e.code(), "governance worker: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(StdDuration::from_secs(10));
                continue;
            }
        }
        let now = state.now();
        let next = match (state.store.next_due_job().await, state.store.next_outbox_due().await) {
            (Ok(a), Ok(b)) => [a, b].into_iter().flatten().min(),
            _ => None,
        };
        let wait = match next {
            Some(at) if at <= now => StdDuration::ZERO,
            Some(at) => StdDuration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(poll),
            None => poll,
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
