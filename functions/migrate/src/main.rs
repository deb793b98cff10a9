//! Lambda entry point that applies `migrations/` (embedded at build time) to the database the
//! functions use, then reports what the database has. Invoked once after each deploy:
//!
//! ```text
//! aws lambda invoke --function-name <stage>-migrate /dev/stdout
//! ```
//! Applying an up-to-date database is a no-op, so invoking it again is harmless. It then gives
//! each function's database role (migration 20) the login of its secret
//! (`DATABASE_ROLE_SECRET_ARNS`): the functions connect as their roles, never as the owner.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    chimera_aws::telemetry::init_logs(chimera_aws::telemetry::LogTo::Stdout);
    let clients = chimera_aws::Clients::from_env().await;
    let url = chimera_aws::database::url_from_env(&clients).await?;
    let url = &url;
    let clients = &clients;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let pool = chimera_store::connect(url, 1).await?;
        if let Err(err) = chimera_store::migrate(&pool).await {
            let hint = chimera_store::migration_hint(&err).unwrap_or_default();
            return Err(format!("applying migrations: {err}. {hint}").into());
        }
        let applied = chimera_store::applied_migrations(&pool).await?;
        // Each function's role gets the login of its secret, read anew at each invocation (a
        // rotated secret takes effect at the next one).
        let logins = chimera_aws::database::role_logins_from_env(clients).await?;
        let logins: Vec<(String, String)> = logins
            .iter()
            .map(|s| (s.username.clone(), s.password.clone()))
            .collect();
        let roles = chimera_store::grant_logins(&pool, &logins).await?;
        pool.close().await;
        let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        Ok::<_, lambda_runtime::Error>(json!({ "applied_migrations": applied, "logins": roles }))
    }))
    .await
}
