//! A held item judged again under its agent's new policy (a `Rejudge` message).
//!
//! The judge runs its own checks on the item again (the new banned phrases, lexicon, links,
//! limits) and routes it under the new version with the score and topics it found when it held
//! it, without calling the model again. A policy change may hold or reject held work, never
//! release it: releasing needs a person's decision (separation of duties: whoever edits a
//! policy must not be able to publish or pay through it).
//! - the new policy would need no human: held again, saying so (`review.rejudged`);
//! - still needs a human: held again with the new version's reasons only (`review.rejudged`);
//! - now fails a check: rejected by the policy, with the check as the reason.
//!
//! A message for a version that is no longer the agent's, or for an item decided meanwhile,
//! changes nothing.

use std::collections::BTreeSet;

use chimera_aws::batch::MessageError;
use chimera_core::domain::{GoalId, ReviewId, RiskTag};
use chimera_core::routing::{self, Assessment, Route};
use chimera_store::decisions::{self, Decision, Refused, Verdict};
use chimera_store::rejudge::{self, Pending, Rehold};
use chimera_store::{judging, records};

use crate::{Judge, checks, hold_reasoning, risk_type};

impl Judge {
    /// Judges review `id` again under policy `version`; returns the goal whose messages to send.
    pub(crate) async fn rejudge(
        &self,
        id: ReviewId,
        version: i32,
    ) -> Result<Option<GoalId>, MessageError> {
        let Some(item) = rejudge::pending(&self.pool, id)
            .await
            .map_err(MessageError::dependency)?
        else {
            return self.late_or_forged(id, version).await.map(|()| None);
        };
        if item.current_policy < version {
            return Err(MessageError::Permanent(anyhow::anyhow!(
                "a re-judging of review {} under policy version {version}, which its agent never had (it is at {})",
                id.0,
                item.current_policy
            )));
        }
        if item.current_policy != version || item.policy_version >= version {
            tracing::info!(review_id = %id.0, version, current = item.current_policy,
                           "re-judging: not for the agent's current policy, or done");
            return Ok(None);
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(MessageError::dependency)?;
        let result = records::load_result_in(&mut conn, item.result)
            .await
            .map_err(MessageError::dependency)?
            .ok_or_else(|| {
                MessageError::Permanent(anyhow::anyhow!("review {} has no result", id.0))
            })?;
        drop(conn);
        let state = judging::task_state(&self.pool, item.task)
            .await
            .map_err(MessageError::dependency)?
            .ok_or_else(|| {
                MessageError::Permanent(anyhow::anyhow!("review {} has no task", id.0))
            })?;
        if state.policy.version != version {
            return Ok(None);
        }
        let findings = checks::inspect(&self.pool, &self.artifacts, &result, &state)
            .await
            .map_err(|e| match e {
                checks::InspectError::Storage(err) => MessageError::storage(err),
                checks::InspectError::Database(err) => MessageError::dependency(err),
            })?;
        let tags: BTreeSet<RiskTag> = item
            .risk_tags
            .iter()
            .chain(&findings.topics)
            .filter_map(|t| RiskTag::parse(t.as_str()).ok())
            .collect();
        let route = match &findings.cfo_refusal {
            Some(refusal) => Route::Fail {
                feedback: refusal.clone(),
            },
            None => routing::route(
                &state.policy,
                &Assessment {
                    task_kind: result.task_kind,
                    confidence: item.confidence,
                    risk_tags: &tags,
                    disclosure_level: result.disclosure_level,
                    attempt: result.attempt,
                    failed_checks: &findings.failed,
                    // It was scored when it was held; payments and suspicious inputs keep
                    // their reasons.
                    scored: true,
                    suspicious: &findings.suspicious,
                    auto_pay: false,
                },
            ),
        };
        tracing::info!(review_id = %id.0, version, route = ?route, "item judged again");
        let verdict = match route {
            Route::AutoApprove => {
                let reasoning = format!(
                    "policy v{version} would release this item, but a policy change never releases held work; a person decides"
                );
                return self
                    .hold_again(
                        &item,
                        version,
                        &reasoning,
                        &[],
                        &financial(&item),
                        &item.risk_tags,
                    )
                    .await;
            }
            Route::HumanReview { reasons } => {
                let mut risk_types: Vec<&str> = reasons.iter().map(risk_type).collect();
                if result.task_kind.is_financial() && !risk_types.contains(&"financial") {
                    risk_types.push("financial");
                }
                let judged = chimera_core::domain::TaskResult {
                    confidence_score: item.confidence,
                    ..(*result).clone()
                };
                let tags: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
                let reasoning = format!(
                    "{} (judged again when the policy changed)",
                    hold_reasoning(&judged, &state.policy, &reasons)
                );
                return self
                    .hold_again(&item, version, &reasoning, &reasons, &risk_types, &tags)
                    .await;
            }
            Route::Retry { feedback } | Route::Fail { feedback } => Verdict::Reject {
                reason: format!("policy v{version}: {feedback}"),
            },
        };
        self.decide_by_policy(&item, version, verdict).await
    }

    async fn hold_again(
        &self,
        item: &Pending,
        version: i32,
        reasoning: &str,
        reasons: &[routing::ReviewReason],
        risk_types: &[&str],
        risk_tags: &[String],
    ) -> Result<Option<GoalId>, MessageError> {
        let held = rejudge::rehold(
            &self.pool,
            item,
            &Rehold {
                version,
                reasoning,
                reasons,
                risk_types,
                risk_tags,
            },
        )
        .await
        .map_err(MessageError::dependency)?;
        tracing::info!(review_id = %item.review.0, version, held, "held again under the new policy");
        Ok(None)
    }

    /// Takes the policy's decision on the item; one the store refuses (a budget the effect no
    /// longer fits) leaves it held under the new version, with why, for a person.
    async fn decide_by_policy(
        &self,
        item: &Pending,
        version: i32,
        verdict: Verdict,
    ) -> Result<Option<GoalId>, MessageError> {
        let decision = Decision {
            tenant: item.tenant,
            review: item.review,
            reviewer: format!("policy v{version}"),
            artifact_hash: item.artifact_hash.clone(),
            policy_version: version,
            verdict,
            request_id: None,
            by_policy: true,
        };
        match decisions::decide(&self.pool, &decision).await {
            Ok(taken) => {
                tracing::info!(review_id = %item.review.0, decision = %taken.decision, version, "decided by the new policy");
                if let Some(goal) = taken.woken {
                    self.planner.relay().flush(&[goal]).await;
                }
                self.planner.release(item.goal).await?;
                judging::settle_goal(&self.pool, item.goal)
                    .await
                    .map_err(MessageError::dependency)?;
                Ok(Some(item.goal))
            }
            // The state moved: the task is replanned (its message is in the outbox).
            Err(Refused::Conflict { goal, .. }) => Ok(Some(goal)),
            Err(
                Refused::NotFound | Refused::AlreadyDecided { .. } | Refused::PolicyMoved { .. },
            ) => Ok(None),
            Err(Refused::Budget(chimera_store::budget::BudgetError::Database(err))) => {
                Err(MessageError::dependency(err))
            }
            Err(
                refused @ (Refused::Budget(_)
                | Refused::Quota(_)
                | Refused::TaskMoved
                | Refused::Stale(_)),
            ) => {
                let reasoning = format!(
                    "policy v{version} would decide this item, but: {refused}; a person decides"
                );
                self.hold_again(
                    item,
                    version,
                    &reasoning,
                    &[],
                    &financial(item),
                    &item.risk_tags,
                )
                .await
            }
            Err(Refused::Commit(err)) => Err(MessageError::dependency(err)),
        }
    }
}

/// The risk types a financial item keeps whatever else the policy says.
fn financial(item: &Pending) -> Vec<&'static str> {
    if item.financial {
        vec!["financial"]
    } else {
        Vec::new()
    }
}

impl Judge {
    /// A re-judging message for an item that is not pending: late when the item exists (decided
    /// meanwhile: acknowledged, the log says so); refused when it does not, or when its agent
    /// never had `version` (it was not written by a policy change: dead-lettered with the
    /// reason).
    async fn late_or_forged(&self, id: ReviewId, version: i32) -> Result<(), MessageError> {
        match rejudge::standing(&self.pool, id)
            .await
            .map_err(MessageError::dependency)?
        {
            None => Err(MessageError::Permanent(anyhow::anyhow!(
                "a re-judging of review {}, which does not exist",
                id.0
            ))),
            Some((_, current)) if current < version => {
                Err(MessageError::Permanent(anyhow::anyhow!(
                    "a re-judging of review {} under policy version {version}, which its agent never had (it is at {current})",
                    id.0
                )))
            }
            Some((status, _)) => {
                tracing::info!(review_id = %id.0, status, version, "late re-judging: the item was decided meanwhile, nothing to do");
                Ok(())
            }
        }
    }
}
