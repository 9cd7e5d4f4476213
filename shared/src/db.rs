//! MySQL connection pool, database creation and migrations: at start (unless
//! `RUN_MIGRATIONS=false`) so that a fresh MySQL or MariaDB needs no manual step,
//! or apart (`migrate`), so that the services can run as a user without DDL rights.

use crate::config::DatabaseConfig;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Duration;

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("DATABASE_URL must name a database made of letters, digits, `_` or `$`")]
    DatabaseName,
    #[error("MySQL: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrating: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Where the database is, and its name (checked: it is written into DDL).
fn target(config: &DatabaseConfig) -> Result<(MySqlConnectOptions, String), DbSetupError> {
    let options = MySqlConnectOptions::from_str(&config.database_url)?;
    let name = options.get_database().unwrap_or("coupon").to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
        return Err(DbSetupError::DatabaseName);
    }
    Ok((options.database(&name), name))
}

/// Creates the database if it is missing and applies pending migrations (under
/// a lock, so instances starting together are safe), waiting up to `wait` for
/// MySQL to come up: what `RUN_MIGRATIONS` and the `migrate` command do.
pub async fn migrate_database(config: &DatabaseConfig, wait: Duration) -> Result<(), DbSetupError> {
    let (options, name) = target(config)?;
    crate::retry::until(wait, "MySQL", || create_database(&options, &name)).await?;
    let pool = pool_options(config).max_connections(1).connect_with(options).await?;
    let result = migrate(&pool).await;
    pool.close().await;
    result
}

/// Prepares the database as `RUN_MIGRATIONS` says, then returns a pool,
/// waiting up to `wait` for MySQL to come up.
pub async fn connect_and_migrate(config: &DatabaseConfig, wait: Duration) -> Result<MySqlPool, DbSetupError> {
    if config.run_migrations {
        migrate_database(config, wait).await?;
    }
    let (options, _) = target(config)?;
    let pool = pool_options(config);
    Ok(crate::retry::until(wait, "MySQL", || pool.clone().connect_with(options.clone())).await?)
}

/// A pool that connects when first used, so a service can start (and serve
/// what needs no MySQL) while MySQL is down. With `RUN_MIGRATIONS` the database
/// is prepared first if MySQL answers now, else by a background task that
/// retries until it does.
pub async fn connect_lazily(config: &DatabaseConfig) -> Result<MySqlPool, DbSetupError> {
    let (options, _) = target(config)?;
    if config.run_migrations {
        match migrate_database(config, Duration::ZERO).await {
            Err(DbSetupError::Sql(err)) => {
                tracing::warn!(%err, "MySQL is not reachable: serving without it, preparing the database when it is")
            }
            other => return other.map(|()| pool_options(config).connect_lazy_with(options)),
        }
        let config = config.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(500);
            loop {
                match migrate_database(&config, Duration::ZERO).await {
                    Ok(()) => break,
                    Err(err) => tracing::warn!(%err, "preparing the database failed, retrying"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        });
    }
    Ok(pool_options(config).connect_lazy_with(options))
}

/// Applies pending migrations under our own named lock. sqlx takes one too, with
/// `GET_LOCK(.., -1)`, but MariaDB reads a negative timeout as "do not wait", so
/// two instances starting together would both apply the same migration.
async fn migrate(pool: &MySqlPool) -> Result<(), DbSetupError> {
    let mut conn = pool.acquire().await?;
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('coupon_rush_migrations', 60)")
        .fetch_one(&mut *conn)
        .await?;
    if locked != Some(1) {
        return Err(DbSetupError::Sql(sqlx::Error::Protocol(
            "timed out waiting for the migration lock".into(),
        )));
    }
    // `run_direct`: `run` can not be proven `Send` for every lifetime of the
    // connection, and the API migrates in a task of its own.
    let result = MIGRATOR.run_direct(None, &mut *conn, false).await;
    sqlx::query("SELECT RELEASE_LOCK('coupon_rush_migrations')")
        .execute(&mut *conn)
        .await?;
    Ok(result?)
}

/// The pool settings: short acquire timeouts so that an outage turns into errors
/// callers can back off from, not hung tasks.
fn pool_options(config: &DatabaseConfig) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(3))
}

async fn create_database(options: &MySqlConnectOptions, name: &str) -> Result<(), DbSetupError> {
    // `information_schema` exists on every server and every user may open it.
    let mut conn = options.clone().database("information_schema").connect().await?;
    let sql = format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
