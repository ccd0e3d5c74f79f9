//! Connect tickets: what an opaque ticket stands for, kept under the
//! ticket's SHA-256 (never the ticket) until it expires, and spent once
//! across every replica sharing the database.

use super::{Result, Store, SPENT_TICKET_GRACE_SECONDS};
use sqlx::Row;

/// What a connect ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTicket {
    /// Hex SHA-256 of the ticket (`ticket::ticket_id`).
    pub id: String,
    /// `iss` of the user's token.
    pub issuer: String,
    /// `sub` of the user's token: whose account gets linked.
    pub sub: String,
    /// The connection to link.
    pub connection: String,
    /// The agent whose exchange asked for the link (`azp`/`client_id`).
    pub agent: Option<String>,
    /// Unix time it expires at.
    pub expires_at: i64,
    /// Whether it was spent (confirmed or cancelled).
    pub spent: bool,
}

const COLUMNS: &str = "id, issuer, sub, connection, agent, expires_at, spent";

macro_rules! ticket_from_row {
    ($row:expr) => {{
        let row = $row;
        let spent: i64 = row.try_get("spent")?;
        ConnectTicket {
            id: row.try_get("id")?,
            issuer: row.try_get("issuer")?,
            sub: row.try_get("sub")?,
            connection: row.try_get("connection")?,
            agent: row.try_get("agent")?,
            expires_at: row.try_get("expires_at")?,
            spent: spent != 0,
        }
    }};
}

impl Store {
    /// Records a new ticket. Tickets expired more than
    /// [`SPENT_TICKET_GRACE_SECONDS`] ago are purged on the way.
    pub async fn put_ticket(&self, t: &ConnectTicket, now: i64) -> Result<()> {
        let purge = "DELETE FROM connect_tickets WHERE expires_at < $1";
        let insert =
            format!("INSERT INTO connect_tickets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        on_pool!(self, pool => {
            sqlx::query(purge).bind(now.saturating_sub(SPENT_TICKET_GRACE_SECONDS)).execute(pool).await?;
            sqlx::query(&insert)
                .bind(&t.id).bind(&t.issuer).bind(&t.sub).bind(&t.connection).bind(&t.agent)
                .bind(t.expires_at).bind(i64::from(t.spent))
                .execute(pool).await?;
        });
        Ok(())
    }

    /// The ticket stored under `id`, spent or not, expired or not.
    pub async fn find_ticket(&self, id: &str) -> Result<Option<ConnectTicket>> {
        let sql = format!("SELECT {COLUMNS} FROM connect_tickets WHERE id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(ticket_from_row!(&row)), None => None })
        })
    }

    /// Spends the ticket `id` for `connection` if it is unspent and current
    /// at `now`: one conditional update, so of concurrent spends (on any
    /// replica) exactly one gets the ticket back; the others get `None`.
    pub async fn spend_ticket(
        &self,
        id: &str,
        connection: &str,
        now: i64,
    ) -> Result<Option<ConnectTicket>> {
        let sql = format!(
            "UPDATE connect_tickets SET spent = 1 \
             WHERE id = $1 AND connection = $2 AND spent = 0 AND expires_at >= $3 \
             RETURNING {COLUMNS}"
        );
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(id).bind(connection).bind(now).fetch_optional(pool).await?;
            Ok(match row { Some(row) => Some(ticket_from_row!(&row)), None => None })
        })
    }
}
