//! Who is calling: JWT claims, roles and the checks the HITL API makes.
//!
//! In AWS, API Gateway's JWT authorizer validates the token and passes its claims to the
//! function as strings ([`Principal::from_gateway_claims`]). Locally, the router validates
//! HS256 tokens signed with a configured key ([`Hs256`]). Both read the same claims:
//!
//! - `sub`: the caller (a reviewer's id in the audit log);
//! - `tenant`: the tenant id (a UUID); every object the caller reads or decides is the tenant's;
//! - `roles`: `operator` (submits goals, reads), `reviewer` (reads, decides), `admin` (all).
//!   A JSON array, or one string of names separated by spaces or commas (API Gateway passes an
//!   array claim as `"[operator reviewer]"`).

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::domain::TenantId;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Reviewer,
    /// A tenant's administrator: budgets, spend and auto-pay limits, the tenant's own record.
    Admin,
    /// The platform's administrator: creates and lists tenants; no role inside any of them.
    PlatformAdmin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "operator" => Some(Self::Operator),
            "reviewer" => Some(Self::Reviewer),
            "admin" => Some(Self::Admin),
            "platform_admin" => Some(Self::PlatformAdmin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Reviewer => "reviewer",
            Self::Admin => "admin",
            Self::PlatformAdmin => "platform_admin",
        }
    }
}

