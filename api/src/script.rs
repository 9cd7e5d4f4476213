//! The issue Lua script (`lua/issue.lua`): loaded once, called by EVALSHA,
//! reloaded by redis-rs when Redis answers NOSCRIPT (after a restart or flush).

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
