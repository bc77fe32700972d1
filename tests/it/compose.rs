//! Docker's engine does not run here, so `docker-compose.yml` is checked the
//! way we can: every service's configuration (the image's `ENV` from the
//! Dockerfile, then the service's `environment` and `command`) goes through
//! `kvd --check-config`, and the services must agree with each other: one
//! initial cluster, advertised addresses that match it and the published
//! ports, listeners reachable from outside the container, a volume per
//! node, a kvctl healthcheck, and no restart policy. A deliberately broken
//! copy of the file must fail the same check.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use raftkv::client::DEFAULT_ENDPOINTS;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");

/// One compose service, as far as raftkv cares.
struct Service {
    name: String,
    hostname: Option<String>,
    env: BTreeMap<String, String>,
    command: Vec<String>,
    ports: Vec<String>,
    volumes: Vec<String>,
    healthcheck: Vec<String>,
    restart: Option<String>,
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// `environment` as a map or as a list of `KEY=VALUE`.
fn environment(y: &Yaml) -> BTreeMap<String, String> {
    match y {
        Yaml::Hash(h) => h
            .iter()
            .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
            .collect(),
        Yaml::Array(_) => list(y)
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn parse(text: &str) -> Result<(Vec<Service>, BTreeSet<String>), String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let doc = docs.first().ok_or("empty compose file")?;
    let services = doc["services"].as_hash().ok_or("no services")?;
    let parsed = services
        .iter()
        .map(|(name, s)| Service {
            name: scalar(name).unwrap_or_default(),
            hostname: scalar(&s["hostname"]),
            env: environment(&s["environment"]),
            command: list(&s["command"]),
            ports: list(&s["ports"]),
            volumes: list(&s["volumes"]),
            healthcheck: list(&s["healthcheck"]["test"]),
            restart: scalar(&s["restart"]),
        })
        .collect();
    let volumes = doc["volumes"]
        .as_hash()
        .map(|h| h.keys().filter_map(scalar).collect())
        .unwrap_or_default();
    Ok((parsed, volumes))
}

/// The `ENV` of the Dockerfile's final stage: the defaults every container
/// starts with.
fn image_env(dockerfile: &str) -> BTreeMap<String, String> {
    let joined = dockerfile.replace("\\\n", " ");
    stage(&joined, "base")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// kvd's view of one service's configuration.
fn check_config(
    service: &Service,
    image_env: &BTreeMap<String, String>,
) -> Result<serde_json::Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kvd"))
        .env_clear()
        .envs(image_env.iter().filter(|(k, _)| k.starts_with("KVD_")))
        .envs(&service.env)
        .args(&service.command)
        .arg("--check-config")
        .output()
        .map_err(|e| format!("running kvd: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{}: kvd --check-config rejects its configuration: {}",
            service.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{}: unreadable --check-config output: {e}", service.name))
}

fn split_addr(addr: &str) -> (String, u16) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    (host.to_string(), port.parse().unwrap_or(0))
}

/// `(host ip, host port)` published for `container_port`, if any.
fn published(ports: &[String], container_port: u16) -> Option<(String, u16)> {
    ports.iter().find_map(|p| {
        let parts: Vec<&str> = p.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [ip, host, container] => (ip.to_string(), *host, *container),
            [host, container] => ("0.0.0.0".to_string(), *host, *container),
            _ => return None,
        };
        (container.parse::<u16>().ok()? == container_port).then(|| (ip, host.parse().unwrap_or(0)))
    })
}

/// Every check described at the top of this file; the first failure, named.
fn check_compose(text: &str) -> Result<(), String> {
    let (services, declared_volumes) = parse(text)?;
    if services.len() < 3 {
        return Err(format!(
            "expected at least 3 services, found {}",
            services.len()
        ));
    }
    let image_env = image_env(DOCKERFILE);
    let mut ids = BTreeSet::new();
    let mut initial_clusters = BTreeSet::new();
    let mut client_ports = BTreeSet::new();
    let mut volume_names = BTreeSet::new();
    for s in &services {
        let cfg = check_config(s, &image_env)?;
        let name = &s.name;
        let id = cfg["id"].as_u64().ok_or("no id")?;
        if !ids.insert(id) {
            return Err(format!("{name}: id {id} is used by another service"));
        }
        let cluster = cfg["initial_cluster"].to_string();
        initial_clusters.insert(cluster);

        let advertise_peer = cfg["advertise_peer"].as_str().unwrap_or_default();
        let (peer_host, peer_port) = split_addr(advertise_peer);
        if cfg["initial_cluster"][id.to_string()].as_str() != Some(advertise_peer) {
            return Err(format!(
                "{name}: advertises peer {advertise_peer}, not its --initial-cluster entry"
            ));
        }
        if peer_host != *name && Some(&peer_host) != s.hostname.as_ref() {
            return Err(format!(
                "{name}: advertised peer host {peer_host} is not the service's name"
            ));
        }
        for flag in ["listen_client", "listen_peer", "listen_metrics"] {
            let (host, _) = split_addr(cfg[flag].as_str().unwrap_or_default());
            if host != "0.0.0.0" {
                return Err(format!(
                    "{name}: {flag} is on {host}, unreachable from outside the container"
                ));
            }
        }
        let (_, listen_peer_port) = split_addr(cfg["listen_peer"].as_str().unwrap_or_default());
        if peer_port != listen_peer_port {
            return Err(format!(
                "{name}: advertises peer port {peer_port} but listens on {listen_peer_port}"
            ));
        }

        let (_, client_port) = split_addr(cfg["listen_client"].as_str().unwrap_or_default());
        let (ip, host_port) = published(&s.ports, client_port)
            .ok_or_else(|| format!("{name}: client port {client_port} is not published"))?;
        if ip != "127.0.0.1" {
            return Err(format!(
                "{name}: client port published on {ip}, not only on loopback"
            ));
        }
        let advertised: Vec<&str> = cfg["advertise_client"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if !advertised.contains(&format!("127.0.0.1:{host_port}").as_str()) {
            return Err(format!(
                "{name}: no advertised client address matches published port {host_port}"
            ));
        }
        if !advertised.contains(&format!("{name}:{client_port}").as_str()) {
            return Err(format!(
                "{name}: no advertised client address for the compose network ({name}:{client_port})"
            ));
        }
        if !client_ports.insert(host_port) {
            return Err(format!("{name}: host port {host_port} is published twice"));
        }
        let (_, metrics_port) = split_addr(cfg["listen_metrics"].as_str().unwrap_or_default());
        published(&s.ports, metrics_port)
            .ok_or_else(|| format!("{name}: metrics port is not published"))?;

        let data_dir = cfg["data_dir"].as_str().unwrap_or_default();
        let volume = s
            .volumes
            .iter()
            .find_map(|v| {
                v.split_once(':')
                    .filter(|(_, path)| *path == data_dir)
                    .map(|(n, _)| n.to_string())
            })
            .ok_or_else(|| format!("{name}: no volume is mounted at its data dir {data_dir}"))?;
        if !declared_volumes.contains(&volume) {
            return Err(format!(
                "{name}: volume {volume} is not a declared named volume"
            ));
        }
        if !volume_names.insert(volume.clone()) {
            return Err(format!(
                "{name}: volume {volume} is shared with another service"
            ));
        }
        let hc = s.healthcheck.join(" ");
        if !(hc.contains("kvctl") && hc.contains("endpoint health")) {
            return Err(format!(
                "{name}: the healthcheck must run `kvctl endpoint health` (it runs {hc:?})"
            ));
        }
        if s.restart.as_deref().is_some_and(|r| r != "no") {
            return Err(format!(
                "{name}: restart policy {:?}; a stopped node must stay down",
                s.restart
            ));
        }
    }
    if initial_clusters.len() != 1 {
        return Err(format!(
            "services disagree on the initial cluster: {initial_clusters:?}"
        ));
    }
    let cluster: serde_json::Value =
        serde_json::from_str(initial_clusters.first().unwrap()).unwrap();
    let listed: BTreeSet<u64> = cluster
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    if listed != ids {
        return Err(format!(
            "the initial cluster lists {listed:?}, the services are {ids:?}"
        ));
    }
    let default_ports: BTreeSet<u16> = DEFAULT_ENDPOINTS
        .split(',')
        .map(|e| split_addr(e).1)
        .collect();
    if client_ports != default_ports {
        return Err(format!(
            "client ports {client_ports:?} are not kvctl's defaults {default_ports:?}"
        ));
    }
    Ok(())
}

/// Scenario: the committed docker-compose.yml passes every check.
#[test]
fn the_compose_file_describes_a_working_cluster() {
    check_compose(COMPOSE).unwrap();
}

/// Scenario: each of these one-line mistakes in a copy of the compose file
/// is caught, with a message naming the service.
#[test]
fn a_broken_compose_file_is_rejected() {
    let mistakes = [
        (
            "a typo in one node's initial cluster",
            "2=node2:2380,3=node3:2380",
            "2=node2:2308,3=node3:2380",
        ),
        ("two nodes with one id", "KVD_ID: \"3\"", "KVD_ID: \"2\""),
        (
            "an id that is not a number",
            "KVD_ID: \"1\"",
            "KVD_ID: \"one\"",
        ),
        (
            "a misspelled variable",
            "KVD_ADVERTISE_CLIENT: node2:2379,127.0.0.1:22379",
            "KVD_ADVERTIZE_CLIENT: node2:2379,127.0.0.1:22379",
        ),
        (
            "a variable kvd does not know",
            "KVD_LISTEN_METRICS: 0.0.0.0:2381",
            "KVD_LISTEN_METRIC: 0.0.0.0:2381",
        ),
        (
            "no client address for the compose network",
            "KVD_ADVERTISE_CLIENT: node3:2379,127.0.0.1:32379",
            "KVD_ADVERTISE_CLIENT: 127.0.0.1:32379",
        ),
        (
            "a wrong advertised peer",
            "KVD_ADVERTISE_PEER: node2:2380",
            "KVD_ADVERTISE_PEER: node2:2390",
        ),
        (
            "a published port that maps nowhere",
            "\"127.0.0.1:22379:2379\"",
            "\"127.0.0.1:22379:2378\"",
        ),
        (
            "a host port used twice",
            "\"127.0.0.1:32379:2379\"",
            "\"127.0.0.1:22379:2379\"",
        ),
        (
            "a client listener only on loopback",
            "KVD_LISTEN_CLIENT: 0.0.0.0:2379",
            "KVD_LISTEN_CLIENT: 127.0.0.1:2379",
        ),
        (
            "a node without its volume",
            "      - node3-data:/var/lib/raftkv\n",
            "",
        ),
        ("an automatic restart", "restart: \"no\"", "restart: always"),
        (
            "a healthcheck that checks nothing",
            "\"endpoint\", \"health\"]",
            "\"member\", \"list\"]",
        ),
    ];
    for (what, from, to) in mistakes {
        let broken = COMPOSE.replacen(from, to, 1);
        assert_ne!(
            broken, COMPOSE,
            "the mistake {what:?} did not apply: {from:?} is not in the file"
        );
        match check_compose(&broken) {
            Ok(()) => panic!("a compose file with {what} passed the check"),
            Err(e) => eprintln!("{what}: {e}"),
        }
    }
}

const CARGO_TOML: &str = include_str!("../../Cargo.toml");
const DOCKERIGNORE: &str = include_str!("../../.dockerignore");

/// The files cargo needs to build the package: the manifest and lock, the
/// build script and the protos it compiles, the library, and the path of
/// every target the manifest declares (cargo refuses a manifest whose
/// declared target is missing, even when building only the binaries).
fn cargo_inputs(manifest: &str) -> Vec<String> {
    let mut inputs: Vec<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "src/lib.rs",
    ]
    .map(String::from)
    .to_vec();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut flush = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let dir = match section {
            "[[bin]]" => "src/bin",
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            _ => return,
        };
        if let Some(p) = path
            .take()
            .or_else(|| name.take().map(|n| format!("{dir}/{n}.rs")))
        {
            inputs.push(p);
        }
        *name = None;
    };
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&section, &mut name, &mut path);
            section = line.to_string();
            continue;
        }
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        if let Some(v) = value("name") {
            name = Some(v);
        } else if let Some(v) = value("path") {
            path = Some(v);
        }
    }
    flush(&section, &mut name, &mut path);
    inputs
}

