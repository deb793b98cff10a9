//! Agents' accounts on platforms: where the MCP client finds them, and creating one on an AT
//! Protocol PDS where the operator may (the local network; a real network's accounts are
//! created by a person and their app passwords stored the same way).
//!
//! An account is a secret per agent and platform, `<stage>/agents/<agent id>/<platform>`, a
//! JSON object of strings; for Bluesky `{"identifier", "app_password", "did", "handle"}`. The
//! profile's server names it (`credentials.secret`) and says which fields the server gets and
//! which bindings may use (`account`). It is never written to PostgreSQL, logs or the API.

use anyhow::Context;
use chimera_core::domain::AgentId;
use serde::Deserialize;
use serde_json::json;

/// The secret holding `agent`'s account on `platform` in `stage`.
pub fn secret_name(stage: &str, agent: AgentId, platform: &str) -> String {
    format!("{stage}/agents/{}/{platform}", agent.0)
}

/// An account on an AT Protocol PDS, with an app password (what third-party clients log in
/// with; the account's own password is not kept).
#[derive(Clone)]
pub struct BlueskyAccount {
    pub did: String,
    pub handle: String,
    pub app_password: String,
}

impl std::fmt::Debug for BlueskyAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlueskyAccount")
            .field("did", &self.did)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl BlueskyAccount {
    /// The secret's JSON.
    pub fn secret(&self) -> String {
        json!({"identifier": self.handle, "app_password": self.app_password,
               "did": self.did, "handle": self.handle})
        .to_string()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    did: String,
    handle: String,
    access_jwt: String,
}

#[derive(Deserialize)]
struct AppPassword {
    password: String,
}

/// Creates the account `handle` (e.g. `nova.test`) on the PDS at `pds`, with an app password.
pub async fn create_on_pds(
    http: &reqwest::Client,
    pds: &str,
    handle: &str,
) -> anyhow::Result<BlueskyAccount> {
    let base = pds.trim_end_matches('/');
    let local = handle.split('.').next().unwrap_or(handle);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let answer = http
        .post(format!("{base}/xrpc/com.atproto.server.createAccount"))
        .json(
            &json!({"handle": handle, "email": format!("{local}@example.com"),
                      "password": password}),
        )
        .send()
        .await
        .with_context(|| format!("reaching the PDS at {base}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        anyhow::bail!("the PDS refused the account {handle}: {status} {body}");
    }
    let created: Created = answer
        .json()
        .await
        .context("the PDS's createAccount answer")?;
    let answer = http
        .post(format!("{base}/xrpc/com.atproto.server.createAppPassword"))
        .bearer_auth(&created.access_jwt)
        .json(&json!({"name": "chimera"}))
        .send()
        .await
        .context("asking the PDS for an app password")?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        anyhow::bail!("the PDS refused an app password for {handle}: {status} {body}");
    }
    let app: AppPassword = answer.json().await.context("the PDS's app password")?;
    Ok(BlueskyAccount {
        did: created.did,
        handle: created.handle,
        app_password: app.password,
    })
}

/// Stores `value` as the secret `name` (created, or its value replaced).
pub async fn store(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: String,
) -> anyhow::Result<()> {
    let created = secrets
        .create_secret()
        .name(name)
        .secret_string(value.clone())
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .with_context(|| format!("replacing the secret {name}"))?;
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err.into_service_error()))
            .with_context(|| format!("creating the secret {name}")),
    }
}
