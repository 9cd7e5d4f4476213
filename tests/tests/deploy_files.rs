//! The compose deployment (`deploy/compose/`) and the image (`deploy/docker/`)
//! against the code they run: no Docker engine is needed, the files are read
//! and checked against the binaries' configuration sources.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test helper should panic

use integration_tests::repo_files::{api_variables, consumer_variables, read, root, scalar};
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};

const APPS: [&str; 4] = ["api1", "api2", "consumer1", "consumer2"];
const SERVICES: [&str; 10] = [
    "redis",
    "mysql",
    "jaeger",
    "api1",
    "api2",
    "lb",
    "consumer1",
    "consumer2",
    "prometheus",
    "grafana",
];

/// compose.yaml with its `<<:` merge keys applied, as Compose reads it.
fn compose() -> Value {
    let mut value: Value = serde_norway::from_str(&read("deploy/compose/compose.yaml")).unwrap();
    // One pass merges one level, and our services merge anchors that merge
    // anchors: repeat until nothing changes, as Compose resolves them all.
    loop {
        let before = value.clone();
        value.apply_merge().unwrap();
        if value == before {
            return value;
        }
    }
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service `{name}`"))
}

/// A `command:` or healthcheck `test:`, as its words.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        Value::Null => Vec::new(),
        other => scalar(other).split_whitespace().map(str::to_string).collect(),
    }
}

/// `environment:` in either of Compose's forms (a mapping or `KEY=VALUE` items).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                (key.to_string(), value.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The `depends_on:` conditions (the short list form means `service_started`).
fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match &service["depends_on"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(&v["condition"]))).collect(),
        Value::Sequence(items) => items.iter().map(|i| (scalar(i), "service_started".into())).collect(),
        _ => BTreeMap::new(),
    }
}

/// Fails unless every variable in `env` is one `binary` reads.
fn assert_accepted(service: &str, env: &BTreeMap<String, String>, accepted: &BTreeSet<String>, binary: &str) {
    let unknown: Vec<_> = env.keys().filter(|k| !accepted.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "{service} sets {unknown:?}, which {binary} does not read"
    );
}

/// The environment of the application service `name`, checked: it runs
/// `binary`, is given only variables `binary` reads, and names its spans after
/// `binary`.
fn app_environment(compose: &Value, name: &str, binary: &str, accepted: &BTreeSet<String>) -> BTreeMap<String, String> {
    let app = service(compose, name);
    assert_eq!(words(&app["command"]), [binary], "{name}");
    let env = environment(app);
    assert_accepted(name, &env, accepted, binary);
    assert_eq!(env["OTEL_SERVICE_NAME"], binary, "{name}");
    env
}

/// The secret `name` of a service: never in its environment, but in the file
/// its `name`_FILE names, a Compose secret the service mounts at
/// `/run/secrets/SECRET`, read as the binaries read it (trailing newline dropped).
fn secret(compose: &Value, service_name: &str, name: &str) -> String {
    let env = environment(service(compose, service_name));
    assert!(
        !env.contains_key(name),
        "{service_name}: {name} is in the environment; give {name}_FILE"
    );
    let path = env
        .get(&format!("{name}_FILE"))
        .unwrap_or_else(|| panic!("{service_name}: no {name}_FILE"));
    let secret = path
        .strip_prefix("/run/secrets/")
        .unwrap_or_else(|| panic!("{service_name}: {name}_FILE={path} is no Compose secret"));
    let mounted = words(&service(compose, service_name)["secrets"]);
    assert!(
        mounted.iter().any(|m| m == secret),
        "{service_name} does not mount the secret {secret}: {mounted:?}"
    );
    let file = scalar(&compose["secrets"][secret]["file"]);
    read(&format!("deploy/compose/{}", file.trim_start_matches("./")))
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

/// `(user, password)` of a `scheme://user:password@host...` URL.
fn credentials(url: &str) -> (String, Option<String>) {
    let rest = &url[url.find("://").unwrap() + 3..];
    let userinfo = rest.rsplit_once('@').map_or("", |(u, _)| u);
    match userinfo.split_once(':') {
        Some((user, password)) => (user.to_string(), Some(password.to_string()).filter(|p| !p.is_empty())),
        None => (userinfo.to_string(), None),
    }
}

/// The Dockerfile as stages of `(INSTRUCTION, arguments)`, continuation lines
/// joined and comments dropped.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut line = String::new();
    for raw in read("deploy/docker/Dockerfile").lines() {
        let raw = raw.trim();
        if raw.starts_with('#') {
            continue;
        }
        match raw.strip_suffix('\\') {
            Some(part) => line.push_str(part),
            None => {
                line.push_str(raw);
                let text = std::mem::take(&mut line);
                let Some((instruction, args)) = text.trim().split_once(char::is_whitespace) else {
                    continue;
                };
                let instruction = instruction.to_uppercase();
                if instruction == "FROM" {
                    stages.push(Vec::new());
                }
                stages
                    .last_mut()
                    .expect("FROM first")
                    .push((instruction, args.trim().to_string()));
            }
        }
    }
    stages
}

