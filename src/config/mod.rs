//! Configuration: the TOML file (`model`) compiled into the [`Policy`] the gateway runs on
//! (`compile`). A file is accepted or refused as a whole; every error names the TOML key path
//! and, where it can be found, the line.

mod compile;
mod compile_consent;
mod compile_limits;
mod compile_routes;
mod compile_state;
mod compile_tls;
mod compile_trust;
mod files;
mod includes;
pub(crate) mod model;
mod operand;
mod pkcs11_uri;
pub(crate) mod units;

pub use files::read_certificates;
pub(crate) use files::{read_crls, read_private_key, refuse_world_readable};

use crate::policy::Policy;
use std::fmt;
use std::path::{Path, PathBuf};

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `route[1].upstream`; empty for the file as a whole.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
    /// The file is not at fault and the same file may load later (a name that does not
    /// resolve yet, a file that cannot be read).
    pub transient: bool,
}

/// Every mistake found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        writeln!(
            f,
            "{}: {count} error{}",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            let line = error
                .line
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            if error.key.is_empty() {
                writeln!(f, "  {line}{}", error.message)?;
            } else {
                writeln!(f, "  {line}{}: {}", error.key, error.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// Every error may go away on a retry: not a mistake in the file (exit 1, not 78).
    pub fn transient(&self) -> bool {
        self.errors.iter().all(|e| e.transient)
    }
}

/// Reads, parses and compiles a configuration file.
pub fn load(path: &Path) -> Result<Policy, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    };
    let source = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![ConfigError {
            key: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
            transient: !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&source, base).map_err(fail)
}

/// Parses and compiles configuration text; relative paths are resolved against `base`.
pub fn load_str(source: &str, base: &Path) -> Result<Policy, Vec<ConfigError>> {
    let mut file: model::File = parse(source)?;
    let included = includes::read(&mut file, base)?;
    let locator = Locator::new(source);
    compile::compile(file, base).map_err(|errors| {
        errors
            .into_iter()
            .map(|(key, message, transient)| match included.locate(&key) {
                Some((key, line)) => ConfigError {
                    key,
                    line,
                    message,
                    transient,
                },
                None => ConfigError {
                    line: locator.line_of(&key),
                    key,
                    message,
                    transient,
                },
            })
            .collect()
    })
}

/// The line of a key path in a source (for a file other than the one being loaded).
fn line_at_key(source: &str, key: &str) -> Option<usize> {
    Locator::new(source).line_of(key)
}

fn parse<T: serde::de::DeserializeOwned>(source: &str) -> Result<T, Vec<ConfigError>> {
    let deserializer = toml::Deserializer::new(source);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let line = error.inner().span().map(|span| line_at(source, span.start));
        let mut key = error.path().to_string();
        if key == "." {
            key.clear();
        }
        let message = error.inner().message().trim().to_string();
        vec![ConfigError {
            key,
            line,
            message,
            transient: false,
        }]
    })
}

fn line_at(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds the line of a key path (`route[1].authorization_details[0].match`) in the source.
struct Locator<'a> {
    source: &'a str,
    document: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(source: &'a str) -> Self {
        Locator {
            source,
            document: toml_edit::ImDocument::parse(source).ok(),
        }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let document = self.document.as_ref()?;
        let parts: Vec<&str> = key.split('.').filter(|p| !p.is_empty()).collect();
        span_of(document.as_table(), &parts).map(|span| line_at(self.source, span.start))
    }
}