/// The lines of the Dockerfile stage named `name` (`FROM ... AS name`).
fn stage<'a>(dockerfile: &'a str, name: &str) -> &'a str {
    let head = format!(" AS {name}\n");
    let Some(at) = dockerfile.find(&head) else {
        return "";
    };
    let rest = &dockerfile[at + head.len()..];
    &rest[..rest.find("\nFROM ").unwrap_or(rest.len())]
}

/// The sources of the builder stage's `COPY` lines.
fn copied(dockerfile: &str) -> Vec<String> {
    let mut sources = Vec::new();
    for line in stage(dockerfile, "builder").lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            if let Some((_, srcs)) = words.split_last() {
                sources.extend(
                    srcs.iter()
                        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string()),
                );
            }
        }
    }
    sources
}

fn dockerfile_misses(dockerfile: &str, manifest: &str, ignore: &str) -> Vec<String> {
    let sources = copied(dockerfile);
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let covered = |input: &str, by: &str| input == by || input.starts_with(&format!("{by}/"));
    cargo_inputs(manifest)
        .into_iter()
        .filter(|input| {
            !sources.iter().any(|s| covered(input, s)) || ignored.iter().any(|i| covered(input, i))
        })
        .collect()
}

/// Scenario: the image's build stage copies in everything cargo needs to
/// build the package (a declared bench target it left out once broke the
/// image build, which cannot run here), and `.dockerignore` keeps none of it
/// out; leaving out the benches, or ignoring them, is caught.
#[test]
fn the_image_build_gets_every_file_cargo_needs() {
    assert_eq!(
        dockerfile_misses(DOCKERFILE, CARGO_TOML, DOCKERIGNORE),
        Vec::<String>::new()
    );
    assert!(cargo_inputs(CARGO_TOML).contains(&"benches/compare.rs".to_string()));
    let without: String = DOCKERFILE
        .lines()
        .filter(|l| !l.contains("benches"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        dockerfile_misses(&without, CARGO_TOML, DOCKERIGNORE),
        vec!["benches/compare.rs".to_string()]
    );
    assert_eq!(
        dockerfile_misses(
            DOCKERFILE,
            CARGO_TOML,
            &format!("{DOCKERIGNORE}\nbenches\n")
        ),
        vec!["benches/compare.rs".to_string()]
    );
}
