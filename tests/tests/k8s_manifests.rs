//! The Kubernetes manifests (`deploy/k8s/`) against the code they run: no
//! cluster is needed, every YAML document is parsed and checked against the
//! binaries' configuration sources, the image and each other.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test helper should panic

use integration_tests::repo_files::{api_variables, consumer_variables, read, root, scalar};
use serde::Deserialize;
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};

const DIR: &str = "deploy/k8s";
const API: &str = "coupon-api";
const CONSUMER: &str = "coupon-consumer";

/// Every YAML document of a file (empty documents dropped).
fn documents(relative: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&read(relative))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

fn int(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: not an integer: {value:?}"))
}

fn kustomization() -> Value {
    documents(&format!("{DIR}/kustomization.yaml")).remove(0)
}

/// Every object the kustomization applies, with the file it comes from.
fn objects() -> Vec<(String, Value)> {
    seq(&kustomization()["resources"])
        .iter()
        .map(scalar)
        .flat_map(|file| {
            documents(&format!("{DIR}/{file}"))
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

fn find<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} `{name}`"))
}

fn of_kind<'a>(objects: &'a [(String, Value)], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().map(|(_, o)| o).filter(move |o| o["kind"] == kind)
}

fn name(object: &Value) -> String {
    scalar(&object["metadata"]["name"])
}

/// A string-to-string mapping (labels, selectors, ConfigMap data).
fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

/// Whether `selector` (matchLabels) picks pods labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(deployment: &Value) -> BTreeMap<String, String> {
    string_map(&deployment["spec"]["template"]["metadata"]["labels"])
}

