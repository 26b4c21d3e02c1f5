//! The deployment files under `deploy/` agree with one another and with the gateway: the
//! Kubernetes manifests parse, the Deployment's ports, probes and mounts match the
//! configuration its ConfigMap carries, every file that configuration names comes from a
//! mounted Secret that has it, the configuration passes the real `fapigate check`, the
//! dashboard and alert rules use only metrics `src/telemetry.rs` defines, and the systemd
//! unit and the container image stay locked down and consistent.

use crate::support::{temp_dir, write_private, Pki, BINARY};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Secret keys that are mounted on purpose although the configuration names none of them
/// yet: (Secret, key, why).
const PENDING_SECRET_KEYS: &[(&str, &str, &str)] = &[];

/// Keys of the configuration whose value is the path of a file fapigate reads.
const FILE_KEYS: &[&str] = &[
    "cert",
    "key",
    "client_ca",
    "ca_file",
    "jwks_file",
    "secret_file",
    "dpop_nonce_secret_file",
    "redis_url_file",
    "redis_ca_file",
    "redis_client_cert",
    "redis_client_key",
    "verdict_key_file",
    "key_file",
    "pin_file",
];

fn text(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML documents of a file (empty documents dropped).
fn yaml(relative: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&text(relative))
        .unwrap_or_else(|e| panic!("{relative}: not YAML: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn string<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

fn list<'a>(value: &'a Yaml, what: &str) -> &'a [Yaml] {
    value
        .as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

fn int(value: &Yaml, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, found {value:?}"))
}

/// The one Kubernetes object of `kind` named `name` in `deploy/kubernetes/<file>`.
fn object(file: &str, kind: &str, name: &str) -> Yaml {
    let found: Vec<Yaml> = yaml(&format!("deploy/kubernetes/{file}"))
        .into_iter()
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .filter(|doc| doc["metadata"]["name"].as_str() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "{file}: expected one {kind} named {name}");
    found.into_iter().next().unwrap()
}

fn yaml_files_under(relative: &str) -> Vec<String> {
    let dir = Path::new(ROOT).join(relative);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

struct Mount {
    volume: String,
    path: String,
    sub_path: Option<String>,
    read_only: bool,
}

/// The Deployment's pod, its gateway container, and the configuration the ConfigMap gives it.
pub struct Deployed {
    pod: Yaml,
    container: Yaml,
    mounts: Vec<Mount>,
    config_path: String,
    pub config_text: String,
    config: toml::Table,
}

impl Deployed {
    pub fn load() -> Deployed {
        let deployment = object("deployment.yaml", "Deployment", "fapigate");
        let pod = deployment["spec"]["template"]["spec"].clone();
        let container = list(&pod["containers"], "containers")
            .iter()
            .find(|c| c["name"].as_str() == Some("fapigate"))
            .expect("a container named fapigate")
            .clone();
        let mounts = list(&container["volumeMounts"], "volumeMounts")
            .iter()
            .map(|m| Mount {
                volume: string(&m["name"], "volumeMounts[].name").to_string(),
                path: string(&m["mountPath"], "volumeMounts[].mountPath").to_string(),
                sub_path: m["subPath"].as_str().map(str::to_string),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
            })
            .collect::<Vec<_>>();
        let args: Vec<&str> = list(&container["args"], "args")
            .iter()
            .map(|a| string(a, "args[]"))
            .collect();
        assert_eq!(args.first(), Some(&"run"), "container args: {args:?}");
        let config_path = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("container args name no --config: {args:?}"))
            .to_string();
        let mount = mounts
            .iter()
            .find(|m| m.path == config_path)
            .unwrap_or_else(|| panic!("nothing is mounted at the --config path {config_path}"));
        let key = mount
            .sub_path
            .clone()
            .unwrap_or_else(|| panic!("the config mount {config_path} has no subPath"));
        assert!(mount.read_only, "the config mount must be readOnly");
        let volume = volume(&pod, &mount.volume);
        let map_name = string(&volume["configMap"]["name"], "config volume configMap.name");
        let config_map = object("configmap.yaml", "ConfigMap", map_name);
        let config_text = string(
            &config_map["data"][key.as_str()],
            &format!("ConfigMap {map_name} data.{key}"),
        )
        .to_string();
        let config = config_text
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("ConfigMap {map_name} data.{key} is not TOML: {e}"));
        Deployed {
            pod,
            container,
            mounts,
            config_path,
            config_text,
            config,
        }
    }

    pub fn config_str(&self, dotted: &str) -> &str {
        let mut value: Option<&toml::Value> = None;
        for part in dotted.split('.') {
            // `name` or `name[index]`, as `files()` writes key paths.
            let (name, index) = match part.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            value = match value {
                None => self.config.get(name),
                Some(v) => v.get(name),
            };
            if let Some(index) = index {
                value = value.and_then(|v| v.get(index));
            }
        }
        value
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("the ConfigMap's fapigate.toml has no string {dotted}"))
    }

    fn config_port(&self, dotted: &str) -> u16 {
        let addr = self.config_str(dotted);
        addr.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{dotted} = {addr:?}: {e}"))
            .port()
    }

    /// A port given by number or by the name of one of the container's ports.
    fn container_port(&self, port: &Yaml, what: &str) -> u16 {
        match port {
            Yaml::Integer(n) => u16::try_from(*n).unwrap_or_else(|_| panic!("{what}: {n}")),
            Yaml::String(name) => {
                let found = list(&self.container["ports"], "ports")
                    .iter()
                    .find(|p| p["name"].as_str() == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("{what}: the container has no port named {name}"));
                self.port_number(found)
            }
            other => panic!("{what}: not a port: {other:?}"),
        }
    }

    fn port_number(&self, port: &Yaml) -> u16 {
        u16::try_from(int(&port["containerPort"], "containerPort")).expect("a port number")
    }

    fn named_port(&self, name: &str) -> u16 {
        self.container_port(&Yaml::String(name.into()), &format!("port {name}"))
    }

    /// Every file path the configuration names, with its key path.
    fn files(&self) -> Vec<(String, String)> {
        fn walk(value: &toml::Value, at: &str, out: &mut Vec<(String, String)>) {
            match value {
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        let path = if at.is_empty() {
                            key.clone()
                        } else {
                            format!("{at}.{key}")
                        };
                        match value {
                            toml::Value::String(file) if FILE_KEYS.contains(&key.as_str()) => {
                                out.push((path, file.clone()))
                            }
                            _ => walk(value, &path, out),
                        }
                    }
                }
                toml::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &format!("{at}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&toml::Value::Table(self.config.clone()), "", &mut out);
        out
    }

    /// The directory mount (the deepest) whose folder holds `file`.
    fn mount_holding(&self, file: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| m.sub_path.is_none())
            .filter(|m| {
                file.strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|m| m.path.len())
    }
}

fn volume<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    list(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no volume named {name}"))
}

/// Secret name -> its keys, from secrets.example.yaml.
fn example_secrets() -> BTreeMap<String, BTreeSet<String>> {
    let mut secrets = BTreeMap::new();
    for doc in yaml("deploy/kubernetes/secrets.example.yaml") {
        assert_eq!(doc["kind"].as_str(), Some("Secret"), "{doc:?}");
        let name = string(&doc["metadata"]["name"], "Secret metadata.name").to_string();
        let mut keys = BTreeSet::new();
        for field in ["stringData", "data"] {
            if let Some(map) = doc[field].as_hash() {
                keys.extend(map.keys().map(|k| string(k, "Secret key").to_string()));
            }
        }
        secrets.insert(name, keys);
    }
    secrets
}

/// Metric family name -> whether it is a histogram, read from the source of src/telemetry.rs.
fn metric_families() -> BTreeMap<String, bool> {
    let source = text("src/telemetry.rs");
    let mut families = BTreeMap::new();
    let mut rest = source.as_str();
    while let Some(start) = rest.find("\"fapigate_") {
        let histogram = rest[..start].trim_end().ends_with("HistogramOpts::new(");
        let after = &rest[start + 1..];
        let end = after.find('"').expect("a closing quote");
        families.insert(after[..end].to_string(), histogram);
        rest = &after[end + 1..];
    }
    assert!(
        families.get("fapigate_request_duration_seconds") == Some(&true)
            && families.get("fapigate_requests_total") == Some(&false),
        "could not read the metric families of src/telemetry.rs: {families:?}"
    );
    families
}

/// Every `fapigate_...` metric name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = text[from..].find("fapigate_") {
        let start = from + offset;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if !preceded_by_word {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

/// The family a series name belongs to, if src/telemetry.rs defines it.
fn family_of(name: &str, families: &BTreeMap<String, bool>) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base) == Some(&true)).then(|| base.to_string())
    })
}

