//! A database made by the vault before users were keyed by (issuer,
//! subject) is upgraded at start-up, on SQLite and on PostgreSQL: its rows
//! go to the one configured issuer, or to `legacy_issuer` when several are
//! configured (without it the vault refuses to start and says so); sealed
//! tokens are sealed anew for their issuer; a second start changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use agentward_vault::seal::Keyring;
use sqlx::Connection;
use support::*;

/// The tables as the vault created them before schema versions, for
/// `blob` and `int` column types (and the audit key) of each dialect.
fn previous_schema(blob: &str, int: &str, serial: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE links (sub TEXT NOT NULL, connection TEXT NOT NULL, \
             refresh_key_id TEXT NOT NULL, refresh_sealed {blob} NOT NULL, access_key_id TEXT, \
             access_sealed {blob}, access_expires_at {int}, scope TEXT, \
             broken {int} NOT NULL DEFAULT 0, version {int} NOT NULL DEFAULT 1, \
             created_at {int} NOT NULL, updated_at {int} NOT NULL, PRIMARY KEY (sub, connection))"
        ),
        format!(
            "CREATE TABLE link_states (state TEXT PRIMARY KEY, sub TEXT NOT NULL, \
             connection TEXT NOT NULL, verifier_key_id TEXT NOT NULL, \
             verifier_sealed {blob} NOT NULL, expires_at {int} NOT NULL)"
        ),
        format!(
            "CREATE TABLE audit (id {serial}, at {int} NOT NULL, sub TEXT NOT NULL, agent TEXT, \
             connection TEXT, outcome TEXT NOT NULL)"
        ),
        format!("CREATE TABLE spent_tickets (id TEXT PRIMARY KEY, expires_at {int} NOT NULL)"),
        "CREATE INDEX spent_tickets_expires_at ON spent_tickets (expires_at)".into(),
        "CREATE INDEX audit_at ON audit (at)".into(),
        "CREATE INDEX audit_sub_at ON audit (sub, at)".into(),
    ]
}

