//! CIBA back-channel requests and the token signing key. A request is kept
//! under the SHA-256 of its `auth_req_id` and of its approval link (never
//! either secret); every state change is one conditional `UPDATE`, so of
//! concurrent decisions or token requests, on any replica, one wins.

use super::{Result, Store};
use crate::seal::Sealed;
use sqlx::Row;

/// Requests are kept this long past their expiry (a late poll still learns
/// `expired_token`, a replay `invalid_grant`), then purged.
pub const CIBA_GRACE_SECONDS: i64 = 3600;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CibaStatus {
    /// Waiting for the user.
    Pending,
    /// The user approved; no token issued yet.
    Approved,
    /// The user denied.
    Denied,
    /// The token was issued (once).
    Issued,
    /// The issued token was introspected (used) once.
    Used,
    /// It expired before a decision (recorded by the first poll after).
    Expired,
}

impl CibaStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CibaStatus::Pending => "pending",
            CibaStatus::Approved => "approved",
            CibaStatus::Denied => "denied",
            CibaStatus::Issued => "issued",
            CibaStatus::Used => "used",
            CibaStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> CibaStatus {
        match s {
            "pending" => CibaStatus::Pending,
            "approved" => CibaStatus::Approved,
            "issued" => CibaStatus::Issued,
            "used" => CibaStatus::Used,
            "expired" => CibaStatus::Expired,
            // Anything unknown is treated as the safe answer.
            _ => CibaStatus::Denied,
        }
    }
}

/// One back-channel authentication request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CibaRequest {
    /// Hex SHA-256 of the `auth_req_id`.
    pub id: String,
    /// Hex SHA-256 of the approval link's secret.
    pub approval_id: String,
    /// The client that asked (the gateway).
    pub client_id: String,
    /// The user's issuer.
    pub issuer: String,
    /// The user's `sub` at that issuer.
    pub sub: String,
    /// The agent the client asks for (`agent_id`), when given.
    pub agent: Option<String>,
    /// The requested scope.
    pub scope: String,
    /// What the user is shown and confirms.
    pub binding_message: String,
    /// RFC 9396 `authorization_details`, as JSON text.
    pub authorization_details: Option<String>,
    /// The `aud` of the token, when asked for.
    pub audience: Option<String>,
    /// The digest of the exact request the gateway holds.
    pub request_digest: Option<String>,
    /// Unix time of the request.
    pub created_at: i64,
    /// Unix time it expires at.
    pub expires_at: i64,
    /// Seconds a client must wait between polls (grows on `slow_down`).
    pub interval: i64,
    /// Unix time in milliseconds of the last poll.
    pub last_poll_ms: Option<i64>,
    /// Where it stands.
    pub status: CibaStatus,
    /// Unix time of the user's decision.
    pub decided_at: Option<i64>,
    /// The `jti` of the token issued for it.
    pub jti: Option<String>,
}

const COLUMNS: &str = "id, approval_id, client_id, issuer, sub, agent, scope, binding_message, \
     authorization_details, audience, request_digest, created_at, expires_at, poll_interval, \
     last_poll_ms, status, decided_at, jti";

macro_rules! request_from_row {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        CibaRequest {
            id: row.try_get("id")?,
            approval_id: row.try_get("approval_id")?,
            client_id: row.try_get("client_id")?,
            issuer: row.try_get("issuer")?,
            sub: row.try_get("sub")?,
            agent: row.try_get("agent")?,
            scope: row.try_get("scope")?,
            binding_message: row.try_get("binding_message")?,
            authorization_details: row.try_get("authorization_details")?,
            audience: row.try_get("audience")?,
            request_digest: row.try_get("request_digest")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            interval: row.try_get("poll_interval")?,
            last_poll_ms: row.try_get("last_poll_ms")?,
            status: CibaStatus::parse(&status),
            decided_at: row.try_get("decided_at")?,
            jti: row.try_get("jti")?,
        }
    }};
}

impl Store {
    /// Records a new request; requests expired more than
    /// [`CIBA_GRACE_SECONDS`] ago are purged on the way.
    pub async fn put_ciba_request(&self, r: &CibaRequest, now: i64) -> Result<()> {
        let purge = "DELETE FROM ciba_requests WHERE expires_at < $1";
        let insert = format!(
            "INSERT INTO ciba_requests ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        );
        on_pool!(self, pool => {
            sqlx::query(purge).bind(now.saturating_sub(CIBA_GRACE_SECONDS)).execute(pool).await?;
            sqlx::query(&insert)
                .bind(&r.id).bind(&r.approval_id).bind(&r.client_id).bind(&r.issuer).bind(&r.sub)
                .bind(&r.agent).bind(&r.scope).bind(&r.binding_message)
                .bind(&r.authorization_details).bind(&r.audience).bind(&r.request_digest)
                .bind(r.created_at).bind(r.expires_at).bind(r.interval).bind(r.last_poll_ms)
                .bind(r.status.as_str()).bind(r.decided_at).bind(&r.jti)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// The request whose `auth_req_id` hashes to `id`.
    pub async fn find_ciba_request(&self, id: &str) -> Result<Option<CibaRequest>> {
        self.find_ciba_by("id", id).await
    }

    /// The request whose approval link hashes to `approval_id`.
    pub async fn find_ciba_approval(&self, approval_id: &str) -> Result<Option<CibaRequest>> {
        self.find_ciba_by("approval_id", approval_id).await
    }

    async fn find_ciba_by(&self, column: &'static str, value: &str) -> Result<Option<CibaRequest>> {
        let sql = format!("SELECT {COLUMNS} FROM ciba_requests WHERE {column} = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(value).fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(request_from_row!(&row)), None => None })
        })
    }

    /// How many requests of this user wait for a decision at `now`.
    pub async fn pending_ciba_count(&self, issuer: &str, sub: &str, now: i64) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM ciba_requests \
                   WHERE issuer = $1 AND sub = $2 AND status = 'pending' AND expires_at >= $3";
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).bind(issuer).bind(sub).bind(now).fetch_one(pool).await?);
        Ok(n)
    }

