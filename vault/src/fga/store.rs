//! The FGA tables (`fga_stores`, `fga_models`, `fga_tuples`, created with
//! the vault's other tables) and the queries the API and the evaluator run.
//! Tuples are keyed by (store, object, relation, user), which answers the
//! evaluator's lookups (a user on an object, the usersets and tupleset
//! parents of an object) by primary-key prefix; a second index by user
//! serves reads by user.

use super::cache::StoredUser;
use super::errors::FgaError;
use super::model::{Object, Tuple, User};
use crate::store::Store;
use sqlx::Row;

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A store's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    /// ULID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A stored tuple and when it was written (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTuple {
    /// The tuple.
    pub tuple: Tuple,
    /// When it was written.
    pub inserted_at: i64,
}

/// What `POST /read` filters on.
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    /// The object's type.
    pub object_type: Option<String>,
    /// The object's id (with its type).
    pub object_id: Option<String>,
    /// The relation.
    pub relation: Option<String>,
    /// The user.
    pub user: Option<User>,
}

/// Whether a write that finds the tuple already there (or a delete that
/// does not find it) is an error or is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteMode {
    /// `on_duplicate: "ignore"`.
    pub ignore_duplicates: bool,
    /// `on_missing: "ignore"`.
    pub ignore_missing: bool,
}

