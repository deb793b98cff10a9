//! Agents' accounts on platforms: where the MCP client finds them, and creating one on an AT
//! Protocol PDS where the operator may (the local network; a real network's accounts are
//! created by a person and their app passwords stored the same way).
//!
//! An account is a secret per agent and platform, `<stage>/agents/<agent id>/<platform>`, a
//! JSON object of strings; for Bluesky `{"identifier", "app_password", "did", "handle"}`. The
//! profile's server names it (`credentials.secret`) and says which fields the server gets and
//! which bindings may use (`account`). It is never written to PostgreSQL, logs or the API.

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

/// The secret holding `agent`'s account on `platform` in `stage`.
pub use chimera_core::names::agent_secret as secret_name;

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
    let (created, base) = create_account(http, pds, handle).await?;
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

async fn create_account(
    http: &reqwest::Client,
    pds: &str,
    handle: &str,
) -> anyhow::Result<(Created, String)> {
    let base = pds.trim_end_matches('/').to_owned();
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
    Ok((created, base))
}

/// A record's strong reference: what a reply, a like or a repost names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StrongRef {
    pub uri: String,
    pub cid: String,
}

/// A person on a local network, not an agent: writes what agents answer, likes and reposts
/// what they publish, straight to its PDS (the demo's and the tests' audience).
pub struct Reader {
    pub did: String,
    pub handle: String,
    base: String,
    access_jwt: String,
    http: reqwest::Client,
}

impl Reader {
    /// A new account `handle` on the PDS at `pds`, signed in.
    pub async fn create(http: &reqwest::Client, pds: &str, handle: &str) -> anyhow::Result<Self> {
        let (created, base) = create_account(http, pds, handle).await?;
        Ok(Self {
            did: created.did,
            handle: created.handle,
            base,
            access_jwt: created.access_jwt,
            http: http.clone(),
        })
    }

    /// Posts `text`.
    pub async fn post(&self, text: &str) -> anyhow::Result<StrongRef> {
        self.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": text, "langs": ["en"],
                   "createdAt": chrono::Utc::now().to_rfc3339()}),
        )
        .await
    }

    /// Likes `post`.
    pub async fn like(&self, post: &StrongRef) -> anyhow::Result<StrongRef> {
        self.create_record(
            "app.bsky.feed.like",
            json!({"$type": "app.bsky.feed.like", "subject": {"uri": post.uri, "cid": post.cid},
                   "createdAt": chrono::Utc::now().to_rfc3339()}),
        )
        .await
    }

    /// Reposts `post`.
    pub async fn repost(&self, post: &StrongRef) -> anyhow::Result<StrongRef> {
        self.create_record(
            "app.bsky.feed.repost",
            json!({"$type": "app.bsky.feed.repost", "subject": {"uri": post.uri, "cid": post.cid},
                   "createdAt": chrono::Utc::now().to_rfc3339()}),
        )
        .await
    }

    async fn create_record(
        &self,
        collection: &str,
        record: serde_json::Value,
    ) -> anyhow::Result<StrongRef> {
        let answer = self
            .http
            .post(format!("{}/xrpc/com.atproto.repo.createRecord", self.base))
            .bearer_auth(&self.access_jwt)
            .json(&json!({"repo": self.did, "collection": collection, "record": record}))
            .send()
            .await
            .with_context(|| format!("writing a {collection} record"))?;
        let status = answer.status();
        if !status.is_success() {
            let body = answer.text().await.unwrap_or_default();
            anyhow::bail!("the PDS refused a {collection} record: {status} {body}");
        }
        answer
            .json()
            .await
            .with_context(|| format!("the PDS's answer to a {collection} record"))
    }
}

/// The strong references of the records of `collection` in `did`'s repository (the PDS's own
/// listing: what the platform holds, whatever the AppView shows yet), newest first.
pub async fn records_of(
    http: &reqwest::Client,
    pds: &str,
    did: &str,
    collection: &str,
) -> anyhow::Result<Vec<StrongRef>> {
    #[derive(Deserialize)]
    struct Listed {
        records: Vec<StrongRef>,
    }
    let base = pds.trim_end_matches('/');
    let listed: Listed = http
        .get(format!(
            "{base}/xrpc/com.atproto.repo.listRecords?repo={did}&collection={collection}&limit=100"
        ))
        .send()
        .await
        .with_context(|| format!("listing {did}'s {collection} records"))?
        .error_for_status()?
        .json()
        .await?;
    Ok(listed.records)
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
