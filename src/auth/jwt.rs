//! Signing and verifying tokens: HS256 with several keys named by `kid`, so keys can rotate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Principal;
use crate::config::AuthSettings;
use crate::domain::{AgentId, Scope, TenantId};

/// Why a token was refused. Every variant is a 401 to the client; the detail is for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed or badly signed token")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token has been revoked")]
    Revoked,
    #[error("no signing key is configured (run `aex init`)")]
    NoKey,
}

/// The claims AEX puts in a token (SPEC §9).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Uuid>,
    pub scope: Scope,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub jti: Uuid,
}

/// A freshly signed token: shown once, never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
    pub kid: String,
}

impl IssuedToken {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.claims.exp.and_then(|e| DateTime::from_timestamp(e, 0))
    }
}

/// Holds the keys; cheap to share behind an `Arc`.
pub struct TokenSigner {
    issuer: String,
    active_kid: String,
    encoding: HashMap<String, EncodingKey>,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenSigner {
    pub fn new(settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[settings.issuer.as_str()]);
        // `exp` is optional (a token without TTL never expires) but checked when present.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 5;
        TokenSigner {
            issuer: settings.issuer.clone(),
            active_kid: settings.active_kid.clone(),
            encoding: settings
                .keys
                .iter()
                .map(|(kid, k)| (kid.clone(), EncodingKey::from_secret(k.expose().as_bytes())))
                .collect(),
            decoding: settings
                .keys
                .iter()
                .map(|(kid, k)| (kid.clone(), DecodingKey::from_secret(k.expose().as_bytes())))
                .collect(),
            validation,
        }
    }

    /// Signs a token for `subject` with the active key.
    pub fn issue(
        &self,
        subject: &str,
        scope: Scope,
        tenant_id: Option<TenantId>,
        agent_id: Option<AgentId>,
        ttl: Option<chrono::Duration>,
    ) -> Result<IssuedToken, AuthError> {
        let now = Utc::now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            tenant: tenant_id.map(|t| t.0),
            agent: agent_id.map(|a| a.0),
            scope,
            iat: now.timestamp(),
            exp: ttl.map(|d| (now + d).timestamp()),
            jti: Uuid::now_v7(),
        };
        self.sign(claims)
    }

    /// Signs the given claims as they are (tests use this to make expired tokens).
    pub fn sign(&self, claims: Claims) -> Result<IssuedToken, AuthError> {
        let key = self
            .encoding
            .get(&self.active_kid)
            .ok_or(AuthError::NoKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.active_kid.clone());
        let token = encode(&header, &claims, key).map_err(|_| AuthError::Invalid)?;
        Ok(IssuedToken {
            token,
            claims,
            kid: self.active_kid.clone(),
        })
    }

    /// Verifies signature, issuer and expiry, all in memory. Revocation is checked by the caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let key = self.decoding.get(&kid).ok_or(AuthError::Invalid)?;
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        let c = data.claims;
        // The claims must be consistent with the scope; a token that is not is forged or broken.
        let consistent = match c.scope {
            Scope::Execution | Scope::ReadOnly => c.tenant.is_some() && c.agent.is_some(),
            Scope::Admin => c.tenant.is_some() && c.agent.is_none(),
            Scope::Operator => c.agent.is_none(),
        };
        if !consistent {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            jti: c.jti,
            subject: c.sub,
            scope: c.scope,
            tenant_id: c.tenant.map(TenantId),
            agent_id: c.agent.map(AgentId),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn signer(kid: &str, secret: &str) -> TokenSigner {
        let mut s = AuthSettings {
            active_kid: kid.to_owned(),
            ..AuthSettings::default()
        };
        s.keys.insert(kid.to_owned(), Secret::new(secret));
        TokenSigner::new(&s)
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_verifies_to_its_principal() {
        let s = signer("k1", KEY);
        let agent = AgentId(Uuid::now_v7());
        let t = s
            .issue(
                "a",
                Scope::Execution,
                Some(crate::domain::DEFAULT_TENANT),
                Some(agent),
                None,
            )
            .unwrap();
        let p = s.verify(&t.token).unwrap();
        assert_eq!(p.agent_id, Some(agent));
        assert_eq!(p.scope, Scope::Execution);
        assert_eq!(p.jti, t.claims.jti);
    }

    #[test]
    fn expired_badly_signed_and_garbage_tokens_are_refused() {
        let s = signer("k1", KEY);
        let mut t = s
            .issue("op", Scope::Operator, None, None, None)
            .unwrap()
            .claims;
        t.exp = Some(Utc::now().timestamp() - 3600);
        let expired = s.sign(t).unwrap();
        assert_eq!(s.verify(&expired.token).unwrap_err(), AuthError::Expired);

        let other = signer("k1", "ffffffffffffffffffffffffffffffff");
        let forged = other
            .issue("op", Scope::Operator, None, None, None)
            .unwrap();
        assert_eq!(s.verify(&forged.token).unwrap_err(), AuthError::Invalid);

        assert_eq!(s.verify("not-a-jwt").unwrap_err(), AuthError::Invalid);
        let unknown_kid = signer("k2", KEY)
            .issue("op", Scope::Operator, None, None, None)
            .unwrap();
        assert_eq!(
            s.verify(&unknown_kid.token).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn an_agent_scope_without_an_agent_is_refused() {
        let s = signer("k1", KEY);
        let t = s.issue("x", Scope::Execution, None, None, None).unwrap();
        assert_eq!(s.verify(&t.token).unwrap_err(), AuthError::Invalid);
    }
}
