//! The HTTP handlers, at OpenFGA's paths with OpenFGA's bodies, error codes
//! and limits, behind its preshared-key authentication.

use super::cache::View;
use super::check::{Checker, Tuples};
use super::errors::FgaError;
use super::model::{
    null_default, AuthorizationModel, Model, Object, Tuple, TupleKey, User, MAX_MODEL_BYTES,
};
use super::reverse::Reverse;
use super::store::{self, ReadFilter, StoreRow, WriteMode};
use super::{now_ms, rfc3339, Fga};
use crate::app::Vault;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tuples written and deleted in one `write` (OpenFGA's default).
pub const MAX_WRITE_TUPLES: usize = 100;
/// Checks in one `batch-check` (OpenFGA's default).
pub const MAX_BATCH_CHECKS: usize = 50;
/// Contextual tuples in one request.
pub const MAX_CONTEXTUAL_TUPLES: usize = 100;
/// Objects one `list-objects` answers at most (OpenFGA's default).
pub const MAX_LIST_OBJECTS: usize = 1000;
/// How long one `list-objects` may search (OpenFGA's default).
pub const LIST_OBJECTS_DEADLINE: Duration = Duration::from_secs(3);
/// Imports at least this large refresh the database's statistics.
const ANALYZE_AFTER_IMPORT: usize = 1000;
/// Candidates of `list-objects` whose tuples are loaded at once.
const LIST_OBJECTS_SLICE: usize = 500;
/// Tuples in one bulk `import`.
pub const MAX_IMPORT_TUPLES: usize = 100_000;
/// Largest `import` body.
const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;
/// Largest body of the other calls.
const MAX_BODY_BYTES: usize = 1024 * 1024;

type Answer = Result<Response, FgaError>;

/// The FGA routes, authenticated by preshared key.
pub fn routes(vault: Arc<Vault>) -> Router<Arc<Vault>> {
    Router::new()
        .route("/stores", post(create_store).get(list_stores))
        .route("/stores/{store_id}", get(get_store).delete(delete_store))
        .route(
            "/stores/{store_id}/authorization-models",
            post(write_model).get(list_models),
        )
        .route(
            "/stores/{store_id}/authorization-models/{model_id}",
            get(get_model),
        )
        .route("/stores/{store_id}/write", post(write))
        .route("/stores/{store_id}/read", post(read))
        .route("/stores/{store_id}/check", post(check))
        .route("/stores/{store_id}/batch-check", post(batch_check))
        .route("/stores/{store_id}/list-objects", post(list_objects))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(
            Router::new()
                .route("/stores/{store_id}/import", post(import))
                .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .layer(axum::middleware::from_fn_with_state(vault, authenticate))
}

/// `Authorization: Bearer <preshared key>`, as OpenFGA's `preshared` method.
async fn authenticate(State(vault): State<Arc<Vault>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(agentward_core::bearer::token);
    match token {
        None => FgaError::bearer_missing().into_response(),
        Some(key) if vault.fga.key_ok(key) => next.run(request).await,
        Some(_) => FgaError::unauthenticated().into_response(),
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, FgaError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| FgaError::validation(format!("invalid request body: {e}")))
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok((status, Json(body)).into_response())
}

/// A continuation token: the next offset, opaque to clients.
fn token_for(next: i64, more: bool) -> String {
    if more {
        B64.encode(format!("o:{next}"))
    } else {
        String::new()
    }
}

#[derive(Debug, Default, Deserialize)]
struct Page {
    page_size: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    continuation_token: String,
}

impl Page {
    /// (limit, offset).
    fn bounds(&self, default_size: i64) -> Result<(i64, i64), FgaError> {
        let size = self.page_size.unwrap_or(default_size);
        if !(1..=100).contains(&size) {
            return Err(FgaError::input(
                "page_size_invalid",
                "page_size must be between 1 and 100",
            ));
        }
        let offset = if self.continuation_token.is_empty() {
            0
        } else {
            B64.decode(&self.continuation_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse::<i64>().ok()))
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    FgaError::input("invalid_continuation_token", "Invalid continuation token")
                })?
        };
        Ok((size, offset))
    }
}

fn store_json(s: &StoreRow) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.updated_at),
    })
}

