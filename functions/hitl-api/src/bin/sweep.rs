//! Lambda entry point of the sweep, invoked by an EventBridge schedule: escalates overdue
//! reviews, rejects by default those past their final deadline, reconciles work that stopped
//! moving and relays the outbox rows no handler sent. The event's content does not matter.

#![recursion_limit = "256"]

use chimera_core::names::ResourceNames;
use chimera_hitl_api::{AppState, Auth, sweep};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let clients = chimera_aws::Clients::from_env().await;
    let database_url = chimera_aws::database::url_from_env(&clients).await?;
    let pool = chimera_store::connect_lazy_as(&database_url, 2, chimera_store::DbRole::Sweep)?;
    let state = AppState::new(pool, clients, ResourceNames::from_env()?, Auth::Gateway);
    let state = &state;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let swept = sweep::run(state).await?;
        let reconciled = &swept.reconciled;
        Ok::<_, lambda_runtime::Error>(json!({
            "escalated": swept.reviews.escalated.len(),
            "defaulted": swept.reviews.defaulted.len(),
            "unplanned": reconciled.unplanned.len(),
            "redriven": reconciled.redriven.len(),
            "given_up": reconciled.given_up.len(),
            "rejudged": reconciled.rejudged.len(),
            "replanned": reconciled.replanned.len(),
            "released": reconciled.released.len(),
            "settled": reconciled.settled.len(),
            "relayed": swept.relayed,
        }))
    }))
    .await
}
