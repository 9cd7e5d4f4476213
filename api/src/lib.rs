//! `coupon-api`: the HTTP API of coupon-rush.
//!
//! A request is validated against the in-process coupon cache, then decided
//! with the other requests for its coupon that arrived meanwhile by one Redis
//! Lua script call that checks duplicates and quantity, records the users and
//! appends their issue events to the coupon's stream ([`admission`]), or, once
//! the coupon is sold out, by this process alone. MySQL is never on that path.
//!
//! # Layout
//! - [`startup`]: `Application::build(config)` binds; `run_until(shutdown)` serves.
//! - [`routes`]: the router, declared once per route, and one module per resource.
//! - [`app`]: the shared state.
//! - [`lookup`]: finding a coupon (memory → Redis → MySQL).
//! - [`rebuild`]: publishing a new coupon's Redis state, and rebuilding a lost
//!   one from MySQL in the background, fenced by the commit lease.
//! - [`live`]: the live counters: one shared ticker per watched coupon, the
//!   watcher bound, the end of every stream on shutdown.
//! - [`admission`]: batching a coupon's requests into one script call, the
//!   sold-out memory, `WAIT` for replicas.
//! - [`script`]: the issue Lua scripts and their decisions.
//! - [`identity`]: who asks: a verified JWT's `sub`, or the trusted caller's word.
//! - [`limits`]: per-user and per-client rate limits, in bounded memory.
//! - [`caller`]: a request's token and client address, and the checks made of
//!   them before Redis.
//! - [`status`]: where a user's accepted request stands, from Redis (MySQL once
//!   Redis no longer holds the coupon).
//! - [`waiters`]: the status long-polls, their bound and the subscription that wakes them.
//! - [`store`]: creating coupons and the MySQL status query (neither on the issue path).
//! - [`extract`]: JSON, path and admin-token extractors that answer with the API's errors.
//! - [`error`]: the one error type and its status codes.
//! - [`http_layer`]: server spans, request metrics, logging of failures.
//! - [`openapi`]: the OpenAPI document, generated from the route declarations.
//! - [`config`]: the configuration (env + flags).

pub mod admission;
pub mod amend;
pub mod app;
pub mod caller;
pub mod config;
pub mod error;
pub mod extract;
pub mod http_layer;
pub mod identity;
pub mod limits;
pub mod live;
pub mod lookup;
pub mod openapi;
pub mod rebuild;
pub mod routes;
pub mod script;
pub mod serve;
pub mod startup;
pub mod status;
pub mod store;
pub mod waiters;

pub use config::{ApiConfig, Cli, Command};
pub use startup::Application;