fn json_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

// (a) ---------------------------------------------------------------------------------------

#[test]
fn deploy_every_kubernetes_and_prometheus_yaml_file_parses() {
    let kubernetes = yaml_files_under("deploy/kubernetes");
    for expected in [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "networkpolicy.yaml",
        "servicemonitor.yaml",
        "secrets.example.yaml",
        "kustomization.yaml",
    ] {
        assert!(
            kubernetes.iter().any(|f| f == expected),
            "deploy/kubernetes/{expected} is missing"
        );
    }
    for file in &kubernetes {
        let docs = yaml(&format!("deploy/kubernetes/{file}"));
        assert!(!docs.is_empty(), "{file} holds no document");
        for doc in &docs {
            let what = format!("deploy/kubernetes/{file}");
            string(&doc["apiVersion"], &format!("{what}: apiVersion"));
            let kind = string(&doc["kind"], &format!("{what}: kind"));
            if kind != "Kustomization" {
                string(&doc["metadata"]["name"], &format!("{what}: metadata.name"));
            }
        }
    }
    let prometheus = yaml_files_under("deploy/prometheus");
    assert_eq!(prometheus, ["alerts.yaml", "scrape.yaml"]);
    let scrape = &yaml("deploy/prometheus/scrape.yaml")[0];
    assert!(!list(&scrape["scrape_configs"], "scrape_configs").is_empty());
    let alerts = &yaml("deploy/prometheus/alerts.yaml")[0];
    for group in list(&alerts["groups"], "groups") {
        for rule in list(&group["rules"], "rules") {
            let name = string(&rule["alert"], "alert");
            string(&rule["expr"], &format!("{name}: expr"));
            string(&rule["labels"]["severity"], &format!("{name}: severity"));
        }
    }
}

