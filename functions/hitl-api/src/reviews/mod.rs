//! Reviews: the pending queue, the review card, decisions, bulk approval and the audit trail.
//!
//! A decision names the artifact hash and policy version of the card the reviewer saw; the
//! store takes it under the review row's lock, once ([`chimera_store::decisions`]). What
//! happens after a decision is taken:
//!
//! - approve (or edit, then approve): the `execute` task is sent to the task queue, the
//!   planner is told to release what waited for the approved task, the goal is settled;
//! - reject: the goal is settled (the task failed, its dependents were cancelled);
//! - the state moved while the item waited: the store closed the review and set the task to
//!   retry; the planner gets the replan, and the caller a 409.
//!
//! The parts, in the order a reviewer meets them:
//!
//! - `queue`: `GET /reviews`, the pending queue ([`list`], [`ListQuery`], [`ReviewPage`]);
//! - `card`: `GET /reviews/{id}`, the review card ([`card()`], [`ReviewCard`]): the card is
//!   loaded for the caller's tenant, its artifacts shown inline (text) or as presigned URLs
//!   (media, large text);
//! - `decide`: `POST /reviews/{id}/approve|reject|edit` ([`approve`], [`reject`], [`edit`]):
//!   the card is loaded again, checked against what the reviewer saw (preflight), the
//!   proposal read (and edited), the decision taken in the store; then the outbox is flushed
//!   and the goal settled (`settle`, which the sweep uses too), or a refusal answered;
//! - `bulk`: `POST /reviews/bulk-approve` ([`bulk_approve`]): each item goes through the same
//!   preflight and decision as a single approval, or is only checked (`dry_run`);
//! - `audit`: `GET /audit` ([`audit()`], [`AuditTrail`]): the append-only trail of a goal or a
//!   review.
//!
//! Every item is re-exported here, so `crate::reviews::X` is the path to use (the router,
//! the OpenAPI document and the sweep do). The `__path_*` structs that `#[utoipa::path]`
//! generates next to each handler are re-exported too: the OpenAPI derive names the handlers
//! as `reviews::list` and so on, and looks for `reviews::__path_list`.

mod audit;
mod bulk;
mod card;
mod decide;
mod queue;

pub use audit::{__path_audit, AuditQuery, AuditTrail, audit};
pub use bulk::{
    __path_bulk_approve, BulkItem, BulkRequest, BulkResponse, BulkResult, BulkSummary,
    MAX_BULK_ITEMS, bulk_approve,
};
pub use card::{__path_card, ArtifactView, DecisionView, ProposalView, ReviewCard, card};
pub(crate) use decide::settle;
pub use decide::{
    __path_approve, __path_edit, __path_reject, ApproveRequest, DecisionResponse, EditRequest,
    RejectRequest, approve, edit, reject,
};
pub use queue::{__path_list, ListQuery, RISK_TYPES, ReviewPage, list};
