//! Table definitions, one dialect each. Statements are idempotent so every
//! replica may run them at start-up.

/// SQLite tables.
pub const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS links (
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
        PRIMARY KEY (sub, connection)
    )",
    "CREATE TABLE IF NOT EXISTS link_states (
        state TEXT PRIMARY KEY,
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
        outcome TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS spent_tickets (
        id TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS spent_tickets_expires_at ON spent_tickets (expires_at)",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE INDEX IF NOT EXISTS audit_sub_at ON audit (sub, at)",
];

/// PostgreSQL tables.
pub const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS links (
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
        PRIMARY KEY (sub, connection)
    )",
    "CREATE TABLE IF NOT EXISTS link_states (
        state TEXT PRIMARY KEY,
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
        outcome TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS spent_tickets (
        id TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS spent_tickets_expires_at ON spent_tickets (expires_at)",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE INDEX IF NOT EXISTS audit_sub_at ON audit (sub, at)",
];
