//! `coupon-api`: the HTTP API of coupon-rush.
//!
//! A request is validated against the in-process coupon cache, then decided by
//! one Redis Lua script that checks duplicates and quantity, records the user and
//! appends the issue event to the coupon's stream. MySQL is never on that path.
//!
//! # Layout
//! - [`startup`]: `Application::build(config)` binds; `run_until(shutdown)` serves.
//! - [`routes`]: the router and one module per resource.
//! - [`app`]: the shared state and the coupon lookup (cache → Redis → MySQL).
//! - [`cache`]: the in-process coupon metadata cache.
//! - [`script`]: the issue Lua script and its decisions.
//! - [`state`]: publishing and rebuilding a coupon's Redis state.
//! - [`store`]: the API's few MySQL queries (none on the issue path).
//! - [`extract`]: JSON and path extractors that answer with the API's errors.
//! - [`error`]: the one error type and its status codes.
//! - [`http_layer`]: server spans and request metrics.
//! - [`openapi`]: the generated OpenAPI document.
//! - [`config`]: the configuration (env + flags).

pub mod app;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod http_layer;
pub mod openapi;
pub mod routes;
pub mod script;
pub mod startup;
pub mod state;
pub mod store;

pub use config::ApiConfig;
pub use startup::Application;
