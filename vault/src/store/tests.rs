//! The same storage behaviour, checked on SQLite and on the real PostgreSQL.

use super::*;

const TEST_PG_URLS: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];

const IDP: &str = "https://idp-a.test/";

/// User `sub` of the first issuer.
fn u(sub: &str) -> User {
    User::new(IDP, sub)
}

fn sealed(tag: u8) -> Sealed {
    Sealed {
        key_id: "k1".into(),
        blob: vec![tag; 40],
    }
}

fn write(refresh: Option<u8>, access: u8, expires_at: i64) -> TokenWrite {
    TokenWrite {
        refresh: refresh.map(sealed),
        access: CachedAccess {
            sealed: sealed(access),
            expires_at,
        },
        scope: Some("read".into()),
    }
}

/// A PostgreSQL store in a fresh schema, or `None` (with the reason printed)
/// when no server answers.
pub(crate) async fn postgres_store() -> Option<(Store, String, PgPool)> {
    let urls: Vec<String> = match std::env::var("AGENTWARD_VAULT_TEST_DATABASE_URL") {
        Ok(url) => vec![url],
        Err(_) => TEST_PG_URLS.iter().map(|s| s.to_string()).collect(),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!("vault_unit_{}_{}", std::process::id(), nanos);
    let mut reasons = Vec::new();
    for url in urls {
        match Store::connect(&url, Some(&schema)).await {
            Ok(store) => {
                let admin = PgPool::connect(&url).await.ok()?;
                return Some((store, schema, admin));
            }
            Err(e) => reasons.push(format!("{url}: {e}")),
        }
    }
    eprintln!("SKIPPED: PostgreSQL unreachable ({})", reasons.join("; "));
    None
}

async fn links_round_trip(store: &Store) {
    assert_eq!(store.find_link(&u("alice"), "google").await.unwrap(), None);
    store
        .save_link(&u("alice"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    let link = store
        .find_link(&u("alice"), "google")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.refresh, sealed(1));
    assert_eq!(
        link.access,
        Some(CachedAccess {
            sealed: sealed(2),
            expires_at: 1000
        })
    );
    assert_eq!(
        (link.broken, link.version, link.scope.as_deref()),
        (false, 1, Some("read"))
    );
    assert_eq!(store.find_link(&u("alice"), "slack").await.unwrap(), None);
    assert_eq!(store.find_link(&u("bob"), "google").await.unwrap(), None);
    assert_eq!(link.user, u("alice"));
}

async fn same_sub_at_another_issuer_is_another_user(store: &Store) {
    let other = User::new("https://idp-b.test/", "twin");
    store
        .save_link(&u("twin"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    assert_eq!(store.find_link(&other, "google").await.unwrap(), None);
    assert!(store.lease_link(&other, "google").await.unwrap().is_none());
    assert!(!store.delete_link(&other, "google").await.unwrap());
    store
        .save_link(&other, "google", &write(Some(3), 4, 1000), 10)
        .await
        .unwrap();
    let mine = store
        .find_link(&u("twin"), "google")
        .await
        .unwrap()
        .unwrap();
    let theirs = store.find_link(&other, "google").await.unwrap().unwrap();
    assert_eq!((mine.refresh, theirs.refresh), (sealed(1), sealed(3)));
    assert!(store.delete_link(&other, "google").await.unwrap());
    assert!(store
        .find_link(&u("twin"), "google")
        .await
        .unwrap()
        .is_some());
}

async fn refresh_rotates_once_per_version(store: &Store) {
    store
        .save_link(&u("rot"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    let lease = store
        .lease_link(&u("rot"), "google")
        .await
        .unwrap()
        .unwrap();
    assert!(lease
        .store_refreshed(&write(Some(3), 4, 2000), 20)
        .await
        .unwrap());
    let link = store.find_link(&u("rot"), "google").await.unwrap().unwrap();
    assert_eq!((link.refresh.clone(), link.version), (sealed(3), 2));
    // A refresh without rotation keeps the stored refresh token.
    let lease = store
        .lease_link(&u("rot"), "google")
        .await
        .unwrap()
        .unwrap();
    assert!(lease
        .store_refreshed(&write(None, 5, 3000), 30)
        .await
        .unwrap());
    let link = store.find_link(&u("rot"), "google").await.unwrap().unwrap();
    assert_eq!(link.refresh, sealed(3));
    assert_eq!(link.access.map(|a| a.expires_at), Some(3000));
}

async fn stale_write_is_refused(store: &Store) {
    store
        .save_link(&u("stale"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    let mut stale = store
        .find_link(&u("stale"), "google")
        .await
        .unwrap()
        .unwrap();
    let lease = store
        .lease_link(&u("stale"), "google")
        .await
        .unwrap()
        .unwrap();
    assert!(lease
        .store_refreshed(&write(Some(3), 4, 2000), 20)
        .await
        .unwrap());
    // A second writer that read version 1 must not overwrite the rotated token.
    stale.version = 1;
    let lease = LinkLease {
        link: stale,
        tx: None,
        store: store.clone(),
    };
    assert!(!lease
        .store_refreshed(&write(Some(9), 9, 9000), 30)
        .await
        .unwrap());
    assert_eq!(
        store
            .find_link(&u("stale"), "google")
            .await
            .unwrap()
            .unwrap()
            .refresh,
        sealed(3)
    );
}

async fn broken_link_is_kept_and_relinking_heals_it(store: &Store) {
    store
        .save_link(&u("brk"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    let lease = store
        .lease_link(&u("brk"), "google")
        .await
        .unwrap()
        .unwrap();
    lease.mark_broken(20).await.unwrap();
    let link = store.find_link(&u("brk"), "google").await.unwrap().unwrap();
    assert!(link.broken);
    assert_eq!(link.access, None);
    store
        .save_link(&u("brk"), "google", &write(Some(5), 6, 1000), 30)
        .await
        .unwrap();
    let link = store.find_link(&u("brk"), "google").await.unwrap().unwrap();
    assert!(!link.broken);
    assert_eq!(link.refresh, sealed(5));
    assert!(store.delete_link(&u("brk"), "google").await.unwrap());
    assert!(!store.delete_link(&u("brk"), "google").await.unwrap());
}

async fn pending_state_is_single_use_and_expires(store: &Store) {
    let pending = PendingLink {
        state: "s1".into(),
        user: u("alice"),
        connection: "google".into(),
        verifier: sealed(7),
        expires_at: 100,
    };
    store.put_pending(&pending).await.unwrap();
    assert_eq!(
        store.take_pending("s1", 50).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(store.take_pending("s1", 50).await.unwrap(), None);
    store
        .put_pending(&PendingLink {
            state: "s2".into(),
            ..pending
        })
        .await
        .unwrap();
    assert_eq!(store.take_pending("s2", 101).await.unwrap(), None);
}

async fn audit_rows_are_kept_in_order(store: &Store) {
    for outcome in ["issued_cached", "not_linked"] {
        let e = AuditEntry {
            at: 1,
            issuer: IDP.into(),
            sub: "alice".into(),
            agent: Some("agent-1".into()),
            connection: Some("google".into()),
            outcome: outcome.into(),
        };
        store.record_audit(&e).await.unwrap();
    }
    let rows = store.recent_audit(10).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
        ["not_linked", "issued_cached"]
    );
    // A batch spanning several multi-row INSERTs keeps its order.
    let batch: Vec<AuditEntry> = (0..(2 * AUDIT_ROWS_PER_INSERT + 3))
        .map(|n| AuditEntry {
            at: i64::try_from(n).unwrap(),
            issuer: if n % 3 == 0 {
                String::new()
            } else {
                IDP.into()
            },
            sub: format!("user-{n}"),
            agent: (n % 2 == 0).then(|| "agent-1".to_string()),
            connection: None,
            outcome: "issued_cached".into(),
        })
        .collect();
    store.record_audit_batch(&batch).await.unwrap();
    store.record_audit_batch(&[]).await.unwrap();
    let rows = store.recent_audit(1000).await.unwrap();
    let mut newest: Vec<AuditEntry> = rows[..batch.len()].to_vec();
    newest.reverse();
    assert_eq!(newest, batch);
}

async fn ticket_is_spent_once_and_purged_after_expiry(store: &Store) {
    let ticket = |id: &str, expires_at: i64| ConnectTicket {
        id: id.to_string(),
        issuer: "https://idp.example/".into(),
        sub: "alice".into(),
        connection: "google".into(),
        agent: Some("agent-a".into()),
        expires_at,
        spent: false,
    };
    store.put_ticket(&ticket("t1", 1000), 500).await.unwrap();
    store.put_ticket(&ticket("t2", 2000), 500).await.unwrap();
    assert_eq!(
        store.find_ticket("t1").await.unwrap(),
        Some(ticket("t1", 1000))
    );
    assert_eq!(store.find_ticket("nope").await.unwrap(), None);
    assert_eq!(
        store.spend_ticket("t1", "slack", 500).await.unwrap(),
        None,
        "another connection"
    );
    assert_eq!(
        store.spend_ticket("t2", "google", 2001).await.unwrap(),
        None,
        "expired"
    );
    let spent = store.spend_ticket("t1", "google", 999).await.unwrap();
    assert_eq!(
        spent,
        Some(ConnectTicket {
            spent: true,
            ..ticket("t1", 1000)
        })
    );
    assert_eq!(store.spend_ticket("t1", "google", 999).await.unwrap(), None);
    assert!(store.find_ticket("t1").await.unwrap().unwrap().spent);
    // Within the grace after t1's expiry it is kept (a replica with a slow
    // clock still finds it spent); after it, the next ticket purges it.
    store
        .put_ticket(&ticket("t3", 3000), 1000 + SPENT_TICKET_GRACE_SECONDS)
        .await
        .unwrap();
    assert!(store.find_ticket("t1").await.unwrap().is_some());
    store
        .put_ticket(&ticket("t4", 3000), 1001 + SPENT_TICKET_GRACE_SECONDS)
        .await
        .unwrap();
    assert_eq!(store.find_ticket("t1").await.unwrap(), None, "t1 purged");
    assert!(store.find_ticket("t2").await.unwrap().is_some());
}

async fn audit_is_filtered_newest_first_and_purged(store: &Store) {
    let row = |at: i64, sub: &str, connection: Option<&str>| AuditEntry {
        at,
        issuer: if sub == "flt-bob" {
            "https://idp-b.test/".into()
        } else {
            IDP.into()
        },
        sub: sub.into(),
        agent: Some("agent-f".into()),
        connection: connection.map(str::to_string),
        outcome: "issued_cached".into(),
    };
    let base = 5_000_000_000;
    let rows = [
        row(base + 1, "flt-alice", Some("flt-google")),
        row(base + 2, "flt-bob", Some("flt-google")),
        row(base + 3, "flt-alice", Some("flt-slack")),
        row(base + 3, "flt-alice", None),
        row(base + 4, "flt-bob", Some("flt-slack")),
    ];
    store.record_audit_batch(&rows).await.unwrap();
    let query = |sub: Option<&str>, connection: Option<&str>, since: Option<i64>, limit: i64| {
        let filter = AuditFilter {
            issuer: None,
            sub: sub.map(str::to_string),
            connection: connection.map(str::to_string),
            since,
            limit,
        };
        let store = store.clone();
        async move { store.query_audit(&filter).await.unwrap() }
    };
    // Newest first; rows of the same second in reverse order of writing.
    assert_eq!(
        query(None, None, Some(base), 100).await,
        [&rows[4], &rows[3], &rows[2], &rows[1], &rows[0]].map(Clone::clone)
    );
    assert_eq!(
        query(Some("flt-alice"), None, None, 100).await,
        [&rows[3], &rows[2], &rows[0]].map(Clone::clone)
    );
    assert_eq!(
        query(None, Some("flt-slack"), None, 100).await,
        [&rows[4], &rows[2]].map(Clone::clone)
    );
    assert_eq!(
        query(Some("flt-bob"), Some("flt-google"), Some(base + 2), 100).await,
        [rows[1].clone()]
    );
    assert!(query(Some("flt-bob"), None, Some(base + 5), 100)
        .await
        .is_empty());
    assert_eq!(
        query(None, None, Some(base), 2).await,
        [&rows[4], &rows[3]].map(Clone::clone)
    );
    assert!(query(Some("flt-nobody"), None, None, 100).await.is_empty());
    let by_issuer = |issuer: &str, sub: &str| AuditFilter {
        issuer: Some(issuer.into()),
        sub: Some(sub.into()),
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(
        store
            .query_audit(&by_issuer(IDP, "flt-alice"))
            .await
            .unwrap(),
        [&rows[3], &rows[2], &rows[0]].map(Clone::clone)
    );
    assert!(store
        .query_audit(&by_issuer(IDP, "flt-bob"))
        .await
        .unwrap()
        .is_empty());

    // Purge removes only older rows, a batch at a time.
    let older = earlier_rows(store).await + 2;
    assert_eq!(store.purge_audit(base + 3, 1).await.unwrap(), 1);
    assert_eq!(store.purge_audit(base + 3, 1000).await.unwrap(), older - 1);
    assert_eq!(store.purge_audit(base + 3, 1000).await.unwrap(), 0);
    assert_eq!(
        query(None, None, None, 100).await,
        [&rows[4], &rows[3], &rows[2]].map(Clone::clone)
    );
}

/// Rows written by the tests before the filter test (all with small `at`),
/// which a purge up to a far-future time removes too.
async fn earlier_rows(store: &Store) -> u64 {
    let all = store.recent_audit(100_000).await.unwrap();
    u64::try_from(all.iter().filter(|r| !r.sub.starts_with("flt-")).count()).unwrap()
}

async fn exercise(store: &Store) {
    store.ping().await.unwrap();
    links_round_trip(store).await;
    same_sub_at_another_issuer_is_another_user(store).await;
    refresh_rotates_once_per_version(store).await;
    stale_write_is_refused(store).await;
    broken_link_is_kept_and_relinking_heals_it(store).await;
    pending_state_is_single_use_and_expires(store).await;
    audit_rows_are_kept_in_order(store).await;
    ticket_is_spent_once_and_purged_after_expiry(store).await;
    audit_is_filtered_newest_first_and_purged(store).await;
}

#[tokio::test]
async fn storage_behaves_on_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("agentward-vault-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unit.db");
    let _ = std::fs::remove_file(&path);
    let store = Store::connect(path.to_str().unwrap(), None).await.unwrap();
    exercise(&store).await;
    // Tables are created idempotently: a second connection to the same file works.
    let again = Store::connect(&format!("sqlite://{}", path.display()), None)
        .await
        .unwrap();
    assert!(again
        .find_link(&u("alice"), "google")
        .await
        .unwrap()
        .is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn storage_behaves_on_postgres() {
    let Some((store, schema, admin)) = postgres_store().await else {
        return;
    };
    exercise(&store).await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_lease_locks_the_row_across_connections() {
    let Some((store, schema, admin)) = postgres_store().await else {
        return;
    };
    store
        .save_link(&u("lock"), "google", &write(Some(1), 2, 1000), 10)
        .await
        .unwrap();
    let first = store
        .lease_link(&u("lock"), "google")
        .await
        .unwrap()
        .unwrap();
    let other = store.clone();
    let second = tokio::spawn(async move {
        let lease = other
            .lease_link(&u("lock"), "google")
            .await
            .unwrap()
            .unwrap();
        let version = lease.link().version;
        lease.release().await.unwrap();
        version
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second lease must wait for the first"
    );
    assert!(first
        .store_refreshed(&write(Some(3), 4, 2000), 20)
        .await
        .unwrap());
    // The waiter sees the row as the first lease left it.
    assert_eq!(second.await.unwrap(), 2);
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_upgrade_it_cannot_do_is_refused_and_changes_nothing() {
    let dir = std::env::temp_dir().join(format!(
        "agentward-vault-upgrade-unit-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v1.db");
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}?mode=rwc", path.display());
    // Schema 1, as the vault made it: a link and an audit row, users by `sub`.
    let pool = SqlitePool::connect(&url).await.unwrap();
    for sql in [
        "CREATE TABLE links (sub TEXT NOT NULL, connection TEXT NOT NULL, \
         refresh_key_id TEXT NOT NULL, refresh_sealed BLOB NOT NULL, access_key_id TEXT, \
         access_sealed BLOB, access_expires_at INTEGER, scope TEXT, \
         broken INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 1, \
         created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (sub, connection))",
        "CREATE TABLE link_states (state TEXT PRIMARY KEY, sub TEXT NOT NULL, \
         connection TEXT NOT NULL, verifier_key_id TEXT NOT NULL, \
         verifier_sealed BLOB NOT NULL, expires_at INTEGER NOT NULL)",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, \
         sub TEXT NOT NULL, agent TEXT, connection TEXT, outcome TEXT NOT NULL)",
        "CREATE INDEX audit_sub_at ON audit (sub, at)",
        "INSERT INTO links (sub, connection, refresh_key_id, refresh_sealed, created_at, \
         updated_at) VALUES ('alice', 'google', 'k1', x'00', 1, 1)",
        "INSERT INTO audit (at, sub, outcome) VALUES (1, 'alice', 'linked')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let untouched = || async {
        let pool = SqlitePool::connect(&url).await.unwrap();
        let columns: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('links') WHERE name = 'issuer'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        columns == 0
    };

    // Whose rows these are is unknown: refused, naming the setting.
    let err = Store::connect(&url, None).await.unwrap_err().to_string();
    assert!(err.contains("`legacy_issuer`"), "{err}");
    assert!(untouched().await);
    // Known, but the link's tokens cannot be sealed anew without the keys.
    let upgrade = Upgrade {
        legacy_issuer: Some(IDP),
        keys: None,
    };
    let err = Store::connect_upgrading(&url, None, &upgrade)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sealed anew"), "{err}");
    assert!(untouched().await);

    // With both, the rows are the legacy issuer's; the unreadable token (its
    // key is not in the ring) is left as it was.
    let keys = crate::seal::Keyring::from_keys(vec![("k2".into(), [2; 32])]).unwrap();
    let upgrade = Upgrade {
        legacy_issuer: Some(IDP),
        keys: Some(&keys),
    };
    let store = Store::connect_upgrading(&url, None, &upgrade)
        .await
        .unwrap();
    let link = store
        .find_link(&u("alice"), "google")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.refresh.key_id, "k1");
    let rows = store.recent_audit(10).await.unwrap();
    assert_eq!(
        (rows[0].issuer.as_str(), rows[0].sub.as_str()),
        (IDP, "alice")
    );
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    // A database of a newer schema than this vault's is refused.
    sqlx::query("UPDATE schema_version SET version = 3")
        .execute(pool)
        .await
        .unwrap();
    store.close().await;
    let err = Store::connect(&url, None).await.unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