#[test]
fn deploy_kustomization_lists_every_manifest_except_the_example_secrets() {
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    let listed: BTreeSet<String> = list(&kustomization["resources"], "resources")
        .iter()
        .map(|r| string(r, "resources[]").to_string())
        .collect();
    let expected: BTreeSet<String> = yaml_files_under("deploy/kubernetes")
        .into_iter()
        .filter(|f| {
            f != "kustomization.yaml" && f != "secrets.example.yaml" && f != "servicemonitor.yaml"
        })
        .collect();
    assert_eq!(
        listed, expected,
        "kustomization.yaml resources (secrets.example.yaml must stay out: applying it would \
         overwrite real Secrets with placeholders; servicemonitor.yaml needs the Prometheus \
         Operator's CRD)"
    );
}

// (b) ---------------------------------------------------------------------------------------

#[test]
fn deploy_deployment_ports_and_probes_match_the_configmap() {
    let deployed = Deployed::load();
    let listener = deployed.config_port("listener.addr");
    let admin = deployed.config_port("admin.addr");
    assert_eq!(
        deployed.named_port("https"),
        listener,
        "port https vs listener.addr"
    );
    assert_eq!(
        deployed.named_port("metrics"),
        admin,
        "port metrics vs admin.addr"
    );
    let declared: BTreeSet<u16> = list(&deployed.container["ports"], "ports")
        .iter()
        .map(|p| deployed.port_number(p))
        .collect();
    let mut listening = BTreeSet::from([listener, admin]);
    if deployed.config["listener"].get("plain_addr").is_some() {
        listening.insert(deployed.config_port("listener.plain_addr"));
    }
    assert_eq!(
        declared, listening,
        "containerPorts vs the configured listeners"
    );

    let admin_source = text("src/admin.rs");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &deployed.container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            deployed.container_port(&get["port"], probe),
            admin,
            "{probe} must probe the admin listener"
        );
        assert!(
            admin_source.contains(&format!("\"{path}\"")),
            "src/admin.rs does not serve {path}"
        );
        assert!(
            get["scheme"].as_str().is_none_or(|s| s == "HTTP"),
            "the admin listener is plain HTTP"
        );
    }

    let pod_labels = deployed_pod_labels();
    let public = object("service.yaml", "Service", "fapigate");
    let metrics = object("service.yaml", "Service", "fapigate-metrics");
    for service in [&public, &metrics] {
        assert_selects(
            &service["spec"]["selector"],
            &pod_labels,
            "Service selector",
        );
    }
    let public_ports = list(&public["spec"]["ports"], "fapigate ports");
    assert_eq!(
        public_ports.len(),
        1,
        "the public Service exposes the API only"
    );
    assert_eq!(int(&public_ports[0]["port"], "port"), 443);
    assert_eq!(
        deployed.container_port(&public_ports[0]["targetPort"], "fapigate targetPort"),
        listener
    );
    let metrics_ports = list(&metrics["spec"]["ports"], "fapigate-metrics ports");
    assert_eq!(metrics_ports.len(), 1);
    assert_eq!(metrics_ports[0]["name"].as_str(), Some("metrics"));
    assert_eq!(
        deployed.container_port(&metrics_ports[0]["targetPort"], "metrics targetPort"),
        admin
    );
    assert_eq!(
        metrics["spec"]["type"].as_str().unwrap_or("ClusterIP"),
        "ClusterIP",
        "the admin listener must stay inside the cluster"
    );
}