async fn known_store(vault: &Vault, store_id: &str) -> Result<StoreRow, FgaError> {
    store::get_store(&vault.store, store_id)
        .await?
        .ok_or_else(FgaError::store_not_found)
}

#[derive(Deserialize)]
struct CreateStore {
    #[serde(default, deserialize_with = "null_default")]
    name: String,
}

async fn create_store(State(vault): State<Arc<Vault>>, body: Bytes) -> Answer {
    let req: CreateStore = parse(&body)?;
    let len = req.name.chars().count();
    if !(3..=64).contains(&len) {
        return Err(FgaError::validation(
            "invalid CreateStoreRequest.Name: value length must be between 3 and 64 runes",
        ));
    }
    let now = now_ms();
    let row = StoreRow {
        id: vault.fga.new_id(),
        name: req.name,
        created_at: now,
        updated_at: now,
    };
    store::create_store(&vault.store, &row).await?;
    ok(StatusCode::CREATED, store_json(&row))
}

#[derive(Deserialize)]
struct ListStores {
    page_size: Option<i64>,
    #[serde(default)]
    continuation_token: String,
    name: Option<String>,
}

async fn list_stores(
    State(vault): State<Arc<Vault>>,
    q: Result<Query<ListStores>, QueryRejection>,
) -> Answer {
    let Query(q) = q.map_err(|e| FgaError::validation(e.body_text()))?;
    let page = Page {
        page_size: q.page_size,
        continuation_token: q.continuation_token,
    };
    let (limit, offset) = page.bounds(50)?;
    let mut rows = store::list_stores(&vault.store, q.name.as_deref(), limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    ok(
        StatusCode::OK,
        json!({
            "stores": rows.iter().map(store_json).collect::<Vec<_>>(),
            "continuation_token": token_for(offset + limit, more),
        }),
    )
}

async fn get_store(State(vault): State<Arc<Vault>>, Path(store_id): Path<String>) -> Answer {
    let row = known_store(&vault, &store_id).await?;
    ok(StatusCode::OK, store_json(&row))
}

async fn delete_store(State(vault): State<Arc<Vault>>, Path(store_id): Path<String>) -> Answer {
    if !store::delete_store(&vault.store, &store_id).await? {
        return Err(FgaError::store_not_found());
    }
    vault.fga.forget_store(&store_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn write_model(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    known_store(&vault, &store_id).await?;
    if body.len() > MAX_MODEL_BYTES {
        return Err(FgaError::entity_limit(
            "bytes in an authorization model",
            MAX_MODEL_BYTES,
        ));
    }
    let mut model: AuthorizationModel = parse(&body)?;
    model.id = vault.fga.new_id();
    let built = Model::build(&model)?;
    let stored = serde_json::to_string(&model).map_err(FgaError::internal)?;
    store::insert_model(&vault.store, &store_id, &model.id, &stored, now_ms()).await?;
    vault.fga.remember(&store_id, Arc::new(built));
    ok(
        StatusCode::CREATED,
        json!({"authorization_model_id": model.id}),
    )
}

async fn list_models(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Answer {
    let Query(page) = page.map_err(|e| FgaError::validation(e.body_text()))?;
    known_store(&vault, &store_id).await?;
    let (limit, offset) = page.bounds(50)?;
    let mut rows = store::list_models(&vault.store, &store_id, limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let models = rows
        .iter()
        .map(|r| serde_json::from_str::<Value>(r).map_err(FgaError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    ok(
        StatusCode::OK,
        json!({
            "authorization_models": models,
            "continuation_token": token_for(offset + limit, more),
        }),
    )
}

async fn get_model(
    State(vault): State<Arc<Vault>>,
    Path((store_id, model_id)): Path<(String, String)>,
) -> Answer {
    known_store(&vault, &store_id).await?;
    let json = store::get_model(&vault.store, &store_id, &model_id)
        .await?
        .ok_or_else(|| FgaError::model_not_found(&model_id))?;
    let model: Value = serde_json::from_str(&json).map_err(FgaError::internal)?;
    ok(StatusCode::OK, json!({"authorization_model": model}))
}

/// The model a request names, or the store's latest.
async fn model_for(
    vault: &Vault,
    fga: &Fga,
    store_id: &str,
    model_id: Option<&str>,
) -> Result<Arc<Model>, FgaError> {
    let id = match named_model(model_id)? {
        Some(id) => id.to_string(),
        None => store::latest_model_id(&vault.store, store_id)
            .await?
            .ok_or_else(|| FgaError::no_model(store_id))?,
    };
    load_model(vault, fga, store_id, id).await
}

/// The model id a request names, checked; `None`: the latest.
fn named_model(model_id: Option<&str>) -> Result<Option<&str>, FgaError> {
    match model_id.filter(|id| !id.is_empty()) {
        Some(id) if id.len() != 26 => Err(FgaError::validation(format!(
            "invalid authorization_model_id: {id:?} is not a ULID"
        ))),
        named => Ok(named),
    }
}

/// What a check, batch-check or list-objects runs against: the store's
/// model (named or latest) and the tuple cache at the store's revision,
/// both from one query.
async fn check_scope<'v>(
    vault: &'v Vault,
    store_id: &str,
    model_id: Option<&str>,
) -> Result<(Arc<Model>, Option<View<'v>>), FgaError> {
    let context = store::check_context(&vault.store, store_id)
        .await?
        .ok_or_else(FgaError::store_not_found)?;
    let id = match named_model(model_id)? {
        Some(id) => id.to_string(),
        None => context
            .latest_model
            .ok_or_else(|| FgaError::no_model(store_id))?,
    };
    let model = load_model(vault, &vault.fga, store_id, id).await?;
    Ok((model, vault.fga.tuples.view(store_id, context.revision)))
}

/// Model `id` of the store, parsed (cached).
async fn load_model(
    vault: &Vault,
    fga: &Fga,
    store_id: &str,
    id: String,
) -> Result<Arc<Model>, FgaError> {
    if let Some(model) = fga.cached(store_id, &id) {
        return Ok(model);
    }
    let json = store::get_model(&vault.store, store_id, &id)
        .await?
        .ok_or_else(|| FgaError::model_not_found(&id))?;
    let mut model = Fga::parse_stored(&json)?;
    model.id = id;
    let model = Arc::new(model);
    fga.remember(store_id, model.clone());
    Ok(model)
}

#[derive(Debug, Default, Deserialize)]
struct TupleKeys {
    #[serde(default, deserialize_with = "null_default")]
    tuple_keys: Vec<TupleKey>,
    #[serde(default)]
    on_duplicate: Option<String>,
    #[serde(default)]
    on_missing: Option<String>,
}

#[derive(Deserialize)]
struct WriteRequest {
    #[serde(default)]
    writes: Option<TupleKeys>,
    #[serde(default)]
    deletes: Option<TupleKeys>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

fn mode_flag(value: Option<&str>, field: &str, ignore: &str) -> Result<bool, FgaError> {
    match value.unwrap_or("") {
        "" | "error" | "unspecified" => Ok(false),
        v if v == ignore => Ok(true),
        v => Err(FgaError::validation(format!(
            "{field}: {v:?} is not one of \"error\", \"{ignore}\""
        ))),
    }
}

async fn write(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: WriteRequest = parse(&body)?;
    known_store(&vault, &store_id).await?;
    let writes = req.writes.unwrap_or_default();
    let deletes = req.deletes.unwrap_or_default();
    if writes.tuple_keys.is_empty() && deletes.tuple_keys.is_empty() {
        return Err(FgaError::input(
            "invalid_write_input",
            "Invalid input. Make sure you provide at least one write, or at least one delete",
        ));
    }
    let total = writes.tuple_keys.len() + deletes.tuple_keys.len();
    if total > MAX_WRITE_TUPLES {
        return Err(FgaError::entity_limit("write operations", MAX_WRITE_TUPLES));
    }
    let mode = WriteMode {
        ignore_duplicates: mode_flag(
            writes.on_duplicate.as_deref(),
            "writes.on_duplicate",
            "ignore",
        )?,
        ignore_missing: mode_flag(
            deletes.on_missing.as_deref(),
            "deletes.on_missing",
            "ignore",
        )?,
    };
    let model = model_for(
        &vault,
        &vault.fga,
        &store_id,
        req.authorization_model_id.as_deref(),
    )
    .await?;
    let mut seen = HashSet::new();
    let mut parsed_writes = Vec::with_capacity(writes.tuple_keys.len());
    for k in &writes.tuple_keys {
        let t = Tuple::parse(k)?;
        model.check_tuple(&t)?;
        parsed_writes.push(t);
    }
    let mut parsed_deletes = Vec::with_capacity(deletes.tuple_keys.len());
    for k in &deletes.tuple_keys {
        parsed_deletes.push(Tuple::parse(&TupleKey {
            condition: None,
            ..k.clone()
        })?);
    }
    for t in parsed_writes.iter().chain(parsed_deletes.iter()) {
        if !seen.insert(t.clone()) {
            return Err(FgaError::input(
                "cannot_allow_duplicate_tuples_in_one_request",
                format!(
                    "duplicate tuple in write: user: '{}', relation: '{}', object: '{}'",
                    t.user, t.relation, t.object
                ),
            ));
        }
    }
    let revision = store::write(
        &vault.store,
        &store_id,
        &parsed_deletes,
        &parsed_writes,
        mode,
        now_ms(),
    )
    .await?;
    written(
        &vault.fga,
        &store_id,
        revision,
        parsed_deletes.iter().chain(&parsed_writes),
    );
    ok(StatusCode::OK, json!({}))
}

#[derive(Deserialize)]
struct ImportRequest {
    #[serde(default, deserialize_with = "null_default")]
    tuple_keys: Vec<TupleKey>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// `POST /stores/{id}/import` (the vault's own): up to
/// [`MAX_IMPORT_TUPLES`] tuples in one transaction, validated against the
/// model, tuples already stored left as they are.
async fn import(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: ImportRequest = parse(&body)?;
    known_store(&vault, &store_id).await?;
    if req.tuple_keys.len() > MAX_IMPORT_TUPLES {
        return Err(FgaError::entity_limit(
            "tuples in an import",
            MAX_IMPORT_TUPLES,
        ));
    }
    let model = model_for(
        &vault,
        &vault.fga,
        &store_id,
        req.authorization_model_id.as_deref(),
    )
    .await?;
    let mut tuples = Vec::with_capacity(req.tuple_keys.len());
    let mut seen = HashSet::new();
    for k in &req.tuple_keys {
        let t = Tuple::parse(k)?;
        model.check_tuple(&t)?;
        if seen.insert(t.clone()) {
            tuples.push(t);
        }
    }
    let mode = WriteMode {
        ignore_duplicates: true,
        ignore_missing: false,
    };
    let revision = store::write(&vault.store, &store_id, &[], &tuples, mode, now_ms()).await?;
    written(&vault.fga, &store_id, revision, tuples.iter());
    if tuples.len() >= ANALYZE_AFTER_IMPORT {
        if let Err(e) = store::refresh_statistics(&vault.store).await {
            tracing::warn!(error = %e.message, "FGA import: refreshing the tuples' statistics failed");
        }
    }
    ok(StatusCode::OK, json!({"imported": tuples.len()}))
}

/// Tells the tuple cache what a committed write changed.
fn written<'t>(fga: &Fga, store_id: &str, revision: i64, tuples: impl Iterator<Item = &'t Tuple>) {
    fga.tuples.written(
        store_id,
        revision,
        tuples.map(|t| {
            (
                t.object.type_name.as_str(),
                t.object.id.as_str(),
                t.relation.as_str(),
            )
        }),
    );
}

#[derive(Deserialize)]
struct ReadRequest {
    #[serde(default)]
    tuple_key: Option<ReadKey>,
    #[serde(flatten)]
    page: Page,
}

#[derive(Deserialize)]
struct ReadKey {
    #[serde(default, deserialize_with = "null_default")]
    user: String,
    #[serde(default, deserialize_with = "null_default")]
    relation: String,
    #[serde(default, deserialize_with = "null_default")]
    object: String,
}

async fn read(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: ReadRequest = parse(&body)?;
    known_store(&vault, &store_id).await?;
    let (limit, offset) = req.page.bounds(50)?;
    let mut filter = ReadFilter::default();
    if let Some(key) = &req.tuple_key {
        if !key.object.is_empty() {
            match key.object.split_once(':') {
                Some((t, "")) if !t.is_empty() => filter.object_type = Some(t.to_string()),
                _ => {
                    let o = Object::parse(&key.object)?;
                    filter.object_type = Some(o.type_name);
                    filter.object_id = Some(o.id);
                }
            }
        }
        if !key.relation.is_empty() {
            filter.relation = Some(key.relation.clone());
        }
        if !key.user.is_empty() {
            filter.user = Some(User::parse(&key.user)?);
        }
        if filter.object_type.is_none() && (filter.user.is_some() || filter.relation.is_some()) {
            return Err(FgaError::validation(
                "the 'object' field is required (at least its type, e.g. \"document:\") when a user or relation is given",
            ));
        }
    }
    let mut rows = store::read(&vault.store, &store_id, &filter, limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let tuples: Vec<Value> = rows
        .iter()
        .map(|r| json!({"key": r.tuple.to_key(), "timestamp": rfc3339(r.inserted_at)}))
        .collect();
    ok(
        StatusCode::OK,
        json!({"tuples": tuples, "continuation_token": token_for(offset + limit, more)}),
    )
}

#[derive(Debug, Default, Deserialize)]
struct Contextual {
    #[serde(default, deserialize_with = "null_default")]
    tuple_keys: Vec<TupleKey>,
}

/// Contextual tuples, validated against the model, no duplicates.
fn contextual(model: &Model, c: Option<&Contextual>) -> Result<Vec<Tuple>, FgaError> {
    let keys = c.map(|c| c.tuple_keys.as_slice()).unwrap_or(&[]);
    if keys.len() > MAX_CONTEXTUAL_TUPLES {
        return Err(FgaError::validation(format!(
            "contextual_tuples: at most {MAX_CONTEXTUAL_TUPLES} tuples"
        )));
    }
    let mut out: Vec<Tuple> = Vec::with_capacity(keys.len());
    for k in keys {
        let t = Tuple::parse(k)?;
        model.check_tuple(&t)?;
        if out.contains(&t) {
            return Err(FgaError::input(
                "duplicate_contextual_tuple",
                format!("duplicate contextual tuple in request: {}", t.key()),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CheckRequest {
    #[serde(default, deserialize_with = "null_default")]
    tuple_key: TupleKey,
    #[serde(default)]
    contextual_tuples: Option<Contextual>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// One check's question, validated.
fn question(model: &Model, k: &TupleKey) -> Result<(Object, String, User), FgaError> {
    if k.user.is_empty() || k.relation.is_empty() || k.object.is_empty() {
        return Err(FgaError::validation(
            "tuple_key: user, relation and object are required",
        ));
    }
    let object = Object::parse(&k.object)?;
    let user = User::parse(&k.user)?;
    model.check_relation(&object.type_name, &k.relation)?;
    model.check_user(&user)?;
    Ok((object, k.relation.clone(), user))
}

async fn run_check(
    vault: &Vault,
    store_id: &str,
    (model, cache): (&Model, Option<View<'_>>),
    key: &TupleKey,
    ctx: Option<&Contextual>,
) -> Result<bool, FgaError> {
    let (object, relation, user) = question(model, key)?;
    let contextual = contextual(model, ctx)?;
    let checker = Checker {
        model,
        tuples: Tuples {
            db: &vault.store,
            store_id,
            contextual: &contextual,
            cache,
        },
        deadline: None,
    };
    checker.check(&object, &relation, &user).await
}

async fn check(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: CheckRequest = parse(&body)?;
    let (model, cache) =
        check_scope(&vault, &store_id, req.authorization_model_id.as_deref()).await?;
    let allowed = run_check(
        &vault,
        &store_id,
        (&model, cache),
        &req.tuple_key,
        req.contextual_tuples.as_ref(),
    )
    .await?;
    ok(
        StatusCode::OK,
        json!({"allowed": allowed, "resolution": ""}),
    )
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default, deserialize_with = "null_default")]
    tuple_key: TupleKey,
    #[serde(default)]
    contextual_tuples: Option<Contextual>,
    #[serde(default, deserialize_with = "null_default")]
    correlation_id: String,
}

#[derive(Deserialize)]
struct BatchRequest {
    #[serde(default, deserialize_with = "null_default")]
    checks: Vec<BatchItem>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

fn correlation_id_ok(id: &str) -> bool {
    (1..=36).contains(&id.chars().count())
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

async fn batch_check(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: BatchRequest = parse(&body)?;
    if req.checks.is_empty() {
        return Err(FgaError::validation(
            "invalid BatchCheckRequest.Checks: value must contain at least 1 item(s)",
        ));
    }
    if req.checks.len() > MAX_BATCH_CHECKS {
        return Err(FgaError::validation(format!(
            "batchCheck received {} checks, the maximum allowed is {MAX_BATCH_CHECKS}",
            req.checks.len()
        )));
    }
    let mut ids = HashSet::new();
    for item in &req.checks {
        if !correlation_id_ok(&item.correlation_id) {
            return Err(FgaError::validation(format!(
                "invalid BatchCheckItem.CorrelationId: value does not match regex pattern \"^[\\\\w\\\\d-]{{1,36}}$\": {:?}",
                item.correlation_id
            )));
        }
        if !ids.insert(item.correlation_id.as_str()) {
            return Err(FgaError::validation(format!(
                "duplicate correlation_id provided: {}",
                item.correlation_id
            )));
        }
    }
    let (model, cache) =
        check_scope(&vault, &store_id, req.authorization_model_id.as_deref()).await?;
    let mut result = BTreeMap::new();
    for item in &req.checks {
        let answer = match run_check(
            &vault,
            &store_id,
            (&model, cache),
            &item.tuple_key,
            item.contextual_tuples.as_ref(),
        )
        .await
        {
            Ok(allowed) => json!({"allowed": allowed}),
            Err(e) if e.status == StatusCode::BAD_REQUEST => {
                json!({"error": {"input_error": e.code, "message": e.message}})
            }
            Err(e) => {
                json!({"error": {"internal_error": e.code, "message": e.message}})
            }
        };
        result.insert(item.correlation_id.clone(), answer);
    }
    ok(StatusCode::OK, json!({"result": result}))
}

#[derive(Deserialize)]
struct ListObjectsRequest {
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    type_name: String,
    #[serde(default, deserialize_with = "null_default")]
    relation: String,
    #[serde(default, deserialize_with = "null_default")]
    user: String,
    #[serde(default)]
    contextual_tuples: Option<Contextual>,
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// The candidates come from the user backwards ([`super::reverse`]), each
/// checked in turn, until [`MAX_LIST_OBJECTS`] are found or the deadline
/// passes (then what was found is answered, as OpenFGA does).
async fn list_objects(
    State(vault): State<Arc<Vault>>,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Answer {
    let started = Instant::now();
    let req: ListObjectsRequest = parse(&body)?;
    let (model, cache) =
        check_scope(&vault, &store_id, req.authorization_model_id.as_deref()).await?;
    if req.type_name.is_empty() || req.relation.is_empty() || req.user.is_empty() {
        return Err(FgaError::validation("type, relation and user are required"));
    }
    model.check_relation(&req.type_name, &req.relation)?;
    let user = User::parse(&req.user)?;
    model.check_user(&user)?;
    let contextual = contextual(&model, req.contextual_tuples.as_ref())?;
    let deadline = started + LIST_OBJECTS_DEADLINE;
    let checker = Checker {
        model: &model,
        tuples: Tuples {
            db: &vault.store,
            store_id: &store_id,
            contextual: &contextual,
            cache,
        },
        deadline: Some(deadline),
    };
    let mut objects = Vec::new();
    let mut reverse = Reverse::new(&model, checker.tuples, &user, deadline);
    let ids: Vec<String> = match reverse.candidates(&req.type_name, &req.relation).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) if e.code == "deadline_exceeded" => Vec::new(),
        Err(e) => return Err(e),
    };
    // Candidates' tuples loaded a slice at a time, just before they are
    // checked, so that the deadline also bounds the loading.
    'search: for slice in ids.chunks(LIST_OBJECTS_SLICE) {
        if Instant::now() >= deadline {
            break;
        }
        checker
            .prefetch(&req.type_name, slice, &req.relation)
            .await?;
        for id in slice {
            if objects.len() >= MAX_LIST_OBJECTS {
                break 'search;
            }
            let object = Object {
                type_name: req.type_name.clone(),
                id: id.clone(),
            };
            match checker.check(&object, &req.relation, &user).await {
                Ok(true) => objects.push(object.to_string()),
                Ok(false) => {}
                Err(e) if e.code == "deadline_exceeded" => break 'search,
                Err(e) => return Err(e),
            }
        }
    }
    ok(StatusCode::OK, json!({"objects": objects}))
}
