//! A local OpenID issuer, so that Mission Control signs in on the local stack as it does when
//! deployed: the authorization code flow with PKCE (S256), which Cognito plays in AWS. Its
//! tokens are signed with the runner's key (`CHIMERA_JWT_SECRET`, the key its API checks).
//!
//! Its sign-in page asks for the subject, tenant and roles the token should carry: it stands
//! in for a user pool on a developer's machine and is served by the runner only, never by the
//! deployed API.
//!
//! - `GET /local-issuer/authorize?response_type=code&client_id&redirect_uri&state&code_challenge&code_challenge_method=S256`
//!   answers the sign-in page; its form posts back to the same path, which redirects to
//!   `redirect_uri` with a one-time `code` (valid 60 s) and the `state`.
//! - `POST /local-issuer/token` (form: `grant_type=authorization_code`, `code`,
//!   `redirect_uri`, `client_id`, `code_verifier`) answers `{"id_token", "access_token",
//!   "token_type", "expires_in"}` once the verifier's SHA-256 is the challenge; else 400 with
//!   an OAuth error (`invalid_request`, `invalid_grant`...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chimera_core::auth::{Claims, Hs256};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const AUTHORIZE_PATH: &str = "/local-issuer/authorize";
pub const TOKEN_PATH: &str = "/local-issuer/token";
/// The client id Mission Control signs in with.
pub const CLIENT_ID: &str = "mission-control";

/// How long a code may wait to be exchanged, and how long a token lasts.
const CODE_LASTS: Duration = Duration::from_secs(60);
const TOKEN_LASTS_SECS: i64 = 3600;
const ROLES: [&str; 4] = ["operator", "reviewer", "admin", "platform_admin"];

/// Mission Control's sign-in configuration pointing at this issuer.
pub fn sign_in() -> chimera_hitl_api::auth::SignIn {
    chimera_hitl_api::auth::SignIn {
        authorization_endpoint: Some(AUTHORIZE_PATH.into()),
        token_endpoint: Some(TOKEN_PATH.into()),
        client_id: Some(CLIENT_ID.into()),
        scope: "openid".into(),
        token_form: true,
    }
}

/// The issuer's routes, signing with `key` (its issuer and audience go into the tokens).
pub fn router(key: Hs256) -> Router {
    let issuer = Arc::new(Issuer {
        key,
        codes: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route(AUTHORIZE_PATH, get(authorize_page).post(authorize))
        .route(TOKEN_PATH, post(token))
        .with_state(issuer)
}

struct Issuer {
    key: Hs256,
    codes: Mutex<HashMap<String, Pending>>,
}

/// A code waiting to be exchanged.
struct Pending {
    challenge: String,
    client_id: String,
    redirect_uri: String,
    claims: Claims,
    expires: Instant,
}

/// The authorization request, as the client sends it and the page posts it back.
#[derive(Debug, Deserialize)]
struct AuthorizeRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    #[serde(default)]
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    // The sign-in form's fields.
    sub: Option<String>,
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl AuthorizeRequest {
    /// The checked request: (client id, redirect URI, challenge), or what is wrong; `host` is
    /// the server's (the request's `Host`).
    fn checked(&self, host: &str) -> Result<(&str, &str, &str), String> {
        if self.response_type.as_deref() != Some("code") {
            return Err("response_type must be code".into());
        }
        let client = self.client_id.as_deref().filter(|c| *c == CLIENT_ID);
        let client =
            client.ok_or_else(|| format!("unknown client_id (this issuer knows {CLIENT_ID})"))?;
        // Back to a page of the runner's own (no code ever leaves for another site).
        let redirect = self
            .redirect_uri
            .as_deref()
            .filter(|r| {
                let rest = r.strip_prefix("http://").unwrap_or_default();
                !host.is_empty()
                    && rest
                        .strip_prefix(host)
                        .is_some_and(|path| path.starts_with('/'))
            })
            .ok_or("redirect_uri must be a page of this server")?;
        if self.code_challenge_method.as_deref() != Some("S256") {
            return Err("code_challenge_method must be S256 (PKCE)".into());
        }
        let challenge = self
            .code_challenge
            .as_deref()
            .filter(|c| (43..=128).contains(&c.len()) && c.bytes().all(is_base64url))
            .ok_or("code_challenge must be 43-128 base64url characters")?;
        Ok((client, redirect, challenge))
    }
}

/// The request's `Host` (empty if none).
fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(format!(
            "<!doctype html><title>Sign-in refused</title><p>{}</p>",
            escape(message)
        )),
    )
        .into_response()
}