fn deployed_pod_labels() -> BTreeMap<String, String> {
    let deployment = object("deployment.yaml", "Deployment", "fapigate");
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_hash()
        .expect("pod template labels");
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (string(k, "label").into(), string(v, "label value").into()))
        .collect();
    assert_selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &labels,
        "Deployment selector",
    );
    labels
}

fn assert_selects(selector: &Yaml, labels: &BTreeMap<String, String>, what: &str) {
    let selector = selector
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: no selector"));
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (key, value) in selector {
        let key = string(key, what);
        assert_eq!(
            labels.get(key).map(String::as_str),
            value.as_str(),
            "{what}: {key} does not select the fapigate pods"
        );
    }
}

#[test]
fn deploy_hpa_pdb_and_prometheus_scrape_target_the_gateway_pods() {
    let labels = deployed_pod_labels();
    let deployed = Deployed::load();
    let hpa = object("hpa.yaml", "HorizontalPodAutoscaler", "fapigate");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["name"].as_str(), Some("fapigate"));
    assert_eq!(int(&hpa["spec"]["minReplicas"], "minReplicas"), 2);
    assert_eq!(int(&hpa["spec"]["maxReplicas"], "maxReplicas"), 10);
    let cpu = list(&hpa["spec"]["metrics"], "metrics")
        .iter()
        .find(|m| m["resource"]["name"].as_str() == Some("cpu"))
        .expect("a cpu metric");
    assert_eq!(
        int(&cpu["resource"]["target"]["averageUtilization"], "cpu"),
        70
    );
    assert!(
        !deployed.container["resources"]["requests"]["cpu"].is_badvalue(),
        "CPU utilisation needs a CPU request"
    );

    let pdb = object("pdb.yaml", "PodDisruptionBudget", "fapigate");
    assert_eq!(int(&pdb["spec"]["maxUnavailable"], "maxUnavailable"), 1);
    assert!(pdb["spec"]["minAvailable"].is_badvalue(), "one of the two");
    assert_selects(&pdb["spec"]["selector"]["matchLabels"], &labels, "PDB");

    let scrape = &yaml("deploy/prometheus/scrape.yaml")[0];
    let job = list(&scrape["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("fapigate"))
        .expect("a fapigate job");
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["kubernetes_sd_configs"][0]["role"].as_str(),
        Some("pod")
    );
    let keep = |source: &str| -> String {
        list(&job["relabel_configs"], "relabel_configs")
            .iter()
            .find(|r| {
                r["action"].as_str() == Some("keep")
                    && r["source_labels"][0].as_str() == Some(source)
            })
            .map(|r| string(&r["regex"], source).to_string())
            .unwrap_or_else(|| panic!("no keep rule on {source}"))
    };
    let port_name = keep("__meta_kubernetes_pod_container_port_name");
    assert_eq!(
        deployed.named_port(&port_name),
        deployed.config_port("admin.addr"),
        "the scraped port must be the admin listener"
    );
    let label_rule = keep("__meta_kubernetes_pod_label_app_kubernetes_io_name");
    assert_eq!(
        labels.get("app.kubernetes.io/name"),
        Some(&label_rule),
        "the scrape job keeps pods by app.kubernetes.io/name"
    );
}

#[test]
fn deploy_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    let deployed = Deployed::load();
    let pod = &deployed.pod["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true));
    let uid = int(&pod["runAsUser"], "runAsUser");
    assert_ne!(uid, 0);
    assert!(
        pod["fsGroup"].as_i64().is_some(),
        "without fsGroup the root-owned 0400 Secret files are unreadable by uid {uid}"
    );
    let container = &deployed.container["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(container["allowPrivilegeEscalation"].as_bool(), Some(false));
    let dropped: Vec<&str> = list(&container["capabilities"]["drop"], "drop")
        .iter()
        .map(|c| string(c, "capability"))
        .collect();
    assert_eq!(dropped, ["ALL"]);
    assert!(container["capabilities"]["add"].is_badvalue());
    assert_eq!(
        int(&deployed.pod["terminationGracePeriodSeconds"], "grace"),
        30
    );
    let resources = &deployed.container["resources"];
    for field in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !resources[field][resource].is_badvalue(),
                "resources.{field}.{resource} is missing"
            );
        }
    }
    let containerfile = text("deploy/Containerfile");
    assert!(
        containerfile.contains(&format!("\nUSER {uid}:")),
        "the image's USER should be the pod's runAsUser {uid}"
    );
}

// (c) ---------------------------------------------------------------------------------------