/// The one container of a Deployment's pods.
fn container(deployment: &Value) -> &Value {
    let containers = seq(&deployment["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "{}: one container", name(deployment));
    &containers[0]
}

/// A port given by name or number, as the container's port number.
fn resolve_port(container: &Value, port: &Value) -> i64 {
    match port {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(port_name) => seq(&container["ports"])
            .iter()
            .find(|p| p["name"] == port_name.as_str())
            .map(|p| int(&p["containerPort"], port_name))
            .unwrap_or_else(|| panic!("no container port named {port_name}")),
        other => panic!("port {other:?}"),
    }
}

/// `(path, port)` of an httpGet probe.
fn probe(container: &Value, which: &str) -> (String, i64) {
    let get = &container[which]["httpGet"];
    assert!(!get.is_null(), "{}: no httpGet {which}", scalar(&container["name"]));
    (scalar(&get["path"]), resolve_port(container, &get["port"]))
}

/// The `env:` entries of a container with literal values (`None` for valueFrom).
fn env(container: &Value) -> BTreeMap<String, Option<String>> {
    seq(&container["env"])
        .iter()
        .map(|e| (scalar(&e["name"]), e.get("value").map(scalar)))
        .collect()
}

/// The port of a `host:port` listen address.
fn listen_port(addr: &str) -> i64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// What the binary a container runs accepts (the binary alone, or one of its
/// operator commands, as the migration Job runs).
fn accepted_by(container: &Value) -> (String, BTreeSet<String>) {
    let command: Vec<String> = seq(&container["command"]).iter().map(scalar).collect();
    let binary = command.first().cloned().unwrap_or_default();
    let accepted = match binary.as_str() {
        API => api_variables(),
        CONSUMER => consumer_variables(),
        other => panic!("the container runs `{other}`, neither {API} nor {CONSUMER}"),
    };
    assert!(
        command.len() == 1 || command[1..] == ["migrate"],
        "{command:?}: the binary, or its migrate command"
    );
    (binary, accepted)
}

/// The keys a ConfigMap (`data`) or Secret (`stringData`/`data`) provides.
fn keys(object: &Value) -> BTreeSet<String> {
    ["data", "stringData"]
        .iter()
        .flat_map(|field| string_map(&object[*field]).into_keys())
        .collect()
}

/// `N` of the first `Duration::from_secs(N)` after `marker` in a source file.
fn seconds_after(source: &str, marker: &str) -> i64 {
    let text = read(source);
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{source} no longer has `{marker}`: update this test"));
    let rest = &text[at..];
    let start = rest.find("Duration::from_secs(").unwrap() + "Duration::from_secs(".len();
    rest[start..start + rest[start..].find(')').unwrap()].parse().unwrap()
}

/// Seconds of a `preStop` `sleep N` (0 when there is none).
fn pre_stop_sleep(container: &Value) -> i64 {
    let command: Vec<String> = seq(&container["lifecycle"]["preStop"]["exec"]["command"])
        .iter()
        .map(scalar)
        .collect();
    match command.as_slice() {
        [] => 0,
        [sleep, n] if sleep == "sleep" => n.parse().unwrap(),
        other => panic!("preStop {other:?}"),
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_each_is_a_named_object() {
    let kustomization = kustomization();
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: Vec<String> = seq(&kustomization["resources"]).iter().map(scalar).collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "listed twice: {listed:?}");
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join(DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(unique, on_disk, "kustomization.yaml resources vs the files in {DIR}");

    let objects = objects();
    let mut seen = BTreeSet::new();
    for (file, object) in &objects {
        for field in ["apiVersion", "kind"] {
            assert!(object[field].is_string(), "{file}: no {field}");
        }
        let id = (scalar(&object["kind"]), name(object));
        assert!(!id.1.is_empty(), "{file}: an object without a name");
        assert!(seen.insert(id.clone()), "{file}: {id:?} defined twice");
    }
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(of_kind(&objects, kind).next().is_some(), "no {kind}");
    }
    // Everything goes into the namespace the kustomization creates.
    let namespace = scalar(&kustomization["namespace"]);
    find(&objects, "Namespace", &namespace);
}

#[test]
fn both_deployments_run_the_image_with_their_binary() {
    let objects = objects();
    let image_name = scalar(&seq(&kustomization()["images"])[0]["name"]);
    let mut images = BTreeSet::new();
    for (deployment, binary, replicas) in [(API, API, 3), (CONSUMER, CONSUMER, 2)] {
        let deployment = find(&objects, "Deployment", deployment);
        let container = container(deployment);
        assert_eq!(accepted_by(container).0, binary);
        assert_eq!(int(&deployment["spec"]["replicas"], binary), replicas, "{binary}");
        // The Deployment's selector picks its own pods.
        let selector = string_map(&deployment["spec"]["selector"]["matchLabels"]);
        assert!(selects(&selector, &pod_labels(deployment)), "{binary}");
        let image = scalar(&container["image"]);
        assert_eq!(
            image.split(':').next().unwrap(),
            image_name,
            "kustomization `images:` renames it"
        );
        images.insert(image);
    }
    assert_eq!(images.len(), 1, "one image with both binaries: {images:?}");
    let dockerfile = read("deploy/docker/Dockerfile");
    for binary in [API, CONSUMER] {
        assert!(dockerfile.contains(&format!("/out/{binary}")), "the image has {binary}");
    }
}

#[test]
fn the_deployments_probe_each_binary_on_its_own_port_and_paths() {
    let objects = objects();

    let api = container(find(&objects, "Deployment", API));
    let listen = env(api)["LISTEN_ADDR"].clone().unwrap();
    assert_eq!(listen, "0.0.0.0:8080", "reachable from the kubelet and the Service");
    let port = listen_port(&listen);
    assert_eq!(probe(api, "readinessProbe"), ("/readyz".into(), port));
    assert_eq!(probe(api, "livenessProbe"), ("/healthz".into(), port));
    assert_eq!(probe(api, "startupProbe"), ("/healthz".into(), port));
    // Start-up waits up to 30 s for MySQL and 30 s for Redis before the port opens.
    let startup = &api["startupProbe"];
    let budget = int(&startup["periodSeconds"], "period") * int(&startup["failureThreshold"], "failures");
    assert!(budget >= 60, "the startup probe allows {budget} s");

    let consumer = container(find(&objects, "Deployment", CONSUMER));
    let metrics = env(consumer)["METRICS_ADDR"].clone().unwrap();
    assert_eq!(
        metrics, "0.0.0.0:9464",
        "the default, loopback, is unreachable from the kubelet"
    );
    let port = listen_port(&metrics);
    assert_eq!(probe(consumer, "livenessProbe"), ("/healthz".into(), port));
    assert_eq!(probe(consumer, "readinessProbe"), ("/readyz".into(), port));
    assert!(
        read("consumer/src/ops_server.rs").contains("\"/readyz\""),
        "the consumer serves the path its readiness probe asks"
    );
}

#[test]
fn every_container_requests_resources_and_caps_its_memory() {
    let objects = objects();
    for deployment in of_kind(&objects, "Deployment") {
        let resources = &container(deployment)["resources"];
        let who = name(deployment);
        for resource in ["cpu", "memory"] {
            assert!(
                resources["requests"][resource].is_string(),
                "{who}: requests.{resource}"
            );
        }
        assert!(resources["limits"]["memory"].is_string(), "{who}: limits.memory");
    }
    let api = &container(find(&objects, "Deployment", API))["resources"];
    assert_eq!(scalar(&api["requests"]["memory"]), "64Mi");
    assert_eq!(scalar(&api["requests"]["cpu"]), "250m");
}

#[test]
fn termination_leaves_time_to_drain_a_batch_and_in_flight_requests() {
    let objects = objects();
    let flush = seconds_after("shared/src/telemetry.rs", "shutdown_with_timeout");

    let consumer = find(&objects, "Deployment", CONSUMER);
    let grace = int(
        &consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "grace",
    );
    let batch = seconds_after("consumer/src/worker/run.rs", "const SHUTDOWN_GRACE");
    assert!(
        grace >= 10 && grace >= batch + flush + pre_stop_sleep(container(consumer)),
        "consumer: {grace} s for a {batch} s batch grace and a {flush} s span flush"
    );

    let api = find(&objects, "Deployment", API);
    let grace = int(
        &api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "grace",
    );
    let pre_stop = pre_stop_sleep(container(api));
    assert!(pre_stop >= 2, "the Service stops routing to the pod before SIGTERM");
    let api_config = string_map(&find(&objects, "ConfigMap", "coupon-rush-api")["data"]);
    let request_ms: i64 = api_config["REQUEST_TIMEOUT_MS"].parse().unwrap();
    let request = (request_ms + 999) / 1000;
    assert!(
        grace >= pre_stop + request + flush,
        "api: {grace} s for {pre_stop} s preStop + {request} s requests + {flush} s flush"
    );
    // `sleep` must exist in the image: the runtime stage is Debian, not distroless.
    assert!(read("deploy/docker/Dockerfile").contains("FROM debian:bookworm-slim AS runtime"));
}

#[test]
fn a_disruption_budget_covers_each_deployment_and_nothing_else() {
    let objects = objects();
    let deployments: Vec<&Value> = of_kind(&objects, "Deployment").collect();
    for deployment in &deployments {
        let labels = pod_labels(deployment);
        let budgets: Vec<&Value> = of_kind(&objects, "PodDisruptionBudget")
            .filter(|pdb| selects(&string_map(&pdb["spec"]["selector"]["matchLabels"]), &labels))
            .collect();
        assert_eq!(budgets.len(), 1, "{}: one PDB", name(deployment));
        let spec = &budgets[0]["spec"];
        let replicas = int(&deployment["spec"]["replicas"], "replicas");
        match (spec.get("maxUnavailable"), spec.get("minAvailable")) {
            (Some(max), None) => assert!(int(max, "maxUnavailable") >= 1, "a drain must be possible"),
            (None, Some(min)) => assert!(int(min, "minAvailable") < replicas, "a drain must be possible"),
            other => panic!("{}: one of maxUnavailable / minAvailable: {other:?}", name(deployment)),
        }
    }
    for pdb in of_kind(&objects, "PodDisruptionBudget") {
        let selector = string_map(&pdb["spec"]["selector"]["matchLabels"]);
        let matched = deployments
            .iter()
            .filter(|d| selects(&selector, &pod_labels(d)))
            .count();
        assert_eq!(matched, 1, "PDB {} selects {matched} Deployments", name(pdb));
    }
}

/// The Secrets a pod's volume `volume` projects or is, by name.
fn volume_secrets(deployment: &Value, volume: &str) -> Vec<String> {
    let volumes = seq(&deployment["spec"]["template"]["spec"]["volumes"]);
    let volume = volumes
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap_or_else(|| panic!("{}: no volume {volume}", name(deployment)));
    let mut secrets: Vec<String> = seq(&volume["projected"]["sources"])
        .iter()
        .filter(|source| source.get("secret").is_some())
        .map(|source| scalar(&source["secret"]["name"]))
        .collect();
    if let Some(secret) = volume.get("secret") {
        secrets.push(scalar(&secret["secretName"]));
    }
    secrets
}

/// The Secret `X_FILE`'s path reaches through a volume mount: the path is
/// `MOUNT/X` and one of the Secrets of that mount's volume has the key `X`.
fn secret_behind_file(objects: &[(String, Value)], deployment: &Value, variable: &str, path: &str) -> String {
    let key = variable.strip_suffix("_FILE").unwrap();
    let (dir, file) = path.rsplit_once('/').unwrap();
    assert_eq!(file, key, "{variable}={path}: the file is named after the key");
    let mount = seq(&container(deployment)["volumeMounts"])
        .iter()
        .find(|m| scalar(&m["mountPath"]) == dir)
        .unwrap_or_else(|| panic!("{variable}={path}: nothing is mounted at {dir}"));
    assert_eq!(mount["readOnly"], true, "{dir}");
    volume_secrets(deployment, &scalar(&mount["name"]))
        .into_iter()
        .find(|secret| keys(find(objects, "Secret", secret)).contains(key))
        .unwrap_or_else(|| panic!("{variable}={path}: no Secret of the volume has the key {key}"))
}

#[test]
fn every_variable_given_to_a_binary_is_one_it_reads() {
    let objects = objects();
    let mut referenced = BTreeSet::new();
    for deployment in of_kind(&objects, "Deployment") {
        let container = container(deployment);
        let (binary, accepted) = accepted_by(container);
        assert!(accepted.contains("REDIS_CLUSTER_URLS_FILE"), "{accepted:?}");
        let literal = env(container);
        let mut given: BTreeSet<String> = literal.keys().cloned().collect();
        for source in seq(&container["envFrom"]) {
            assert!(
                source.get("secretRef").is_none(),
                "{binary}: a Secret as variables; mount it and give *_FILE"
            );
            let reference = &source["configMapRef"];
            assert!(source.get("prefix").is_none(), "{binary}: envFrom with a prefix");
            let object_name = scalar(&reference["name"]);
            given.extend(keys(find(&objects, "ConfigMap", &object_name)));
            referenced.insert(("ConfigMap".to_string(), object_name));
        }
        for (variable, value) in &literal {
            if variable.ends_with("_FILE") && variable.as_str() != "REDIS_CA_FILE" {
                let path = value.as_deref().unwrap_or_else(|| panic!("{variable}: a literal path"));
                let secret = secret_behind_file(&objects, deployment, variable, path);
                referenced.insert(("Secret".to_string(), secret));
            }
        }
        for volume in seq(&deployment["spec"]["template"]["spec"]["volumes"]) {
            if let Some(config_map) = volume.get("configMap") {
                referenced.insert(("ConfigMap".to_string(), scalar(&config_map["name"])));
            }
        }
        let unknown: Vec<_> = given.difference(&accepted).collect();
        assert!(
            unknown.is_empty(),
            "{binary} is given {unknown:?}, which it does not read"
        );
        for needed in [
            "DATABASE_URL_FILE",
            "REDIS_CLUSTER_URLS_FILE",
            "OTEL_SERVICE_NAME",
            "RUST_LOG",
        ] {
            assert!(given.contains(needed), "{binary} is not given {needed}");
        }
        for secret in ["DATABASE_URL", "REDIS_CLUSTER_URLS", "REDIS_URL", "ADMIN_TOKEN"] {
            assert!(!given.contains(secret), "{binary} is given {secret} as a variable");
        }
        assert_eq!(env(container)["OTEL_SERVICE_NAME"].as_deref(), Some(binary.as_str()));
    }
    for job in of_kind(&objects, "Job") {
        let (binary, accepted) = accepted_by(container(job));
        for (variable, value) in env(container(job)) {
            assert!(
                accepted.contains(&variable),
                "{binary} (Job {}) is given {variable}",
                name(job)
            );
            if variable.ends_with("_FILE") {
                let path = value.unwrap_or_else(|| panic!("{variable}: a literal path"));
                referenced.insert((
                    "Secret".to_string(),
                    secret_behind_file(&objects, job, &variable, &path),
                ));
            }
        }
    }
    assert!(
        referenced.contains(&("Secret".to_string(), "coupon-rush-api".to_string())),
        "ADMIN_TOKEN_FILE reaches the API's Secret"
    );
    // Every ConfigMap and Secret is used.
    for kind in ["ConfigMap", "Secret"] {
        for object in of_kind(&objects, kind) {
            assert!(
                referenced.contains(&(kind.to_string(), name(object))),
                "{kind} {} is used by no Deployment or Job",
                name(object)
            );
        }
    }
}

#[test]
fn the_api_verifies_user_tokens_with_the_jwks_mounted_where_auth_jwks_file_points() {
    let objects = objects();
    let api = find(&objects, "Deployment", API);
    let settings = find(&objects, "ConfigMap", "coupon-rush-api");
    let path = scalar(&settings["data"]["AUTH_JWKS_FILE"]);
    for claim in ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"] {
        assert!(settings["data"].get(claim).is_some(), "{claim} is checked");
    }
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = seq(&container(api)["volumeMounts"])
        .iter()
        .find(|m| scalar(&m["mountPath"]) == dir)
        .unwrap_or_else(|| panic!("AUTH_JWKS_FILE={path}: nothing is mounted at {dir}"));
    assert_eq!(mount["readOnly"], true);
    let volume = seq(&api["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let jwks = find(&objects, "ConfigMap", &scalar(&volume["configMap"]["name"]));
    let document: serde_json::Value = serde_json::from_str(&scalar(&jwks["data"][file])).expect("the JWKS is JSON");
    let keys = document["keys"].as_array().expect("a JWKS has `keys`");
    assert!(
        !keys.is_empty() && keys.iter().all(|key| key["kid"].is_string()),
        "{document}"
    );
}

#[test]
fn the_consumers_are_members_of_one_group_named_after_their_pods() {
    let objects = objects();
    let consumer = container(find(&objects, "Deployment", CONSUMER));
    let name_var = seq(&consumer["env"])
        .iter()
        .find(|e| e["name"] == "CONSUMER_NAME")
        .expect("CONSUMER_NAME");
    assert_eq!(name_var["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let config = string_map(&find(&objects, "ConfigMap", "coupon-rush-consumer")["data"]);
    assert_eq!(config["CONSUMER_GROUP"], "coupon-issuers");
    let batch: u32 = config["BATCH_SIZE"].parse().unwrap();
    assert!((1..=1000).contains(&batch), "BATCH_SIZE {batch}");
}

#[test]
fn config_values_are_strings_and_secrets_stay_out_of_configmaps() {
    let objects = objects();
    for kind in ["ConfigMap", "Secret"] {
        for object in of_kind(&objects, kind) {
            for field in ["data", "stringData"] {
                if let Some(map) = object[field].as_mapping() {
                    for (key, value) in map {
                        // A bare 8 or true is refused by the API server.
                        assert!(value.is_string(), "{kind} {}: {key:?} is not a string", name(object));
                    }
                }
            }
        }
    }
    for config in of_kind(&objects, "ConfigMap") {
        for (key, value) in string_map(&config["data"]) {
            assert!(
                !["TOKEN", "PASSWORD", "DATABASE_URL"].iter().any(|s| key.contains(s)),
                "{key} belongs in a Secret"
            );
            for url in value.split(',').filter(|v| v.contains("://")) {
                let rest = &url[url.find("://").unwrap() + 3..];
                let userinfo = rest.split('/').next().unwrap().rsplit_once('@').map_or("", |(u, _)| u);
                assert!(
                    !userinfo.contains(':'),
                    "{key}: a password in a ConfigMap: move it to a Secret"
                );
            }
        }
    }
    // A managed cluster is reached over TLS, its password in the Secret.
    let seeds = string_map(&find(&objects, "Secret", "coupon-rush-redis")["stringData"])["REDIS_CLUSTER_URLS"].clone();
    assert!(seeds.split(',').count() >= 2, "{seeds}");
    assert!(seeds.split(',').all(|s| s.trim().starts_with("rediss://")), "{seeds}");
    // The placeholders are in Secrets written as stringData, marked to be replaced.
    for secret in of_kind(&objects, "Secret") {
        let values = string_map(&secret["stringData"]);
        assert!(!values.is_empty(), "Secret {}: stringData", name(secret));
        for (key, value) in values {
            assert!(
                value.contains("REPLACE_ME"),
                "Secret {}: {key} is no placeholder",
                name(secret)
            );
        }
    }
    let database = string_map(&find(&objects, "Secret", "coupon-rush-database")["stringData"]);
    assert!(database["DATABASE_URL"].starts_with("mysql://"));
    assert!(
        database["DATABASE_URL"].contains("ssl-mode=VERIFY_IDENTITY"),
        "a managed MySQL is reached over TLS with its certificate checked"
    );
}

#[test]
fn the_pods_run_as_the_image_user_with_nothing_more() {
    let objects = objects();
    let dockerfile = read("deploy/docker/Dockerfile");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap();
    let uid: i64 = user.split(':').next().unwrap().trim().parse().unwrap();
    for deployment in of_kind(&objects, "Deployment") {
        let who = name(deployment);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{who}");
        assert_eq!(int(&pod["securityContext"]["runAsUser"], "runAsUser"), uid, "{who}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{who}");
        let security = &container(deployment)["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{who}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{who}");
        let dropped: Vec<String> = seq(&security["capabilities"]["drop"]).iter().map(scalar).collect();
        assert_eq!(dropped, ["ALL"], "{who}");
        assert!(security["capabilities"]["add"].is_null(), "{who}");
    }
}

#[test]
fn the_service_sends_port_80_to_the_api_pods_only() {
    let objects = objects();
    let service = find(&objects, "Service", API);
    let selector = string_map(&service["spec"]["selector"]);
    let api = find(&objects, "Deployment", API);
    assert!(selects(&selector, &pod_labels(api)), "{selector:?}");
    let consumer = find(&objects, "Deployment", CONSUMER);
    assert!(
        !selects(&selector, &pod_labels(consumer)),
        "the Service must not reach consumers"
    );
    let ports = seq(&service["spec"]["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(int(&ports[0]["port"], "port"), 80);
    let target = resolve_port(container(api), &ports[0]["targetPort"]);
    assert_eq!(target, 8080);
    let annotations = string_map(&service["metadata"]["annotations"]);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"].parse::<i64>().unwrap(), target);
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    // The consumers have no Service: their pods carry the scrape annotations.
    let pod = string_map(&consumer["spec"]["template"]["metadata"]["annotations"]);
    assert_eq!(pod["prometheus.io/port"], "9464");
}

#[test]
fn the_autoscaler_keeps_mysql_connections_below_the_default_limit() {
    let objects = objects();
    let hpa = find(&objects, "HorizontalPodAutoscaler", API);
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (scalar(&target["kind"]), scalar(&target["name"])),
        ("Deployment".into(), API.into())
    );
    let api = find(&objects, "Deployment", API);
    assert_eq!(
        int(&hpa["spec"]["minReplicas"], "minReplicas"),
        int(&api["spec"]["replicas"], "replicas")
    );
    let pool: i64 = string_map(&find(&objects, "ConfigMap", "coupon-rush-common")["data"])["DATABASE_MAX_CONNECTIONS"]
        .parse()
        .unwrap();
    let consumers = int(&find(&objects, "Deployment", CONSUMER)["spec"]["replicas"], "replicas");
    let most = (int(&hpa["spec"]["maxReplicas"], "maxReplicas") + consumers) * pool;
    // MySQL's default max_connections is 151 (deploy/k8s/README.md says so).
    assert!(most < 151, "{most} pooled connections at the most");
    assert!(read(&format!("{DIR}/README.md")).contains(&format!("= {most} with these files")));
}

#[test]
fn the_readme_says_how_to_apply_and_what_the_managed_services_need() {
    let readme = read(&format!("{DIR}/README.md"));
    for needed in [
        "kubectl apply -k deploy/k8s",
        "REPLACE_ME",
        "REDIS_CLUSTER_URLS",
        "appendfsync always",
        "noeviction",
        "{coupon_id}",
        "max_connections",
        "MySQL 8.0.16",
        "MariaDB 10.6",
    ] {
        assert!(readme.contains(needed), "deploy/k8s/README.md lacks `{needed}`");
    }
}

#[test]
fn migrations_run_as_a_job_with_its_own_ddl_user_and_the_services_without() {
    let objects = objects();
    let job = find(&objects, "Job", "coupon-rush-migrate");
    let command: Vec<String> = seq(&container(job)["command"]).iter().map(scalar).collect();
    assert_eq!(command, ["coupon-api", "migrate"]);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    let job_env = env(container(job));
    let path = job_env["DATABASE_URL_FILE"].clone().expect("a path");
    let job_secret = secret_behind_file(&objects, job, "DATABASE_URL_FILE", &path);
    for deployment in of_kind(&objects, "Deployment") {
        let path = env(container(deployment))["DATABASE_URL_FILE"].clone().expect("a path");
        let secret = secret_behind_file(&objects, deployment, "DATABASE_URL_FILE", &path);
        assert_ne!(
            secret,
            job_secret,
            "{}: the services' user is not the migration user",
            name(deployment)
        );
    }
    let common = find(&objects, "ConfigMap", "coupon-rush-common");
    assert_eq!(common["data"]["RUN_MIGRATIONS"], "false");
}
