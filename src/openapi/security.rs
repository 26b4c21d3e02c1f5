//! What credential a route asks for, from the operation's security requirements (OpenAPI
//! 3.0.3 §4.7.28 / 3.1.0 §4.8.30, Security Requirement Object): the operation's `security`
//! replaces the root's; the list is a choice (any one requirement object suffices) and each
//! object a conjunction (every scheme it names). Only OAuth 2.0 and OpenID Connect schemes
//! carry scopes (3.0.3 §4.7.28: for other types "the array MUST be empty").
//!
//! Fail closed: a route is anonymous (`auth = "none"`) only when the spec says so outright,
//! with `security: []` or a sole empty requirement `{}`. `{}` among other requirements makes
//! authentication optional, and the draft still asks for a token; so does an operation for
//! which the spec declares no security at all.

use openapiv3::{APIKeyLocation, SecurityRequirement, SecurityScheme};

/// What a requirement's scheme is, as far as the route is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SchemeKind {
    /// `oauth2` or `openIdConnect`: an access token, whose scopes the gateway checks.
    Token,
    /// Any other type (`apiKey`, `http`, 3.1 `mutualTLS`), described for the comments.
    Other(String),
}

impl SchemeKind {
    pub(super) fn of(scheme: &SecurityScheme) -> SchemeKind {
        match scheme {
            SecurityScheme::OAuth2 { .. } | SecurityScheme::OpenIDConnect { .. } => {
                SchemeKind::Token
            }
            SecurityScheme::APIKey { location, name, .. } => {
                let place = match location {
                    APIKeyLocation::Query => "query parameter",
                    APIKeyLocation::Header => "header",
                    APIKeyLocation::Cookie => "cookie",
                };
                SchemeKind::Other(format!("an API key in the {place} {name}"))
            }
            SecurityScheme::HTTP {
                scheme, extensions, ..
            } => match extensions
                .get(super::document::NEUTRALISED_TYPE)
                .and_then(|v| v.as_str())
            {
                Some(kind) => SchemeKind::Other(kind.to_string()),
                None => SchemeKind::Other(format!("HTTP {scheme} authentication")),
            },
        }
    }
}

/// The route's `auth` and `scopes`, with what a reviewer should know about the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Access {
    /// `auth = "none"`.
    Anonymous { note: String },
    /// `auth = "token"` (the default), with these scopes.
    Token {
        scopes: Vec<String>,
        notes: Vec<String>,
    },
}

/// One scheme of a requirement object, classified.
struct Named {
    name: String,
    scopes: Vec<String>,
    kind: SchemeKind,
}

/// The access an operation asks for. `kind` classifies a scheme by name (an undeclared
/// scheme is its error).
pub(super) fn access<E>(
    operation: Option<&[SecurityRequirement]>,
    root: Option<&[SecurityRequirement]>,
    mut kind: impl FnMut(&str) -> Result<SchemeKind, E>,
) -> Result<Access, E> {
    let (requirements, origin) = match (operation, root) {
        (Some(list), _) => (list, "the operation's security"),
        (None, Some(list)) => (list, "the root security"),
        (None, None) => {
            return Ok(Access::Token {
                scopes: Vec::new(),
                notes: vec![
                    "the spec declares no security for this operation: a token is \
                             asked for all the same (fail closed); set auth = \"none\" if it \
                             is public"
                        .into(),
                ],
            })
        }
    };
    if requirements.is_empty() {
        return Ok(Access::Anonymous {
            note: format!("{origin} is [] (no authentication): a public route"),
        });
    }
    if requirements.iter().all(|r| r.is_empty()) {
        return Ok(Access::Anonymous {
            note: format!("{origin} is {{}} alone (anonymous access): a public route"),
        });
    }
    let mut alternatives: Vec<Vec<Named>> = Vec::with_capacity(requirements.len());
    for requirement in requirements {
        let mut all = Vec::with_capacity(requirement.len());
        for (name, scopes) in requirement {
            all.push(Named {
                name: name.clone(),
                scopes: scopes.clone(),
                kind: kind(name)?,
            });
        }
        alternatives.push(all);
    }
    let mut notes = Vec::new();
    if operation.is_none() {
        notes.push("security from the root: the operation declares none".to_string());
    }
    if alternatives.iter().any(Vec::is_empty) {
        notes.push(format!(
            "{origin} also allows anonymous access ({{}}): authentication is optional there; \
             a token is asked for all the same (fail closed)"
        ));
    }
    let chosen = alternatives
        .iter()
        .position(|a| a.iter().any(|n| n.kind == SchemeKind::Token));
    let Some(chosen) = chosen else {
        let all: Vec<String> = alternatives
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| describe(a))
            .collect();
        notes.push(format!(
            "no OAuth 2.0 or OpenID Connect scheme in {origin} ({}): a token is asked for, \
             with no scope to check",
            all.join(" or ")
        ));
        return Ok(Access::Token {
            scopes: Vec::new(),
            notes,
        });
    };
    let mut scopes: Vec<String> = Vec::new();
    let Some(requirement) = alternatives.get(chosen) else {
        return Ok(Access::Token { scopes, notes });
    };
    for named in requirement {
        match &named.kind {
            SchemeKind::Token => {
                for scope in &named.scopes {
                    if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
            }
            SchemeKind::Other(what) => notes.push(format!(
                "the spec also requires {} ({what}) with it: the gateway does not check that",
                named.name
            )),
        }
    }
    let others: Vec<String> = alternatives
        .iter()
        .enumerate()
        .filter(|(i, a)| *i != chosen && !a.is_empty())
        .map(|(_, a)| describe(a))
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "scopes from {}, the first OAuth 2.0 alternative of {origin}; it also accepts {}",
            describe(requirement),
            others.join(" or ")
        ));
    }
    Ok(Access::Token { scopes, notes })
}