#[test]
fn deploy_every_configured_file_is_mounted_and_comes_from_a_secret_that_holds_it() {
    let deployed = Deployed::load();
    let secrets = example_secrets();
    let files = deployed.files();
    for needed in [
        "listener.tls.cert",
        "listener.tls.key",
        "response_signing.key",
        "issuer[0].introspection.key",
    ] {
        assert!(
            files.iter().any(|(key, _)| key == needed),
            "the ConfigMap's fapigate.toml has no {needed}: {files:?}"
        );
    }

    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for (key, file) in &files {
        assert!(file.starts_with('/'), "{key} = {file:?} should be absolute");
        let mount = deployed
            .mount_holding(file)
            .unwrap_or_else(|| panic!("{key} = {file}: no volume is mounted at its folder"));
        assert!(
            mount.read_only,
            "{key}: mount {} must be readOnly",
            mount.path
        );
        let secret = &volume(&deployed.pod, &mount.volume)["secret"];
        let secret_name = secret["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} = {file}: volume {} is not a Secret", mount.volume));
        let relative = &file[mount.path.len() + 1..];
        let secret_key = match secret["items"].as_vec() {
            Some(items) => items
                .iter()
                .find(|item| item["path"].as_str() == Some(relative))
                .map(|item| string(&item["key"], "items[].key"))
                .unwrap_or_else(|| {
                    panic!("{key}: Secret {secret_name} maps no item to {relative}")
                }),
            None => relative,
        };
        let keys = secrets
            .get(secret_name)
            .unwrap_or_else(|| panic!("secrets.example.yaml has no Secret {secret_name}"));
        assert!(
            keys.contains(secret_key),
            "{key} = {file}: Secret {secret_name} in secrets.example.yaml has no key {secret_key} \
             (it has {keys:?})"
        );
        // Kubernetes' default is 0644; fapigate refuses a private key any "other" can read.
        let mode = secret["defaultMode"].as_i64().unwrap_or(0o644);
        let private =
            !key.ends_with(".cert") && !key.ends_with("ca_file") && !key.ends_with("client_ca");
        if private {
            assert_eq!(
                mode & 0o007,
                0,
                "{key}: Secret volume {} has defaultMode {mode:o}, readable by others",
                mount.volume
            );
        }
        used.insert((secret_name.to_string(), secret_key.to_string()));
    }

    // The audit trail's folder is a writable volume of its own.
    let audit = deployed.config_str("audit.path");
    let folder = Path::new(audit)
        .parent()
        .expect("a folder")
        .to_string_lossy();
    let mount = deployed
        .mounts
        .iter()
        .find(|m| m.path == folder)
        .unwrap_or_else(|| panic!("audit.path {audit}: nothing is mounted at {folder}"));
    assert!(!mount.read_only, "the audit volume must be writable");
    let audit_volume = volume(&deployed.pod, &mount.volume);
    assert!(
        !audit_volume["emptyDir"].is_badvalue()
            || !audit_volume["persistentVolumeClaim"].is_badvalue(),
        "the audit volume should be an emptyDir or a persistent volume"
    );

    // Every Secret of the example is mounted, and every key in it is used.
    let mounted_secrets: BTreeSet<&str> = list(&deployed.pod["volumes"], "volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    for (name, keys) in &secrets {
        assert!(
            mounted_secrets.contains(name.as_str()),
            "Secret {name} is not mounted"
        );
        for key in keys {
            let pending = PENDING_SECRET_KEYS
                .iter()
                .any(|(secret, k, _)| secret == name && k == key);
            assert!(
                pending || used.contains(&(name.clone(), key.clone())),
                "Secret {name} key {key} is mounted but fapigate.toml names no such file"
            );
        }
    }
    for (secret, key, why) in PENDING_SECRET_KEYS {
        assert!(
            secrets.get(*secret).is_some_and(|keys| keys.contains(*key)),
            "{secret}/{key} ({why}) is no longer in secrets.example.yaml: drop it from PENDING_SECRET_KEYS"
        );
    }
}

#[test]
fn deploy_example_secrets_hold_placeholders_only() {
    let raw = text("deploy/kubernetes/secrets.example.yaml");
    assert!(
        !raw.contains("-----BEGIN"),
        "secrets.example.yaml must hold no PEM"
    );
    for doc in yaml("deploy/kubernetes/secrets.example.yaml") {
        let name = string(&doc["metadata"]["name"], "name");
        assert!(
            doc["data"].is_badvalue(),
            "{name}: use stringData placeholders, not data"
        );
        for (key, value) in doc["stringData"].as_hash().expect("stringData") {
            let value = string(value, "value");
            assert!(
                value.starts_with("REPLACE-ME"),
                "{name}/{key:?} is not a REPLACE-ME placeholder"
            );
        }
    }
}

