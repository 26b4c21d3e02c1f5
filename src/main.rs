//! The `fapigate` command: run the gateway, check a configuration file, draft routes from an
//! OpenAPI description, print the version.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// Per request the proxy allocates and frees many small buffers across threads (header maps,
// bodies, the access line); glibc's malloc spent 6-9 % of a request's CPU on them in perf.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fapigate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FAPIGATE_REVISION"), ")"),
    about = "FAPI 2.0 resource-server gateway",
    after_help = "Exit status: 0 success, 1 failure (a retry may succeed: a port in use, Redis or DNS not up yet), 78 (EX_CONFIG) a configuration that cannot run as written.\n--config may also come from FAPIGATE_CONFIG."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, short, env = "FAPIGATE_CONFIG")]
        config: PathBuf,
        /// Once every listener answers, write the bound addresses here as JSON (written whole,
        /// by rename): `{"listener": "127.0.0.1:8443", "plain": null, "admin": "...", "pid": N}`.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Check a configuration file and summarise it; exit 78 listing every error (1 when
    /// every error may pass on a retry: a name that does not resolve yet).
    Check {
        #[arg(long, short, env = "FAPIGATE_CONFIG")]
        config: PathBuf,
    },
    /// Print the public JWKS of the response-signing keys.
    Jwks {
        #[arg(long, short, env = "FAPIGATE_CONFIG")]
        config: PathBuf,
    },
    /// Exit 0 when this gateway's admin listener says it is ready (`/readyz` 200), for a
    /// container HEALTHCHECK in an image without curl.
    Healthcheck {
        #[arg(long, short, env = "FAPIGATE_CONFIG")]
        config: PathBuf,
    },
    /// Print `[[route]]` blocks drafted from a bank's OpenAPI 3.0 or 3.1 description.
    ///
    /// One route per operation: its id from the operationId, its path from the spec's template
    /// (parameters renamed to lowercase and _), its scopes from the operation's security
    /// requirements, `auth = "none"` only where the spec says `security: []`; rules on request
    /// bodies and path parameters as commented suggestions, and a route that could not load
    /// left commented out with the reason. A draft to review before it is appended to a
    /// configuration. The description may be YAML or JSON; exit 1 naming the place (line and
    /// column, key path, $ref and operation) when it cannot be read.
    Routes {
        /// The OpenAPI description to draft from.
        #[arg(long, value_name = "SPEC")]
        from_openapi: PathBuf,
        /// The `[[upstream]]` id the drafted routes send to.
        #[arg(long, default_value = "core")]
        upstream: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Work with the audit trail of signed exchanges.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit file (and, given them, every line's MAC, every
    /// checkpoint's signature and an exported head); exit 1 naming the first bad line.
    Verify {
        /// The files of one chain, oldest first (rotated files, then the current one).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The `audit.key_file`: every line's HMAC is checked.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The gateway's published JWKS: every checkpoint's signature is checked.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// A head logged by an `audit checkpoint` line: the file must still contain it.
        #[arg(long)]
        head: Option<String>,
    },
}

/// sysexits(3) EX_CONFIG: the configuration cannot run as written.
const EX_CONFIG: u8 = 78;

/// 78 for a mistake in the file, so a service manager does not restart into it
/// (RestartPreventExitStatus=78); 1 when every error may pass (a name that does not resolve
/// yet at boot), so it retries.
fn refused(errors: &fapigate::ConfigErrors) -> ExitCode {
    if errors.transient() {
        ExitCode::FAILURE
    } else {
        EX_CONFIG.into()
    }
}

fn main() -> ExitCode {
    fapigate::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match fapigate::load_config(&config) {
            Ok(policy) => {
                let summary = summary(&policy);
                // Building the runtime also checks what only it reads (AS clients, key files).
                match fapigate::Metrics::new()
                    .map_err(|e| e.to_string())
                    .and_then(|m| {
                        let local = fapigate::LocalState::for_check(&policy)?;
                        fapigate::Engine::new(policy, std::sync::Arc::new(m), &local)
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(engine) => {
                        for warning in fapigate::certificate_warnings(&engine.policy) {
                            eprintln!("{}: warning: {warning}", config.display());
                        }
                        println!("{}: ok: {summary}", config.display());
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("{}: {error}", config.display());
                        EX_CONFIG.into()
                    }
                }
            }
            Err(errors) => {
                eprint!("{errors}");
                refused(&errors)
            }
        },
        Command::Healthcheck { config } => match fapigate::healthcheck(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("fapigate healthcheck: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Routes {
            from_openapi,
            upstream,
        } => {
            let drafted = std::fs::read_to_string(&from_openapi)
                .map_err(|e| e.to_string())
                .and_then(|spec| fapigate::draft_routes(&spec, &upstream));
            let written = drafted.and_then(|routes| {
                std::io::Write::write_all(&mut std::io::stdout(), routes.as_bytes())
                    .map_err(|e| format!("writing the routes: {e}"))
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fapigate routes: {}: {error}", from_openapi.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "fapigate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fapigate man: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Jwks { config } => {
            let signer = fapigate::load_config(&config)
                .map_err(|errors| errors.to_string())
                .and_then(|policy| {
                    let signing = policy.response_signing.as_ref().ok_or_else(|| {
                        format!("{}: has no [response_signing] section\n", config.display())
                    })?;
                    fapigate::ResponseSigner::new(signing)
                });
            match signer {
                Ok(signer) => {
                    println!("{}", signer.jwks());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprint!("{error}");
                    EX_CONFIG.into()
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    key,
                    jwks,
                    head,
                },
        } => match verify_audit(&files, key.as_deref(), jwks.as_deref(), head.as_deref()) {
            Ok(summary) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("{}: ok: {summary}", names.join(", "));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, ready_file } => {
            let policy = match fapigate::load_config(&config) {
                Ok(policy) => policy,
                Err(errors) => {
                    eprint!("{errors}");
                    return refused(&errors);
                }
            };
            fapigate::init_logging(policy.log.json, &policy.log.level);
            match fapigate::run(policy, config, ready_file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fapigate: {error}");
                    match error {
                        fapigate::StartError::Configuration(_) => EX_CONFIG.into(),
                        fapigate::StartError::Unavailable(_) => ExitCode::FAILURE,
                    }
                }
            }
        }
    }
}

fn summary(policy: &fapigate::Policy) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let tls = match &policy.listener.tls {
        Some(tls) => format!("tls, client_cert={:?}", tls.client_cert).to_lowercase(),
        None => "plain".into(),
    };
    let plain = policy
        .listener
        .plain_addr
        .map(|a| format!(", plain listener {a}"))
        .unwrap_or_default();
    format!(
        "listener {} ({tls}){plain}, admin {}, profile {:?}, {}, {}, {}",
        policy.listener.addr,
        policy.admin_addr,
        policy.profile.kind,
        plural(policy.issuers.len(), "issuer"),
        plural(policy.upstreams.len(), "upstream"),
        plural(policy.routes.len(), "route"),
    )
}

/// `fapigate audit verify`: the chain, and what the options name.
fn verify_audit(
    files: &[PathBuf],
    key: Option<&std::path::Path>,
    jwks: Option<&std::path::Path>,
    head: Option<&str>,
) -> Result<String, String> {
    use fapigate::audit_trail as chain;
    let key = key.map(chain::MacKey::load).transpose()?;
    let jwks = jwks
        .map(|path| {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&text)
                .map_err(|e| format!("{}: not a JWKS: {e}", path.display()))
        })
        .transpose()?;
    let checks = chain::Checks {
        key: key.as_ref(),
        jwks: jwks.as_ref(),
        head,
    };
    // `<file>.head` is read beside its file; a glob that names it too is fine.
    let files: Vec<&std::path::Path> = files
        .iter()
        .map(PathBuf::as_path)
        .filter(|f| f.extension().is_none_or(|e| e != "head"))
        .collect();
    let verified = chain::verify_files(&files, &checks)?;
    let signatures = match (jwks.is_some(), verified.checkpoints) {
        (false, _) => "not checked (no --jwks)",
        (true, 0) => "none to check (no checkpoint yet)",
        (true, _) => "verified",
    };
    let macs = if key.is_some() {
        "verified"
    } else {
        "not checked (no --key)"
    };
    let exported = if head.is_some() {
        ", exported head present"
    } else {
        ""
    };
    Ok(format!(
        "{} records ({} checkpoints), chain intact; MACs {macs}, checkpoint signatures \
         {signatures}{exported}; {} records after the last checkpoint",
        verified.records, verified.checkpoints, verified.unattested,
    ))
}
