//! `GET /coupons/{coupon_id}/live`: the remaining count as Server-Sent Events,
//! fed by the coupon's shared ticker ([`crate::live`]).

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::CouponPath;
use crate::live::{Admission, Feed, Snapshot};
use crate::lookup;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a browser's `EventSource` waits before it reconnects after the
/// stream ended (a restart): spread over a few seconds, a crowd that lost its
/// streams at once does not come back at once.
const RECONNECT_AFTER: Duration = Duration::from_millis(2000);

/// The coupon's counts and period, pushed at most every 100 ms while they
/// change, with a comment line as a heartbeat otherwise.
#[utoipa::path(get, path = "/coupons/{coupon_id}/live", params(("coupon_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, content_type = "text/event-stream", body = Snapshot,
            description = "a stream of events, each one `Snapshot` as JSON in its `data`; \
                the first as soon as the coupon is read, then one per change"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad id"),
        (status = 404, body = ErrorBody, description = "`coupon_not_found`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: this instance has as many watchers as \
            `LIVE_MAX_WATCHERS`, or is shutting down; another may take it"),
    ))]
pub async fn live(State(app): State<AppState>, CouponPath(id): CouponPath) -> Result<impl IntoResponse, ApiError> {
    let coupon = lookup::coupon(&app, id).await?;
    let admission = app.live.admit().ok_or(ApiError::Unavailable(
        "this instance has as many live watchers as it takes",
    ))?;
    let watcher = Watcher {
        feed: app.live.watch(&app, coupon),
        stopping: Box::pin(app.live.stopping()),
        _admission: admission,
        first: true,
    };
    let events = stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), watcher))
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(app.live_heartbeat));
    // nginx (and proxies that follow it) would buffer the events otherwise.
    Ok(([("x-accel-buffering", "no")], sse))
}

/// One stream's state; dropping it (the client left) gives its place back.
struct Watcher {
    feed: Feed,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    _admission: Admission,
    /// The first event also tells the browser when to reconnect.
    first: bool,
}

impl Watcher {
    /// The next snapshot as an event: the current one first, then each
    /// change; `None` (the stream ends) on shutdown.
    async fn next(&mut self) -> Option<Event> {
        let snapshot = loop {
            if self.first {
                if let Some(now) = self.feed.borrow_and_update().clone() {
                    break now;
                }
            }
            tokio::select! {
                changed = self.feed.changed() => {
                    // The ticker only leaves when nobody watches: not while we do.
                    changed.ok()?;
                    if let Some(now) = self.feed.borrow_and_update().clone() {
                        break now;
                    }
                }
                () = &mut self.stopping => return None,
            }
        };
        let event = Event::default().json_data(&snapshot).ok()?;
        Some(match std::mem::replace(&mut self.first, false) {
            true => event.retry(RECONNECT_AFTER),
            false => event,
        })
    }
}