// (d) ---------------------------------------------------------------------------------------

/// The ConfigMap's fapigate.toml made real under `root`: every /etc/fapigate/ path moved
/// there, each file made the way its Secret would provide it (mode 0440: defaultMode 0400
/// plus the group read fsGroup adds), the listener's certificate and the Redis CA from `pki`,
/// and the upstreams on 127.0.0.1 (at `upstream` when given). `made(key)` may supply a
/// file's contents instead of the placeholder made here. Returns the configuration's text.
pub fn materialize(
    deployed: &Deployed,
    root: &Path,
    pki: &Pki,
    upstream: Option<SocketAddr>,
    made: impl Fn(&str) -> Option<String>,
) -> String {
    let prefix = format!("{}/", root.display());
    let relocate = |path: &str| -> std::path::PathBuf {
        let rest = path
            .strip_prefix("/etc/fapigate/")
            .unwrap_or_else(|| panic!("{path} is not under /etc/fapigate/"));
        root.join(rest)
    };

    let mut config = deployed.config_text.replace("/etc/fapigate/", &prefix);
    // In-cluster upstream names do not resolve here; fapigate resolves them at load time.
    for upstream_table in deployed.config["upstream"]
        .as_array()
        .expect("[[upstream]]")
    {
        for addr in upstream_table["addrs"].as_array().expect("addrs") {
            let addr = addr.as_str().expect("an address");
            let port = addr.rsplit_once(':').expect("host:port").1;
            let here = upstream.map_or(format!("127.0.0.1:{port}"), |a| a.to_string());
            config = config.replace(&format!("\"{addr}\""), &format!("\"{here}\""));
        }
    }

    for (key, file) in deployed.files() {
        let target = relocate(&file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if key == "listener.tls.cert" {
            std::fs::copy(pki.dir.join("tls/server.crt"), &target).unwrap();
            continue;
        }
        if key == "state.redis_ca_file" {
            std::fs::copy(pki.ca(), &target).unwrap();
            continue;
        }
        let contents = if let Some(contents) = made(&key) {
            contents
        } else if key == "listener.tls.key" {
            std::fs::read_to_string(pki.dir.join("tls/server.key")).unwrap()
        } else if key.starts_with("response_signing.") {
            // response_signing.key, or response_signing.additional_keys[N].key: the alg beside it.
            let alg_key = format!("{}.alg", key.strip_suffix(".key").expect("a .key"));
            let alg = match deployed.config_str(&alg_key) {
                "ed25519" => &rcgen::PKCS_ED25519,
                "ecdsa-p256-sha256" | "ES256" => &rcgen::PKCS_ECDSA_P256_SHA256,
                other => panic!("teach this test to make a {other} key"),
            };
            rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem()
        } else if key.ends_with("introspection.key") {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .serialize_pem()
        } else if key.ends_with("secret_file") {
            "a-shared-secret-for-the-deployment-test\n".to_string()
        } else if key.ends_with("redis_url_file") {
            "rediss://:password@redis.fapigate.svc:6379/0\n".to_string()
        } else if key == "audit.key_file" {
            "an-audit-mac-key-of-at-least-32-bytes-for-the-deployment-test\n".to_string()
        } else if key.ends_with("verdict_key_file") {
            "a-verdict-key-of-at-least-32-bytes-for-the-deployment-test\n".to_string()
        } else {
            panic!("teach this test to make the file of {key} ({file})");
        };
        write_private(&target, &contents);
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    std::fs::create_dir_all(
        relocate(deployed.config_str("audit.path"))
            .parent()
            .unwrap(),
    )
    .unwrap();
    config
}

/// The ConfigMap's fapigate.toml, made real in a temp dir ([`materialize`]), is accepted by
/// `fapigate check`.
#[test]
fn deploy_configmap_configuration_passes_fapigate_check() {
    let deployed = Deployed::load();
    let dir = temp_dir();
    let root = dir.path();
    let pki = Pki::new(&root.join("scratch"));
    let config = materialize(&deployed, root, &pki, None, |_| None);
    let config_file = root.join("fapigate.toml");
    std::fs::write(&config_file, &config).unwrap();

    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&config_file)
        .output()
        .expect("fapigate check runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fapigate check refused the ConfigMap's configuration:\n{stderr}\n--- as checked:\n{config}"
    );
    let expected = format!(
        "ok: listener {} (tls, client_cert=request), admin {}",
        deployed.config_str("listener.addr"),
        deployed.config_str("admin.addr")
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

// (e) ---------------------------------------------------------------------------------------

#[test]
fn deploy_grafana_dashboard_is_valid_and_uses_only_defined_metrics() {
    let raw = text("deploy/grafana/fapigate-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"));
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {title}: a target has no expr"
            );
        }
    }

    let families = metric_families();
    let mut strings = Vec::new();
    json_strings(&dashboard, &mut strings);
    let mut used = BTreeSet::new();
    for name in strings.iter().flat_map(|s| metric_names_in(s)) {
        let family = family_of(&name, &families).unwrap_or_else(|| {
            panic!("the dashboard uses {name}, which src/telemetry.rs does not define")
        });
        used.insert(family);
    }
    let unused: Vec<&String> = families.keys().filter(|f| !used.contains(*f)).collect();
    assert!(
        unused.is_empty(),
        "the dashboard shows nothing of {unused:?}: add a panel"
    );
}