/// The span of the deepest part of `parts` that exists below `table`.
fn span_of(table: &dyn toml_edit::TableLike, parts: &[&str]) -> Option<std::ops::Range<usize>> {
    let (part, rest) = parts.split_first()?;
    let (name, index) = match part.split_once('[') {
        Some((name, index)) => (name, index.trim_end_matches(']').parse::<usize>().ok()),
        None => (*part, None),
    };
    let (found, item) = table.get_key_value(name)?;
    let here = found.span().or_else(|| item.span());
    let inner = match (index, item) {
        (Some(i), toml_edit::Item::ArrayOfTables(array)) => {
            let element = array.get(i)?;
            span_of(element, rest).or_else(|| element.span())
        }
        (Some(i), toml_edit::Item::Value(toml_edit::Value::Array(array))) => {
            array.get(i).and_then(|v| v.span())
        }
        (None, item) if !rest.is_empty() => item.as_table_like().and_then(|t| span_of(t, rest)),
        _ => None,
    };
    inner.or(here)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let source = "[listener]\naddr = \"127.0.0.1:1\"\npublic_url = \"https://x\"\nbogus = 1\n";
        let errors = load_str(source, Path::new(".")).unwrap_err();
        assert_eq!(errors[0].key, "listener.bogus");
        assert_eq!(errors[0].line, Some(4));
    }

    fn error_of(source: &str, base: &Path, key: &str) -> Option<String> {
        let errors = load_str(source, base).err()?;
        errors.into_iter().find(|e| e.key == key).map(|e| e.message)
    }

    #[test]
    fn hi_config_an_empty_sni_on_a_tls_upstream_is_refused() {
        use crate::fuzzing::{fixture_dir, POLICY};
        let upstream = "addrs = [\"127.0.0.1:9\"]";
        let source = POLICY.replace(upstream, &format!("{upstream}\ntls = true\nsni = \"\""));
        assert_eq!(
            error_of(&source, fixture_dir(), "upstream[0].sni").as_deref(),
            Some("must name the upstream's TLS server name (an empty name would verify nothing)")
        );
        let plain = POLICY.replace(upstream, &format!("{upstream}\nsni = \"\""));
        assert!(load_str(&plain, fixture_dir()).is_ok());
    }

    #[test]
    fn hi_config_a_short_nonce_secret_is_refused() {
        use crate::fuzzing::{fixture_dir, POLICY};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("nonce.key");
        std::fs::write(&secret, "0123456789\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let source = POLICY.replace(
            "name = \"fapi2\"",
            &format!(
                "name = \"fapi2\"\ndpop_nonce_secret_file = \"{}\"",
                secret.display()
            ),
        );
        let message = error_of(&source, fixture_dir(), "profile.dpop_nonce_secret_file").unwrap();
        assert!(
            message.ends_with("holds 10 bytes; a MAC key needs at least 32"),
            "{message}"
        );
        std::fs::write(&secret, "k".repeat(32)).unwrap();
        assert!(load_str(&source, fixture_dir()).is_ok());
    }

    /// Issue 13 §6: with several introspecting issuers, each names its token prefix and no
    /// prefix starts another, so an opaque token goes to one AS only.
    #[test]
    fn hi_config_several_introspecting_issuers_each_name_a_distinct_token_prefix() {
        use crate::fuzzing::{fixture_dir, POLICY};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let issuer = |n: usize, prefix: Option<&str>| {
            let prefix = prefix.map_or(String::new(), |p| format!("token_prefix = \"{p}\"\n"));
            format!(
                "[[issuer]]\nid = \"as-{n}\"\nissuer = \"https://as{n}.bank.example\"\n\
                 audience = \"https://api.bank.example\"\njwks_file = \"keys/jwks.json\"\n\
                 [issuer.introspection]\nendpoint = \"https://as{n}.bank.example/introspect\"\n\
                 client_id = \"gw\"\nauth = \"client_secret_basic\"\nsecret_file = \"{}\"\n{prefix}",
                secret.display()
            )
        };
        let with = |issuers: &[String]| {
            POLICY.replace("[[client]]", &format!("{}[[client]]", issuers.concat()))
        };
        let key = |i| format!("issuer[{i}].introspection.token_prefix");
        let source = with(&[issuer(1, None), issuer(2, Some("b_"))]);
        let message = error_of(&source, fixture_dir(), &key(1)).unwrap();
        assert!(message.starts_with("is required when more than one issuer introspects"));
        let source = with(&[issuer(1, Some("bank_")), issuer(2, Some("bank_pay_"))]);
        let message = error_of(&source, fixture_dir(), &key(2));
        assert_eq!(
            message.as_deref(),
            Some("overlaps the token_prefix of issuer[1]")
        );
        let source = with(&[issuer(1, Some("a_"))]);
        assert!(load_str(&source, fixture_dir()).is_ok(), "one needs none");
        let source = with(&[issuer(1, Some("a_")), issuer(2, Some("b_"))]);
        assert!(load_str(&source, fixture_dir()).is_ok());
    }

    #[test]
    fn hi_config_listener_timeouts_are_positive_and_idle_within_the_engines_60s() {
        use crate::fuzzing::{fixture_dir, POLICY};
        let with = |line: &str| {
            POLICY.replace(
                "public_url = \"https://api.bank.example\"",
                &format!("public_url = \"https://api.bank.example\"\n{line}"),
            )
        };
        let error = |line: &str, key: &str| error_of(&with(line), fixture_dir(), key);
        assert_eq!(
            error("idle_timeout = \"90s\"", "listener.idle_timeout").as_deref(),
            Some("must be at most 60s (the proxy engine closes idle connections after 60 s)")
        );
        assert_eq!(
            error("header_timeout = \"0s\"", "listener.header_timeout").as_deref(),
            Some("must be longer than 0s")
        );
        let fine = with("header_timeout = \"5s\"\nidle_timeout = \"60s\"");
        let policy = load_str(&fine, fixture_dir()).unwrap();
        assert_eq!(
            policy.listener.header_timeout,
            std::time::Duration::from_secs(5)
        );
    }

    /// Issue 14 §1: plain Redis beyond this machine carries the password and the shared
    /// state in clear; TLS files are only for `rediss://`.
    #[test]
    fn hi_config_plain_redis_to_another_host_needs_redis_insecure() {
        use crate::fuzzing::{fixture_dir, POLICY};
        let with = |state: &str| format!("{POLICY}\n[state]\nbackend = \"redis\"\n{state}");
        let error = |state: &str, key: &str| error_of(&with(state), fixture_dir(), key);
        let remote = "redis_url = \"redis://:pw@redis.bank.internal:6379/0\"";
        assert_eq!(
            error(remote, "state.redis_url").as_deref(),
            Some(
                "reaches redis.bank.internal without TLS: use rediss://, or set \
                 redis_insecure = true to send the password and shared state in clear"
            )
        );
        let node = "redis_cluster_nodes = [\"redis://10.0.0.7:6379\"]";
        assert!(error(node, "state.redis_cluster_nodes[0]").is_some());
        for fine in [
            format!("{remote}\nredis_insecure = true"),
            "redis_url = \"redis://127.0.0.1:6379\"".to_string(),
            "redis_url = \"redis://localhost\"".to_string(),
            "redis_url = \"redis+unix:///run/redis.sock\"".to_string(),
            "redis_url = \"rediss://redis.bank.internal:6380\"".to_string(),
        ] {
            assert!(load_str(&with(&fine), fixture_dir()).is_ok(), "{fine}");
        }
        let ca = "redis_url = \"redis://127.0.0.1\"\nredis_ca_file = \"tls/ca.crt\"";
        assert_eq!(
            error(ca, "state.redis_ca_file").as_deref(),
            Some("is used only with rediss:// URLs")
        );
    }

    #[test]
    fn hi_config_sentinel_needs_its_master_and_is_the_only_way_to_redis() {
        use crate::fuzzing::{fixture_dir, POLICY};
        let with = |state: &str| format!("{POLICY}\n[state]\nbackend = \"redis\"\n{state}");
        let error = |state: &str, key: &str| error_of(&with(state), fixture_dir(), key);
        let nodes = "redis_sentinel_nodes = [\"redis://127.0.0.1:26379\"]";
        assert_eq!(
            error(nodes, "state.redis_sentinel_master").as_deref(),
            Some("is required with redis_sentinel_nodes")
        );
        let both =
            format!("{nodes}\nredis_sentinel_master = \"m\"\nredis_url = \"redis://127.0.0.1\"");
        assert!(
            error(&both, "state.redis_url").is_some_and(|m| m.starts_with("set one of redis_url"))
        );
        let mixed =
            "redis_sentinel_nodes = [\"rediss://127.0.0.1:26379\", \"redis://127.0.0.1:26380\"]\n\
                     redis_sentinel_master = \"m\"";
        assert_eq!(
            error(mixed, "state.redis_sentinel_nodes[1]").as_deref(),
            Some("every sentinel must use the same scheme: all redis:// or all rediss://")
        );
        let plain = format!("{nodes}\nredis_sentinel_master = \"m\"");
        assert!(error(&plain, "state.redis_sentinel_nodes")
            .is_some_and(|m| m.starts_with("redis:// sentinels mean the master")));
        let fine = format!("{plain}\nredis_insecure = true");
        assert!(load_str(&with(&fine), fixture_dir()).is_ok());
        let tls =
            "redis_sentinel_nodes = [\"rediss://127.0.0.1:26379\"]\nredis_sentinel_master = \"m\"";
        assert!(load_str(&with(tls), fixture_dir()).is_ok());
    }

    /// DPOP-11.1-2 across a failover: Sentinel means replicas, so a replay record must be on
    /// one before its proof passes; a single node or a cluster waits for none unless told.
    #[test]
    fn hi_config_redis_replica_acks_is_one_with_sentinel_and_zero_otherwise() {
        use crate::fuzzing::{fixture_dir, POLICY};
        let acks = |state: &str| {
            let text = format!("{POLICY}\n[state]\nbackend = \"redis\"\n{state}");
            match load_str(&text, fixture_dir()).map(|p| p.state.backend) {
                Ok(crate::policy::StateBackend::Redis(redis)) => redis.replica_acks,
                _ => panic!("{state}"),
            }
        };
        let sentinel = "redis_sentinel_nodes = [\"rediss://127.0.0.1:26379\"]\n\
                        redis_sentinel_master = \"m\"";
        assert_eq!(acks(sentinel), 1);
        assert_eq!(acks(&format!("{sentinel}\nredis_replica_acks = 2")), 2);
        assert_eq!(acks("redis_url = \"redis://127.0.0.1\""), 0);
        let cluster = "redis_cluster_nodes = [\"redis://127.0.0.1:7000\"]";
        assert_eq!(acks(cluster), 0);
        assert_eq!(acks(&format!("{cluster}\nredis_replica_acks = 1")), 1);
    }

    #[test]
    fn hi_config_a_redis_password_file_is_for_sentinel_and_cluster_and_must_hold_a_password() {
        use crate::fuzzing::{fixture_dir, POLICY};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        };
        let good = file("good", "s3cret\n", 0o600);
        let empty = file("empty", " \n", 0o600);
        let readable = file("readable", "s3cret\n", 0o644);
        let with = |state: &str| format!("{POLICY}\n[state]\nbackend = \"redis\"\n{state}");
        let error = |state: &str, key: &str| error_of(&with(state), fixture_dir(), key);
        let sentinel =
            "redis_sentinel_nodes = [\"redis://127.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\nredis_insecure = true";
        let password = |path: &str| format!("redis_password_file = \"{path}\"");
        assert!(load_str(
            &with(&format!("{sentinel}\n{}", password(&good))),
            fixture_dir()
        )
        .is_ok());
        let cluster = "redis_cluster_nodes = [\"redis://127.0.0.1:7000\"]";
        let user = "redis_username = \"fapigate\"";
        assert!(load_str(
            &with(&format!("{cluster}\n{}\n{user}", password(&good))),
            fixture_dir()
        )
        .is_ok());
        let single = format!("redis_url = \"redis://127.0.0.1\"\n{}", password(&good));
        assert!(error(&single, "state.redis_password_file")
            .is_some_and(|m| m.starts_with("is for redis_sentinel_nodes and redis_cluster_nodes")));
        assert_eq!(
            error(
                &format!("{sentinel}\n{}", password(&empty)),
                "state.redis_password_file"
            ),
            Some(format!("{empty}: is empty"))
        );
        assert!(error(
            &format!("{sentinel}\n{}", password(&readable)),
            "state.redis_password_file"
        )
        .is_some());
        assert_eq!(
            error(&format!("{sentinel}\n{user}"), "state.redis_username").as_deref(),
            Some("is used only with redis_password_file")
        );
    }

    #[test]
    fn ms2_priv_audit_settings_name_their_key() {
        use crate::fuzzing::{fixture_dir, POLICY};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "too short\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let audit = |extra: &str| {
            format!(
                "{POLICY}\n[audit]\npath = \"{}\"\n{extra}",
                dir.path().join("audit.jsonl").display()
            )
        };
        let error = |extra: &str, key: &str| error_of(&audit(extra), fixture_dir(), key);
        assert!(load_str(&audit("on_full = \"refuse\"\nqueue = 8"), fixture_dir()).is_ok());
        assert_eq!(
            error("on_full = \"drop\"", "audit.on_full").as_deref(),
            Some("\"drop\" is not one of \"wait\", \"refuse\"")
        );
        assert_eq!(
            error("on_full = \"refuse\"\nwait_max = \"2s\"", "audit.wait_max").as_deref(),
            Some("is used only with on_full = \"wait\"")
        );
        assert!(error(
            &format!("key_file = \"{}\"", short.display()),
            "audit.key_file"
        )
        .is_some());
        assert_eq!(
            error("checkpoint_every = 0", "audit.checkpoint_every").as_deref(),
            Some("must be at least 1")
        );
        assert_eq!(
            error("queue = 0", "audit.queue").as_deref(),
            Some("must be 1 to 1000000")
        );
    }

    #[test]
    fn lines_are_found_inside_arrays_of_tables() {
        let source = "[a]\nx = 1\n\n[[route]]\nid = \"one\"\n\n[[route]]\nid = \"two\"\nupstream = \"nope\"\n";
        let locator = Locator::new(source);
        assert_eq!(locator.line_of("route[1].upstream"), Some(9));
        assert_eq!(locator.line_of("route[0].id"), Some(5));
        assert_eq!(locator.line_of("a.x"), Some(2));
    }
}
