//! Creates many coupons through `POST /coupons`, a fixed number in flight at
//! once, the way a marketplace's sellers would: every coupon goes through the
//! API's own path (MySQL row, Redis state, cache).

use super::cli::Fleet;
use crate::client::Api;
use anyhow::Context as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// The coupons made and how long it took.
#[derive(Debug, serde::Serialize)]
pub struct Created {
    /// In id order.
    pub ids: Vec<i64>,
    pub quantity: i64,
    pub concurrency: usize,
    pub seconds: f64,
    pub per_second: f64,
}

impl Created {
    pub fn line(&self) -> String {
        format!(
            "created {} coupons (ids {}..={}) in {:.1} s: {:.0}/s at concurrency {}",
            self.ids.len(),
            self.ids.first().copied().unwrap_or(0),
            self.ids.last().copied().unwrap_or(0),
            self.seconds,
            self.per_second,
            self.concurrency
        )
    }

    /// The first and last id, when they are exactly the created ones (ids
    /// `first..=last` and no other): what the range reads of `rows` need.
    pub fn contiguous(&self) -> Option<(i64, i64)> {
        let (&first, &last) = (self.ids.first()?, self.ids.last()?);
        (usize::try_from(last - first).ok()? + 1 == self.ids.len()).then_some((first, last))
    }
}

/// Creates `fleet.count` coupons; the first failure ends the run.
pub async fn run(api: &Api, token: &str, fleet: &Fleet) -> anyhow::Result<Created> {
    anyhow::ensure!(
        !token.is_empty(),
        "--admin-token (or ADMIN_TOKEN) is needed to create coupons"
    );
    anyhow::ensure!(fleet.concurrency > 0, "--concurrency must be at least 1");
    let open_for = chrono::Duration::try_milliseconds((fleet.open_hours * 3_600_000.0) as i64)
        .filter(|d| *d > chrono::Duration::zero())
        .context("--open-hours must be a positive number of hours")?;
    // A name per run, so coupons of several runs in one database are told apart.
    let run = crate::cli::default_user_offset() / 1_000_000;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..fleet.concurrency.min(fleet.count.max(1)) {
        let (api, token, next, fleet) = (api.clone(), token.to_string(), Arc::clone(&next), *fleet);
        workers.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= fleet.count {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let name = format!("coupon-fleet {run} #{}", n + 1);
                let id = api
                    .create_coupon_open_for(&token, &name, fleet.quantity, open_for)
                    .await
                    .with_context(|| format!("creating coupon #{}", n + 1))?;
                ids.push(id);
            }
        });
    }
    let mut ids = Vec::with_capacity(fleet.count);
    while let Some(joined) = workers.join_next().await {
        ids.extend(joined??);
    }
    ids.sort_unstable();
    let seconds = started.elapsed().as_secs_f64();
    Ok(Created {
        per_second: if seconds > 0.0 { ids.len() as f64 / seconds } else { 0.0 },
        ids,
        quantity: fleet.quantity,
        concurrency: fleet.concurrency,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(ids: Vec<i64>) -> Created {
        Created {
            ids,
            quantity: 1,
            concurrency: 1,
            seconds: 1.0,
            per_second: 1.0,
        }
    }

    #[test]
    fn only_a_gapless_run_of_ids_is_a_range() {
        assert_eq!(created(vec![4, 5, 6]).contiguous(), Some((4, 6)));
        assert_eq!(created(vec![4, 6]).contiguous(), None);
        assert_eq!(created(vec![]).contiguous(), None);
    }
}