#[test]
fn deploy_alert_rules_use_only_defined_metrics() {
    let families = metric_families();
    let alerts = &yaml("deploy/prometheus/alerts.yaml")[0];
    let mut used = BTreeSet::new();
    for group in list(&alerts["groups"], "groups") {
        for rule in list(&group["rules"], "rules") {
            let alert = string(&rule["alert"], "alert");
            for name in metric_names_in(string(&rule["expr"], alert)) {
                used.insert(family_of(&name, &families).unwrap_or_else(|| {
                    panic!("alert {alert} uses {name}, which src/telemetry.rs does not define")
                }));
            }
        }
    }
    for required in [
        "fapigate_requests_total",
        "fapigate_introspection_failures_total",
        "fapigate_ready",
        "fapigate_config_reloads_total",
    ] {
        assert!(used.contains(required), "no alert watches {required}");
    }
}

// (f) ---------------------------------------------------------------------------------------

#[test]
fn deploy_systemd_unit_is_sandboxed_and_its_credential_paths_agree() {
    let unit = text("deploy/fapigate.service");
    let unit_name = "fapigate.service";
    let mut service: Vec<(String, String)> = Vec::new();
    let mut section = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        if section == "[Service]" {
            service.push((key.to_string(), value.to_string()));
        }
    }
    let values = |key: &str| -> Vec<String> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let one = |key: &str| -> String {
        match values(key).as_slice() {
            [value] => value.clone(),
            other => panic!("[Service] {key}= should be set once, found {other:?}"),
        }
    };
    assert_eq!(one("DynamicUser"), "yes");
    // Readiness by sd_notify, and no restart loop on a configuration that cannot run.
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("RestartPreventExitStatus"), "78");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert!(
        !values("CapabilityBoundingSet").is_empty(),
        "CapabilityBoundingSet"
    );
    for capability in one("AmbientCapabilities").split_whitespace() {
        assert!(
            one("CapabilityBoundingSet")
                .split_whitespace()
                .any(|c| c == capability),
            "ambient {capability} is outside the bounding set"
        );
    }

    // The same configuration file is checked and run, and lies in ConfigurationDirectory=.
    let config_of = |command: &str, verb: &str| -> String {
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words.get(1), Some(&verb), "{command}");
        let at = words
            .iter()
            .position(|w| *w == "--config")
            .expect("--config");
        words[at + 1].to_string()
    };
    let config = config_of(&one("ExecStart"), "run");
    // No ExecStartPre check: its exit 78 would escape RestartPreventExitStatus= (which reads
    // the main process only); `run` refuses a bad file with 78 itself.
    assert!(values("ExecStartPre").is_empty());
    let config_dir = format!("/etc/{}/", one("ConfigurationDirectory"));
    assert!(
        config.starts_with(&config_dir),
        "{config} is outside ConfigurationDirectory= ({config_dir})"
    );

    // Private keys are credentials, and the configuration shown in the header names each one
    // under this unit's credentials directory.
    let credentials_dir = format!("/run/credentials/{unit_name}/");
    let loaded: BTreeSet<String> = values("LoadCredential")
        .iter()
        .map(|spec| {
            let (name, source) = spec.split_once(':').expect("LoadCredential=NAME:PATH");
            assert!(
                source.starts_with('/'),
                "{spec}: the source must be absolute"
            );
            assert_ne!(
                source, config,
                "the configuration is reloaded in place, not a credential"
            );
            name.to_string()
        })
        .collect();
    for needed in [
        "server.key",
        "response-signing.pem",
        "introspection-client.pem",
    ] {
        assert!(loaded.contains(needed), "no LoadCredential={needed}:...");
    }
    let named: BTreeSet<String> = unit
        .match_indices(&credentials_dir)
        .map(|(at, _)| {
            let rest = &unit[at + credentials_dir.len()..];
            let end = rest
                .find(|c: char| c == '"' || c.is_whitespace())
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .filter(|name| !name.is_empty())
        .collect();
    assert_eq!(
        named, loaded,
        "the paths under {credentials_dir} in the header vs the LoadCredential= names"
    );
    assert!(
        !unit.contains("LoadCredential-free"),
        "the old, wrong explanation is back"
    );

    // The audit trail goes to a StateDirectory= the service owns.
    let audit = unit
        .lines()
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("path = \""))
        .find_map(|rest| rest.split('"').next())
        .expect("the header shows [audit] path");
    let folder = Path::new(audit)
        .parent()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let state: Vec<String> = one("StateDirectory")
        .split_whitespace()
        .map(|d| format!("/var/lib/{d}"))
        .collect();
    assert!(
        state.contains(&folder),
        "audit folder {folder} is not a StateDirectory= ({state:?})"
    );
}

