//! Table definitions, one dialect each, and the steps that upgrade an older
//! database. The `CREATE … IF NOT EXISTS` statements are idempotent so every
//! replica may run them at start-up; `schema_version` holds the version the
//! tables are at (see `upgrade.rs`).

/// The schema this vault reads and writes. 1: users keyed by `sub` alone
/// (databases made before `schema_version` existed); 2: by (issuer, sub).
pub const VERSION: i64 = 2;

/// SQLite tables.
pub const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS links (
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        refresh_key_id TEXT NOT NULL,
        refresh_sealed BLOB NOT NULL,
        access_key_id TEXT,
        access_sealed BLOB,
        access_expires_at INTEGER,
        scope TEXT,
        broken INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, sub, connection)
    )",
    "CREATE TABLE IF NOT EXISTS link_states (
        state TEXT PRIMARY KEY,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        verifier_key_id TEXT NOT NULL,
        verifier_sealed BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        sub TEXT NOT NULL,
        agent TEXT,
        connection TEXT,
        outcome TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT ''
    )",
    "CREATE TABLE IF NOT EXISTS spent_tickets (
        id TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS spent_tickets_expires_at ON spent_tickets (expires_at)",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE INDEX IF NOT EXISTS audit_issuer_sub_at ON audit (issuer, sub, at)",
    // Opaque connect tickets, by the SHA-256 of the ticket (`spent_tickets`
    // above held spent signed tickets; vaults no longer write it).
    "CREATE TABLE IF NOT EXISTS connect_tickets (
        id TEXT PRIMARY KEY,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        agent TEXT,
        expires_at INTEGER NOT NULL,
        spent INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS connect_tickets_expires_at ON connect_tickets (expires_at)",
    // CIBA back-channel requests, by the SHA-256 of the `auth_req_id`, with
    // the SHA-256 of their approval link (see `ciba`). New tables: no upgrade step.
    "CREATE TABLE IF NOT EXISTS ciba_requests (
        id TEXT PRIMARY KEY,
        approval_id TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        agent TEXT,
        scope TEXT NOT NULL,
        binding_message TEXT NOT NULL,
        authorization_details TEXT,
        audience TEXT,
        request_digest TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        poll_interval INTEGER NOT NULL,
        last_poll_ms INTEGER,
        status TEXT NOT NULL,
        decided_at INTEGER,
        jti TEXT
    )",
    "CREATE INDEX IF NOT EXISTS ciba_requests_user ON ciba_requests (issuer, sub, status)",
    "CREATE INDEX IF NOT EXISTS ciba_requests_jti ON ciba_requests (jti)",
    "CREATE INDEX IF NOT EXISTS ciba_requests_expires_at ON ciba_requests (expires_at)",
    // The CIBA token signing key, sealed; one row, shared by the replicas.
    "CREATE TABLE IF NOT EXISTS ciba_signing_keys (
        name TEXT PRIMARY KEY,
        kid TEXT NOT NULL,
        key_id TEXT NOT NULL,
        sealed BLOB NOT NULL,
        created_at INTEGER NOT NULL
    )",
    // The FGA engine (`crate::fga`): stores, versioned models, tuples keyed
    // for the evaluator's lookups, and by user for reads.
    "CREATE TABLE IF NOT EXISTS fga_stores (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS fga_models (
        store_id TEXT NOT NULL,
        id TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (store_id, id)
    )",
    "CREATE TABLE IF NOT EXISTS fga_tuples (
        store_id TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        relation TEXT NOT NULL,
        user_type TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_relation TEXT NOT NULL,
        inserted_at INTEGER NOT NULL,
        PRIMARY KEY (store_id, object_type, object_id, relation, user_type, user_relation, user_id)
    )",
    "CREATE INDEX IF NOT EXISTS fga_tuples_user ON fga_tuples \
     (store_id, user_type, user_id, user_relation, relation, object_type)",
    // Bumped by every tuple write in its transaction: the FGA tuple cache's
    // revision (`crate::fga::cache`); no row yet reads as 0.
    "CREATE TABLE IF NOT EXISTS fga_revisions (
        store_id TEXT PRIMARY KEY,
        revision INTEGER NOT NULL
    )",
];

