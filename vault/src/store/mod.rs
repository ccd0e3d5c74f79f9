//! Persistence: linked accounts (sealed tokens), pending linking states,
//! connect tickets and the audit trail, on SQLite (one process) or
//! PostgreSQL (shared by replicas). The SQL is shared; the `$n` placeholders
//! work on both.

mod schema;
mod upgrade;

pub use upgrade::Upgrade;

use crate::seal::Sealed;
use crate::subject::User;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, PgPool, Postgres, Row, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// A database error, already stripped to what may be logged.
#[derive(Debug)]
pub struct StoreError(String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx errors never contain bound values, only SQL state and messages.
        StoreError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The connected database.
#[derive(Clone, Debug)]
pub enum Store {
    /// A SQLite file (or memory) database.
    Sqlite(SqlitePool),
    /// A PostgreSQL database, possibly shared by several vault replicas.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

// After `on_pool!`, which it uses.
mod ciba;
mod tickets;

pub use ciba::{CibaRequest, CibaStatus};
pub use tickets::ConnectTicket;

const LINK_COLUMNS: &str =
    "issuer, sub, connection, refresh_key_id, refresh_sealed, access_key_id, \
     access_sealed, access_expires_at, scope, broken, version";

macro_rules! link_from_row {
    ($row:expr) => {{
        let row = $row;
        let access_key: Option<String> = row.try_get("access_key_id")?;
        let access_blob: Option<Vec<u8>> = row.try_get("access_sealed")?;
        let access_exp: Option<i64> = row.try_get("access_expires_at")?;
        let broken: i64 = row.try_get("broken")?;
        Link {
            user: User {
                issuer: row.try_get("issuer")?,
                sub: row.try_get("sub")?,
            },
            connection: row.try_get("connection")?,
            refresh: Sealed {
                key_id: row.try_get("refresh_key_id")?,
                blob: row.try_get("refresh_sealed")?,
            },
            access: match (access_key, access_blob, access_exp) {
                (Some(key_id), Some(blob), Some(expires_at)) => Some(CachedAccess {
                    sealed: Sealed { key_id, blob },
                    expires_at,
                }),
                _ => None,
            },
            scope: row.try_get("scope")?,
            broken: broken != 0,
            version: row.try_get("version")?,
        }
    }};
}

macro_rules! audit_from_row {
    () => {
        |r| {
            Ok::<_, sqlx::Error>(AuditEntry {
                at: r.try_get("at")?,
                issuer: r.try_get("issuer")?,
                sub: r.try_get("sub")?,
                agent: r.try_get("agent")?,
                connection: r.try_get("connection")?,
                outcome: r.try_get("outcome")?,
            })
        }
    };
}

/// A linked upstream account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The user (`iss` and `sub` of their verified token).
    pub user: User,
    /// The connection name.
    pub connection: String,
    /// The sealed upstream refresh token.
    pub refresh: Sealed,
    /// The sealed cached upstream access token, if any.
    pub access: Option<CachedAccess>,
    /// Scope granted by the upstream.
    pub scope: Option<String>,
    /// The upstream refused the refresh token: the user must reconnect.
    pub broken: bool,
    /// Bumped on every write; conditional updates compare it.
    pub version: i64,
}

/// A cached upstream access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAccess {
    /// The sealed token.
    pub sealed: Sealed,
    /// Unix time it expires at.
    pub expires_at: i64,
}

/// What a completed linking flow or a refresh writes.
#[derive(Debug, Clone)]
pub struct TokenWrite {
    /// A new sealed refresh token (rotation), or `None` to keep the stored one.
    pub refresh: Option<Sealed>,
    /// The new access token.
    pub access: CachedAccess,
    /// Scope granted.
    pub scope: Option<String>,
}

/// A pending account-linking flow, keyed by its `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLink {
    /// The `state` sent to the upstream.
    pub state: String,
    /// The user linking an account.
    pub user: User,
    /// The connection being linked.
    pub connection: String,
    /// The sealed PKCE code verifier.
    pub verifier: Sealed,
    /// Unix time after which the state is refused.
    pub expires_at: i64,
}

/// One audit row. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix time.
    pub at: i64,
    /// The user's issuer, or empty when the subject token was not verified.
    pub issuer: String,
    /// The user, or empty when the subject token was not verified.
    pub sub: String,
    /// The agent (`azp`/`client_id` of the subject token).
    pub agent: Option<String>,
    /// The connection asked for.
    pub connection: Option<String>,
    /// The outcome code, e.g. `issued_cached`.
    pub outcome: String,
}

