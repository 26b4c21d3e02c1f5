//! `include = ["packs/uk-ob.toml"]`: route packs kept in their own files. A pack holds only
//! `[[route]]` tables; its routes join the including file's, their `upstream` names mapped
//! through `[pack_upstreams]` (pack name -> this file's `[[upstream]]` id; every name a pack
//! uses must be mapped). Errors in a pack's
//! routes name the pack, its route index and the line in the pack.

use super::{line_at_key, parse, ConfigError};
use std::path::Path;

/// A pack file: routes only, so a pack cannot change listeners, keys or trust.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Pack {
    #[serde(default)]
    route: Vec<super::model::Route>,
}

/// Where the included routes came from, to name them in errors.
pub(super) struct Included {
    /// Routes of the including file come first; pack routes follow, in include order.
    own_routes: usize,
    packs: Vec<PackSource>,
}

struct PackSource {
    key: String,
    source: String,
    routes: usize,
}

/// Reads every pack `file.include` names (relative to `base`) into `file.route`.
pub(super) fn read(
    file: &mut super::model::File,
    base: &Path,
) -> Result<Included, Vec<ConfigError>> {
    let mut included = Included {
        own_routes: file.route.len(),
        packs: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (i, name) in file.include.iter().enumerate() {
        let key = format!("include[{i}]");
        let refuse = |message: String| ConfigError {
            key: key.clone(),
            line: None,
            message,
            transient: false,
        };
        let path = super::files::resolve(base, name);
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                errors.push(refuse(format!("cannot read {}: {e}", path.display())));
                continue;
            }
        };
        let pack: Pack = match parse(&source) {
            Ok(pack) => pack,
            Err(found) => {
                errors.extend(found.into_iter().map(|e| ConfigError {
                    key: format!("{key} ({name}): {}", e.key),
                    ..e
                }));
                continue;
            }
        };
        let mut routes = pack.route;
        for (j, route) in routes.iter_mut().enumerate() {
            // Every name mapped: a forgotten mapping must not bind the pack's routes to an
            // upstream of this file that happens to bear the same name.
            match file.pack_upstreams.get(&route.upstream) {
                Some(ours) => {
                    used.insert(route.upstream.clone());
                    route.upstream = ours.clone();
                }
                None => errors.push(ConfigError {
                    key: format!("{key} ({name}): route[{j}].upstream"),
                    line: None,
                    message: format!(
                        "the pack's upstream \"{}\" is not mapped: add it to [pack_upstreams]",
                        route.upstream
                    ),
                    transient: false,
                }),
            }
        }
        included.packs.push(PackSource {
            key: format!("{key} ({name})"),
            source,
            routes: routes.len(),
        });
        file.route.extend(routes);
    }
    let all_read = included.packs.len() == file.include.len();
    for name in file.pack_upstreams.keys() {
        if all_read && !used.contains(name) {
            errors.push(ConfigError {
                key: format!("pack_upstreams.{name}"),
                line: None,
                message: format!("no included route names the upstream \"{name}\""),
                transient: false,
            });
        }
    }
    if errors.is_empty() {
        Ok(included)
    } else {
        Err(errors)
    }
}

impl Included {
    /// For an error key `route[N]...` of a pack's route: the key as the pack names it and
    /// the line in the pack.
    pub(super) fn locate(&self, key: &str) -> Option<(String, Option<usize>)> {
        let rest = key.strip_prefix("route[")?;
        let (index, tail) = rest.split_once(']')?;
        let mut index = index.parse::<usize>().ok()?.checked_sub(self.own_routes)?;
        for pack in &self.packs {
            if index < pack.routes {
                let local = format!("route[{index}]{tail}");
                let line = line_at_key(&pack.source, &local);
                return Some((format!("{}: {local}", pack.key), line));
            }
            index -= pack.routes;
        }
        None
    }
}
