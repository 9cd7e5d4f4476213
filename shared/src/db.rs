//! MySQL connection pool, database creation and migrations: at start (unless
//! `RUN_MIGRATIONS=false`) so that a fresh MySQL or MariaDB needs no manual step,
//! or apart (`migrate`), so that the services can run as a user without DDL rights.
//! TLS is asked for in `DATABASE_URL` (`ssl-mode`, `ssl-ca`); sqlx never falls
//! back to plaintext when the mode is `REQUIRED` or a `VERIFY_*` one.

use crate::config::DatabaseConfig;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
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
    /// The TLS DATABASE_URL asks for failed: an untrusted certificate, or a
    /// server without TLS. Waiting does not cure it, so it is never retried.
    #[error(
        "TLS with MySQL failed (does the server have TLS, and is its certificate issued by the CA of \
         `ssl-ca` in DATABASE_URL, for the host in the URL with VERIFY_IDENTITY?): {0}"
    )]
    Tls(sqlx::Error),
    #[error("migrating: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Where the database is, and its name (checked: it is written into DDL).
fn target(config: &DatabaseConfig) -> Result<(MySqlConnectOptions, String), DbSetupError> {
    let options = connect_options(&config.database_url)?;
    let name = options.get_database().unwrap_or("coupon").to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
        return Err(DbSetupError::DatabaseName);
    }
    Ok((options.database(&name), name))
}

/// A TLS failure (an untrusted certificate, a server without TLS when TLS is
/// required): waiting can not cure it.
fn permanent(err: &DbSetupError) -> bool {
    matches!(err, DbSetupError::Tls(_))
}

/// Creates the database if it is missing and applies pending migrations (under
/// a lock, so instances starting together are safe), waiting up to `wait` for
/// MySQL to come up: what `RUN_MIGRATIONS` and the `migrate` command do.
pub async fn migrate_database(config: &DatabaseConfig, wait: Duration) -> Result<(), DbSetupError> {
    let (options, name) = target(config)?;
    crate::retry::until_permanent(wait, "MySQL", || create_database(&options, &name), permanent).await?;
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
    let connect = || async {
        pool.clone()
            .connect_with(options.clone())
            .await
            .map_err(DbSetupError::from)
    };
    crate::retry::until_permanent(wait, "MySQL", connect, permanent).await
}

/// A pool that connects when first used, so a service can start (and serve
/// what needs no MySQL) while MySQL is down. With `RUN_MIGRATIONS` the database
/// is prepared first if MySQL answers now, else by a background task that
/// retries until it does. A TLS failure stops the start at once.
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

/// The options of a `DATABASE_URL`. Without an `ssl-mode` the connection stays
/// plaintext, as it was before TLS was built in: sqlx's own default, PREFERRED,
/// would now try TLS with every server that offers it and fail outright on the
/// self-signed certificates MySQL makes for itself, X.509 v1 on many versions
/// (rustls reads v3 only). TLS is asked for explicitly (`REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`,
/// or `PREFERRED`), and then sqlx never falls back to plaintext.
pub fn connect_options(url: &str) -> Result<MySqlConnectOptions, sqlx::Error> {
    let options = MySqlConnectOptions::from_str(url)?;
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let asks = query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        key.eq_ignore_ascii_case("ssl-mode") || key.eq_ignore_ascii_case("sslmode")
    });
    Ok(if asks {
        options
    } else {
        options.ssl_mode(MySqlSslMode::Disabled)
    })
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
    let mut conn = options
        .clone()
        .database("information_schema")
        .connect()
        .await
        .map_err(|err| {
            let tls = match &err {
                sqlx::Error::Tls(_) => true,
                sqlx::Error::Io(io) => crate::tls::is_tls_failure(io),
                _ => false,
            };
            if tls {
                DbSetupError::Tls(err)
            } else {
                DbSetupError::Sql(err)
            }
        })?;
    let sql = format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> MySqlSslMode {
        connect_options(url).expect("a valid URL").get_ssl_mode()
    }

    #[test]
    fn tls_is_used_when_the_url_asks_for_it_and_only_then() {
        assert!(matches!(mode("mysql://root@db/coupon"), MySqlSslMode::Disabled));
        assert!(matches!(
            mode("mysql://root@db/coupon?ssl-mode=REQUIRED"),
            MySqlSslMode::Required
        ));
        assert!(matches!(
            mode("mysql://root@db/coupon?charset=utf8mb4&sslmode=verify_ca&ssl-ca=/ca.pem"),
            MySqlSslMode::VerifyCa
        ));
        assert!(matches!(
            mode("mysql://root@db/coupon?ssl-mode=PREFERRED"),
            MySqlSslMode::Preferred
        ));
    }
}
