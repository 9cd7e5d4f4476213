//! The issue Lua scripts, loaded once, called by EVALSHA, reloaded by redis-rs
//! when Redis answers NOSCRIPT (after a restart or flush): `lua/admit.lua`
//! decides a batch of one coupon's requests (the API's path, see
//! [`crate::admission`]); `lua/issue.lua` decides one request (the model the
//! batch is tested against, and the benchmark's best case).

use shared::{CouponKeys, UserId};

/// What the script decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Accepted {
        position: i64,
    },
    AlreadyIssued,
    SoldOut,
    NotStarted,
    Ended,
    Paused,
    /// The coupon's Redis state is gone; rebuild it from MySQL, then ask again.
    StateMissing,
}

/// The script, hashed once at start.
pub struct IssueScript(redis::Script);

impl Default for IssueScript {
    fn default() -> Self {
        Self(redis::Script::new(SOURCE))
    }
}

/// The script's text, shared with the benchmark's ceiling measurement.
pub const SOURCE: &str = include_str!("../../lua/issue.lua");

impl IssueScript {
    /// The SHA1 that EVALSHA calls.
    pub fn sha(&self) -> &str {
        self.0.get_hash()
    }

    /// Runs the decision for `user` and, if accepted, appends `event` to the stream.
    #[tracing::instrument(target = "coupon_rush::trace", name = "EVALSHA issue", skip_all, fields(db.system.name = "redis", db.system = "redis", db.operation.name = "EVALSHA", otel.kind = "client"))]
    pub async fn run(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        keys: &CouponKeys,
        user: UserId,
        event: &[u8],
    ) -> redis::RedisResult<Decision> {
        let started = std::time::Instant::now();
        let reply: (i64, i64) = self
            .0
            .key(&keys.issued)
            .key(&keys.events)
            .key(&keys.meta)
            .arg(user.get())
            .arg(event)
            .invoke_async(redis)
            .await?;
        metrics::histogram!(shared::metrics::SCRIPT_DURATION).record(started.elapsed().as_secs_f64());
        match reply {
            (1, position) => Ok(Decision::Accepted { position }),
            (2, _) => Ok(Decision::AlreadyIssued),
            (3, _) => Ok(Decision::SoldOut),
            (4, _) => Ok(Decision::NotStarted),
            (5, _) => Ok(Decision::Ended),
            (6, _) => Ok(Decision::Paused),
            (0, _) => Ok(Decision::StateMissing),
            _ => Err((
                redis::ErrorKind::UnexpectedReturnType,
                "the issue script answered an unknown code",
            )
                .into()),
        }
    }
}

/// A batch's answers, in the order of its requests, with the coupon's accepted
/// count after it (0 when the batch was refused whole), its quantity and how
/// long its issue period was still open then by Redis' clock (ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub decisions: Vec<Decision>,
    /// `false`: the batch was refused whole (state missing, period, pause).
    pub each: bool,
    pub issued: i64,
    pub total: i64,
    pub open_for_ms: i64,
}

impl Batch {
    /// Whether the batch saw the coupon with every unit accepted.
    pub fn sold_out(&self) -> bool {
        self.total > 0 && self.issued >= self.total
    }
}

/// The batch script (`lua/admit.lua`), hashed once at start.
pub struct BatchScript(redis::Script);

impl Default for BatchScript {
    fn default() -> Self {
        Self(redis::Script::new(include_str!("../../lua/admit.lua")))
    }
}

impl BatchScript {
    /// Decides `requests` (user and issue event, in arrival order) in one call:
    /// each answer is the one `lua/issue.lua` would give them one by one.
    pub async fn run(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        keys: &CouponKeys,
        requests: &[(UserId, &[u8])],
    ) -> redis::RedisResult<Batch> {
        let started = std::time::Instant::now();
        let reply: Vec<i64> = self.invocation(keys, requests).invoke_async(redis).await?;
        metrics::histogram!(shared::metrics::SCRIPT_DURATION).record(started.elapsed().as_secs_f64());
        parse_batch(&reply, requests.len())
    }

    /// [`Self::run`], then `WAIT replicas timeout` in the same pipeline, with
    /// how many replicas acknowledged the batch's writes. One pipeline, so the
    /// `WAIT` goes on the very connection the script's writes went on: after a
    /// reconnect between two separate calls, a `WAIT` on the new connection
    /// (which wrote nothing) would confirm at once writes it never covered.
    pub async fn run_and_wait(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        keys: &CouponKeys,
        requests: &[(UserId, &[u8])],
        replicas: u32,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<(Batch, i64)> {
        let started = std::time::Instant::now();
        let invocation = self.invocation(keys, requests);
        // Saturating: a timeout past u64 milliseconds is as good as none.
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation)
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout_ms);
        let (reply, acked): (Vec<i64>, i64) = match pipe.query_async(redis).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted or was flushed: the script ran nowhere.
                invocation.load_async(redis).await?;
                pipe.query_async(redis).await?
            }
            reply => reply?,
        };
        metrics::histogram!(shared::metrics::SCRIPT_DURATION).record(started.elapsed().as_secs_f64());
        Ok((parse_batch(&reply, requests.len())?, acked))
    }

    fn invocation<'a>(&'a self, keys: &CouponKeys, requests: &[(UserId, &[u8])]) -> redis::ScriptInvocation<'a> {
        let mut call = self.0.key(&keys.issued);
        call.key(&keys.events).key(&keys.meta);
        for (user, event) in requests {
            call.arg(user.get()).arg(*event);
        }
        call
    }
}

fn parse_batch(reply: &[i64], len: usize) -> redis::RedisResult<Batch> {
    let unknown = || -> redis::RedisError {
        (
            redis::ErrorKind::UnexpectedReturnType,
            "the admit script answered an unknown code",
        )
            .into()
    };
    let [code, issued, total, open_for_ms, answers @ ..] = reply else {
        return Err(unknown());
    };
    let whole = match code {
        1 if answers.len() == len => None,
        0 => Some(Decision::StateMissing),
        4 => Some(Decision::NotStarted),
        5 => Some(Decision::Ended),
        6 => Some(Decision::Paused),
        _ => return Err(unknown()),
    };
    let decisions = match whole {
        Some(decision) => vec![decision; len],
        None => answers
            .iter()
            .map(|&answer| match answer {
                -2 => Ok(Decision::AlreadyIssued),
                -3 => Ok(Decision::SoldOut),
                position if position > 0 => Ok(Decision::Accepted { position }),
                _ => Err(unknown()),
            })
            .collect::<redis::RedisResult<_>>()?,
    };
    Ok(Batch {
        each: whole.is_none(),
        decisions,
        issued: *issued,
        total: *total,
        open_for_ms: *open_for_ms,
    })
}