fn instructions<'a>(stage: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    stage
        .iter()
        .filter(move |(i, _)| i == name)
        .map(|(_, args)| args.as_str())
}

#[test]
fn compose_starts_every_service_of_the_deployment() {
    let compose = compose();
    for name in SERVICES {
        service(&compose, name);
    }
}

#[test]
fn the_apis_are_given_only_variables_coupon_api_accepts() {
    let (compose, accepted) = (compose(), api_variables());
    for name in ["api1", "api2"] {
        let env = app_environment(&compose, name, "coupon-api", &accepted);
        assert_eq!(env["LISTEN_ADDR"], "0.0.0.0:8080", "{name}");
        assert!(!secret(&compose, name, "ADMIN_TOKEN").is_empty(), "{name}");
        // Verified identity: every API checks user JWTs with the same secret.
        assert!(
            secret(&compose, name, "AUTH_JWT_SECRET").len() >= 32,
            "{name}: an HS256 secret of 32 bytes or more"
        );
    }
}

#[test]
fn the_consumers_are_given_only_variables_coupon_consumer_accepts() {
    let (compose, accepted) = (compose(), consumer_variables());
    let mut names = BTreeSet::new();
    for name in ["consumer1", "consumer2"] {
        let env = app_environment(&compose, name, "coupon-consumer", &accepted);
        assert_eq!(env["CONSUMER_GROUP"], "coupon-issuers", "{name}");
        assert_eq!(env["METRICS_ADDR"], "0.0.0.0:9464", "{name}");
        names.insert(env["CONSUMER_NAME"].clone());
        let grace = scalar(&service(&compose, name)["stop_grace_period"]);
        let seconds: u64 = grace.trim_end_matches('s').parse().unwrap();
        assert!(seconds >= 30, "{name}: a batch needs time to finish, got {grace}");
    }
    assert_eq!(names.len(), 2, "each consumer needs its own name in the group");
}

#[test]
fn every_application_reaches_redis_mysql_and_jaeger_by_service_name() {
    let compose = compose();
    for name in APPS {
        let env = environment(service(&compose, name));
        assert_eq!(secret(&compose, name, "REDIS_URL"), "redis://redis:6379", "{name}");
        let database_url = secret(&compose, name, "DATABASE_URL");
        assert!(database_url.contains("@mysql:3306/"), "{name}: {database_url}");
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4317", "{name}");
        assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc", "{name}");
    }
    let jaeger = service(&compose, "jaeger");
    assert!(scalar(&jaeger["image"]).starts_with("jaegertracing/"));
    assert!(
        words(&jaeger["ports"]).iter().any(|p| p.ends_with(":16686")),
        "the Jaeger UI is published"
    );
}

#[test]
fn the_database_url_password_matches_the_mysql_service() {
    let compose = compose();
    let mysql = environment(service(&compose, "mysql"));
    let expected = match mysql.get("MYSQL_ALLOW_EMPTY_PASSWORD") {
        Some(yes) => {
            assert_eq!(yes, "yes");
            None
        }
        None => Some(secret(&compose, "mysql", "MYSQL_ROOT_PASSWORD")),
    };
    for name in APPS {
        let url = &secret(&compose, name, "DATABASE_URL");
        assert_eq!(
            credentials(url),
            ("root".to_string(), expected.clone()),
            "{name}: {url}"
        );
    }
    // MySQL 8's caching_sha2_password checks a password through TLS or RSA on a
    // fresh server; a URL that asks for no TLS needs RSA for any password.
    if expected.is_some() && !url_asks_for_tls(&secret(&compose, "api1", "DATABASE_URL")) {
        let sqlx = read("Cargo.toml")
            .lines()
            .find(|l| l.starts_with("sqlx ="))
            .unwrap()
            .to_string();
        assert!(
            sqlx.contains("mysql-rsa"),
            "a MySQL password needs sqlx's mysql-rsa feature: {sqlx}"
        );
    }
}