/// What an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read goals, reviews and the audit trail: any role.
    Read,
    /// Submit goals: operator or admin.
    Submit,
    /// Approve, reject or edit: reviewer or admin.
    Decide,
    /// Money and the tenant's own settings (budgets, top-ups, spend and auto-pay limits): a
    /// tenant's admin.
    Administer,
    /// Create tenants and list them all: the platform's admin.
    ManageTenants,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: TenantId,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        let any = |roles: &[Role]| roles.iter().any(|r| self.roles.contains(r));
        match permission {
            Permission::Read => any(&[Role::Operator, Role::Reviewer, Role::Admin]),
            Permission::Submit => any(&[Role::Operator, Role::Admin]),
            Permission::Decide => any(&[Role::Reviewer, Role::Admin]),
            Permission::Administer => any(&[Role::Admin]),
            Permission::ManageTenants => any(&[Role::PlatformAdmin]),
        }
    }

    /// The principal named by API Gateway's authorizer claims (every value a string).
    ///
    /// A Cognito ID token names them its own way: the groups (`cognito:groups`) are the roles
    /// and the custom attribute `custom:tenant` the tenant, each read where the plain claim is
    /// absent.
    pub fn from_gateway_claims(claims: &HashMap<String, String>) -> Result<Self, AuthError> {
        let roles = claims
            .get("roles")
            .or_else(|| claims.get("cognito:groups"))
            .map(|r| Value::String(r.clone()))
            .unwrap_or(Value::Null);
        Self::from_parts(
            claims.get("sub").map(String::as_str),
            claims
                .get("tenant")
                .or_else(|| claims.get("custom:tenant"))
                .map(String::as_str),
            &roles,
        )
    }

    fn from_parts(
        sub: Option<&str>,
        tenant: Option<&str>,
        roles: &Value,
    ) -> Result<Self, AuthError> {
        let subject = sub
            .filter(|s| (1..=200).contains(&s.len()))
            .ok_or(AuthError::Claim("sub"))?
            .to_owned();
        if subject.chars().any(char::is_control) {
            return Err(AuthError::Unstorable("sub"));
        }
        let tenant = tenant
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .map(TenantId)
            .ok_or(AuthError::Claim("tenant"))?;
        let names: Vec<String> = match roles {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => s
                .trim_matches(|c| c == '[' || c == ']')
                .split([' ', ','])
                .map(|r| r.trim_matches('"').to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        let roles: BTreeSet<Role> = names.iter().filter_map(|n| Role::parse(n)).collect();
        if roles.is_empty() {
            return Err(AuthError::Claim("roles"));
        }
        Ok(Self {
            subject,
            tenant,
            roles,
        })
    }
}

/// Why a token was refused (every case answers 401 but [`AuthError::Unstorable`]: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A claim holds control characters (a NUL...), which no audit record can keep.
    #[error("the token's {0} claim contains control characters")]
    Unstorable(&'static str),
    #[error("no bearer token")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not HS256")]
    Algorithm,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token's {0} claim is missing or invalid")]
    Claim(&'static str),
}

/// The claims Chimera signs and reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

/// HS256 tokens with one shared key, optionally bound to an issuer and an audience.
#[derive(Clone)]
pub struct Hs256 {
    key: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl std::fmt::Debug for Hs256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hs256")
            .field("key", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Hs256 {
    /// A key of at least 32 bytes (RFC 7518 asks for the hash's size).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, String> {
        let key = key.into();
        if key.len() < 32 {
            return Err("the JWT key must be at least 32 bytes".into());
        }
        Ok(Self {
            key,
            issuer: None,
            audience: None,
        })
    }

    fn mac(&self, signing_input: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(signing_input.as_bytes());
        mac
    }

    /// Signs `claims` (header `{"alg":"HS256","typ":"JWT"}`).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&input).finalize().into_bytes());
        format!("{input}.{signature}")
    }

    /// Verifies `token` at `now` (seconds since the epoch) and returns its principal.
    pub fn verify(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| AuthError::Malformed)
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| AuthError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(AuthError::Algorithm);
        }
        let input = &token[..token.len() - signature.len() - 1];
        self.mac(input)
            .verify_slice(&decode(signature)?)
            .map_err(|_| AuthError::Signature)?;
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&decode(payload)?).map_err(|_| AuthError::Malformed)?;
        let number = |name| claims.get(name).and_then(Value::as_i64);
        match number("exp") {
            None => return Err(AuthError::Claim("exp")),
            Some(exp) if now > exp + LEEWAY_SECS => return Err(AuthError::Expired),
            Some(_) => {}
        }
        if number("nbf").is_some_and(|nbf| now + LEEWAY_SECS < nbf) {
            return Err(AuthError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer)
        {
            return Err(AuthError::Issuer);
        }
        if let Some(audience) = &self.audience {
            let matches = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !matches {
                return Err(AuthError::Audience);
            }
        }
        Principal::from_parts(
            claims.get("sub").and_then(Value::as_str),
            claims.get("tenant").and_then(Value::as_str),
            claims.get("roles").unwrap_or(&Value::Null),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Hs256 {
        Hs256::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            tenant: uuid::Uuid::from_u128(7).to_string(),
            roles: vec!["reviewer".into()],
            exp: NOW + 60,
            iat: Some(NOW),
            iss: Some("chimera-local".into()),
            aud: Some("chimera".into()),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_names_its_principal() {
        let principal = key().verify(&key().sign(&claims()), NOW).unwrap();
        assert_eq!(principal.subject, "alice");
        assert_eq!(principal.tenant, TenantId(uuid::Uuid::from_u128(7)));
        assert!(principal.may(Permission::Decide));
        assert!(principal.may(Permission::Read));
        assert!(!principal.may(Permission::Submit));
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused() {
        let token = key().sign(&claims());
        let other = Hs256::new(b"another key, also thirty-two bytes".to_vec()).unwrap();
        assert_eq!(other.verify(&token, NOW), Err(AuthError::Signature));
        let mut forged = claims();
        forged.roles = vec!["admin".into()];
        let forged_payload = key().sign(&forged);
        let spliced = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            forged_payload.split('.').nth(1).unwrap(),
            token.split('.').nth(2).unwrap()
        );
        assert_eq!(key().verify(&spliced, NOW), Err(AuthError::Signature));
        assert_eq!(key().verify(&token, NOW + 3600), Err(AuthError::Expired));
        assert_eq!(key().verify("a.b", NOW), Err(AuthError::Malformed));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(key().verify(&none, NOW), Err(AuthError::Algorithm));
        let mut bound = key();
        bound.issuer = Some("someone-else".into());
        assert_eq!(bound.verify(&token, NOW), Err(AuthError::Issuer));
        let mut bound = key();
        bound.audience = Some("other-api".into());
        assert_eq!(bound.verify(&token, NOW), Err(AuthError::Audience));
        let mut no_roles = claims();
        no_roles.roles = vec!["superuser".into()];
        assert_eq!(
            key().verify(&key().sign(&no_roles), NOW),
            Err(AuthError::Claim("roles"))
        );
        assert!(Hs256::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn gateway_claims_are_strings() {
        let claims: HashMap<String, String> = [
            ("sub", "bob"),
            ("tenant", "00000000-0000-0000-0000-000000000007"),
            ("roles", "[operator reviewer]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let principal = Principal::from_gateway_claims(&claims).unwrap();
        assert_eq!(
            principal.roles,
            BTreeSet::from([Role::Operator, Role::Reviewer])
        );
        let mut missing = claims.clone();
        missing.remove("tenant");
        assert_eq!(
            Principal::from_gateway_claims(&missing),
            Err(AuthError::Claim("tenant"))
        );
    }

    #[test]
    fn a_cognito_id_token_gives_its_groups_as_roles_and_its_custom_tenant() {
        let claims: HashMap<String, String> = [
            ("sub", "5f0c-user"),
            ("custom:tenant", "00000000-0000-0000-0000-000000000007"),
            ("cognito:groups", "[reviewer]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let principal = Principal::from_gateway_claims(&claims).unwrap();
        assert_eq!(principal.roles, BTreeSet::from([Role::Reviewer]));
        assert_eq!(principal.tenant.0.as_u128(), 7);
    }
}