/// The sign-in page: who the token is for.
async fn authorize_page(
    headers: HeaderMap,
    Query(request): Query<Vec<(String, String)>>,
) -> Response {
    let request = match parse(&request) {
        Ok(r) => r,
        Err(message) => return bad_request(&message),
    };
    if let Err(message) = request.checked(host(&headers)) {
        return bad_request(&message);
    }
    let hidden: String = [
        ("response_type", request.response_type.as_deref()),
        ("client_id", request.client_id.as_deref()),
        ("redirect_uri", request.redirect_uri.as_deref()),
        ("state", Some(request.state.as_str())),
        ("code_challenge", request.code_challenge.as_deref()),
        (
            "code_challenge_method",
            request.code_challenge_method.as_deref(),
        ),
    ]
    .iter()
    .map(|(name, value)| {
        format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(value.unwrap_or_default())
        )
    })
    .collect();
    let roles: String = ROLES
        .iter()
        .map(|r| format!(r#"<label><input type="checkbox" name="roles" value="{r}"> {r}</label>"#))
        .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local sign-in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>Local sign-in</h1>
<p>The local stack's issuer: the token carries the subject, tenant and roles given here.</p>
<form id="issuer-form" method="post" action="{AUTHORIZE_PATH}">
{hidden}
<p><label>Subject <input id="issuer-sub" name="sub" required maxlength="200"></label></p>
<p><label>Tenant id <input id="issuer-tenant" name="tenant" required pattern="[0-9a-fA-F-]{{36}}"></label></p>
<fieldset><legend>Roles</legend>{roles}</fieldset>
<p><button id="issuer-submit" type="submit">Sign in</button></p>
</form>
</body></html>"#
    ))
    .into_response()
}

/// The query or form pairs as a request (`roles` may repeat).
fn parse(pairs: &[(String, String)]) -> Result<AuthorizeRequest, String> {
    let mut map = serde_json::Map::new();
    let mut roles = Vec::new();
    for (k, v) in pairs {
        if k == "roles" {
            roles.push(serde_json::Value::String(v.clone()));
        } else {
            map.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
    map.insert("roles".into(), serde_json::Value::Array(roles));
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

/// The page's form: a code for the client, back to its redirect URI.
async fn authorize(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(&format!("the form does not read: {e}")),
    };
    let request = match parse(&pairs) {
        Ok(r) => r,
        Err(message) => return bad_request(&message),
    };
    let (client, redirect, challenge) = match request.checked(host(&headers)) {
        Ok(checked) => checked,
        Err(message) => return bad_request(&message),
    };
    let sub = request.sub.as_deref().map(str::trim).unwrap_or_default();
    if sub.is_empty() || sub.len() > 200 {
        return bad_request("give a subject (1-200 characters)");
    }
    let Some(tenant) = request
        .tenant
        .as_deref()
        .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok())
    else {
        return bad_request("give the tenant's id (a UUID)");
    };
    let roles: Vec<String> = request
        .roles
        .iter()
        .filter(|r| ROLES.contains(&r.as_str()))
        .cloned()
        .collect();
    if roles.is_empty() {
        return bad_request("pick at least one role");
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.to_string(),
        roles,
        exp: now + TOKEN_LASTS_SECS,
        iat: Some(now),
        iss: issuer.key.issuer.clone(),
        aud: issuer.key.audience.clone(),
    };
    let code = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let pending = Pending {
        challenge: challenge.to_owned(),
        client_id: client.to_owned(),
        redirect_uri: redirect.to_owned(),
        claims,
        expires: Instant::now() + CODE_LASTS,
    };
    {
        let mut codes = issuer.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, p| p.expires > Instant::now());
        codes.insert(code.clone(), pending);
    }
    let separator = if redirect.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect}{separator}{}",
        serde_urlencoded::to_string([("code", code.as_str()), ("state", request.state.as_str())])
            .unwrap_or_default()
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The code for tokens, once, if the verifier is the challenge's.
async fn token(State(issuer): State<Arc<Issuer>>, body: Bytes) -> Response {
    let Ok(request) = serde_urlencoded::from_bytes::<TokenRequest>(&body) else {
        return oauth_error("invalid_request", "the body is not a form");
    };
    if request.grant_type.as_deref() != Some("authorization_code") {
        return oauth_error(
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        );
    }
    let (Some(code), Some(verifier)) = (request.code.as_deref(), request.code_verifier.as_deref())
    else {
        return oauth_error("invalid_request", "code and code_verifier are required");
    };
    // A code is used once, whatever follows.
    let pending = issuer
        .codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(code);
    let Some(pending) = pending.filter(|p| p.expires > Instant::now()) else {
        return oauth_error("invalid_grant", "the code is unknown, used or expired");
    };
    if request.client_id.as_deref() != Some(pending.client_id.as_str())
        || request.redirect_uri.as_deref() != Some(pending.redirect_uri.as_str())
    {
        return oauth_error(
            "invalid_grant",
            "client_id and redirect_uri must be the authorization request's",
        );
    }
    // RFC 7636: 43-128 characters of [A-Za-z0-9-._~].
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !well_formed || computed != pending.challenge {
        return oauth_error(
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    let jwt = issuer.key.sign(&pending.claims);
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "id_token": jwt,
            "access_token": jwt,
            "token_type": "Bearer",
            "expires_in": TOKEN_LASTS_SECS,
        })),
    )
        .into_response()
}
