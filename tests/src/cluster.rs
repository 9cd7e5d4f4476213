//! A private Redis Cluster for scale-out tests: three masters and one replica
//! (of the first master), each a `redis-server` with AOF `appendfsync always`,
//! joined with `redis-cli --cluster`; also over TLS only (bus and replication too).

use crate::pki::ServerTls;
use crate::servers::PrivateRedis;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivateCluster {
    pub masters: Vec<PrivateRedis>,
    pub replica: PrivateRedis,
    cli: Cli,
}

const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

/// What a cluster over TLS adds: the bus and the replication links use TLS too.
const TLS_NODE_ARGS: &[&str] = &["--tls-cluster", "yes", "--tls-replication", "yes"];

/// `redis-cli` towards the nodes, over TLS (trusting the test's CA) if they have it.
struct Cli {
    tls_args: Vec<String>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(&self.tls_args)
            .args(args)
            .output()
            .expect("running redis-cli");
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn node(&self, port: u16, args: &[&str]) -> String {
        let port = port.to_string();
        let mut all = vec!["-p", port.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

impl PrivateCluster {
    /// Starts the four nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok` and the replica is in sync.
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// As [`PrivateCluster::start`], every node on a TLS port only, with the
    /// cluster bus and replication over TLS (`rediss://` seeds).
    pub async fn start_tls(tls: &ServerTls) -> Self {
        Self::launch(Some(tls)).await
    }

    async fn launch(tls: Option<&ServerTls>) -> Self {
        let mut args = NODE_ARGS.to_vec();
        if tls.is_some() {
            args.extend_from_slice(TLS_NODE_ARGS);
        }
        let mut masters = Vec::new();
        for _ in 0..3 {
            masters.push(PrivateRedis::start_configured(&args, tls).await);
        }
        let replica = PrivateRedis::start_configured(&args, tls).await;
        let cli = Cli {
            tls_args: tls.map_or_else(Vec::new, |tls| {
                vec!["--tls".into(), "--cacert".into(), tls.ca.display().to_string()]
            }),
        };
        let addrs: Vec<String> = masters.iter().map(|m| format!("127.0.0.1:{}", m.port())).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.push("--cluster-yes");
        cli.run(&create);
        let first_id = cli.node(masters[0].port(), &["CLUSTER", "MYID"]).trim().to_string();
        let replica_addr = format!("127.0.0.1:{}", replica.port());
        cli.run(&[
            "--cluster",
            "add-node",
            &replica_addr,
            &addrs[0],
            "--cluster-slave",
            "--cluster-master-id",
            &first_id,
        ]);
        let cluster = Self { masters, replica, cli };
        cluster
            .wait("every node to see the cluster ok and the replica in sync", |c| {
                let ports = c.masters.iter().chain([&c.replica]).map(PrivateRedis::port);
                ports
                    .into_iter()
                    .all(|p| c.cli.node(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                    && c.cli
                        .node(c.replica.port(), &["INFO", "replication"])
                        .contains("master_link_status:up")
            })
            .await;
        cluster
    }

    /// The seed nodes for `REDIS_CLUSTER_URLS`.
    pub fn seeds(&self) -> Vec<String> {
        self.masters.iter().map(PrivateRedis::url).collect()
    }

    /// Whether `key`'s slot is served by the first master (the one with a replica).
    pub fn on_first_master(&self, key: &str) -> bool {
        let slot: u16 = self
            .cli
            .node(self.masters[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        self.serves(self.masters[0].port(), slot)
    }

    /// A manual fail-over of the first master to its replica (`CLUSTER FAILOVER`
    /// on the replica: it waits until the replica has every write, so nothing
    /// acknowledged is lost), waiting until the replica is master and the cluster ok.
    pub async fn fail_over_first_master(&self) {
        self.cli.node(self.replica.port(), &["CLUSTER", "FAILOVER"]);
        self.wait("the replica to become master", |c| {
            c.cli.node(c.replica.port(), &["ROLE"]).starts_with("master")
                && c.cli
                    .node(c.replica.port(), &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
        })
        .await;
    }

    async fn wait(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the master on `port` serves `slot` (per its own CLUSTER SLOTS view).
    fn serves(&self, port: u16, slot: u16) -> bool {
        let me = self.cli.node(port, &["CLUSTER", "MYID"]).trim().to_string();
        let nodes = self.cli.node(port, &["CLUSTER", "NODES"]);
        nodes.lines().filter(|l| l.starts_with(&me)).any(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            })
        })
    }
}