#[test]
fn deploy_containerfile_builds_the_binary_and_runs_what_the_deployment_runs() {
    let containerfile = text("deploy/Containerfile");
    let instructions: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms,
        [
            "FROM rust:1-bookworm AS builder",
            "FROM debian:bookworm-slim"
        ]
    );
    assert!(containerfile.contains("cargo build --release --locked --bin fapigate"));
    // The image has no HTTP client: the binary is its own probe, on the configuration CMD runs.
    let healthcheck = containerfile
        .split("\nHEALTHCHECK ")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains(
            r#"CMD ["fapigate", "healthcheck", "--config", "/etc/fapigate/fapigate.toml"]"#
        ),
        "{healthcheck}"
    );
    assert!(containerfile.contains(r#"CMD ["run", "--config", "/etc/fapigate/fapigate.toml"]"#));
    let single = |prefix: &str| -> String {
        let found: Vec<&str> = instructions
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect();
        assert_eq!(found.len(), 1, "{prefix}: {found:?}");
        found[0].to_string()
    };
    assert_eq!(single("ENTRYPOINT "), r#"["fapigate"]"#);
    let cmd: Vec<String> = serde_json::from_str(&single("CMD ")).expect("CMD in exec form");
    let deployed = Deployed::load();
    let args: Vec<String> = list(&deployed.container["args"], "args")
        .iter()
        .map(|a| string(a, "args[]").to_string())
        .collect();
    assert_eq!(cmd, args, "the image's CMD and the Deployment's args");
    assert!(cmd.contains(&deployed.config_path));
    let exposed: BTreeSet<u16> = single("EXPOSE ")
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([
            deployed.config_port("listener.addr"),
            deployed.config_port("admin.addr")
        ])
    );
    let ignore = text("deploy/Containerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context must leave out target/"
    );
}

/// The NetworkPolicy opens the API port to all and the admin port to monitoring only, by the
/// container's port names; the ServiceMonitor scrapes the metrics Service's named port.
#[test]
fn deploy_network_policy_and_service_monitor_name_the_real_ports() {
    let deployment = object("deployment.yaml", "Deployment", "fapigate");
    let containers = list(
        &deployment["spec"]["template"]["spec"]["containers"],
        "containers",
    );
    let port_names: Vec<&str> = list(&containers[0]["ports"], "ports")
        .iter()
        .map(|p| string(&p["name"], "port name"))
        .collect();
    let policy = object("networkpolicy.yaml", "NetworkPolicy", "fapigate");
    assert_eq!(
        string(
            &policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "podSelector"
        ),
        "fapigate"
    );
    let rules = list(&policy["spec"]["ingress"], "ingress");
    assert_eq!(rules.len(), 2, "API to all, admin to monitoring");
    let port_of =
        |rule: &Yaml| string(&list(&rule["ports"], "ports")[0]["port"], "port").to_string();
    assert_eq!(port_of(&rules[0]), "https");
    assert!(
        rules[0]["from"].is_badvalue(),
        "the API is open to every source"
    );
    assert_eq!(port_of(&rules[1]), "metrics");
    assert!(
        !list(&rules[1]["from"], "from").is_empty(),
        "the admin port has a source"
    );
    for rule in rules {
        assert!(
            port_names.contains(&port_of(rule).as_str()),
            "{:?}",
            port_of(rule)
        );
    }
    let monitor = object("servicemonitor.yaml", "ServiceMonitor", "fapigate");
    let endpoints = list(&monitor["spec"]["endpoints"], "endpoints");
    assert_eq!(string(&endpoints[0]["port"], "endpoint port"), "metrics");
    assert_eq!(string(&endpoints[0]["path"], "endpoint path"), "/metrics");
}
