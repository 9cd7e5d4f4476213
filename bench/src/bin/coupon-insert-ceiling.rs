//! `coupon-insert-ceiling`: how fast MySQL takes `coupon_issues` rows when
//! nothing but plain batched transactions write them — the ceiling the
//! consumers' drain is measured against (`deploy/bench/run.sh`).
//!
//! It creates one coupon (its issue period already over, so running consumers
//! ignore it) and loads `--rows` rows for it on one connection, `--batch` rows
//! per transaction: one multi-row `INSERT INTO coupon_issues (...) VALUES
//! (...),(...)...`, one `UPDATE coupons SET issued_quantity = issued_quantity + ?
//! WHERE id = ?`, `COMMIT`. What the consumer does besides (locking the coupon
//! row, looking for rows already written, reading and acking the stream) is the
//! difference the ratio shows.
//!
//! With `--consumer-sql` each transaction runs the consumer's own statements
//! instead (`SELECT ... FOR UPDATE` of the coupon row, `SELECT user_id ... IN
//! (...)` of the batch's users, `INSERT IGNORE`, the guarded `UPDATE`): what
//! MySQL alone costs in the consumer's design, without Redis and the consumer
//! process, to tell the two apart.
//!
//! ```sh
//! coupon-insert-ceiling --database-url mysql://root@127.0.0.1:3306/coupon_bench --rows 100000 --batch 256 --json out.json
//! ```

use chrono::{Duration as Days, Utc};
use clap::Parser;
use coupon_bench::program::{self, Runtime};
use serde::Serialize;
use shared::config::DatabaseConfig;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Loads rows with plain batched `INSERT ...; UPDATE ...` transactions and
/// prints the rate.
#[derive(Parser, Debug)]
#[command(name = "coupon-insert-ceiling", version, about, long_about = None)]
struct Args {
    /// MySQL or MariaDB; the database is created and migrated if needed.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "mysql://root@127.0.0.1:3306/coupon_bench"
    )]
    database_url: String,
    /// Rows to load.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    rows: u64,
    /// Rows per transaction (the consumer's `BATCH_SIZE`).
    #[arg(long, default_value_t = 256, value_name = "B")]
    batch: u64,
    /// Run the consumer's statements per transaction instead of the plain two.
    #[arg(long)]
    consumer_sql: bool,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Serialize, Debug)]
struct Outcome {
    coupon_id: i64,
    rows: u64,
    batch: u64,
    /// `plain` (INSERT + UPDATE) or `consumer` (the consumer's four statements).
    statements: &'static str,
    /// Transactions, each one INSERT and one UPDATE (and with `consumer`, two SELECTs).
    transactions: u64,
    insert_statements: u64,
    update_statements: u64,
    /// From the first BEGIN to the last COMMIT.
    elapsed_s: f64,
    rows_per_s: f64,
}

const PROGRAM: &str = "coupon-insert-ceiling";

fn main() -> ExitCode {
    let args = Args::parse();
    if args.rows == 0 || args.batch == 0 || args.batch > 10_000 || i64::try_from(args.rows).is_err() {
        return program::fail(PROGRAM, "--rows must be at least 1 and --batch from 1 to 10000");
    }
    let outcome = match program::block_on(PROGRAM, Runtime::CurrentThread, run(&args)) {
        Ok(outcome) => outcome,
        Err(code) => return code,
    };
    println!(
        "insert ceiling ({} statements): {} rows for coupon {} in {} transactions of {} ({} INSERT + {} UPDATE statements) in {:.3} s: {:.0} rows/s",
        outcome.statements,
        outcome.rows,
        outcome.coupon_id,
        outcome.transactions,
        outcome.batch,
        outcome.insert_statements,
        outcome.update_statements,
        outcome.elapsed_s,
        outcome.rows_per_s
    );
    match args.json.as_deref().map(|path| program::write_json(path, &outcome)) {
        Some(Err(err)) => program::fail(PROGRAM, err),
        _ => ExitCode::SUCCESS,
    }
}

