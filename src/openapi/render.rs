//! The drafted routes as TOML `[[route]]` blocks (`config::model::Route`), with what a
//! reviewer should know as comments above each, and suggested `[route.match]` rules (the
//! route's consent binding: `"{body/Data/ConsentId}" = { equals = "{claim/...}" }`) commented
//! out below. Every string the spec supplies is written as a TOML basic string with its escapes,
//! and stripped of control characters in comments, so the text always parses.

use super::draft::Route;
use super::security::Access;
use openapiv3::OpenAPI;

/// How many rules are suggested for one route at most.
pub(super) const MAX_SUGGESTIONS: usize = 8;

pub(super) fn render(api: &OpenAPI, routes: &[Route], upstream: &str) -> String {
    let mut out = String::new();
    let refused = routes.iter().filter(|r| r.refused.is_some()).count();
    comment(
        &mut out,
        &format!(
            "fapigate routes drafted from \"{}\" version {} (OpenAPI {}).",
            api.info.title, api.info.version, api.openapi
        ),
    );
    for line in [
        "A DRAFT TO REVIEW before use: scopes and auth come from the operations' security",
        "requirements, paths from the spec's templates; rules on request bodies and path",
        "parameters are suggestions, left commented out. Append the routes to a configuration",
    ] {
        comment(&mut out, line);
    }
    comment(
        &mut out,
        &format!(
            "that defines [[upstream]] id = {}. {} operations: {} routes, {} commented out.",
            toml_string(upstream),
            routes.len(),
            routes.len() - refused,
            refused
        ),
    );
    for route in routes {
        out.push('\n');
        block(&mut out, route, upstream);
    }
    out
}

fn block(out: &mut String, route: &Route, upstream: &str) {
    comment(out, &route.heading);
    for note in &route.notes {
        comment(out, note);
    }
    match &route.access {
        Access::Anonymous { note } => comment(out, note),
        Access::Token { notes, .. } => notes.iter().for_each(|note| comment(out, note)),
    }
    let prefix = match &route.refused {
        Some(reason) => {
            comment(out, &format!("NOT LOADED, left commented out: {reason}"));
            "# "
        }
        None => "",
    };
    let mut line = |text: &str| {
        out.push_str(prefix);
        out.push_str(text);
        out.push('\n');
    };
    line("[[route]]");
    line(&format!("id = {}", toml_string(&route.id)));
    line(&format!("methods = [{}]", toml_string(&route.method)));
    line(&format!("path = {}", toml_string(&route.path)));
    line(&format!("upstream = {}", toml_string(upstream)));
    match &route.access {
        Access::Anonymous { .. } => line("auth = \"none\""),
        Access::Token { scopes, .. } if !scopes.is_empty() => {
            let scopes: Vec<String> = scopes.iter().map(|s| toml_string(s)).collect();
            line(&format!("scopes = [{}]", scopes.join(", ")));
        }
        Access::Token { .. } => {}
    }
    if route.refused.is_none() && matches!(route.access, Access::Token { .. }) {
        suggestions(out, route);
    }
}

/// Commented `[route.match]` rules (the route's consent binding) on the path parameters and
/// the body's fields, each compared with a placeholder claim.
fn suggestions(out: &mut String, route: &Route) {
    let mut fields: Vec<String> = route
        .path_params
        .iter()
        .map(|name| format!("{{path.{name}}}"))
        .collect();
    fields.extend(
        route
            .body_fields
            .iter()
            .map(|field| format!("{{body{field}}}")),
    );
    fields.truncate(MAX_SUGGESTIONS);
    if fields.is_empty() {
        return;
    }
    comment(
        out,
        "Suggested consent binding, to adapt before uncommenting: compare each field with what \
         the token carries for the consent (a claim of your AS, \"{claim/...}\", or a literal), \
         or delete the rule.",
    );
    out.push_str("# [route.match]\n");
    for field in fields {
        out.push_str(&format!(
            "# {} = {{ equals = {} }}\n",
            toml_string(&field),
            toml_string(PLACEHOLDER)
        ));
    }
}

/// What a suggested rule compares with until the operator names the claim.
const PLACEHOLDER: &str = "{claim/TODO}";

/// One comment line; control characters (a newline would end the comment) become spaces.
fn comment(out: &mut String, text: &str) {
    out.push_str("# ");
    out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
    out.push('\n');
}

/// A TOML basic string (TOML 1.0, "String"): `"` and `\` escaped, control characters as
/// escapes.
pub(super) fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_toml_strings_round_trip() {
        for text in [
            "plain",
            "a \"quoted\" \\ path",
            "line\nbreak\ttab\u{0}\u{7f}\u{85}",
            "é{x}",
        ] {
            let parsed: toml::Table = toml::from_str(&format!("k = {}", toml_string(text)))
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(parsed.get("k").and_then(|v| v.as_str()), Some(text));
        }
    }

    #[test]
    fn openapi_spec_text_cannot_break_out_of_a_comment() {
        let route = Route {
            heading: "GET /x: id\n[[route]]\nid = \"injected\"".into(),
            notes: vec!["a\r\nb".into()],
            id: "x\"y".into(),
            method: "GET".into(),
            path: "/x".into(),
            access: Access::Token {
                scopes: vec!["a b\"".into()],
                notes: vec!["\u{0}".into()],
            },
            path_params: Vec::new(),
            body_fields: vec!["/a\"b/c".into()],
            refused: None,
        };
        let mut out = String::new();
        block(&mut out, &route, "core\n");
        let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let routes = parsed
            .get("route")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        assert_eq!(routes.len(), 1, "{out}");
        assert_eq!(routes[0].get("id").and_then(|v| v.as_str()), Some("x\"y"));
        assert_eq!(
            routes[0].get("upstream").and_then(|v| v.as_str()),
            Some("core\n")
        );
    }
}