/// A requirement object as `PSUOAuth2Security [accounts] and ApiKey`.
fn describe(requirement: &[Named]) -> String {
    requirement
        .iter()
        .map(|n| {
            if n.scopes.is_empty() {
                n.name.clone()
            } else {
                format!("{} [{}]", n.name, n.scopes.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requirements(value: serde_json::Value) -> Vec<SecurityRequirement> {
        serde_json::from_value(value).unwrap()
    }

    /// `oauth`, `oidc` are token schemes, `key` an API key; anything else is undeclared.
    fn kind(name: &str) -> Result<SchemeKind, String> {
        match name {
            "oauth" | "oidc" => Ok(SchemeKind::Token),
            "key" => Ok(SchemeKind::Other("an API key".into())),
            other => Err(format!("undeclared {other}")),
        }
    }

    fn access_of(
        operation: Option<serde_json::Value>,
        root: Option<serde_json::Value>,
    ) -> Result<Access, String> {
        let operation = operation.map(requirements);
        let root = root.map(requirements);
        access(operation.as_deref(), root.as_deref(), kind)
    }

    fn scopes(access: &Access) -> Vec<&str> {
        match access {
            Access::Token { scopes, .. } => scopes.iter().map(String::as_str).collect(),
            Access::Anonymous { .. } => panic!("anonymous: {access:?}"),
        }
    }

    fn notes(access: &Access) -> String {
        match access {
            Access::Token { notes, .. } => notes.join("\n"),
            Access::Anonymous { note } => note.clone(),
        }
    }

    #[test]
    fn openapi_security_the_operation_replaces_the_root() {
        let root = json!([{"oauth": ["accounts"]}]);
        let access = access_of(Some(json!([{"oauth": ["payments"]}])), Some(root.clone())).unwrap();
        assert_eq!(scopes(&access), ["payments"]);
        assert_eq!(notes(&access), "");
        let inherited = access_of(None, Some(root)).unwrap();
        assert_eq!(scopes(&inherited), ["accounts"]);
        assert!(notes(&inherited).contains("security from the root"));
    }

    #[test]
    fn openapi_security_anonymous_only_when_said_outright() {
        let root = Some(json!([{"oauth": ["accounts"]}]));
        for operation in [json!([]), json!([{}]), json!([{}, {}])] {
            let access = access_of(Some(operation.clone()), root.clone()).unwrap();
            assert!(matches!(access, Access::Anonymous { .. }), "{operation}");
        }
        assert!(matches!(
            access_of(None, Some(json!([]))).unwrap(),
            Access::Anonymous { .. }
        ));
        // `{}` as one alternative among others: optional, so a token is still asked for.
        let optional = access_of(Some(json!([{}, {"oauth": ["accounts"]}])), None).unwrap();
        assert_eq!(scopes(&optional), ["accounts"]);
        assert!(notes(&optional).contains("optional"), "{optional:?}");
    }

    #[test]
    fn openapi_security_none_declared_fails_closed() {
        let access = access_of(None, None).unwrap();
        assert_eq!(scopes(&access), Vec::<&str>::new());
        assert!(notes(&access).contains("fail closed"));
    }

    #[test]
    fn openapi_security_first_oauth_alternative_gives_the_scopes() {
        let access = access_of(
            Some(json!([{"key": []}, {"oidc": ["openid", "accounts"]}, {"oauth": ["payments"]}])),
            None,
        )
        .unwrap();
        assert_eq!(scopes(&access), ["openid", "accounts"]);
        let notes = notes(&access);
        assert!(
            notes.contains("it also accepts key or oauth [payments]"),
            "{notes}"
        );
    }

    #[test]
    fn openapi_security_a_requirement_object_is_a_conjunction() {
        let access = access_of(
            Some(json!([{"oauth": ["accounts"], "oidc": ["openid", "accounts"], "key": []}])),
            None,
        )
        .unwrap();
        // In scheme order (serde_json's map is sorted): key, oauth, oidc.
        assert_eq!(scopes(&access), ["accounts", "openid"]);
        assert!(notes(&access).contains("also requires key (an API key)"));
    }

    #[test]
    fn openapi_security_without_oauth_asks_for_a_token_without_scopes() {
        let access = access_of(Some(json!([{"key": []}])), None).unwrap();
        assert_eq!(scopes(&access), Vec::<&str>::new());
        assert!(notes(&access).contains("no OAuth 2.0 or OpenID Connect scheme"));
    }

    #[test]
    fn openapi_security_an_undeclared_scheme_is_an_error() {
        assert_eq!(
            access_of(Some(json!([{"nowhere": []}])), None),
            Err("undeclared nowhere".into())
        );
    }
}