async fn run(args: &Args) -> Result<Outcome, String> {
    let config = DatabaseConfig {
        database_url: args.database_url.clone(),
        database_max_connections: 2,
        run_migrations: true,
    };
    let db = shared::db::connect_and_migrate(&config, Duration::from_secs(10))
        .await
        .map_err(|err| format!("connecting to MySQL: {err}"))?;
    let coupon_id = create_coupon(&db, args.rows)
        .await
        .map_err(|err| format!("creating the coupon: {err}"))?;
    let started = Instant::now();
    let mut loaded = 0u64;
    let mut transactions = 0u64;
    while loaded < args.rows {
        let size = args.batch.min(args.rows - loaded);
        let written = if args.consumer_sql {
            write_batch_as_consumer(&db, coupon_id, loaded, size).await
        } else {
            write_batch(&db, coupon_id, loaded, size).await
        };
        written.map_err(|err| format!("loading rows {}..{}: {err}", loaded + 1, loaded + size))?;
        loaded += size;
        transactions += 1;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(Outcome {
        coupon_id,
        rows: loaded,
        batch: args.batch,
        statements: if args.consumer_sql { "consumer" } else { "plain" },
        transactions,
        insert_statements: transactions,
        update_statements: transactions,
        elapsed_s,
        rows_per_s: if elapsed_s > 0.0 {
            loaded as f64 / elapsed_s
        } else {
            0.0
        },
    })
}

/// A coupon for `quantity` rows whose issue period ended two days ago: the
/// consumers only read coupons that ended less than a day ago.
async fn create_coupon(db: &MySqlPool, quantity: u64) -> Result<i64, sqlx::Error> {
    let now = Utc::now();
    let done = sqlx::query(
        "INSERT INTO coupons (name, total_quantity, issue_start, issue_end) VALUES ('insert ceiling', ?, ?, ?)",
    )
    .bind(quantity)
    .bind(now - Days::days(3))
    .bind(now - Days::days(2))
    .execute(db)
    .await?;
    i64::try_from(done.last_insert_id()).map_err(|_| sqlx::Error::Protocol("coupon id out of range".into()))
}

/// One transaction: rows `first + 1 ..= first + size` (user id = position), then
/// `issued_quantity` raised by the rows inserted.
async fn write_batch(db: &MySqlPool, coupon_id: i64, first: u64, size: u64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = insert_rows("INSERT", coupon_id, users(first, size))
        .build()
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE coupons SET issued_quantity = issued_quantity + ? WHERE id = ?")
        .bind(inserted)
        .bind(coupon_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// One transaction with the consumer's statements (`consumer/src/store.rs`):
/// lock the coupon row, look for the batch's users, `INSERT IGNORE`, guarded
/// `UPDATE`.
async fn write_batch_as_consumer(db: &MySqlPool, coupon_id: i64, first: u64, size: u64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let _room: Option<(i64, i64)> =
        sqlx::query_as("SELECT total_quantity, issued_quantity FROM coupons WHERE id = ? FOR UPDATE")
            .bind(coupon_id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut select = QueryBuilder::new("SELECT user_id FROM coupon_issues WHERE coupon_id = ");
    select.push_bind(coupon_id).push(" AND user_id IN (");
    let mut separated = select.separated(", ");
    for user in users(first, size) {
        separated.push_bind(user);
    }
    select.push(")");
    let _existing: Vec<i64> = select.build_query_scalar().fetch_all(&mut *tx).await?;
    let inserted = insert_rows("INSERT IGNORE", coupon_id, users(first, size))
        .build()
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE coupons SET issued_quantity = issued_quantity + ? WHERE id = ? AND issued_quantity + ? <= total_quantity",
    )
    .bind(inserted)
    .bind(coupon_id)
    .bind(inserted)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The users of the batch `first + 1 ..= first + size`: user id = position.
fn users(first: u64, size: u64) -> impl Iterator<Item = i64> {
    (first + 1..=first + size).map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// `verb` (`INSERT` or `INSERT IGNORE`) of one row per user, position = user
/// id, accepted and issued now.
fn insert_rows(verb: &str, coupon_id: i64, users: impl Iterator<Item = i64>) -> QueryBuilder<MySql> {
    let now = Utc::now();
    let mut insert = QueryBuilder::new(format!(
        "{verb} INTO coupon_issues (coupon_id, user_id, position, accepted_at, issued_at) "
    ));
    insert.push_values(users, |mut row, n| {
        row.push_bind(coupon_id)
            .push_bind(n)
            .push_bind(n)
            .push_bind(now)
            .push_bind(now);
    });
    insert
}
