//! The scheduler of recurring goals: each occurrence of each schedule an active agent's
//! current policy declares ([`chimera_core::schedule::Schedule`]) submits one goal.
//!
//! [`run`] at a moment `now` (the sweep's, every minute):
//! - for each schedule, the occurrences after the last one submitted up to `now`, at most
//!   [`chimera_core::schedule::MAX_PER_WINDOW`] per schedule and run; a new schedule, or one
//!   whose pattern or zone changed, starts after the policy that declared it; never more than
//!   [`CATCH_UP`] back;
//! - each submitted as a goal with its message in the outbox, in one transaction
//!   ([`crate::goals::submit`]), under the idempotency key of its occurrence: a tick the
//!   scheduler missed (it was not running) is submitted once, at the next run, and a run
//!   repeated for the same tick, or two schedulers at once, submit it once;
//! - then the schedule's last occurrence moves forward (`schedule_ticks`). A crash between the
//!   goal and that row submits nothing twice: the next run meets the goal's key.

use std::collections::HashMap;

use chimera_core::domain::{AgentId, Goal, GoalId, TenantId};
use chimera_core::schedule::Schedule;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::goals::{self, SubmitError, Submitted};

/// The furthest back a missed tick is still submitted.
pub const CATCH_UP: Duration = Duration::days(7);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Goals submitted by this run.
    pub submitted: Vec<GoalId>,
    /// Occurrences whose goal was submitted before (a repeated or concurrent run).
    pub already: usize,
    /// Schedules skipped, with why (an agent paused since the read, a policy that no longer
    /// reads as schedules).
    pub skipped: Vec<String>,
}

/// Submits the goals of every occurrence due by `now`.
pub async fn run(pool: &PgPool, now: DateTime<Utc>) -> Result<Scheduled, sqlx::Error> {
    let agents = sqlx::query!(
        r#"select a.id, a.tenant_id, p.document -> 'schedules' as "schedules!", p.created_at as declared
           from agents a
           join policies p on p.agent_id = a.id and p.version = a.policy_version
           where a.status = 'active' and p.document ? 'schedules'
           order by a.id"#
    )
    .fetch_all(pool)
    .await?;
    let ids: Vec<uuid::Uuid> = agents.iter().map(|a| a.id).collect();
    let ticks: HashMap<(uuid::Uuid, String), (DateTime<Utc>, String)> = sqlx::query!(
        "select agent_id, schedule, last_occurrence, signature from schedule_ticks
         where agent_id = any($1)",
        &ids
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|t| ((t.agent_id, t.schedule), (t.last_occurrence, t.signature)))
    .collect();
    let mut done = Scheduled::default();
    for agent in agents {
        let schedules: Vec<Schedule> = match serde_json::from_value(agent.schedules) {
            Ok(s) => s,
            Err(err) => {
                done.skipped
                    .push(format!("agent {}: schedules unreadable: {err}", agent.id));
                continue;
            }
        };
        for schedule in schedules {
            let signature = schedule.signature();
            // A bookmark of the same pattern and zone continues; a changed (or re-declared)
            // schedule starts after the policy that declared it.
            let after = match ticks.get(&(agent.id, schedule.name.clone())) {
                Some((last, kept)) if *kept == signature => *last,
                Some((last, _)) => (*last).max(agent.declared),
                None => agent.declared,
            }
            .max(now - CATCH_UP);
            for occurrence in schedule.occurrences(after, now) {
                let goal = Goal {
                    id: GoalId::random(),
                    tenant_id: TenantId(agent.tenant_id),
                    agent_id: AgentId(agent.id),
                    kind: schedule.kind.clone(),
                    body: schedule.text.clone(),
                    constraints: match serde_json::to_value(&schedule.constraints) {
                        Ok(serde_json::Value::Object(map)) => map,
                        _ => Default::default(),
                    },
                };
                let key = schedule.key(AgentId(agent.id), occurrence);
                let hash = request_hash(&schedule);
                let by = format!("schedule {}", schedule.name);
                match goals::submit(pool, &goal, Some((&key, &hash)), &by).await {
                    Ok(Submitted::Created(id)) => done.submitted.push(id),
                    Ok(Submitted::Existing { .. }) => done.already += 1,
                    // The schedule's goal changed since this occurrence was submitted.
                    Err(SubmitError::KeyReused) => done.already += 1,
                    Err(SubmitError::AgentNotActive(status)) => {
                        done.skipped.push(format!("agent {}: {status}", agent.id));
                        break;
                    }
                    Err(SubmitError::UnknownAgent) => {
                        done.skipped.push(format!("agent {}: gone", agent.id));
                        break;
                    }
                    Err(SubmitError::Database(err)) => return Err(err),
                }
                sqlx::query!(
                    "insert into schedule_ticks (agent_id, schedule, last_occurrence, signature)
                     values ($1, $2, $3, $4)
                     on conflict (agent_id, schedule) do update
                       set last_occurrence = case when schedule_ticks.signature = excluded.signature
                               then greatest(schedule_ticks.last_occurrence, excluded.last_occurrence)
                               else excluded.last_occurrence end,
                           signature = excluded.signature",
                    agent.id,
                    schedule.name,
                    occurrence,
                    signature,
                )
                .execute(pool)
                .await?;
            }
        }
    }
    if !done.submitted.is_empty() || !done.skipped.is_empty() {
        tracing::info!(
            submitted = done.submitted.len(),
            already = done.already,
            skipped = ?done.skipped,
            "recurring goals"
        );
    }
    Ok(done)
}

/// The request an occurrence makes, hashed: the same schedule makes the same request.
fn request_hash(schedule: &Schedule) -> String {
    let request = serde_json::json!({
        "kind": schedule.kind,
        "text": schedule.text,
        "constraints": schedule.constraints,
    });
    hex::encode(Sha256::digest(request.to_string()))
}