/// Whether a `DATABASE_URL` asks for TLS (`ssl-mode` other than DISABLED).
fn url_asks_for_tls(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key.eq_ignore_ascii_case("ssl-mode") && !value.eq_ignore_ascii_case("disabled")
        })
    })
}

#[test]
fn every_secret_is_a_file_and_no_secret_sits_in_an_environment() {
    let compose = compose();
    for name in APPS {
        let env = environment(service(&compose, name));
        for variable in ["REDIS_URL", "REDIS_CLUSTER_URLS", "DATABASE_URL", "ADMIN_TOKEN"] {
            assert!(!env.contains_key(variable), "{name}: {variable} is in the environment");
        }
    }
    // Every declared secret is a file that exists, and is mounted somewhere.
    let declared = compose["secrets"].as_mapping().expect("top-level `secrets:`");
    for (key, value) in declared {
        let secret_name = scalar(key);
        let file = scalar(&value["file"]);
        assert!(
            root().join("deploy/compose").join(&file).is_file(),
            "secret {secret_name}: {file} is missing"
        );
        assert!(
            SERVICES
                .iter()
                .any(|s| words(&service(&compose, s)["secrets"]).contains(&secret_name)),
            "secret {secret_name} is mounted by no service"
        );
    }
}

#[test]
fn redis_keeps_every_accepted_request_and_never_evicts() {
    let command = words(&service(&compose(), "redis")["command"]).join(" ");
    for setting in [
        "--appendonly yes",
        "--appendfsync always",
        "--maxmemory-policy noeviction",
    ] {
        assert!(command.contains(setting), "redis runs `{command}`, without `{setting}`");
    }
}

#[test]
fn mysql_allows_more_connections_than_every_pool_together() {
    let compose = compose();
    let command = words(&service(&compose, "mysql")["command"]);
    let max: u32 = command
        .iter()
        .find_map(|w| w.strip_prefix("--max-connections="))
        .unwrap()
        .parse()
        .unwrap();
    let pools: u32 = APPS
        .iter()
        .map(|name| {
            environment(service(&compose, name))
                .get("DATABASE_MAX_CONNECTIONS")
                .map_or(8, |n| n.parse().unwrap())
        })
        .sum();
    assert!(pools < max, "{pools} pooled connections against max-connections={max}");
}

#[test]
fn applications_start_once_redis_and_mysql_are_healthy() {
    let compose = compose();
    for dependency in ["redis", "mysql"] {
        let test = words(&service(&compose, dependency)["healthcheck"]["test"]);
        assert!(!test.is_empty(), "{dependency} needs a healthcheck to be waited for");
    }
    for name in APPS {
        let conditions = depends_on(service(&compose, name));
        for dependency in ["redis", "mysql"] {
            assert_eq!(
                conditions.get(dependency).map(String::as_str),
                Some("service_healthy"),
                "{name} on {dependency}"
            );
        }
    }
    let lb = depends_on(service(&compose, "lb"));
    for api in ["api1", "api2"] {
        assert_eq!(lb.get(api).map(String::as_str), Some("service_healthy"), "lb on {api}");
    }
}

#[test]
fn health_checks_ask_each_binary_on_its_own_port() {
    let compose = compose();
    for (name, url) in [
        ("api1", "http://127.0.0.1:8080/readyz"),
        ("api2", "http://127.0.0.1:8080/readyz"),
        ("consumer1", "http://127.0.0.1:9464/healthz"),
        ("consumer2", "http://127.0.0.1:9464/healthz"),
    ] {
        let test = words(&service(&compose, name)["healthcheck"]["test"]);
        assert!(test.iter().any(|w| w == url), "{name}: {test:?}");
        assert!(
            test.iter().any(|w| w == "curl"),
            "{name}: the image ships curl for this: {test:?}"
        );
    }
    let runtime = dockerfile_stages().pop().unwrap();
    assert!(
        instructions(&runtime, "RUN").any(|run| run.contains(" curl")),
        "the runtime image installs curl"
    );
}

#[test]
fn the_applications_build_the_image_from_the_repository_root() {
    let compose = compose();
    let compose_dir = root().join("deploy/compose");
    for name in APPS {
        let build = &service(&compose, name)["build"];
        let context = compose_dir.join(scalar(&build["context"])).canonicalize().unwrap();
        assert_eq!(context, root().canonicalize().unwrap(), "{name}");
        assert!(context.join(scalar(&build["dockerfile"])).is_file(), "{name}");
    }
}