/// PostgreSQL tables.
pub const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS links (
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        refresh_key_id TEXT NOT NULL,
        refresh_sealed BYTEA NOT NULL,
        access_key_id TEXT,
        access_sealed BYTEA,
        access_expires_at BIGINT,
        scope TEXT,
        broken BIGINT NOT NULL DEFAULT 0,
        version BIGINT NOT NULL DEFAULT 1,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, sub, connection)
    )",
    "CREATE TABLE IF NOT EXISTS link_states (
        state TEXT PRIMARY KEY,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        verifier_key_id TEXT NOT NULL,
        verifier_sealed BYTEA NOT NULL,
        expires_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        sub TEXT NOT NULL,
        agent TEXT,
        connection TEXT,
        outcome TEXT NOT NULL,
        issuer TEXT NOT NULL DEFAULT ''
    )",
    "CREATE TABLE IF NOT EXISTS spent_tickets (
        id TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS spent_tickets_expires_at ON spent_tickets (expires_at)",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE INDEX IF NOT EXISTS audit_issuer_sub_at ON audit (issuer, sub, at)",
    // Opaque connect tickets, by the SHA-256 of the ticket (`spent_tickets`
    // above held spent signed tickets; vaults no longer write it).
    "CREATE TABLE IF NOT EXISTS connect_tickets (
        id TEXT PRIMARY KEY,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        agent TEXT,
        expires_at BIGINT NOT NULL,
        spent BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS connect_tickets_expires_at ON connect_tickets (expires_at)",
    // CIBA back-channel requests, by the SHA-256 of the `auth_req_id`, with
    // the SHA-256 of their approval link (see `ciba`). New tables: no upgrade step.
    "CREATE TABLE IF NOT EXISTS ciba_requests (
        id TEXT PRIMARY KEY,
        approval_id TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        agent TEXT,
        scope TEXT NOT NULL,
        binding_message TEXT NOT NULL,
        authorization_details TEXT,
        audience TEXT,
        request_digest TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        poll_interval BIGINT NOT NULL,
        last_poll_ms BIGINT,
        status TEXT NOT NULL,
        decided_at BIGINT,
        jti TEXT
    )",
    "CREATE INDEX IF NOT EXISTS ciba_requests_user ON ciba_requests (issuer, sub, status)",
    "CREATE INDEX IF NOT EXISTS ciba_requests_jti ON ciba_requests (jti)",
    "CREATE INDEX IF NOT EXISTS ciba_requests_expires_at ON ciba_requests (expires_at)",
    // The CIBA token signing key, sealed; one row, shared by the replicas.
    "CREATE TABLE IF NOT EXISTS ciba_signing_keys (
        name TEXT PRIMARY KEY,
        kid TEXT NOT NULL,
        key_id TEXT NOT NULL,
        sealed BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    )",
    // The FGA engine (`crate::fga`): stores, versioned models, tuples keyed
    // for the evaluator's lookups, and by user for reads.
    "CREATE TABLE IF NOT EXISTS fga_stores (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS fga_models (
        store_id TEXT NOT NULL,
        id TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (store_id, id)
    )",
    "CREATE TABLE IF NOT EXISTS fga_tuples (
        store_id TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        relation TEXT NOT NULL,
        user_type TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_relation TEXT NOT NULL,
        inserted_at BIGINT NOT NULL,
        PRIMARY KEY (store_id, object_type, object_id, relation, user_type, user_relation, user_id)
    )",
    "CREATE INDEX IF NOT EXISTS fga_tuples_user ON fga_tuples \
     (store_id, user_type, user_id, user_relation, relation, object_type)",
    // Bumped by every tuple write in its transaction: the FGA tuple cache's
    // revision (`crate::fga::cache`); no row yet reads as 0.
    "CREATE TABLE IF NOT EXISTS fga_revisions (
        store_id TEXT PRIMARY KEY,
        revision BIGINT NOT NULL
    )",
];

/// How many tables named `$1` this SQLite database has (0 or 1).
pub const SQLITE_TABLE_COUNT: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";

/// How many tables named `$1` the current PostgreSQL schema has (0 or 1).
pub const POSTGRES_TABLE_COUNT: &str = "SELECT COUNT(*) FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_name::text = $1";

/// Schema 1 → 2 on SQLite, `$1` being the issuer of the stored users: links
/// are rebuilt with the issuer in their key (SQLite cannot change a primary
/// key in place), pending flows are dropped (they last minutes; the user
/// starts again), audit rows get the issuer (empty where the subject token
/// was rejected). The `CREATE` statements then add what is missing.
pub const SQLITE_FROM_V1: &[&str] = &[
    "CREATE TABLE links_v2 (
        issuer TEXT NOT NULL,
        sub TEXT NOT NULL,
        connection TEXT NOT NULL,
        refresh_key_id TEXT NOT NULL,
        refresh_sealed BLOB NOT NULL,
        access_key_id TEXT,
        access_sealed BLOB,
        access_expires_at INTEGER,
        scope TEXT,
        broken INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, sub, connection)
    )",
    "INSERT INTO links_v2 (issuer, sub, connection, refresh_key_id, refresh_sealed, \
     access_key_id, access_sealed, access_expires_at, scope, broken, version, created_at, \
     updated_at) SELECT $1, sub, connection, refresh_key_id, refresh_sealed, access_key_id, \
     access_sealed, access_expires_at, scope, broken, version, created_at, updated_at FROM links",
    "DROP TABLE links",
    "ALTER TABLE links_v2 RENAME TO links",
    "DROP TABLE link_states",
    "ALTER TABLE audit ADD COLUMN issuer TEXT NOT NULL DEFAULT ''",
    "UPDATE audit SET issuer = $1 WHERE sub <> ''",
    "DROP INDEX IF EXISTS audit_sub_at",
];

/// Schema 1 → 2 on PostgreSQL; as [`SQLITE_FROM_V1`], the key changed in place.
pub const POSTGRES_FROM_V1: &[&str] = &[
    "ALTER TABLE links ADD COLUMN issuer TEXT NOT NULL DEFAULT ''",
    "UPDATE links SET issuer = $1",
    "ALTER TABLE links ALTER COLUMN issuer DROP DEFAULT",
    "ALTER TABLE links DROP CONSTRAINT links_pkey",
    "ALTER TABLE links ADD PRIMARY KEY (issuer, sub, connection)",
    "DROP TABLE link_states",
    "ALTER TABLE audit ADD COLUMN issuer TEXT NOT NULL DEFAULT ''",
    "UPDATE audit SET issuer = $1 WHERE sub <> ''",
    "DROP INDEX IF EXISTS audit_sub_at",
];
