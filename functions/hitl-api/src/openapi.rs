//! The OpenAPI document of the HITL API, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{agents, budgets, goals, published, reviews, tenants};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chimera HITL API",
        description = "Goals in, reviews out. Every endpoint but /health, /openapi.json, \
                       /auth/config and the Mission Control page needs a bearer JWT with the claims sub, tenant and \
                       roles (operator, reviewer, admin). Errors are \
                       {\"error\": {\"code\": \"...\", \"message\": \"...\"}}. A body must be \
                       a JSON object of at most 64 KiB (else 400 or 413), a URI at most 8 KiB \
                       (else 414); ids in paths are written as the API writes them."
    ),
    paths(
        crate::health,
        crate::sign_in_config,
        tenants::create,
        tenants::list,
        agents::create,
        agents::list,
        agents::fleet,
        agents::get,
        agents::put_persona,
        agents::put_policy,
        agents::pause,
        agents::resume,
        budgets::open,
        budgets::top_up,
        budgets::ledger,
        goals::submit,
        goals::list,
        goals::get,
        goals::events,
        goals::cancel,
        reviews::list,
        reviews::card,
        reviews::approve,
        reviews::reject,
        reviews::edit,
        reviews::bulk_approve,
        reviews::audit,
        published::list,
    ),
    components(schemas(crate::Winner, agents::AgentRequest, agents::Created, agents::AgentPage,
                       agents::DocumentRequest, agents::Versioned, agents::StatusAnswer,
                       chimera_store::agents::AgentSummary, budgets::BudgetRequest,
                       budgets::BudgetAnswer, budgets::TopUpRequest, budgets::TopUpAnswer,
                       budgets::LedgerPage, chimera_store::budget::Entry, goals::GoalPage,
                       chimera_store::goals::GoalSummary, chimera_store::goals::Cancelled,
                       chimera_store::goals::Released, tenants::TenantRequest,
                       tenants::TenantCreated, chimera_store::tenants::Tenant,
                       chimera_store::agents::AgentView, chimera_store::agents::DocumentVersion,
                       agents::FleetPage, chimera_store::fleet::FleetAgent,
                       chimera_store::fleet::QuotaUse, published::PublishedPage,
                       chimera_store::published::Published,
                       chimera_store::published::Approval, crate::auth::SignIn)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Tenants (admin)"),
        (name = "agents", description = "Agents onboarded from SOUL.md and AGENTS.md (operator)"),
        (name = "budgets", description = "Agents' budgets and ledgers (operator)"),
        (name = "goals", description = "Goal intake and progress (operator)"),
        (name = "reviews", description = "The review queue and decisions (reviewer)"),
        (name = "audit", description = "The append-only audit trail"),
        (name = "published", description = "What agents published: posts, replies, transfers"),
        (name = "service", description = "Health"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