    /// Notes a poll at `now_ms`, adding `slower` seconds to the interval
    /// (`slow_down`: 5; else 0).
    pub async fn note_ciba_poll(&self, id: &str, now_ms: i64, slower: i64) -> Result<()> {
        let sql = "UPDATE ciba_requests SET last_poll_ms = $1, poll_interval = poll_interval + $2 \
                   WHERE id = $3";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(now_ms).bind(slower).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// The user's decision (`Approved` or `Denied`) on the request behind
    /// `approval_id`, if it is still pending and current at `now`: the row
    /// is written (committed) before this returns it; `None` for every
    /// other case (decided already, expired, unknown).
    pub async fn decide_ciba(
        &self,
        approval_id: &str,
        decision: CibaStatus,
        now: i64,
    ) -> Result<Option<CibaRequest>> {
        let sql = format!(
            "UPDATE ciba_requests SET status = $1, decided_at = $2 \
             WHERE approval_id = $3 AND status = 'pending' AND expires_at >= $2 \
             RETURNING {COLUMNS}"
        );
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(decision.as_str()).bind(now).bind(approval_id)
                .fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(request_from_row!(&row)), None => None })
        })
    }

    /// Marks an approved request of `client_id` as issued with `jti`: true
    /// once, for one caller, on every replica.
    pub async fn issue_ciba(&self, id: &str, client_id: &str, jti: &str) -> Result<bool> {
        let sql = "UPDATE ciba_requests SET status = 'issued', jti = $1 \
                   WHERE id = $2 AND client_id = $3 AND status = 'approved'";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(jti).bind(id).bind(client_id)
            .execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Marks the issued token `jti` as used and returns its request: once,
    /// for one caller, on every replica; `None` after that (or for a `jti`
    /// never issued).
    pub async fn use_ciba_token(&self, jti: &str) -> Result<Option<CibaRequest>> {
        let sql = format!(
            "UPDATE ciba_requests SET status = 'used' WHERE jti = $1 AND status = 'issued' \
             RETURNING {COLUMNS}"
        );
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(jti).fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(request_from_row!(&row)), None => None })
        })
    }

    /// Marks a pending request past its expiry as expired: true once.
    pub async fn expire_ciba(&self, id: &str, now: i64) -> Result<bool> {
        let sql = "UPDATE ciba_requests SET status = 'expired' \
                   WHERE id = $1 AND status = 'pending' AND expires_at < $2";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(id).bind(now).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Tells the replicas listening on `channel` (PostgreSQL) that the
    /// request `id` (a hash) was decided; nothing to tell on SQLite.
    pub async fn announce_ciba_decision(&self, channel: &str, id: &str) -> Result<()> {
        if let Store::Postgres(pool) = self {
            sqlx::query("SELECT pg_notify($1, json_build_array(current_schema(), $2::text)::text)")
                .bind(channel)
                .bind(id)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The stored signing key: its `kid` and the sealed private key.
    pub async fn ciba_signing_key(&self) -> Result<Option<(String, Sealed)>> {
        let sql = "SELECT kid, key_id, sealed FROM ciba_signing_keys WHERE name = 'ciba'";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).fetch_optional(pool).await?;
            Ok(match row {
                Some(row) => Some((
                    row.try_get("kid")?,
                    Sealed { key_id: row.try_get("key_id")?, blob: row.try_get("sealed")? },
                )),
                None => None,
            })
        })
    }

    /// Stores a signing key unless one is stored already (another replica
    /// won): read it back with [`Store::ciba_signing_key`].
    pub async fn offer_ciba_signing_key(&self, kid: &str, sealed: &Sealed, now: i64) -> Result<()> {
        let sql = "INSERT INTO ciba_signing_keys (name, kid, key_id, sealed, created_at) \
                   VALUES ('ciba', $1, $2, $3, $4) ON CONFLICT (name) DO NOTHING";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(kid).bind(&sealed.key_id).bind(&sealed.blob).bind(now)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Replaces the sealing of the stored signing key (the same key under
    /// the current data-encryption key) if it is still sealed as `old`.
    pub async fn reseal_ciba_signing_key(&self, old: &Sealed, new: &Sealed) -> Result<bool> {
        let sql = "UPDATE ciba_signing_keys SET key_id = $1, sealed = $2 \
                   WHERE name = 'ciba' AND key_id = $3 AND sealed = $4";
        let n = on_pool!(self, pool => sqlx::query(sql).bind(&new.key_id).bind(&new.blob)
            .bind(&old.key_id).bind(&old.blob).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }
}
