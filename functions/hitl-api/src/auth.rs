//! Who is calling, and what they may do.
//!
//! - [`Auth::Gateway`] (in AWS): API Gateway's JWT authorizer has validated the token; the
//!   claims come from the request context. A request without them (a route outside the
//!   authorizer) is refused.
//! - [`Auth::Local`] (the runner, tests): `Authorization: Bearer <jwt>`, an HS256 token signed
//!   with the configured key (`CHIMERA_JWT_SECRET`, optionally bound to `CHIMERA_JWT_ISSUER`
//!   and `CHIMERA_JWT_AUDIENCE`).
//!
//! Both yield a [`Caller`]: subject, tenant, roles. A missing or invalid token answers 401, a
//! role that does not allow the endpoint 403.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chimera_core::auth::{AuthError, Hs256, Permission, Principal};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

use crate::{ApiError, AppState};

/// Environment variables of local authentication.
pub mod env {
    pub const JWT_SECRET: &str = "CHIMERA_JWT_SECRET";
    pub const JWT_ISSUER: &str = "CHIMERA_JWT_ISSUER";
    pub const JWT_AUDIENCE: &str = "CHIMERA_JWT_AUDIENCE";
    pub const OIDC_AUTHORIZE_URL: &str = "CHIMERA_OIDC_AUTHORIZE_URL";
    pub const OIDC_TOKEN_URL: &str = "CHIMERA_OIDC_TOKEN_URL";
    pub const OIDC_CLIENT_ID: &str = "CHIMERA_OIDC_CLIENT_ID";
    pub const OIDC_SCOPE: &str = "CHIMERA_OIDC_SCOPE";
}

#[derive(Debug, Clone)]
pub enum Auth {
    /// Claims validated by API Gateway's JWT authorizer.
    Gateway,
    /// HS256 tokens validated here.
    Local(Hs256),
}

impl Auth {
    /// Local authentication from `CHIMERA_JWT_SECRET` (at least 32 bytes), `CHIMERA_JWT_ISSUER`
    /// and `CHIMERA_JWT_AUDIENCE`.
    pub fn local_from_env() -> anyhow::Result<Self> {
        let secret = std::env::var(env::JWT_SECRET).map_err(|_| {
            anyhow::anyhow!(
                "{} must be set to a key of at least 32 bytes",
                env::JWT_SECRET
            )
        })?;
        let mut key = Hs256::new(secret.into_bytes()).map_err(anyhow::Error::msg)?;
        key.issuer = std::env::var(env::JWT_ISSUER)
            .ok()
            .filter(|s| !s.is_empty());
        key.audience = std::env::var(env::JWT_AUDIENCE)
            .ok()
            .filter(|s| !s.is_empty());
        Ok(Self::Local(key))
    }

    fn principal(&self, parts: &Parts) -> Result<Principal, AuthError> {
        match self {
            Auth::Gateway => {
                let claims = match parts.request_context_ref() {
                    Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                        .authorizer
                        .as_ref()
                        .and_then(|a| a.jwt.as_ref())
                        .map(|jwt| &jwt.claims),
                    _ => None,
                };
                Principal::from_gateway_claims(claims.ok_or(AuthError::Missing)?)
            }
            Auth::Local(key) => {
                let header = parts
                    .headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(AuthError::Missing)?;
                let token = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .ok_or(AuthError::Missing)?;
                key.verify(token.trim(), chrono::Utc::now().timestamp())
            }
        }
    }
}

/// How Mission Control signs people in (`GET /auth/config`): the authorization code flow with
/// PKCE against an OpenID issuer (Cognito as deployed; the runner's local issuer on the local
/// stack), and the token form only where tokens are checked locally.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SignIn {
    /// The issuer's authorization endpoint (absolute, or relative to the API).
    pub authorization_endpoint: Option<String>,
    /// The issuer's token endpoint (absolute, or relative to the API).
    pub token_endpoint: Option<String>,
    /// Mission Control's client id at the issuer.
    pub client_id: Option<String>,
    /// The scopes asked for.
    pub scope: String,
    /// Whether the page also offers pasting a token (local use only).
    pub token_form: bool,
}

impl SignIn {
    /// `CHIMERA_OIDC_AUTHORIZE_URL`, `CHIMERA_OIDC_TOKEN_URL`, `CHIMERA_OIDC_CLIENT_ID` and
    /// `CHIMERA_OIDC_SCOPE` (`openid` by default); the token form where `auth` checks tokens
    /// locally.
    pub fn from_env(auth: &Auth) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        SignIn {
            authorization_endpoint: var(env::OIDC_AUTHORIZE_URL),
            token_endpoint: var(env::OIDC_TOKEN_URL),
            client_id: var(env::OIDC_CLIENT_ID),
            scope: var(env::OIDC_SCOPE).unwrap_or_else(|| "openid".into()),
            token_form: matches!(auth, Auth::Local(_)),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller's roles allow `permission`.
    pub fn require(&self, permission: Permission) -> Result<&Principal, ApiError> {
        if self.0.may(permission) {
            Ok(&self.0)
        } else {
            let needs = match permission {
                Permission::Read => "the operator, reviewer or admin role",
                Permission::Submit => "the operator or admin role",
                Permission::Decide => "the reviewer or admin role",
                Permission::Administer => "the admin role",
                Permission::ManageTenants => "the platform_admin role",
            };
            Err(ApiError::Forbidden(format!("this needs {needs}")))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        state
            .auth
            .principal(parts)
            .map(Caller)
            .map_err(|e| match e {
                AuthError::Unstorable(_) => ApiError::BadRequest(e.to_string()),
                _ => ApiError::Unauthorized(e.to_string()),
            })
    }
}

/// The request's id, for the audit log: `X-Request-Id` when the client sent one (up to 200
/// visible characters), else API Gateway's request id, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let sent = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| (1..=200).contains(&v.len()))
            .map(str::to_owned);
        let gateway = || match parts.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
            _ => None,
        };
        Ok(RequestId(
            sent.or_else(gateway)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ))
    }
}
