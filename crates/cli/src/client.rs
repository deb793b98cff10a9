//! The HITL API as the CLI's operator commands call it: where it is, the token, and failures
//! sorted into exit codes scripts can rely on.
//!
//! The API's address and the token come from `--api` / `CHIMERA_API` and `CHIMERA_TOKEN`, else
//! from the config file (`CHIMERA_CONFIG`, default `$XDG_CONFIG_HOME/chimera/config` or
//! `~/.config/chimera/config`), whose lines read `api = <url>` and `token = <jwt>`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;

/// Exit codes of the operator commands (also in `chimera --help`).
pub mod exit {
    /// Something else failed (the error says what).
    pub const OTHER: u8 = 1;
    /// The object does not exist, or is another tenant's.
    pub const NOT_FOUND: u8 = 3;
    /// A conflict: taken, stale (the message names the current version), already decided,
    /// the agent is paused.
    pub const CONFLICT: u8 = 4;
    /// The request was refused as invalid (400, 413, 414, 422): nothing was stored.
    pub const INVALID: u8 = 5;
    /// No valid token, or a role that does not allow it.
    pub const NOT_ALLOWED: u8 = 6;
    /// The API could not be reached or failed (5xx): try again.
    pub const UNAVAILABLE: u8 = 7;
    /// `goals watch`: the goal failed or was cancelled.
    pub const GOAL_FAILED: u8 = 8;
    /// `goals watch`: the goal did not settle in time.
    pub const TIMEOUT: u8 = 9;
}

/// A refusal or failure the API answered.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The whole error body (a 409 may name the winner or the current policy version).
    pub body: Value,
}

impl ApiFailure {
    pub fn exit_code(&self) -> u8 {
        match self.status {
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            400 | 413 | 414 | 422 => exit::INVALID,
            401 | 403 => exit::NOT_ALLOWED,
            _ => exit::UNAVAILABLE,
        }
    }
}

/// The API could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("the API at {0} does not answer: {1}")]
pub struct Unreachable(pub String, pub String);

/// The exit code for `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(failure) = err.downcast_ref::<ApiFailure>() {
        failure.exit_code()
    } else if err.downcast_ref::<Unreachable>().is_some() {
        exit::UNAVAILABLE
    } else if let Some(code) = err.downcast_ref::<Exit>() {
        code.0
    } else {
        exit::OTHER
    }
}

/// A command's own exit code, with what it says.
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub struct Exit(pub u8, pub String);

pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// The API at `api` (else `CHIMERA_API`, else the config file's, else the local runner's)
    /// with the token of `CHIMERA_TOKEN` or the config file.
    pub fn from_env(api: Option<String>) -> Result<Api> {
        let file = config_file();
        let from_file = |key: &str| file.as_ref().and_then(|(_, text)| config_value(text, key));
        let base = api
            .or_else(|| std::env::var("CHIMERA_API").ok().filter(|v| !v.is_empty()))
            .or_else(|| from_file("api"))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = std::env::var("CHIMERA_TOKEN")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| from_file("token"));
        let Some(token) = token else {
            let place = file
                .map(|(path, _)| path.display().to_string())
                .unwrap_or_else(|| "~/.config/chimera/config".into());
            bail!(Exit(
                exit::NOT_ALLOWED,
                format!(
                    "no token: set CHIMERA_TOKEN or write `token = <jwt>` in {place} (`chimera token` mints one for the local stack)"
                )
            ));
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(Method::GET, path, None, None).await
    }

    /// Reads the server-sent events at `path`, handing each (event name, JSON data) to
    /// `on_event` until it returns `false`, the stream ends (`Ok(false)`) or `until` passes
    /// (`Ok(true)`: timed out). A refused request is an [`ApiFailure`].
    pub async fn events(
        &self,
        path: &str,
        until: tokio::time::Instant,
        mut on_event: impl FnMut(&str, Value) -> bool,
    ) -> Result<bool> {
        // No overall timeout: the stream lasts as long as the goal runs.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let unreachable = |e: reqwest::Error| Unreachable(self.base.clone(), e.to_string());
        let sent = tokio::time::timeout_at(
            until,
            http.get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("Accept", "text/event-stream")
                .send(),
        )
        .await;
        let Ok(sent) = sent else {
            return Ok(true);
        };
        let mut response = sent.map_err(unreachable)?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let text = response.text().await.map_err(unreachable)?;
            return Err(failure(status, text).into());
        }
        let mut pending = String::new();
        loop {
            let chunk = match tokio::time::timeout_at(until, response.chunk()).await {
                Err(_) => return Ok(true),
                Ok(chunk) => chunk.map_err(unreachable)?,
            };
            let Some(chunk) = chunk else {
                return Ok(false);
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let (mut name, mut data) = ("message".to_owned(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                if !on_event(&name, value) {
                    return Ok(false);
                }
            }
        }
    }

    /// One request; the answer's JSON, or an [`ApiFailure`] / [`Unreachable`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Unreachable(self.base.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| Unreachable(self.base.clone(), e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)));
        }
        Err(failure(status, text).into())
    }
}

/// A refused request's answer (`status`, body `text`) as an [`ApiFailure`].
fn failure(status: u16, text: String) -> ApiFailure {
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let error = &json["error"];
    ApiFailure {
        status,
        code: error["code"].as_str().unwrap_or("error").to_owned(),
        message: error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| json.to_string()),
        body: json,
    }
}

/// The config file and its text, if there is one.
fn config_file() -> Option<(PathBuf, String)> {
    let path = match std::env::var_os("CHIMERA_CONFIG") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?
            .join("chimera")
            .join("config"),
    };
    let text = std::fs::read_to_string(&path).ok()?;
    Some((path, text))
}

/// `key = value` from a config file's text (`#` starts a comment).
fn config_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_names_the_api_and_the_token() {
        let text = "# chimera\napi = http://example.test:8080 # the stage\ntoken=\"abc\"\n";
        assert_eq!(
            config_value(text, "api").as_deref(),
            Some("http://example.test:8080")
        );
        assert_eq!(config_value(text, "token").as_deref(), Some("abc"));
        assert_eq!(config_value(text, "tenant"), None);
    }

    #[test]
    fn failures_map_to_documented_exit_codes() {
        let failure = |status| ApiFailure {
            status,
            code: "x".into(),
            message: "x".into(),
            body: Value::Null,
        };
        for (status, code) in [
            (404, exit::NOT_FOUND),
            (409, exit::CONFLICT),
            (422, exit::INVALID),
            (400, exit::INVALID),
            (403, exit::NOT_ALLOWED),
            (503, exit::UNAVAILABLE),
        ] {
            assert_eq!(exit_code(&failure(status).into()), code, "{status}");
        }
        assert_eq!(
            exit_code(&Unreachable("u".into(), "refused".into()).into()),
            exit::UNAVAILABLE
        );
        assert_eq!(exit_code(&anyhow::anyhow!("other")), exit::OTHER);
    }
}
