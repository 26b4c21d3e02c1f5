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
}

/// The claims both sources share. Unknown members are ignored.
#[derive(Debug, Deserialize)]
pub struct TokenClaims {
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
    pub fn into_grant(self, issuer: &str) -> Grant {
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