fn store_row(r: &impl RowLike) -> Result<StoreRow, sqlx::Error> {
    Ok(StoreRow {
        id: r.text("id")?,
        name: r.text("name")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// The two row types read alike.
trait RowLike {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
}

impl RowLike for sqlx::sqlite::SqliteRow {
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
}

impl RowLike for sqlx::postgres::PgRow {
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
}

fn tuple_row(r: &impl RowLike) -> Result<StoredTuple, sqlx::Error> {
    let rel = r.text("user_relation")?;
    Ok(StoredTuple {
        tuple: Tuple {
            object: Object {
                type_name: r.text("object_type")?,
                id: r.text("object_id")?,
            },
            relation: r.text("relation")?,
            user: User {
                type_name: r.text("user_type")?,
                id: r.text("user_id")?,
                relation: (!rel.is_empty()).then_some(rel),
            },
        },
        inserted_at: r.int("inserted_at")?,
    })
}

/// Creates a store.
pub async fn create_store(db: &Store, row: &StoreRow) -> Result<(), FgaError> {
    with_pool!(db, pool => {
        sqlx::query("INSERT INTO fga_stores (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)")
            .bind(&row.id).bind(&row.name).bind(row.created_at).bind(row.updated_at)
            .execute(pool).await?;
    });
    Ok(())
}

/// A store by id.
pub async fn get_store(db: &Store, id: &str) -> Result<Option<StoreRow>, FgaError> {
    let sql = "SELECT id, name, created_at, updated_at FROM fga_stores WHERE id = $1";
    Ok(with_pool!(db, pool => {
        match sqlx::query(sql).bind(id).fetch_optional(pool).await? {
            Some(r) => Some(store_row(&r)?),
            None => None,
        }
    }))
}

/// Stores in id (creation) order, only those named `name` if given,
/// `limit` from `offset`.
pub async fn list_stores(
    db: &Store,
    name: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<StoreRow>, FgaError> {
    let sql = "SELECT id, name, created_at, updated_at FROM fga_stores \
               WHERE ($1 = '' OR name = $1) ORDER BY id LIMIT $2 OFFSET $3";
    Ok(with_pool!(db, pool => {
        sqlx::query(sql).bind(name.unwrap_or("")).bind(limit).bind(offset).fetch_all(pool).await?
            .iter().map(store_row).collect::<Result<Vec<_>, _>>()?
    }))
}

/// Deletes a store with its models and tuples; whether it existed.
pub async fn delete_store(db: &Store, id: &str) -> Result<bool, FgaError> {
    Ok(with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM fga_tuples WHERE store_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM fga_models WHERE store_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM fga_revisions WHERE store_id = $1").bind(id).execute(&mut *tx).await?;
        let gone = sqlx::query("DELETE FROM fga_stores WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        gone.rows_affected() > 0
    }))
}

/// Stores a model (its JSON).
pub async fn insert_model(
    db: &Store,
    store_id: &str,
    id: &str,
    json: &str,
    now: i64,
) -> Result<(), FgaError> {
    with_pool!(db, pool => {
        sqlx::query("INSERT INTO fga_models (store_id, id, model, created_at) VALUES ($1, $2, $3, $4)")
            .bind(store_id).bind(id).bind(json).bind(now)
            .execute(pool).await?;
    });
    Ok(())
}

/// A model's JSON by id.
pub async fn get_model(db: &Store, store_id: &str, id: &str) -> Result<Option<String>, FgaError> {
    let sql = "SELECT model FROM fga_models WHERE store_id = $1 AND id = $2";
    Ok(with_pool!(db, pool => {
        match sqlx::query(sql).bind(store_id).bind(id).fetch_optional(pool).await? {
            Some(r) => Some(r.text("model")?),
            None => None,
        }
    }))
}

/// The id of the store's latest model.
pub async fn latest_model_id(db: &Store, store_id: &str) -> Result<Option<String>, FgaError> {
    let sql = "SELECT id FROM fga_models WHERE store_id = $1 ORDER BY id DESC LIMIT 1";
    Ok(with_pool!(db, pool => {
        match sqlx::query(sql).bind(store_id).fetch_optional(pool).await? {
            Some(r) => Some(r.text("id")?),
            None => None,
        }
    }))
}

/// Models' JSON, newest first, `limit` from `offset`.
pub async fn list_models(
    db: &Store,
    store_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<String>, FgaError> {
    let sql =
        "SELECT model FROM fga_models WHERE store_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3";
    Ok(with_pool!(db, pool => {
        sqlx::query(sql).bind(store_id).bind(limit).bind(offset).fetch_all(pool).await?
            .iter().map(|r| r.text("model")).collect::<Result<Vec<_>, _>>()?
    }))
}

const INSERT_TUPLE: &str = "INSERT INTO fga_tuples (store_id, object_type, object_id, relation, \
     user_type, user_id, user_relation, inserted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";

const DELETE_TUPLE: &str = "DELETE FROM fga_tuples WHERE store_id = $1 AND object_type = $2 \
     AND object_id = $3 AND relation = $4 AND user_type = $5 AND user_id = $6 AND user_relation = $7";

fn write_failed(what: &str, t: &Tuple) -> FgaError {
    FgaError::input(
        "write_failed_due_to_invalid_input",
        format!(
            "cannot {what}: user: '{}', relation: '{}', object: '{}': tuple to be written already existed or the tuple to be deleted did not exist",
            t.user, t.relation, t.object
        ),
    )
}

/// Bumps the store's revision (`fga_revisions`): the new one.
const BUMP_REVISION: &str = "INSERT INTO fga_revisions (store_id, revision) VALUES ($1, 1) \
     ON CONFLICT (store_id) DO UPDATE SET revision = fga_revisions.revision + 1 RETURNING revision";

/// Deletes then writes, in one transaction: all or nothing. The store's
/// revision moves on in the same transaction; the new one is returned.
pub async fn write(
    db: &Store,
    store_id: &str,
    deletes: &[Tuple],
    writes: &[Tuple],
    mode: WriteMode,
    now: i64,
) -> Result<i64, FgaError> {
    Ok(with_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        // First: on PostgreSQL the row lock orders concurrent writers of a
        // store, so revisions follow commit order.
        let revision: i64 = sqlx::query(BUMP_REVISION).bind(store_id)
            .fetch_one(&mut *tx).await?.try_get("revision")?;
        for t in deletes {
            let done = sqlx::query(DELETE_TUPLE)
                .bind(store_id).bind(&t.object.type_name).bind(&t.object.id).bind(&t.relation)
                .bind(&t.user.type_name).bind(&t.user.id).bind(t.user.relation.as_deref().unwrap_or(""))
                .execute(&mut *tx).await?;
            if done.rows_affected() == 0 && !mode.ignore_missing {
                return Err(write_failed("delete a tuple which does not exist", t));
            }
        }
        for t in writes {
            let done = sqlx::query(INSERT_TUPLE)
                .bind(store_id).bind(&t.object.type_name).bind(&t.object.id).bind(&t.relation)
                .bind(&t.user.type_name).bind(&t.user.id).bind(t.user.relation.as_deref().unwrap_or(""))
                .bind(now)
                .execute(&mut *tx).await?;
            if done.rows_affected() == 0 && !mode.ignore_duplicates {
                return Err(write_failed("write a tuple which already exists", t));
            }
        }
        tx.commit().await?;
        revision
    }))
}

/// Refreshes PostgreSQL's statistics of the tuples after a bulk import:
/// with the statistics of a near-empty table its planner reads a whole type's
/// tuples to find a few objects (`object_id IN (…)` as a filter, not an
/// index condition), tens of milliseconds a query until autovacuum catches
/// up. SQLite plans these lookups by the primary key either way.
pub async fn refresh_statistics(db: &Store) -> Result<(), FgaError> {
    if let Store::Postgres(pool) = db {
        sqlx::query("ANALYZE fga_tuples").execute(pool).await?;
    }
    Ok(())
}

/// What a check needs of its store, read in one query before any tuple: the
/// revision (0 before the first write) and the latest model's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckContext {
    /// The revision (see [`write`]).
    pub revision: i64,
    /// The latest model, if any.
    pub latest_model: Option<String>,
}

/// The store's [`CheckContext`]; `None`: no such store.
pub async fn check_context(db: &Store, store_id: &str) -> Result<Option<CheckContext>, FgaError> {
    let sql = "SELECT COALESCE((SELECT revision FROM fga_revisions WHERE store_id = s.id), 0) AS revision, \
               (SELECT id FROM fga_models WHERE store_id = s.id ORDER BY id DESC LIMIT 1) AS latest_model \
               FROM fga_stores s WHERE s.id = $1";
    Ok(with_pool!(db, pool => {
        match sqlx::query(sql).bind(store_id).fetch_optional(pool).await? {
            Some(r) => Some(CheckContext {
                revision: r.try_get("revision")?,
                latest_model: r.try_get("latest_model")?,
            }),
            None => None,
        }
    }))
}

fn stored_user(r: &impl RowLike) -> Result<StoredUser, sqlx::Error> {
    Ok(StoredUser {
        type_name: r.text("user_type")?.into(),
        relation: r.text("user_relation")?.into(),
        id: r.text("user_id")?.into(),
    })
}

/// The users of `object_type:object_id#relation`, at most `limit`.
pub async fn object_users(
    db: &Store,
    store_id: &str,
    object_type: &str,
    object_id: &str,
    relation: &str,
    limit: usize,
) -> Result<Vec<StoredUser>, FgaError> {
    let sql = "SELECT user_type, user_relation, user_id FROM fga_tuples WHERE store_id = $1 \
               AND object_type = $2 AND object_id = $3 AND relation = $4 LIMIT $5";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(with_pool!(db, pool => {
        sqlx::query(sql).bind(store_id).bind(object_type).bind(object_id).bind(relation).bind(limit)
            .fetch_all(pool).await?
            .iter().map(stored_user).collect::<Result<Vec<_>, _>>()?
    }))
}

/// The users of `relation` on the objects `object_type:id` for `ids`, at
/// most `limit` rows in all: (object id, user).
pub async fn objects_users(
    db: &Store,
    store_id: &str,
    object_type: &str,
    ids: &[String],
    relation: &str,
    limit: usize,
) -> Result<Vec<(String, StoredUser)>, FgaError> {
    let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 5)).collect();
    let sql = format!(
        "SELECT object_id, user_type, user_relation, user_id FROM fga_tuples WHERE store_id = $1 \
         AND object_type = $2 AND relation = $3 AND object_id IN ({}) LIMIT $4",
        marks.join(", ")
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(with_pool!(db, pool => {
        let mut q = sqlx::query(&sql).bind(store_id).bind(object_type).bind(relation).bind(limit);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await?
            .iter().map(|r| Ok((r.text("object_id")?, stored_user(r)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    }))
}

/// Whether the tuple is stored.
pub async fn exists(db: &Store, store_id: &str, t: &Tuple) -> Result<bool, FgaError> {
    let sql =
        "SELECT 1 FROM fga_tuples WHERE store_id = $1 AND object_type = $2 AND object_id = $3 \
               AND relation = $4 AND user_type = $5 AND user_id = $6 AND user_relation = $7";
    Ok(with_pool!(db, pool => {
        sqlx::query(sql)
            .bind(store_id).bind(&t.object.type_name).bind(&t.object.id).bind(&t.relation)
            .bind(&t.user.type_name).bind(&t.user.id).bind(t.user.relation.as_deref().unwrap_or(""))
            .fetch_optional(pool).await?.is_some()
    }))
}

/// Whether `user` has a direct tuple of `relation` on any `object_type:id`
/// for `ids` (queried in chunks).
pub async fn exists_any(
    db: &Store,
    store_id: &str,
    object_type: &str,
    ids: &[String],
    relation: &str,
    user: &User,
) -> Result<bool, FgaError> {
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 7)).collect();
        let sql = format!(
            "SELECT 1 FROM fga_tuples WHERE store_id = $1 AND object_type = $2 AND relation = $3 \
             AND user_type = $4 AND user_id = $5 AND user_relation = $6 AND object_id IN ({}) LIMIT 1",
            marks.join(", ")
        );
        let found = with_pool!(db, pool => {
            let mut q = sqlx::query(&sql)
                .bind(store_id).bind(object_type).bind(relation)
                .bind(&user.type_name).bind(&user.id).bind(user.relation.as_deref().unwrap_or(""));
            for id in chunk {
                q = q.bind(id);
            }
            q.fetch_optional(pool).await?.is_some()
        });
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The users of `object#relation` of type `user_type` with relation
/// `user_relation` (`""`: plain objects): their ids.
pub async fn user_ids(
    db: &Store,
    store_id: &str,
    object: &Object,
    relation: &str,
    user_type: &str,
    user_relation: &str,
) -> Result<Vec<String>, FgaError> {
    let sql = "SELECT user_id FROM fga_tuples WHERE store_id = $1 AND object_type = $2 \
               AND object_id = $3 AND relation = $4 AND user_type = $5 AND user_relation = $6 \
               ORDER BY user_id";
    Ok(with_pool!(db, pool => {
        sqlx::query(sql)
            .bind(store_id).bind(&object.type_name).bind(&object.id).bind(relation)
            .bind(user_type).bind(user_relation)
            .fetch_all(pool).await?
            .iter().map(|r| r.text("user_id")).collect::<Result<Vec<_>, _>>()?
    }))
}

/// The objects `object_type:?` with a tuple `#relation@user_type:id#user_relation`
/// for `user_ids` (queried in chunks of 500): (user id, object id) pairs.
pub async fn objects_of_users(
    db: &Store,
    store_id: &str,
    object_type: &str,
    relation: &str,
    user_type: &str,
    user_relation: &str,
    user_ids: &[String],
) -> Result<Vec<(String, String)>, FgaError> {
    let mut pairs = Vec::new();
    for chunk in user_ids.chunks(500) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 6)).collect();
        let sql = format!(
            "SELECT user_id, object_id FROM fga_tuples WHERE store_id = $1 AND user_type = $2 \
             AND user_relation = $3 AND relation = $4 AND object_type = $5 AND user_id IN ({})",
            marks.join(", ")
        );
        let rows = with_pool!(db, pool => {
            let mut q = sqlx::query(&sql)
                .bind(store_id).bind(user_type).bind(user_relation).bind(relation).bind(object_type);
            for id in chunk {
                q = q.bind(id);
            }
            q.fetch_all(pool).await?
                .iter().map(|r| Ok((r.text("user_id")?, r.text("object_id")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        pairs.extend(rows);
    }
    Ok(pairs)
}

/// Tuples matching `filter`, in key order, `limit` from `offset`.
pub async fn read(
    db: &Store,
    store_id: &str,
    filter: &ReadFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<StoredTuple>, FgaError> {
    let mut sql = String::from(
        "SELECT object_type, object_id, relation, user_type, user_id, user_relation, inserted_at \
         FROM fga_tuples WHERE store_id = $1",
    );
    let mut binds: Vec<String> = vec![store_id.to_string()];
    let mut add = |col: &str, value: &str, binds: &mut Vec<String>| {
        binds.push(value.to_string());
        sql.push_str(&format!(" AND {col} = ${}", binds.len()));
    };
    if let Some(t) = &filter.object_type {
        add("object_type", t, &mut binds);
    }
    if let Some(id) = &filter.object_id {
        add("object_id", id, &mut binds);
    }
    if let Some(r) = &filter.relation {
        add("relation", r, &mut binds);
    }
    if let Some(u) = &filter.user {
        add("user_type", &u.type_name, &mut binds);
        add("user_id", &u.id, &mut binds);
        add(
            "user_relation",
            u.relation.as_deref().unwrap_or(""),
            &mut binds,
        );
    }
    sql.push_str(&format!(
        " ORDER BY object_type, object_id, relation, user_type, user_id, user_relation LIMIT ${} OFFSET ${}",
        binds.len() + 1,
        binds.len() + 2
    ));
    Ok(with_pool!(db, pool => {
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        q.bind(limit).bind(offset).fetch_all(pool).await?
            .iter().map(tuple_row).collect::<Result<Vec<_>, _>>()?
    }))
}