/// Which audit rows [`Store::query_audit`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only rows of users of this issuer.
    pub issuer: Option<String>,
    /// Only rows of users with this `sub` (at any issuer unless `issuer`
    /// is set too).
    pub sub: Option<String>,
    /// Only rows for this connection.
    pub connection: Option<String>,
    /// Only rows at or after this Unix time.
    pub since: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

/// Connect tickets are kept this long past their expiry before they are
/// purged, so a replica whose clock runs behind still finds them spent.
pub const SPENT_TICKET_GRACE_SECONDS: i64 = 300;

/// A linked account held for refreshing. On PostgreSQL the row is locked
/// (`SELECT … FOR UPDATE`) until the lease is finished or dropped, so two
/// replicas never spend the same rotating refresh token.
pub struct LinkLease {
    link: Link,
    tx: Option<Transaction<'static, Postgres>>,
    store: Store,
}

/// Audit rows per multi-row `INSERT` (6 parameters each).
pub const AUDIT_ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO audit … VALUES (…), (…)` for `rows` rows.
fn audit_insert_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO audit (at, issuer, sub, agent, connection, outcome) VALUES ");
    for row in 0..rows {
        let n = row * 6;
        if row > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=6).map(|i| format!("${}", n + i)).collect();
        sql.push_str(&format!("({})", params.join(", ")));
    }
    sql
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("23505") | Some("42P06")))
}

impl Store {
    /// Connects and creates the tables (or checks they are current: a
    /// database that needs an upgrade with rows to carry over is refused,
    /// see [`Store::connect_upgrading`]). `database_url` is `sqlite://…`,
    /// `sqlite::memory:`, a plain file path, or `postgres://…`.
    pub async fn connect(database_url: &str, schema: Option<&str>) -> Result<Store> {
        Store::connect_upgrading(database_url, schema, &Upgrade::default()).await
    }

    /// Connects, then creates the tables or upgrades them to the current
    /// schema version (see [`Upgrade`]).
    pub async fn connect_upgrading(
        database_url: &str,
        schema: Option<&str>,
        upgrade: &Upgrade<'_>,
    ) -> Result<Store> {
        let store = if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            let opts = PgConnectOptions::from_str(database_url)?;
            let mut pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10));
            if let Some(schema) = schema {
                if schema.is_empty()
                    || !schema
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(StoreError(format!(
                        "database_schema {schema:?} must be [A-Za-z0-9_]+"
                    )));
                }
                let mut conn = opts.connect().await?;
                let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
                if let Err(e) = conn.execute(create.as_str()).await {
                    // Two replicas creating the schema at once: one loses the race, harmlessly.
                    if !is_unique_violation(&e) {
                        return Err(e.into());
                    }
                }
                conn.close().await?;
                let set = format!("SET search_path TO \"{schema}\"");
                pool = pool.after_connect(move |conn, _| {
                    let set = set.clone();
                    Box::pin(async move { conn.execute(set.as_str()).await.map(|_| ()) })
                });
            }
            Store::Postgres(pool.connect_with(opts).await?)
        } else {
            let opts = if database_url.starts_with("sqlite:") {
                SqliteConnectOptions::from_str(database_url)?
            } else {
                SqliteConnectOptions::new().filename(database_url)
            };
            let memory = database_url.contains(":memory:");
            let opts = opts
                .create_if_missing(true)
                .journal_mode(if memory {
                    SqliteJournalMode::Memory
                } else {
                    SqliteJournalMode::Wal
                })
                // WAL + NORMAL: a commit is durable against a process crash
                // (it is in the WAL) but not against power loss or an OS
                // crash until the next checkpoint; see README "Performance".
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            // WAL readers run in parallel; writers take turns anyway.
            let pool = SqlitePoolOptions::new().max_connections(if memory { 1 } else { 8 });
            Store::Sqlite(pool.connect_with(opts).await?)
        };
        if let Err(e) = store.prepare_tables(upgrade).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => pool.execute("SELECT 1").await.map(|_| ())?);
        Ok(())
    }

    /// Closes every connection (SQLite checkpoints its WAL on the last close).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    /// Which backend this is (`sqlite` or `postgres`).
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The linked account of `user` at `connection`.
    pub async fn find_link(&self, user: &User, connection: &str) -> Result<Option<Link>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE issuer = $1 AND sub = $2 AND connection = $3"
        );
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(&user.issuer).bind(&user.sub).bind(connection)
                .fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(link_from_row!(&row)), None => None })
        })
    }

    /// Stores the tokens of a completed linking flow, replacing any earlier
    /// link (and clearing its broken flag).
    pub async fn save_link(
        &self,
        user: &User,
        connection: &str,
        write: &TokenWrite,
        now: i64,
    ) -> Result<()> {
        let refresh = write
            .refresh
            .as_ref()
            .ok_or_else(|| StoreError("a new link needs a refresh token".into()))?;
        let sql = "INSERT INTO links (issuer, sub, connection, refresh_key_id, refresh_sealed, \
                   access_key_id, access_sealed, access_expires_at, scope, broken, version, \
                   created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 1, $10, $10) \
                   ON CONFLICT (issuer, sub, connection) DO UPDATE SET \
                   refresh_key_id = excluded.refresh_key_id, refresh_sealed = excluded.refresh_sealed, \
                   access_key_id = excluded.access_key_id, access_sealed = excluded.access_sealed, \
                   access_expires_at = excluded.access_expires_at, scope = excluded.scope, broken = 0, \
                   version = links.version + 1, updated_at = excluded.updated_at";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&user.issuer).bind(&user.sub).bind(connection)
                .bind(&refresh.key_id).bind(&refresh.blob)
                .bind(&write.access.sealed.key_id).bind(&write.access.sealed.blob).bind(write.access.expires_at)
                .bind(&write.scope).bind(now)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Removes a link; `true` if there was one.
    pub async fn delete_link(&self, user: &User, connection: &str) -> Result<bool> {
        let sql = "DELETE FROM links WHERE issuer = $1 AND sub = $2 AND connection = $3";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(&user.issuer).bind(&user.sub).bind(connection)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// Links with a token sealed under a key other than `key_id`.
    pub async fn links_not_sealed_with(&self, key_id: &str) -> Result<Vec<Link>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE refresh_key_id <> $1 \
             OR (access_key_id IS NOT NULL AND access_key_id <> $1) ORDER BY issuer, sub, connection"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(key_id).fetch_all(pool).await?;
            let mut links = Vec::with_capacity(rows.len());
            for row in &rows {
                links.push(link_from_row!(row));
            }
            Ok(links)
        })
    }

    /// Replaces a link's sealed tokens with the same tokens sealed anew,
    /// unless the row changed since `link` was read; `true` if written. The
    /// version stays: the tokens are the same, and a vault's own
    /// version-checked write (a refresh under way) must still land.
    pub async fn reseal_link(
        &self,
        link: &Link,
        refresh: &Sealed,
        access: Option<&Sealed>,
    ) -> Result<bool> {
        let sql = "UPDATE links SET refresh_key_id = $1, refresh_sealed = $2, \
                   access_key_id = $3, access_sealed = $4 \
                   WHERE issuer = $5 AND sub = $6 AND connection = $7 AND version = $8";
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(&refresh.key_id).bind(&refresh.blob)
            .bind(access.map(|a| &a.key_id)).bind(access.map(|a| &a.blob))
            .bind(&link.user.issuer).bind(&link.user.sub).bind(&link.connection).bind(link.version)
            .execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Every key id some stored value is sealed with (links and pending
    /// linking states), sorted.
    pub async fn key_ids_in_use(&self) -> Result<Vec<String>> {
        let sql = "SELECT refresh_key_id AS id FROM links \
                   UNION SELECT access_key_id FROM links WHERE access_key_id IS NOT NULL \
                   UNION SELECT verifier_key_id FROM link_states ORDER BY 1";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                ids.push(row.try_get::<String, _>(0)?);
            }
            Ok(ids)
        })
    }

    /// Takes the link for refreshing; see [`LinkLease`].
    pub async fn lease_link(&self, user: &User, connection: &str) -> Result<Option<LinkLease>> {
        match self {
            Store::Sqlite(_) => Ok(self
                .find_link(user, connection)
                .await?
                .map(|link| LinkLease {
                    link,
                    tx: None,
                    store: self.clone(),
                })),
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let sql = format!(
                    "SELECT {LINK_COLUMNS} FROM links \
                     WHERE issuer = $1 AND sub = $2 AND connection = $3 FOR UPDATE"
                );
                let row = sqlx::query(&sql)
                    .bind(&user.issuer)
                    .bind(&user.sub)
                    .bind(connection)
                    .fetch_optional(&mut *tx)
                    .await?;
                match row {
                    Some(row) => Ok(Some(LinkLease {
                        link: link_from_row!(&row),
                        tx: Some(tx),
                        store: self.clone(),
                    })),
                    None => Ok(None),
                }
            }
        }
    }

    /// Tells the replicas listening on `channel` (PostgreSQL) that the link
    /// of (`user`, `connection`) changed; nothing to tell on SQLite. The
    /// notice names this schema, so deployments sharing a database ignore
    /// each other's, then the user's issuer and subject and the connection.
    pub async fn announce_link_change(
        &self,
        channel: &str,
        user: &User,
        connection: &str,
    ) -> Result<()> {
        if let Store::Postgres(pool) = self {
            sqlx::query(
                "SELECT pg_notify($1, json_build_array(current_schema(), \
                 $2::text, $3::text, $4::text)::text)",
            )
            .bind(channel)
            .bind(&user.issuer)
            .bind(&user.sub)
            .bind(connection)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// A listener on `channel` and this store's schema (PostgreSQL), or
    /// `None` (SQLite).
    pub async fn link_listener(&self, channel: &str) -> Result<Option<(PgListener, String)>> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut listener)
            .await?;
        Ok(Some((listener, schema)))
    }

    /// Records a pending linking flow.
    pub async fn put_pending(&self, p: &PendingLink) -> Result<()> {
        let sql = "INSERT INTO link_states (state, issuer, sub, connection, verifier_key_id, \
                   verifier_sealed, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&p.state).bind(&p.user.issuer).bind(&p.user.sub).bind(&p.connection)
                .bind(&p.verifier.key_id).bind(&p.verifier.blob).bind(p.expires_at)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Consumes a pending flow: a `state` is returned at most once, and only
    /// before it expires. Expired states are purged on the way.
    pub async fn take_pending(&self, state: &str, now: i64) -> Result<Option<PendingLink>> {
        let sql = "DELETE FROM link_states WHERE state = $1 \
                   RETURNING state, issuer, sub, connection, verifier_key_id, verifier_sealed, expires_at";
        let purge = "DELETE FROM link_states WHERE expires_at < $1";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(state).fetch_optional(pool).await?;
            sqlx::query(purge).bind(now).execute(pool).await?;
            let Some(row) = row else { return Ok(None) };
            let pending = PendingLink {
                state: row.try_get("state")?,
                user: User { issuer: row.try_get("issuer")?, sub: row.try_get("sub")? },
                connection: row.try_get("connection")?,
                verifier: Sealed { key_id: row.try_get("verifier_key_id")?, blob: row.try_get("verifier_sealed")? },
                expires_at: row.try_get("expires_at")?,
            };
            Ok(if pending.expires_at < now { None } else { Some(pending) })
        })
    }

    /// Appends an audit row.
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        let sql = audit_insert_sql(1);
        on_pool!(self, pool => {
            sqlx::query(&sql).bind(e.at).bind(&e.issuer).bind(&e.sub).bind(&e.agent).bind(&e.connection).bind(&e.outcome)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Appends audit rows in one transaction (one commit for the batch),
    /// [`AUDIT_ROWS_PER_INSERT`] rows per statement.
    pub async fn record_audit_batch(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in entries.chunks(AUDIT_ROWS_PER_INSERT) {
                let sql = audit_insert_sql(chunk.len());
                let mut query = sqlx::query(&sql);
                for e in chunk {
                    query = query.bind(e.at).bind(&e.issuer).bind(&e.sub).bind(&e.agent).bind(&e.connection).bind(&e.outcome);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Audit rows matching `filter`, newest first (by time, then by id).
    pub async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from("SELECT at, issuer, sub, agent, connection, outcome FROM audit");
        let mut n = 0;
        let mut clause = |sql: &mut String, condition: &str| {
            n += 1;
            sql.push_str(if n == 1 { " WHERE " } else { " AND " });
            sql.push_str(&condition.replace('?', &format!("${n}")));
        };
        if filter.issuer.is_some() {
            clause(&mut sql, "issuer = ?");
        }
        if filter.sub.is_some() {
            clause(&mut sql, "sub = ?");
        }
        if filter.connection.is_some() {
            clause(&mut sql, "connection = ?");
        }
        if filter.since.is_some() {
            clause(&mut sql, "at >= ?");
        }
        sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ${}", n + 1));
        on_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            if let Some(issuer) = &filter.issuer {
                query = query.bind(issuer);
            }
            if let Some(sub) = &filter.sub {
                query = query.bind(sub);
            }
            if let Some(connection) = &filter.connection {
                query = query.bind(connection);
            }
            if let Some(since) = filter.since {
                query = query.bind(since);
            }
            let rows = query.bind(filter.limit).fetch_all(pool).await?;
            rows.iter()
                .map(audit_from_row!())
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Deletes at most `batch` audit rows older than `before` (Unix time);
    /// returns how many. Small batches keep each statement's lock short: call
    /// again until it returns less than `batch`.
    pub async fn purge_audit(&self, before: i64, batch: i64) -> Result<u64> {
        let sql = "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2)";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(before).bind(batch).execute(pool).await?.rows_affected());
        Ok(n)
    }

    /// The most recent audit rows, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let sql = "SELECT at, issuer, sub, agent, connection, outcome FROM audit \
                   ORDER BY id DESC LIMIT $1";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(limit).fetch_all(pool).await?;
            rows.iter()
                .map(audit_from_row!())
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }
}

impl LinkLease {
    /// The link as read under the lease.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Writes refreshed tokens, replacing the refresh token when the upstream
    /// rotated it. The write is conditional on the version read under the
    /// lease; returns `false` if someone else changed the row meanwhile.
    pub async fn store_refreshed(mut self, write: &TokenWrite, now: i64) -> Result<bool> {
        let (rk, rb) = match &write.refresh {
            Some(s) => (Some(s.key_id.clone()), Some(s.blob.clone())),
            None => (None, None),
        };
        let sql = "UPDATE links SET \
                   refresh_key_id = COALESCE($1, refresh_key_id), refresh_sealed = COALESCE($2, refresh_sealed), \
                   access_key_id = $3, access_sealed = $4, access_expires_at = $5, \
                   scope = COALESCE($6, scope), version = version + 1, updated_at = $7 \
                   WHERE issuer = $8 AND sub = $9 AND connection = $10 AND version = $11";
        macro_rules! update {
            () => {
                sqlx::query(sql)
                    .bind(&rk)
                    .bind(&rb)
                    .bind(&write.access.sealed.key_id)
                    .bind(&write.access.sealed.blob)
                    .bind(write.access.expires_at)
                    .bind(&write.scope)
                    .bind(now)
                    .bind(&self.link.user.issuer)
                    .bind(&self.link.user.sub)
                    .bind(&self.link.connection)
                    .bind(self.link.version)
            };
        }
        let n = match (self.tx.take(), &self.store) {
            (Some(mut tx), _) => {
                let n = update!().execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                n
            }
            (None, Store::Sqlite(pool)) => update!().execute(pool).await?.rows_affected(),
            (None, Store::Postgres(pool)) => update!().execute(pool).await?.rows_affected(),
        };
        Ok(n == 1)
    }

    /// Flags the link as broken (the upstream refused its refresh token). The
    /// row is kept so the audit trail and a later reconnect find it.
    pub async fn mark_broken(mut self, now: i64) -> Result<()> {
        let sql = "UPDATE links SET broken = 1, access_key_id = NULL, access_sealed = NULL, \
                   access_expires_at = NULL, version = version + 1, updated_at = $1 \
                   WHERE issuer = $2 AND sub = $3 AND connection = $4 AND version = $5";
        macro_rules! update {
            () => {
                sqlx::query(sql)
                    .bind(now)
                    .bind(&self.link.user.issuer)
                    .bind(&self.link.user.sub)
                    .bind(&self.link.connection)
                    .bind(self.link.version)
            };
        }
        match (self.tx.take(), &self.store) {
            (Some(mut tx), _) => {
                update!().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            (None, Store::Sqlite(pool)) => {
                update!().execute(pool).await?;
            }
            (None, Store::Postgres(pool)) => {
                update!().execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Ends the lease without writing.
    pub async fn release(mut self) -> Result<()> {
        if let Some(tx) = self.tx.take() {
            tx.rollback().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
