//! Creating the tables, or upgrading them to [`schema::VERSION`], once per
//! start, in one transaction (on PostgreSQL under an advisory lock, so
//! replicas starting together take turns): a failed upgrade leaves the
//! database as it was.
//!
//! Schema 1 knew users by `sub` alone. Upgrading to 2 needs to know whose
//! they are: every stored link and audit row is given
//! [`Upgrade::legacy_issuer`] (the vault passes its one configured issuer,
//! or the operator's `legacy_issuer` when several are configured), and
//! without it a database that holds such rows is refused. Sealed tokens are
//! opened with the schema-1 AAD and sealed anew (under the current key) with
//! the issuer in their AAD, so no row keeps a ciphertext that would open
//! for another issuer's user; a token that does not open (its key left the
//! keyring) is left as it was, unreadable as before, and counted in the log.

use super::{schema, Result, Store, StoreError};
use crate::seal::{link_aad, link_aad_v1, Keyring, Sealed};
use crate::subject::User;
use sqlx::{Executor, Row};

/// What an upgrade of an older database needs from the vault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrade<'a> {
    /// The issuer of the users stored before issuers were recorded.
    pub legacy_issuer: Option<&'a str>,
    /// The keyring, to seal stored tokens anew for their issuer.
    pub keys: Option<&'a Keyring>,
}

/// The refusal when stored users' issuer is unknown; names the setting.
fn legacy_issuer_needed(links: i64, audit: i64) -> String {
    format!(
        "the database holds {links} link(s) and {audit} audit row(s) from before users were \
         keyed by issuer and subject, and several issuers are configured: set `legacy_issuer` \
         (--legacy-issuer, AGENTWARD_VAULT_LEGACY_ISSUER) to the issuer those users signed in \
         with, then start the vault again"
    )
}

/// A link's tokens opened with the schema-1 AAD and sealed with the current
/// one; `None` when the refresh token does not open. An access token that
/// does not open is dropped (the next exchange refreshes it).
fn reseal(
    keys: &Keyring,
    user: &User,
    connection: &str,
    refresh: &Sealed,
    access: Option<&Sealed>,
) -> Option<(Sealed, Option<Sealed>)> {
    let again = |purpose: &str, sealed: &Sealed| {
        let plain = keys
            .open(sealed, &link_aad_v1(purpose, &user.sub, connection))
            .ok()?;
        keys.seal(&plain, &link_aad(purpose, user, connection)).ok()
    };
    let refresh = again("refresh_token", refresh)?;
    Some((refresh, access.and_then(|a| again("access_token", a))))
}

/// The body of [`Store::prepare_tables`] for one dialect, on transaction `$tx`.
macro_rules! prepare {
    ($tx:ident, $table_count:expr, $create:expr, $from_v1:expr, $upgrade:expr) => {{
        let upgrade: &Upgrade<'_> = $upgrade;
        let tables = |name: &'static str| sqlx::query_scalar::<_, i64>($table_count).bind(name);
        let found = if tables("schema_version").fetch_one(&mut *$tx).await? > 0 {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM schema_version")
                .fetch_one(&mut *$tx)
                .await?
                .unwrap_or(0)
        } else if tables("links").fetch_one(&mut *$tx).await? > 0 {
            1
        } else {
            0
        };
        if found > schema::VERSION {
            return Err(StoreError(format!(
                "the database schema is version {found}, newer than this vault's ({}): \
                 run the newer vault",
                schema::VERSION
            )));
        }
        if found == 1 {
            let links: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM links")
                .fetch_one(&mut *$tx)
                .await?;
            let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE sub <> ''")
                .fetch_one(&mut *$tx)
                .await?;
            let legacy = match upgrade.legacy_issuer {
                Some(issuer) => issuer,
                None if links + audit == 0 => "",
                None => return Err(StoreError(legacy_issuer_needed(links, audit))),
            };
            let keys = match upgrade.keys {
                Some(keys) => Some(keys),
                None if links == 0 => None,
                None => {
                    return Err(StoreError(
                        "stored tokens must be sealed anew for the upgrade: start the vault \
                         (with its keys) to upgrade the database"
                            .into(),
                    ))
                }
            };
            for sql in $from_v1 {
                let query = sqlx::query(sql);
                let query = if sql.contains("$1") {
                    query.bind(legacy)
                } else {
                    query
                };
                query.execute(&mut *$tx).await?;
            }
            let mut unreadable = 0u64;
            if let Some(keys) = keys {
                let rows = sqlx::query(
                    "SELECT issuer, sub, connection, refresh_key_id, refresh_sealed, \
                     access_key_id, access_sealed FROM links",
                )
                .fetch_all(&mut *$tx)
                .await?;
                for row in &rows {
                    let user = User {
                        issuer: row.try_get("issuer")?,
                        sub: row.try_get("sub")?,
                    };
                    let connection: String = row.try_get("connection")?;
                    let refresh = Sealed {
                        key_id: row.try_get("refresh_key_id")?,
                        blob: row.try_get("refresh_sealed")?,
                    };
                    let access = match (
                        row.try_get::<Option<String>, _>("access_key_id")?,
                        row.try_get::<Option<Vec<u8>>, _>("access_sealed")?,
                    ) {
                        (Some(key_id), Some(blob)) => Some(Sealed { key_id, blob }),
                        _ => None,
                    };
                    let Some((refresh, access)) =
                        reseal(keys, &user, &connection, &refresh, access.as_ref())
                    else {
                        unreadable += 1;
                        continue;
                    };
                    sqlx::query(
                        "UPDATE links SET refresh_key_id = $1, refresh_sealed = $2, \
                         access_key_id = $3, access_sealed = $4, \
                         access_expires_at = CASE WHEN $4 IS NULL THEN NULL ELSE access_expires_at END \
                         WHERE issuer = $5 AND sub = $6 AND connection = $7",
                    )
                    .bind(&refresh.key_id)
                    .bind(&refresh.blob)
                    .bind(access.as_ref().map(|a| &a.key_id))
                    .bind(access.as_ref().map(|a| &a.blob))
                    .bind(&user.issuer)
                    .bind(&user.sub)
                    .bind(&connection)
                    .execute(&mut *$tx)
                    .await?;
                }
            }
            if unreadable > 0 {
                tracing::warn!(
                    unreadable,
                    "links whose refresh token does not open with the configured keys were left \
                     as they were (unreadable, as before the upgrade)"
                );
            }
            tracing::info!(
                links,
                audit_rows = audit,
                issuer = legacy,
                "database upgraded to schema 2: users keyed by issuer and subject, tokens sealed anew"
            );
        }
        for ddl in $create {
            $tx.execute(*ddl).await?;
        }
        if found < schema::VERSION {
            $tx.execute("DELETE FROM schema_version").await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(schema::VERSION)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl Store {
    /// Creates the tables of a new database, upgrades an older one, or
    /// leaves a current one as it is.
    pub(super) async fn prepare_tables(&self, upgrade: &Upgrade<'_>) -> Result<()> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                prepare!(
                    tx,
                    schema::SQLITE_TABLE_COUNT,
                    schema::SQLITE,
                    schema::SQLITE_FROM_V1,
                    upgrade
                );
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Replicas starting together would race on the catalog.
                tx.execute("SELECT pg_advisory_xact_lock(7460116101)")
                    .await?;
                prepare!(
                    tx,
                    schema::POSTGRES_TABLE_COUNT,
                    schema::POSTGRES,
                    schema::POSTGRES_FROM_V1,
                    upgrade
                );
                tx.commit().await?;
            }
        }
        Ok(())
    }
}