#[test]
fn the_runtime_image_runs_both_binaries_as_a_user_that_is_not_root() {
    let stages = dockerfile_stages();
    let builder = &stages[0];
    assert!(instructions(builder, "RUN").any(|r| r.contains("cargo build --release --locked -p api -p consumer")));
    let runtime = stages.last().unwrap();
    assert!(instructions(runtime, "FROM").any(|f| f.starts_with("debian:bookworm-slim")));
    let user = instructions(runtime, "USER")
        .last()
        .expect("a USER in the runtime stage");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "USER {user}");
    let copies: Vec<_> = instructions(runtime, "COPY")
        .filter(|c| c.starts_with("--from="))
        .collect();
    for binary in ["coupon-api", "coupon-consumer"] {
        assert!(
            copies
                .iter()
                .any(|c| c.contains(binary) && c.ends_with("/usr/local/bin/")),
            "{binary}: {copies:?}"
        );
    }
    assert!(instructions(runtime, "CMD").any(|c| c.contains("\"coupon-api\"")));
    let (api, consumer) = (api_variables(), consumer_variables());
    for env in instructions(runtime, "ENV") {
        for pair in env.split_whitespace() {
            let key = pair.split('=').next().unwrap();
            assert!(
                api.contains(key) || consumer.contains(key),
                "ENV {key} is read by neither binary"
            );
        }
    }
}

#[test]
fn the_builder_copies_every_file_the_binaries_embed() {
    let builder = &dockerfile_stages()[0];
    let ignored = read(".dockerignore");
    for (source, embeds, dir) in [
        ("shared/src/db.rs", "sqlx::migrate!(\"../migrations\")", "migrations"),
        ("api/src/script.rs", "include_str!(\"../../lua/issue.lua\")", "lua"),
    ] {
        assert!(
            read(source).contains(embeds),
            "{source} no longer has {embeds}: update this test"
        );
        let copy = format!("{dir}/ {dir}/");
        assert!(
            instructions(builder, "COPY").any(|c| c == copy),
            "the builder lacks COPY {copy}"
        );
        assert!(
            !ignored.lines().any(|l| l.trim().trim_end_matches('/') == dir),
            ".dockerignore drops {dir}"
        );
    }
}

#[test]
fn the_load_balancer_round_robins_over_both_apis_with_keepalive() {
    let text: String = read("deploy/compose/nginx.conf")
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let start = text.find("upstream ").expect("an upstream block");
    let block = &text[start..start + text[start..].find('}').unwrap()];
    let name = block["upstream ".len()..].split_whitespace().next().unwrap();
    let statements: Vec<&str> = block[block.find('{').unwrap() + 1..]
        .split(';')
        .map(str::trim)
        .collect();
    let servers: Vec<&str> = statements.iter().filter_map(|s| s.strip_prefix("server ")).collect();
    assert!(
        servers.iter().any(|s| s.starts_with("api1:8080")) && servers.iter().any(|s| s.starts_with("api2:8080")),
        "{servers:?}"
    );
    for other in ["least_conn", "ip_hash", "hash ", "random"] {
        assert!(
            !statements.iter().any(|s| s.starts_with(other)),
            "round robin, not {other}"
        );
    }
    assert!(
        statements.iter().any(|s| s.starts_with("keepalive ")),
        "keep-alive upstream connections"
    );
    for directive in [
        format!("proxy_pass http://{name};"),
        "proxy_http_version 1.1;".into(),
        "proxy_set_header Connection \"\";".into(),
    ] {
        assert!(text.contains(&directive), "nginx.conf lacks `{directive}`");
    }
    let compose = compose();
    let lb = service(&compose, "lb");
    assert!(words(&lb["volumes"]).iter().any(|v| v.starts_with("./nginx.conf:")));
    assert!(
        words(&lb["ports"]).iter().any(|p| p.ends_with(":8080")),
        "the load balancer is published on 8080"
    );
}

#[test]
fn prometheus_scrapes_both_apis_and_both_consumers() {
    let config: Value = serde_norway::from_str(&read("deploy/compose/prometheus.yml")).unwrap();
    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|group| words(&group["targets"]))
        .collect();
    for target in ["api1:8080", "api2:8080", "consumer1:9464", "consumer2:9464"] {
        assert!(targets.contains(target), "{target} in {targets:?}");
    }
    let compose = compose();
    let prometheus = service(&compose, "prometheus");
    assert!(words(&prometheus["volumes"])
        .iter()
        .any(|v| v.starts_with("./prometheus.yml:")));
}
