//! Randomized fault schedules (see `integration_tests::chaos`): a few fixed
//! seeds on every `cargo test`; `cargo run -p integration-tests --bin chaos`
//! runs as many more as asked. `CHAOS_SEEDS=7,8,9` picks the seeds here.

use integration_tests::chaos::{run_seed, Options};

fn seeds() -> Vec<u64> {
    match std::env::var("CHAOS_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CHAOS_SEEDS is a comma-separated list of numbers")
            })
            .collect(),
        Err(_) => vec![1, 2, 3],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_fault_schedules_keep_every_guarantee() {
    let options = Options::default();
    let mut failed = Vec::new();
    for seed in seeds() {
        let report = run_seed(seed, &options).await;
        eprintln!("{report}");
        if !report.passed() {
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "seeds that broke an invariant: {failed:?} (replay with CHAOS_SEEDS)"
    );
}