/// The AAD the vault sealed with before: user and connection, no issuer.
fn previous_aad(purpose: &str, sub: &str, connection: &str) -> Vec<u8> {
    format!(
        "agentward-vault/v1|{purpose}|{}:{sub}|{}:{connection}",
        sub.len(),
        connection.len()
    )
    .into_bytes()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Creates the previous tables on `conn` and fills them: alice's link with
/// a current access token, a pending linking flow, two audit rows.
macro_rules! seed_previous_database {
    ($conn:expr, $schema:expr) => {{
        let conn = $conn;
        for ddl in $schema {
            sqlx::query(&ddl).execute(&mut *conn).await.unwrap();
        }
        let keys = Keyring::parse(KEY).unwrap();
        let seal = |purpose: &str, value: &str| {
            keys.seal(
                value.as_bytes(),
                &previous_aad(purpose, "alice", "stocktrade"),
            )
            .unwrap()
        };
        let (refresh, access) = (
            seal("refresh_token", "rt-legacy"),
            seal("access_token", "at-legacy"),
        );
        sqlx::query(
            "INSERT INTO links (sub, connection, refresh_key_id, refresh_sealed, access_key_id, \
             access_sealed, access_expires_at, scope, broken, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 1, $9, $9)",
        )
        .bind("alice")
        .bind("stocktrade")
        .bind(&refresh.key_id)
        .bind(&refresh.blob)
        .bind(&access.key_id)
        .bind(&access.blob)
        .bind(now() + 3600)
        .bind("openid offline_access stocks:read")
        .bind(now())
        .execute(&mut *conn)
        .await
        .unwrap();
        let verifier = keys
            .seal(
                b"verifier",
                &previous_aad("pkce_verifier", "st", "stocktrade"),
            )
            .unwrap();
        sqlx::query(
            "INSERT INTO link_states (state, sub, connection, verifier_key_id, verifier_sealed, \
             expires_at) VALUES ('st', 'alice', 'stocktrade', $1, $2, $3)",
        )
        .bind(&verifier.key_id)
        .bind(&verifier.blob)
        .bind(now() + 600)
        .execute(&mut *conn)
        .await
        .unwrap();
        for (sub, outcome) in [("alice", "linked"), ("", "subject_rejected")] {
            sqlx::query(
                "INSERT INTO audit (at, sub, agent, connection, outcome) \
                 VALUES ($1, $2, NULL, 'stocktrade', $3)",
            )
            .bind(now() - 60)
            .bind(sub)
            .bind(outcome)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }};
}

/// Starts vaults on the seeded database: with two issuers and no
/// `legacy_issuer` it refuses, then upgrades with it, then starts again
/// without it. `inspect` runs SQL on the database.
async fn upgrade(
    name: &str,
    database_url: String,
    database_schema: Option<String>,
    scalar: impl AsyncFn(&str) -> Result<i64, String>,
) {
    let dir = temp_dir(name);
    let idp_a = TestIssuer::start().await;
    let idp_b = TestIssuer::start_as(OTHER_ISSUER).await;
    let port = free_port();
    let settings = || VaultSettings {
        port,
        database_url: database_url.clone(),
        database_schema: database_schema.clone(),
        dir: &dir,
        jwks_url: &idp_a.jwks_url,
        // Never contacted: alice's cached access token is still current.
        upstream_url: "http://127.0.0.1:9",
        refresh_margin: 3,
        name: "vault",
        ca_file: None,
    };

    // Two issuers and nothing saying whose rows these are: refused, untouched.
    let (code, log) = VaultProcess::start_expecting_exit(settings(), "", &idp_b.config()).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("legacy_issuer"), "{log}");
    assert!(
        scalar("SELECT COUNT(issuer) FROM links").await.is_err(),
        "a refused upgrade changes nothing"
    );

    let legacy = format!("legacy_issuer = \"{ISSUER}\"");
    let mut vault = VaultProcess::start_with(settings(), &legacy, &idp_b.config()).await;
    let http = http();
    let alice_a = idp_a.token("alice", "agent-a");
    let alice_b = idp_b.token("alice", "agent-b");
    let (status, body) = json(rfc8693(&http, &vault.url, &alice_a).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["access_token"], "at-legacy",
        "sealed anew, still opens"
    );
    let (status, body) = json(rfc8693(&http, &vault.url, &alice_b).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("federated_connection_refresh_token_not_found")),
        "{body}"
    );
    let (status, body) = json(
        http.get(format!("{}/audit?limit=1000", vault.url))
            .basic_auth(AUDITOR_ID, Some(AUDITOR_SECRET))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let legacy_rows: Vec<_> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "linked" || e["outcome"] == "subject_rejected")
        .map(|e| (e["issuer"].clone(), e["sub"].clone()))
        .collect();
    assert_eq!(
        legacy_rows,
        [("".into(), "".into()), (ISSUER.into(), "alice".into())],
        "newest first: {body}"
    );
    assert_eq!(
        scalar("SELECT COUNT(*) FROM link_states").await,
        Ok(0),
        "pending flows of the previous schema are dropped"
    );
    vault.stop();

    // Upgraded once: a second start, without legacy_issuer, serves alike.
    let mut vault = VaultProcess::start_with(settings(), "", &idp_b.config()).await;
    let (status, body) = json(rfc8693(&http, &vault.url, &alice_a).send().await.unwrap()).await;
    assert_eq!(
        (status, body["access_token"].as_str()),
        (200, Some("at-legacy"))
    );
    assert_eq!(scalar("SELECT COUNT(*) FROM schema_version").await, Ok(1));
    assert_eq!(
        scalar("SELECT MAX(version) FROM schema_version").await,
        Ok(2)
    );
    assert_eq!(
        scalar("SELECT COUNT(*) FROM links WHERE issuer = 'https://idp.agentward.test/'").await,
        Ok(1)
    );
    vault.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_sqlite_database_is_upgraded_to_issuer_keys() {
    let dir = temp_dir("upgrade-sqlite-db");
    let url = format!("sqlite://{}?mode=rwc", dir.join("vault.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    seed_previous_database!(
        &mut conn,
        previous_schema("BLOB", "INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT")
    );
    conn.close().await.unwrap();
    let scalar = async |sql: &str| {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let v = sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string());
        conn.close().await.unwrap();
        v
    };
    upgrade("upgrade-sqlite", url.clone(), None, scalar).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_postgres_database_is_upgraded_to_issuer_keys() {
    let mut found = None;
    for url in [
        std::env::var("AGENTWARD_VAULT_TEST_DATABASE_URL").unwrap_or_default(),
        "postgres://postgres@127.0.0.1:5432/test".into(),
        "postgres://root@127.0.0.1:5432/test".into(),
    ] {
        if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
            found = Some((url, conn));
            break;
        }
    }
    let Some((url, mut conn)) = found else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is required under CI"
        );
        eprintln!("SKIPPED: no PostgreSQL answers");
        return;
    };
    let schema = format!(
        "vault_upgrade_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    seed_previous_database!(
        &mut conn,
        previous_schema("BYTEA", "BIGINT", "BIGSERIAL PRIMARY KEY")
    );
    let conn = tokio::sync::Mutex::new(conn);
    let scalar = async |sql: &str| {
        let mut conn = conn.lock().await;
        // A failed statement is its own transaction: nothing to roll back.
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    };
    upgrade(
        "upgrade-postgres",
        url.clone(),
        Some(schema.clone()),
        scalar,
    )
    .await;
    let mut conn = conn.into_inner();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}
