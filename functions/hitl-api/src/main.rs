//! Lambda entry point of the HITL API: the router under `lambda_http`. API Gateway's JWT
//! authorizer validates the tokens; the router reads their claims from the request context.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let clients = chimera_aws::Clients::from_env().await;
    let database_url = chimera_aws::database::url_from_env(&clients).await?;
    let pool = chimera_store::connect_lazy_as(&database_url, 5, chimera_store::DbRole::Api)?;
    let names = chimera_core::names::ResourceNames::from_env()?;
    lambda_http::run(chimera_hitl_api::router(chimera_hitl_api::AppState::new(
        pool,
        clients,
        names,
        chimera_hitl_api::Auth::Gateway,
    )))
    .await
}
