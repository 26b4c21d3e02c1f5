//! `Grant`: what a validated access token grants. Built the same way from a JWT (RFC 9068 §2.2)
//! and from an introspection response (RFC 7662 §2.2, RFC 9701); read by the binding and
//! authorization stages. Plain data.

use serde::{Deserialize, Serialize};

/// The `cnf` claim (RFC 7800): what the token is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Confirmation {
    /// RFC 9449 §6: thumbprint of the DPoP key.
    pub jkt: Option<String>,
    /// RFC 8705 §3.1: thumbprint of the client certificate.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

/// How a token is sender-constrained: exactly one method (IA-4), or the reason it is not.
/// A new binding method is a new variant here, and the compiler lists what must handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderBinding<'a> {
    /// RFC 9449: a DPoP key, by its JWK thumbprint.
    Dpop { jkt: &'a str },
    /// RFC 8705: a client certificate, by its SHA-256 thumbprint.
    Mtls { x5t_s256: &'a str },
    /// No binding: a plain bearer token (SP2-RS-6 refuses it).
    Unbound,
    /// Bound to both a key and a certificate (IA-4 refuses it).
    Both,
}

impl Confirmation {
    pub fn binding(&self) -> SenderBinding<'_> {
        match (self.jkt.as_deref(), self.x5t_s256.as_deref()) {
            (Some(jkt), None) => SenderBinding::Dpop { jkt },
            (None, Some(x5t_s256)) => SenderBinding::Mtls { x5t_s256 },
            (None, None) => SenderBinding::Unbound,
            (Some(_), Some(_)) => SenderBinding::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Grant {
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    /// RFC 9396 `authorization_details`, as the AS sent them.
    pub authorization_details: Vec<serde_json::Value>,
    pub cnf: Confirmation,
    pub expires_at: Option<u64>,
    pub issued_at: Option<u64>,
    pub acr: Option<String>,
    pub auth_time: Option<u64>,
    pub token_id: Option<String>,
    /// RFC 7662 `token_type`, when introspection gave one (RFC 9449 §6.2).
    pub token_type: Option<String>,
    /// Every claim (JWT) or member (introspection) but `authorization_details`, held above:
    /// what `{claim/...}` operands read.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The claims both sources share. Unknown members are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    #[serde(default)]
    pub authorization_details: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub cnf: Option<Confirmation>,
    pub exp: Option<u64>,
    pub iat: Option<u64>,
    pub acr: Option<String>,
    pub auth_time: Option<u64>,
    pub jti: Option<String>,
    pub token_type: Option<String>,
}

impl TokenClaims {
    /// Reads the claims both sources share from a claim set, which the grant keeps.
    pub(crate) fn grant_from(
        mut claims: serde_json::Map<String, serde_json::Value>,
        issuer: &str,
    ) -> Result<Grant, serde_json::Error> {
        use serde::Deserialize;
        // Moved out, not copied: details can be large and are kept typed.
        let details = claims.remove("authorization_details");
        let object = serde_json::Value::Object(claims);
        let mut typed = TokenClaims::deserialize(&object)?;
        typed.authorization_details = details
            .map(serde_json::from_value::<Option<Vec<serde_json::Value>>>)
            .transpose()?
            .flatten();
        let mut grant = typed.into_grant(issuer);
        if let serde_json::Value::Object(claims) = object {
            grant.claims = claims;
        }
        Ok(grant)
    }

    pub(crate) fn into_grant(self, issuer: &str) -> Grant {
        Grant {
            issuer: self.iss.unwrap_or_else(|| issuer.to_string()),
            subject: self.sub,
            client_id: self.client_id,
            scopes: self
                .scope
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            authorization_details: self.authorization_details.unwrap_or_default(),
            cnf: self.cnf.unwrap_or_default(),
            expires_at: self.exp,
            issued_at: self.iat,
            acr: self.acr,
            auth_time: self.auth_time,
            token_id: self.jti,
            token_type: self.token_type,
            claims: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_a_grant() {
        let claims: TokenClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://as", "sub": "alice", "client_id": "tpp", "scope": "accounts payments",
            "authorization_details": [{"type": "account_information"}],
            "cnf": {"jkt": "abc"}, "exp": 10, "iat": 5, "extra": true
        }))
        .unwrap();
        let grant = claims.into_grant("https://other");
        assert_eq!(grant.issuer, "https://as");
        assert_eq!(grant.scopes, vec!["accounts", "payments"]);
        assert_eq!(grant.cnf.jkt.as_deref(), Some("abc"));
        assert_eq!(grant.authorization_details.len(), 1);
    }
}
