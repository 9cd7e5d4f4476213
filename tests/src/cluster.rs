//! A private Redis Cluster for scale-out tests: three masters and one replica
//! (of the first master), each a `redis-server` with AOF `appendfsync always`,
//! joined with `redis-cli --cluster`.

use crate::servers::PrivateRedis;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivateCluster {
    pub masters: Vec<PrivateRedis>,
    pub replica: PrivateRedis,
}

const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
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

fn node_cmd(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut all = vec!["-p", port.as_str()];
    all.extend_from_slice(args);
    redis_cli(&all)
}

impl PrivateCluster {
    /// Starts the four nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok` and the replica is in sync.
    pub async fn start() -> Self {
        let mut masters = Vec::new();
        for _ in 0..3 {
            masters.push(PrivateRedis::start_with(NODE_ARGS).await);
        }
        let replica = PrivateRedis::start_with(NODE_ARGS).await;
        let addrs: Vec<String> = masters.iter().map(|m| format!("127.0.0.1:{}", m.port())).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.push("--cluster-yes");
        redis_cli(&create);
        let first_id = node_cmd(masters[0].port(), &["CLUSTER", "MYID"]).trim().to_string();
        let replica_addr = format!("127.0.0.1:{}", replica.port());
        redis_cli(&[
            "--cluster",
            "add-node",
            &replica_addr,
            &addrs[0],
            "--cluster-slave",
            "--cluster-master-id",
            &first_id,
        ]);
        let cluster = Self { masters, replica };
        cluster
            .wait("every node to see the cluster ok and the replica in sync", |c| {
                let ports = c.masters.iter().chain([&c.replica]).map(PrivateRedis::port);
                ports
                    .into_iter()
                    .all(|p| node_cmd(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                    && node_cmd(c.replica.port(), &["INFO", "replication"]).contains("master_link_status:up")
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
        let slot: u16 = node_cmd(self.masters[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        serves(self.masters[0].port(), slot)
    }

    /// A manual fail-over of the first master to its replica (`CLUSTER FAILOVER`
    /// on the replica: it waits until the replica has every write, so nothing
    /// acknowledged is lost), waiting until the replica is master and the cluster ok.
    pub async fn fail_over_first_master(&self) {
        node_cmd(self.replica.port(), &["CLUSTER", "FAILOVER"]);
        self.wait("the replica to become master", |c| {
            node_cmd(c.replica.port(), &["ROLE"]).starts_with("master")
                && node_cmd(c.replica.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok")
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
}

/// Whether the master on `port` serves `slot` (per its own CLUSTER SLOTS view).
fn serves(port: u16, slot: u16) -> bool {
    let me = node_cmd(port, &["CLUSTER", "MYID"]).trim().to_string();
    let nodes = node_cmd(port, &["CLUSTER", "NODES"]);
    nodes.lines().filter(|l| l.starts_with(&me)).any(|line| {
        line.split_whitespace().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
        })
    })
}
