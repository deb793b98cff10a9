//! Where the database is: `DATABASE_URL`, or, as deployed, credentials in Secrets Manager.
//!
//! Deployed functions get `DATABASE_SECRET_ARN` (the Aurora cluster's secret, JSON with
//! `username` and `password`, optionally `host`, `port`, `dbname`), `DATABASE_HOST` (the RDS
//! Proxy endpoint, which wins over the secret's `host`) and `DATABASE_NAME`. The secret is read
//! once per execution environment, at init; the password never appears in the configuration.

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::Clients;

pub const DATABASE_SECRET_ARN: &str = "DATABASE_SECRET_ARN";
pub const DATABASE_HOST: &str = "DATABASE_HOST";
pub const DATABASE_NAME: &str = "DATABASE_NAME";
/// For `migrate`: the secrets of the functions' database logins (comma-separated ARNs), each
/// `{"username": "chimera_<function>", "password"}`; it gives each role its login.
pub const DATABASE_ROLE_SECRET_ARNS: &str = "DATABASE_ROLE_SECRET_ARNS";

/// The fields of an RDS database secret that matter here (`Debug` leaves the password out).
#[derive(Deserialize)]
pub struct DatabaseSecret {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub dbname: Option<String>,
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl DatabaseSecret {
    /// The PostgreSQL URL, with `host` and `dbname` overriding the secret's (TLS, with the
    /// server's certificate verified: RDS Proxy presents an ACM certificate).
    pub fn url(&self, host: Option<&str>, dbname: Option<&str>) -> anyhow::Result<String> {
        let host = host
            .or(self.host.as_deref())
            .context("no database host: set DATABASE_HOST or put `host` in the secret")?;
        let dbname = dbname.or(self.dbname.as_deref()).unwrap_or("chimera");
        Ok(format!(
            "postgres://{}:{}@{host}:{}/{}?sslmode=verify-full",
            encode(&self.username),
            encode(&self.password),
            self.port.unwrap_or(5432),
            encode(dbname),
        ))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `DATABASE_URL` if set; else the URL built from the secret `DATABASE_SECRET_ARN`.
pub async fn url_from_env(clients: &Clients) -> anyhow::Result<String> {
    if let Ok(url) = std::env::var(chimera_core::names::env::DATABASE_URL) {
        return Ok(url);
    }
    let Ok(arn) = std::env::var(DATABASE_SECRET_ARN) else {
        bail!("set DATABASE_URL, or DATABASE_SECRET_ARN (with DATABASE_HOST) as deployed");
    };
    secret(clients, &arn).await?.url(
        std::env::var(DATABASE_HOST).ok().as_deref(),
        std::env::var(DATABASE_NAME).ok().as_deref(),
    )
}

/// The database secret `arn`.
pub async fn secret(clients: &Clients, arn: &str) -> anyhow::Result<DatabaseSecret> {
    let value = clients
        .secrets
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .with_context(|| format!("reading the database secret {arn}"))?;
    let secret: DatabaseSecret = serde_json::from_str(
        value
            .secret_string()
            .with_context(|| format!("the secret {arn} has no string value"))?,
    )
    .with_context(|| format!("the secret {arn} is not a database secret (username, password)"))?;
    Ok(secret)
}

/// The functions' database logins of `DATABASE_ROLE_SECRET_ARNS` (none if it is unset or
/// empty), read from their secrets.
pub async fn role_logins_from_env(clients: &Clients) -> anyhow::Result<Vec<DatabaseSecret>> {
    let arns = std::env::var(DATABASE_ROLE_SECRET_ARNS).unwrap_or_default();
    let mut logins = Vec::new();
    for arn in arns.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        logins.push(secret(clients, arn).await?);
    }
    Ok(logins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_escapes_credentials_and_prefers_the_proxy_host() {
        let secret: DatabaseSecret = serde_json::from_str(
            r#"{"username": "chimera", "password": "p@ss:w/rd?", "host": "cluster.local", "port": 5433}"#,
        )
        .unwrap();
        assert_eq!(
            secret.url(Some("proxy.local"), None).unwrap(),
            "postgres://chimera:p%40ss%3Aw%2Frd%3F@proxy.local:5433/chimera?sslmode=verify-full"
        );
        assert_eq!(
            secret.url(None, Some("db")).unwrap(),
            "postgres://chimera:p%40ss%3Aw%2Frd%3F@cluster.local:5433/db?sslmode=verify-full"
        );
        let hostless: DatabaseSecret =
            serde_json::from_str(r#"{"username": "u", "password": "p"}"#).unwrap();
        assert!(hostless.url(None, None).is_err());
    }
}
