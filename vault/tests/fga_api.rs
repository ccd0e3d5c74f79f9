//! The vault's OpenFGA-compatible API through the real binary over HTTP:
//! preshared-key authentication (and the API off without a key), stores,
//! models and their validation, transactional writes and their limits,
//! reads, check with contextual tuples, batch-check, list-objects, the
//! resolution depth limit, the bulk import, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::*;

const FGA_KEY: &str = "fga-key-1";
const OTHER_KEY: &str = "fga-key-2";

fn settings(
    dir: &std::path::Path,
    port: u16,
    database_url: String,
    schema: Option<String>,
) -> VaultSettings<'_> {
    VaultSettings {
        port,
        database_url,
        database_schema: schema,
        dir,
        jwks_url: "http://127.0.0.1:9/jwks.json",
        upstream_url: "http://127.0.0.1:9",
        refresh_margin: 5,
        name: "vault",
        ca_file: None,
    }
}

async fn start_sqlite(name: &str) -> (VaultProcess, TempDir) {
    let dir = temp_dir(name);
    let db = format!("sqlite://{}", dir.join("vault.db").display());
    let vault = VaultProcess::start_with_env(
        settings(&dir, free_port(), db, None),
        "",
        "",
        &[(
            "AGENTWARD_VAULT_FGA_PRESHARED_KEYS",
            &format!("{FGA_KEY},{OTHER_KEY}"),
        )],
    )
    .await;
    (vault, dir)
}

/// A client of one vault's FGA API.
struct Fga {
    http: reqwest::Client,
    url: String,
}

impl Fga {
    fn new(url: &str) -> Fga {
        Fga {
            http: http(),
            url: url.to_string(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        json(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(FGA_KEY)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        json(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(FGA_KEY)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A new store with `model` (JSON) as its model: (store id, model id).
    async fn store_with(&self, model: Value) -> (String, String) {
        let (status, store) = self.post("/stores", json!({"name": "test store"})).await;
        assert_eq!(status, 201, "{store}");
        let id = store["id"].as_str().unwrap().to_string();
        let (status, m) = self
            .post(&format!("/stores/{id}/authorization-models"), model)
            .await;
        assert_eq!(status, 201, "{m}");
        (
            id,
            m["authorization_model_id"].as_str().unwrap().to_string(),
        )
    }

    async fn write(&self, store: &str, tuples: &[(&str, &str, &str)]) {
        let keys: Vec<Value> = tuples
            .iter()
            .map(|(u, r, o)| json!({"user": u, "relation": r, "object": o}))
            .collect();
        for chunk in keys.chunks(100) {
            let (status, body) = self
                .post(
                    &format!("/stores/{store}/write"),
                    json!({"writes": {"tuple_keys": chunk}}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }

    async fn check(&self, store: &str, user: &str, relation: &str, object: &str) -> (u16, Value) {
        self.post(
            &format!("/stores/{store}/check"),
            json!({"tuple_key": {"user": user, "relation": relation, "object": object}}),
        )
        .await
    }

    async fn allowed(&self, store: &str, user: &str, relation: &str, object: &str) -> bool {
        let (status, body) = self.check(store, user, relation, object).await;
        assert_eq!(status, 200, "{body}");
        body["allowed"].as_bool().unwrap()
    }
}

/// `document` in `folder`s, `group` members, viewers but not blocked.
fn docs_model() -> Value {
    json!({
      "schema_version": "1.1",
      "type_definitions": [
        {"type": "user"},
        {"type": "group", "relations": {"member": {"this": {}}},
         "metadata": {"relations": {"member": {"directly_related_user_types": [
            {"type": "user"}, {"type": "group", "relation": "member"}]}}}},
        {"type": "folder", "relations": {
            "parent": {"this": {}},
            "viewer": {"union": {"child": [{"this": {}},
                {"tupleToUserset": {"tupleset": {"relation": "parent"}, "computedUserset": {"relation": "viewer"}}}]}}},
         "metadata": {"relations": {
            "parent": {"directly_related_user_types": [{"type": "folder"}]},
            "viewer": {"directly_related_user_types": [{"type": "user"}, {"type": "user", "wildcard": {}},
                {"type": "group", "relation": "member"}]}}}},
        {"type": "document", "relations": {
            "parent": {"this": {}},
            "blocked": {"this": {}},
            "viewer": {"union": {"child": [{"this": {}},
                {"tupleToUserset": {"tupleset": {"relation": "parent"}, "computedUserset": {"relation": "viewer"}}}]}},
            "can_read": {"difference": {"base": {"computedUserset": {"relation": "viewer"}},
                "subtract": {"computedUserset": {"relation": "blocked"}}}}},
         "metadata": {"relations": {
            "parent": {"directly_related_user_types": [{"type": "folder"}]},
            "blocked": {"directly_related_user_types": [{"type": "user"}]},
            "viewer": {"directly_related_user_types": [{"type": "user"}, {"type": "group", "relation": "member"}]}}}}
      ]
    })
}

#[tokio::test]
async fn without_a_preshared_key_the_fga_api_is_off_and_the_log_says_so() {
    let dir = temp_dir("fga-off");
    let db = format!("sqlite://{}", dir.join("vault.db").display());
    let vault = VaultProcess::start(settings(&dir, free_port(), db, None)).await;
    let r = http()
        .post(format!("{}/stores", vault.url))
        .bearer_auth(FGA_KEY)
        .json(&json!({"name": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(log.contains("FGA API off"), "{log}");
}

#[tokio::test]
async fn the_api_wants_a_configured_preshared_key_and_never_logs_it() {
    let (vault, _dir) = start_sqlite("fga-auth").await;
    let http = http();
    let url = format!("{}/stores", vault.url);
    let (status, body) = json(http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("bearer_token_missing"))
    );
    let (status, body) = json(
        http.get(&url)
            .bearer_auth("fga-key-3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = json(http.get(&url).bearer_auth(OTHER_KEY).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _) = json(
        http.get(&url)
            .header("authorization", format!("Basic {FGA_KEY}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(log.contains("FGA API on"), "{log}");
    assert!(!log.contains(FGA_KEY) && !log.contains(OTHER_KEY), "{log}");
}

#[tokio::test]
async fn stores_and_models_are_created_listed_read_and_deleted() {
    let (vault, _dir) = start_sqlite("fga-stores").await;
    let fga = Fga::new(&vault.url);
    let (status, body) = fga.post("/stores", json!({"name": "x"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (store, first) = fga.store_with(docs_model()).await;
    assert_eq!(store.len(), 26);
    assert_eq!(first.len(), 26);
    let (status, body) = fga.get(&format!("/stores/{store}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "test store");
    assert!(
        body["created_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );

    let (status, second) = fga
        .post(
            &format!("/stores/{store}/authorization-models"),
            docs_model(),
        )
        .await;
    assert_eq!(status, 201);
    let second = second["authorization_model_id"].as_str().unwrap();
    assert!(second > first.as_str());
    let (status, list) = fga
        .get(&format!("/stores/{store}/authorization-models?page_size=1"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        list["authorization_models"][0]["id"], second,
        "newest first"
    );
    let token = list["continuation_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let (_, next) = fga
        .get(&format!(
            "/stores/{store}/authorization-models?page_size=1&continuation_token={token}"
        ))
        .await;
    assert_eq!(next["authorization_models"][0]["id"], first.as_str());
    assert_eq!(next["continuation_token"], "");
    let (status, model) = fga
        .get(&format!("/stores/{store}/authorization-models/{first}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(model["authorization_model"]["schema_version"], "1.1");
    assert_eq!(
        model["authorization_model"]["type_definitions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (status, body) = fga
        .get(&format!(
            "/stores/{store}/authorization-models/01ARZ3NDEKTSV4RRFFQ69G5FAV"
        ))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("authorization_model_not_found"))
    );

    let (status, stores) = fga.get("/stores").await;
    assert_eq!(status, 200);
    assert!(stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == store.as_str()));
    fga.post("/stores", json!({"name": "another store"})).await;
    let (status, named) = fga.get("/stores?name=another%20store&page_size=1").await;
    assert_eq!(status, 200);
    assert_eq!(named["stores"].as_array().unwrap().len(), 1, "{named}");
    assert_eq!(named["stores"][0]["name"], "another store");
    assert_eq!(named["continuation_token"], "");
    let (status, body) = fga.get("/stores?page_size=lots").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, body) = fga.get("/stores?page_size=101").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("page_size_invalid")),
        "{body}"
    );
    let r = fga
        .http
        .delete(format!("{}/stores/{store}", vault.url))
        .bearer_auth(FGA_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = fga.get(&format!("/stores/{store}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("store_id_not_found"))
    );
    let (status, body) = fga.check(&store, "user:a", "viewer", "document:1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("store_id_not_found"))
    );
}

#[tokio::test]
async fn invalid_models_are_refused_with_the_reason() {
    let (vault, _dir) = start_sqlite("fga-models").await;
    let fga = Fga::new(&vault.url);
    let (_, store) = fga.post("/stores", json!({"name": "models"})).await;
    let path = format!(
        "/stores/{}/authorization-models",
        store["id"].as_str().unwrap()
    );
    let refused = |model: Value, code: &'static str, words: &'static str| {
        let fga = &fga;
        let path = path.clone();
        async move {
            let (status, body) = fga.post(&path, model).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["code"], code, "{body}");
            assert!(body["message"].as_str().unwrap().contains(words), "{body}");
        }
    };
    let user = json!({"type": "user"});
    refused(
        json!({"schema_version": "1.0", "type_definitions": [user]}),
        "invalid_authorization_model",
        "schema",
    )
    .await;
    // An undefined type in a type restriction.
    refused(json!({"schema_version": "1.1", "type_definitions": [
        {"type": "doc", "relations": {"viewer": {"this": {}}},
         "metadata": {"relations": {"viewer": {"directly_related_user_types": [{"type": "person"}]}}}}]}),
        "invalid_authorization_model", "person").await;
    // A computed userset naming an undefined relation.
    refused(
        json!({"schema_version": "1.1", "type_definitions": [user,
        {"type": "doc", "relations": {"viewer": {"computedUserset": {"relation": "editor"}}}}]}),
        "invalid_authorization_model",
        "editor",
    )
    .await;
    // A pure cycle: no tuple can ever grant it.
    refused(
        json!({"schema_version": "1.1", "type_definitions": [user,
        {"type": "doc", "relations": {"a": {"computedUserset": {"relation": "b"}},
                                      "b": {"computedUserset": {"relation": "a"}}}}]}),
        "invalid_authorization_model",
        "entrypoint",
    )
    .await;
    // Directly assignable without an allowed type.
    refused(
        json!({"schema_version": "1.1", "type_definitions": [user,
        {"type": "doc", "relations": {"viewer": {"this": {}}}}]}),
        "invalid_authorization_model",
        "viewer",
    )
    .await;
    // A tupleset relation that allows usersets.
    refused(json!({"schema_version": "1.1", "type_definitions": [user,
        {"type": "folder", "relations": {"viewer": {"this": {}}},
         "metadata": {"relations": {"viewer": {"directly_related_user_types": [{"type": "user"}]}}}},
        {"type": "doc", "relations": {"parent": {"this": {}},
            "viewer": {"tupleToUserset": {"tupleset": {"relation": "parent"}, "computedUserset": {"relation": "viewer"}}}},
         "metadata": {"relations": {"parent": {"directly_related_user_types": [{"type": "folder", "relation": "viewer"}]}}}}]}),
        "invalid_authorization_model", "parent").await;
    // Conditions are not supported.
    refused(json!({"schema_version": "1.1", "type_definitions": [user,
        {"type": "doc", "relations": {"viewer": {"this": {}}},
         "metadata": {"relations": {"viewer": {"directly_related_user_types": [{"type": "user", "condition": "in_hours"}]}}}}],
        "conditions": {"in_hours": {"name": "in_hours", "expression": "true"}}}),
        "validation_error", "conditions are not supported").await;
    refused(
        json!({"schema_version": "1.1", "type_definitions": [user, user]}),
        "cannot_allow_duplicate_types_in_one_request",
        "user",
    )
    .await;
    let (status, body) = fga.post(&path, json!("not a model")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error"))
    );
}

#[tokio::test]
async fn writes_are_transactional_validated_and_limited() {
    let (vault, _dir) = start_sqlite("fga-writes").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(docs_model()).await;
    let write = format!("/stores/{store}/write");
    fga.write(&store, &[("user:anne", "viewer", "document:1")])
        .await;

    // The second tuple exists: nothing of the call is written.
    let (status, body) = fga
        .post(
            &write,
            json!({"writes": {"tuple_keys": [
            {"user": "user:bob", "relation": "viewer", "object": "document:1"},
            {"user": "user:anne", "relation": "viewer", "object": "document:1"}]}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("write_failed_due_to_invalid_input")),
        "{body}"
    );
    assert!(
        !fga.allowed(&store, "user:bob", "viewer", "document:1")
            .await
    );
    // ... unless duplicates are to be ignored.
    let (status, body) = fga
        .post(
            &write,
            json!({"writes": {"on_duplicate": "ignore", "tuple_keys": [
            {"user": "user:bob", "relation": "viewer", "object": "document:1"},
            {"user": "user:anne", "relation": "viewer", "object": "document:1"}]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        fga.allowed(&store, "user:bob", "viewer", "document:1")
            .await
    );

    // A delete of a missing tuple fails the whole call, writes included.
    let (status, body) = fga
        .post(&write, json!({
            "writes": {"tuple_keys": [{"user": "user:carl", "relation": "viewer", "object": "document:1"}]},
            "deletes": {"tuple_keys": [{"user": "user:zed", "relation": "viewer", "object": "document:1"}]}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("write_failed_due_to_invalid_input")),
        "{body}"
    );
    assert!(
        !fga.allowed(&store, "user:carl", "viewer", "document:1")
            .await
    );
    let (status, _) = fga
        .post(&write, json!({"deletes": {"tuple_keys": [{"user": "user:bob", "relation": "viewer", "object": "document:1"}]}}))
        .await;
    assert_eq!(status, 200);
    assert!(
        !fga.allowed(&store, "user:bob", "viewer", "document:1")
            .await
    );

    // Against the model: a type the relation does not allow, an unknown relation.
    let (status, body) = fga
        .post(&write, json!({"writes": {"tuple_keys": [{"user": "user:*", "relation": "viewer", "object": "document:1"}]}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not an allowed type restriction"),
        "{body}"
    );
    let (status, body) = fga
        .post(&write, json!({"writes": {"tuple_keys": [{"user": "user:a", "relation": "owner", "object": "document:1"}]}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, body) = fga.post(&write, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_write_input"))
    );
    let dup = json!({"user": "user:q", "relation": "viewer", "object": "document:2"});
    let (status, body) = fga
        .post(&write, json!({"writes": {"tuple_keys": [dup, dup]}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("cannot_allow_duplicate_tuples_in_one_request"))
    );
    let many: Vec<Value> = (0..101)
        .map(
            |i| json!({"user": format!("user:u{i}"), "relation": "viewer", "object": "document:3"}),
        )
        .collect();
    let (status, body) = fga
        .post(&write, json!({"writes": {"tuple_keys": many}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("exceeded_entity_limit")),
        "{body}"
    );

    // Read back, paged.
    let (status, read) = fga
        .post(&format!("/stores/{store}/read"), json!({"page_size": 1}))
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["tuples"].as_array().unwrap().len(), 1);
    assert!(read["tuples"][0]["timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let (status, read) = fga
        .post(
            &format!("/stores/{store}/read"),
            json!({"tuple_key": {"object": "document:1", "relation": "viewer"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        read["tuples"],
        json!([{"key": {"user": "user:anne", "relation": "viewer", "object": "document:1"},
        "timestamp": read["tuples"][0]["timestamp"]}])
    );
    assert_eq!(read["continuation_token"], "");
    let (_, read) = fga
        .post(
            &format!("/stores/{store}/read"),
            json!({"tuple_key": {"object": "document:", "user": "user:anne"}}),
        )
        .await;
    assert_eq!(read["tuples"].as_array().unwrap().len(), 1, "{read}");
}

#[tokio::test]
async fn check_follows_usersets_parents_wildcards_exclusion_and_contextual_tuples() {
    let (vault, _dir) = start_sqlite("fga-check").await;
    let fga = Fga::new(&vault.url);
    let (store, model_id) = fga.store_with(docs_model()).await;
    fga.write(
        &store,
        &[
            ("user:anne", "member", "group:eng"),
            ("group:eng#member", "member", "group:all"),
            ("group:all#member", "viewer", "folder:root"),
            ("folder:root", "parent", "folder:reports"),
            ("folder:reports", "parent", "document:q4"),
            ("user:*", "viewer", "folder:public"),
            ("folder:public", "parent", "document:faq"),
            ("user:anne", "blocked", "document:q4"),
        ],
    )
    .await;
    assert!(
        fga.allowed(&store, "user:anne", "viewer", "document:q4")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:anne", "can_read", "document:q4")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:bob", "viewer", "document:q4")
            .await
    );
    assert!(
        fga.allowed(&store, "user:bob", "viewer", "document:faq")
            .await
    );
    assert!(
        fga.allowed(&store, "group:eng#member", "viewer", "document:q4")
            .await
    );
    assert!(
        fga.allowed(&store, "group:eng#member", "member", "group:eng")
            .await
    );

    // Contextual tuples count for this check only.
    let check = format!("/stores/{store}/check");
    let with_context = json!({
        "authorization_model_id": model_id,
        "tuple_key": {"user": "user:bob", "relation": "can_read", "object": "document:q4"},
        "contextual_tuples": {"tuple_keys": [{"user": "user:bob", "relation": "member", "object": "group:eng"}]}});
    let (status, body) = fga.post(&check, with_context.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);
    assert!(
        !fga.allowed(&store, "user:bob", "can_read", "document:q4")
            .await
    );
    let mut invalid = with_context.clone();
    invalid["contextual_tuples"]["tuple_keys"][0]["relation"] = json!("owner");
    let (status, body) = fga.post(&check, invalid).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );

    // Questions outside the model.
    let (status, body) = fga.check(&store, "user:anne", "owner", "document:q4").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, body) = fga
        .check(&store, "person:anne", "viewer", "document:q4")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, body) = fga.check(&store, "user:anne", "viewer", "q4").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );

    // No model yet in a new store.
    let (_, empty) = fga.post("/stores", json!({"name": "empty store"})).await;
    let (status, body) = fga
        .check(
            empty["id"].as_str().unwrap(),
            "user:a",
            "viewer",
            "document:1",
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("latest_authorization_model_not_found"))
    );
}

#[tokio::test]
async fn batch_check_answers_by_correlation_id_within_its_limits() {
    let (vault, _dir) = start_sqlite("fga-batch").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(docs_model()).await;
    fga.write(
        &store,
        &[
            ("user:anne", "viewer", "document:1"),
            ("user:anne", "blocked", "document:2"),
            ("user:anne", "viewer", "document:2"),
        ],
    )
    .await;
    let path = format!("/stores/{store}/batch-check");
    let item = |id: &str, object: &str, relation: &str| {
        json!({"correlation_id": id,
        "tuple_key": {"user": "user:anne", "relation": relation, "object": object}})
    };
    let (status, body) = fga
        .post(&path, json!({"checks": [item("a-1", "document:1", "can_read"), item("b_2", "document:2", "can_read"),
                                       item("c", "document:2", "owner")]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["a-1"], json!({"allowed": true}));
    assert_eq!(body["result"]["b_2"], json!({"allowed": false}));
    assert_eq!(
        body["result"]["c"]["error"]["input_error"], "validation_error",
        "{body}"
    );

    let (status, body) = fga.post(&path, json!({"checks": [item("x", "document:1", "viewer"), item("x", "document:2", "viewer")]})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
    let (status, _) = fga
        .post(
            &path,
            json!({"checks": [item("bad id!", "document:1", "viewer")]}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = fga
        .post(
            &path,
            json!({"checks": [item(&"x".repeat(37), "document:1", "viewer")]}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = fga.post(&path, json!({"checks": []})).await;
    assert_eq!(status, 400);
    let fifty: Vec<Value> = (0..50)
        .map(|i| item(&format!("c{i}"), "document:1", "viewer"))
        .collect();
    let (status, body) = fga.post(&path, json!({"checks": fifty})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"].as_object().unwrap().len(), 50);
    let fifty_one: Vec<Value> = (0..51)
        .map(|i| item(&format!("c{i}"), "document:1", "viewer"))
        .collect();
    let (status, body) = fga.post(&path, json!({"checks": fifty_one})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error")),
        "{body}"
    );
}

#[tokio::test]
async fn list_objects_and_the_resolution_depth_limit() {
    let (vault, _dir) = start_sqlite("fga-depth").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(docs_model()).await;
    // group:g0 ... g26, each the member set of the next.
    let mut tuples: Vec<(String, String, String)> =
        vec![("user:bob".into(), "member".into(), "group:g0".into())];
    for i in 1..=26 {
        tuples.push((
            format!("group:g{}#member", i - 1),
            "member".into(),
            format!("group:g{i}"),
        ));
    }
    tuples.push((
        "group:g25#member".into(),
        "viewer".into(),
        "document:deep".into(),
    ));
    tuples.push((
        "group:g2#member".into(),
        "viewer".into(),
        "document:shallow".into(),
    ));
    tuples.push((
        "user:bob".into(),
        "blocked".into(),
        "document:shallow".into(),
    ));
    let refs: Vec<(&str, &str, &str)> = tuples
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    fga.write(&store, &refs).await;

    // 25 levels resolve, 26 are too deep (as OpenFGA's default limit).
    assert!(fga.allowed(&store, "user:bob", "member", "group:g25").await);
    let (status, body) = fga.check(&store, "user:bob", "member", "group:g26").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("authorization_model_resolution_too_complex")),
        "{body}"
    );
    let (status, body) = fga
        .check(&store, "user:bob", "viewer", "document:deep")
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = fga
        .post(&format!("/stores/{store}/list-objects"),
              json!({"type": "document", "relation": "can_read", "user": "user:bob",
                     "contextual_tuples": {"tuple_keys": [{"user": "user:bob", "relation": "viewer", "object": "document:ctx"}]}}))
        .await;
    assert_eq!(status, 400, "the deep document is too deep: {body}");
    let (status, body) = fga
        .post(
            &format!("/stores/{store}/list-objects"),
            json!({"type": "group", "relation": "member", "user": "user:bob"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (store, _) = fga.store_with(docs_model()).await;
    fga.write(
        &store,
        &[
            ("user:bob", "viewer", "document:a"),
            ("user:bob", "viewer", "document:b"),
            ("user:bob", "blocked", "document:b"),
            ("user:eve", "viewer", "document:c"),
        ],
    )
    .await;
    let (status, body) = fga
        .post(&format!("/stores/{store}/list-objects"),
              json!({"type": "document", "relation": "can_read", "user": "user:bob",
                     "contextual_tuples": {"tuple_keys": [{"user": "user:bob", "relation": "viewer", "object": "document:ctx"}]}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objects"], json!(["document:a", "document:ctx"]));
}

#[tokio::test]
async fn bulk_import_writes_many_tuples_in_one_call() {
    let (vault, _dir) = start_sqlite("fga-import").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(docs_model()).await;
    let keys: Vec<Value> = (0..5000)
        .map(|i| json!({"user": format!("user:u{i}"), "relation": "viewer", "object": format!("document:d{}", i % 50)}))
        .collect();
    let (status, body) = fga
        .post(
            &format!("/stores/{store}/import"),
            json!({"tuple_keys": keys}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imported"], 5000);
    // Again: tuples already there are left as they are.
    let (status, _) = fga
        .post(
            &format!("/stores/{store}/import"),
            json!({"tuple_keys": keys}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        fga.allowed(&store, "user:u4999", "viewer", "document:d49")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:u4999", "viewer", "document:d48")
            .await
    );
    let (status, body) = fga
        .post(&format!("/stores/{store}/import"),
              json!({"tuple_keys": [{"user": "user:*", "relation": "viewer", "object": "document:1"}]}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_error"))
    );
}

/// user → `group#member` → `team#member` → `org#member` → `document`
/// viewer: three levels of usersets (the bench's model).
fn orgs_model() -> Value {
    let member = |set: Option<&str>| {
        let mut types = vec![json!({"type": "user"})];
        if let Some(set) = set {
            types.push(json!({"type": set, "relation": "member"}));
        }
        json!({"relations": {"member": {"this": {}}},
               "metadata": {"relations": {"member": {"directly_related_user_types": types}}}})
    };
    let mut group = member(None);
    group["type"] = json!("group");
    let mut team = member(Some("group"));
    team["type"] = json!("team");
    let mut org = member(Some("team"));
    org["type"] = json!("org");
    json!({
      "schema_version": "1.1",
      "type_definitions": [
        {"type": "user"}, group, team, org,
        {"type": "document", "relations": {"viewer": {"this": {}}},
         "metadata": {"relations": {"viewer": {"directly_related_user_types": [
            {"type": "user"}, {"type": "org", "relation": "member"}]}}}}
      ]
    })
}

const ORG_TUPLES: &[(&str, &str, &str)] = &[
    ("user:anne", "member", "group:eng"),
    ("user:bob", "member", "group:ops"),
    ("group:eng#member", "member", "team:core"),
    ("group:ops#member", "member", "team:core"),
    ("team:core#member", "member", "org:acme"),
    ("org:acme#member", "viewer", "document:plan"),
    ("user:carl", "viewer", "document:plan"),
];

impl Fga {
    async fn batch(&self, store: &str, checks: &[(&str, &str, &str)]) -> Vec<bool> {
        let items: Vec<Value> = checks
            .iter()
            .enumerate()
            .map(|(i, (u, r, o))| {
                json!({"tuple_key": {"user": u, "relation": r, "object": o},
                       "correlation_id": format!("c{i}")})
            })
            .collect();
        let (status, body) = self
            .post(
                &format!("/stores/{store}/batch-check"),
                json!({"checks": items}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (0..checks.len())
            .map(|i| {
                body["result"][format!("c{i}")]["allowed"]
                    .as_bool()
                    .unwrap()
            })
            .collect()
    }

    async fn delete(&self, store: &str, tuples: &[(&str, &str, &str)]) {
        let keys: Vec<Value> = tuples
            .iter()
            .map(|(u, r, o)| json!({"user": u, "relation": r, "object": o}))
            .collect();
        let (status, body) = self
            .post(
                &format!("/stores/{store}/write"),
                json!({"deletes": {"tuple_keys": keys}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn import(&self, store: &str, tuples: &[(&str, &str, &str)]) {
        let keys: Vec<Value> = tuples
            .iter()
            .map(|(u, r, o)| json!({"user": u, "relation": r, "object": o}))
            .collect();
        let (status, body) = self
            .post(
                &format!("/stores/{store}/import"),
                json!({"tuple_keys": keys}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn documents(&self, store: &str, user: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/stores/{store}/list-objects"),
                json!({"type": "document", "relation": "viewer", "user": user}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["objects"].clone()
    }
}

#[tokio::test]
async fn answers_follow_every_write_delete_and_import_at_each_level_of_usersets() {
    let (vault, _dir) = start_sqlite("fga-cache-writes").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(orgs_model()).await;
    fga.write(&store, ORG_TUPLES).await;
    let anne = ("user:anne", "viewer", "document:plan");
    // Asked twice: the second answer comes from what the first loaded.
    for _ in 0..2 {
        assert!(fga.allowed(&store, anne.0, anne.1, anne.2).await);
        assert!(
            !fga.allowed(&store, "user:dan", "viewer", "document:plan")
                .await
        );
    }
    assert_eq!(
        fga.documents(&store, "user:anne").await,
        json!(["document:plan"])
    );

    // Each level's tuple deleted, then written back: the next check sees it.
    for link in [
        ("user:anne", "member", "group:eng"),
        ("group:eng#member", "member", "team:core"),
        ("team:core#member", "member", "org:acme"),
        ("org:acme#member", "viewer", "document:plan"),
    ] {
        fga.delete(&store, &[link]).await;
        assert!(
            !fga.allowed(&store, anne.0, anne.1, anne.2).await,
            "{link:?} deleted"
        );
        assert_eq!(
            fga.batch(&store, &[anne, ("user:bob", "viewer", "document:plan")])
                .await,
            [false, matches!(link.2, "group:eng" | "team:core")],
            "{link:?} deleted"
        );
        assert_eq!(
            fga.documents(&store, "user:anne").await,
            json!([]),
            "{link:?} deleted"
        );
        fga.write(&store, &[link]).await;
        assert!(
            fga.allowed(&store, anne.0, anne.1, anne.2).await,
            "{link:?} written back"
        );
    }

    // A new member, by write and by import, at the deepest level.
    assert!(
        !fga.allowed(&store, "user:dan", "viewer", "document:plan")
            .await
    );
    fga.write(&store, &[("user:dan", "member", "group:ops")])
        .await;
    assert!(
        fga.allowed(&store, "user:dan", "viewer", "document:plan")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:erin", "viewer", "document:plan")
            .await
    );
    fga.import(&store, &[("user:erin", "member", "group:eng")])
        .await;
    assert!(
        fga.allowed(&store, "user:erin", "viewer", "document:plan")
            .await
    );
    assert_eq!(
        fga.documents(&store, "user:erin").await,
        json!(["document:plan"])
    );

    // A write that fails changes nothing, and answers stay right after it.
    let (status, _) = fga
        .post(&format!("/stores/{store}/write"),
              json!({"writes": {"tuple_keys": [{"user": "user:fay", "relation": "member", "object": "group:eng"},
                                               {"user": "user:anne", "relation": "member", "object": "group:eng"}]}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        !fga.allowed(&store, "user:fay", "viewer", "document:plan")
            .await
    );
    assert!(fga.allowed(&store, anne.0, anne.1, anne.2).await);

    // A deleted store's cached tuples do not leak into a new one.
    let (status, _) = fga
        .http
        .delete(format!("{}/stores/{store}", fga.url))
        .bearer_auth(FGA_KEY)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 204);
    let (store, _) = fga.store_with(orgs_model()).await;
    assert!(!fga.allowed(&store, anne.0, anne.1, anne.2).await);
}

#[tokio::test]
async fn contextual_tuples_count_for_their_check_only() {
    let (vault, _dir) = start_sqlite("fga-cache-context").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(orgs_model()).await;
    fga.write(&store, ORG_TUPLES).await;
    let check = format!("/stores/{store}/check");
    let dan_in = |object: &str| {
        json!({"tuple_key": {"user": "user:dan", "relation": "viewer", "object": "document:plan"},
               "contextual_tuples": {"tuple_keys": [{"user": "user:dan", "relation": "member", "object": object}]}})
    };
    // Before and after the stored tuples are loaded: the same answers.
    for _ in 0..2 {
        for object in ["group:eng", "team:core", "org:acme"] {
            let (status, body) = fga.post(&check, dan_in(object)).await;
            assert_eq!((status, &body["allowed"]), (200, &json!(true)), "{object}");
            assert!(
                !fga.allowed(&store, "user:dan", "viewer", "document:plan")
                    .await
            );
        }
    }
    // A contextual tuple that duplicates a stored one, and one that grants
    // through a level that is stored: nothing of it stays.
    let (status, body) = fga
        .post(
            &check,
            json!({
        "tuple_key": {"user": "user:dan", "relation": "viewer", "object": "document:new"},
        "contextual_tuples": {"tuple_keys": [
            {"user": "org:acme#member", "relation": "viewer", "object": "document:new"},
            {"user": "user:dan", "relation": "member", "object": "group:ops"}]}}),
        )
        .await;
    assert_eq!((status, &body["allowed"]), (200, &json!(true)));
    assert!(
        !fga.allowed(&store, "user:dan", "viewer", "document:new")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:anne", "viewer", "document:new")
            .await
    );
    assert_eq!(fga.documents(&store, "user:dan").await, json!([]));
}

#[tokio::test]
async fn a_new_model_answers_at_once_and_a_named_model_keeps_its_answers() {
    let (vault, _dir) = start_sqlite("fga-cache-models").await;
    let fga = Fga::new(&vault.url);
    let (store, first) = fga.store_with(orgs_model()).await;
    fga.write(&store, ORG_TUPLES).await;
    assert!(
        fga.allowed(&store, "user:anne", "viewer", "document:plan")
            .await
    );
    // The second model lets only users be viewers: org members no longer are.
    let mut only_users = orgs_model();
    only_users["type_definitions"][4]["metadata"]["relations"]["viewer"]
        ["directly_related_user_types"] = json!([{"type": "user"}]);
    let (status, body) = fga
        .post(&format!("/stores/{store}/authorization-models"), only_users)
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !fga.allowed(&store, "user:anne", "viewer", "document:plan")
            .await
    );
    assert!(
        fga.allowed(&store, "user:carl", "viewer", "document:plan")
            .await
    );
    let (status, body) = fga
        .post(
            &format!("/stores/{store}/check"),
            json!({
            "authorization_model_id": first,
            "tuple_key": {"user": "user:anne", "relation": "viewer", "object": "document:plan"}}),
        )
        .await;
    assert_eq!((status, &body["allowed"]), (200, &json!(true)), "{body}");
}

#[tokio::test]
async fn a_write_through_another_vault_on_the_same_database_is_seen_at_once() {
    let (a, dir) = start_sqlite("fga-cache-replicas").await;
    let db = format!("sqlite://{}", dir.join("vault.db").display());
    let other_dir = temp_dir("fga-cache-replicas-b");
    let b = VaultProcess::start_with_env(
        settings(&other_dir, free_port(), db, None),
        "",
        "",
        &[("AGENTWARD_VAULT_FGA_PRESHARED_KEYS", FGA_KEY)],
    )
    .await;
    let (fa, fb) = (Fga::new(&a.url), Fga::new(&b.url));
    let (store, _) = fa.store_with(orgs_model()).await;
    fa.write(&store, ORG_TUPLES).await;
    let anne = ("user:anne", "viewer", "document:plan");
    assert!(fa.allowed(&store, anne.0, anne.1, anne.2).await);
    assert!(fb.allowed(&store, anne.0, anne.1, anne.2).await);
    fb.delete(&store, &[("group:eng#member", "member", "team:core")])
        .await;
    assert!(
        !fa.allowed(&store, anne.0, anne.1, anne.2).await,
        "a's cache knew the old tuple"
    );
    fb.write(&store, &[("group:eng#member", "member", "team:core")])
        .await;
    assert!(fa.allowed(&store, anne.0, anne.1, anne.2).await);
    fa.delete(&store, &[("user:anne", "member", "group:eng")])
        .await;
    assert!(
        !fb.allowed(&store, anne.0, anne.1, anne.2).await,
        "b's cache knew the old tuple"
    );
}

#[tokio::test]
async fn a_userset_with_more_members_than_a_cache_entry_holds_is_answered_by_the_database() {
    let (vault, _dir) = start_sqlite("fga-cache-many").await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(orgs_model()).await;
    fga.write(&store, ORG_TUPLES).await;
    let users: Vec<String> = (0..1500).map(|i| format!("user:u{i}")).collect();
    let mut tuples: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|u| (u.as_str(), "member", "group:big"))
        .collect();
    tuples.push(("group:big#member", "member", "team:core"));
    tuples.extend(
        users
            .iter()
            .map(|u| (u.as_str(), "viewer", "document:wide")),
    );
    fga.import(&store, &tuples).await;
    for _ in 0..2 {
        assert!(
            fga.allowed(&store, "user:u1499", "viewer", "document:plan")
                .await
        );
        assert!(
            fga.allowed(&store, "user:u7", "viewer", "document:wide")
                .await
        );
        assert!(
            !fga.allowed(&store, "user:x", "viewer", "document:plan")
                .await
        );
        assert!(
            !fga.allowed(&store, "user:x", "viewer", "document:wide")
                .await
        );
    }
    fga.delete(
        &store,
        &[
            ("user:u1499", "member", "group:big"),
            ("user:u7", "viewer", "document:wide"),
        ],
    )
    .await;
    assert!(
        !fga.allowed(&store, "user:u1499", "viewer", "document:plan")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:u7", "viewer", "document:wide")
            .await
    );
    assert!(
        fga.allowed(&store, "user:u1498", "viewer", "document:plan")
            .await
    );
    assert_eq!(
        fga.documents(&store, "user:u3").await,
        json!(["document:plan", "document:wide"])
    );
}

#[tokio::test]
async fn the_same_answers_from_postgresql() {
    let mut url = None;
    for candidate in [
        "postgres://postgres@127.0.0.1:5432/test",
        "postgres://root@127.0.0.1:5432/test",
    ] {
        let candidate =
            std::env::var("AGENTWARD_VAULT_TEST_DATABASE_URL").unwrap_or(candidate.to_string());
        if sqlx::PgPool::connect(&candidate).await.is_ok() {
            url = Some(candidate);
            break;
        }
    }
    let Some(url) = url else {
        eprintln!("SKIPPED: no PostgreSQL");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("vault_fga_{}_{nanos}", std::process::id());
    let dir = temp_dir("fga-pg");
    let vault = VaultProcess::start_with_env(
        settings(&dir, free_port(), url.clone(), Some(schema.clone())),
        "",
        "",
        &[("AGENTWARD_VAULT_FGA_PRESHARED_KEYS", FGA_KEY)],
    )
    .await;
    let fga = Fga::new(&vault.url);
    let (store, _) = fga.store_with(docs_model()).await;
    fga.write(
        &store,
        &[
            ("user:anne", "member", "group:eng"),
            ("group:eng#member", "viewer", "folder:root"),
            ("folder:root", "parent", "document:1"),
            ("user:anne", "blocked", "document:2"),
            ("folder:root", "parent", "document:2"),
        ],
    )
    .await;
    assert!(
        fga.allowed(&store, "user:anne", "can_read", "document:1")
            .await
    );
    assert!(
        !fga.allowed(&store, "user:anne", "can_read", "document:2")
            .await
    );
    let (status, body) = fga
        .post(
            &format!("/stores/{store}/list-objects"),
            json!({"type": "document", "relation": "can_read", "user": "user:anne"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["objects"], json!(["document:1"]));
    let (status, body) = fga
        .post(&format!("/stores/{store}/write"),
              json!({"writes": {"tuple_keys": [{"user": "user:anne", "relation": "member", "object": "group:eng"}]}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("write_failed_due_to_invalid_input"))
    );
    // A bulk import (large enough to refresh the statistics) is answered.
    let users: Vec<String> = (0..1200).map(|i| format!("user:bulk{i}")).collect();
    let bulk: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|u| (u.as_str(), "member", "group:bulk"))
        .chain([("group:bulk#member", "viewer", "folder:root")])
        .collect();
    fga.import(&store, &bulk).await;
    assert!(
        fga.allowed(&store, "user:bulk1199", "can_read", "document:1")
            .await
    );
    // A second replica on the same database: each sees the other's writes
    // at once, whatever its tuple cache holds.
    let other_dir = temp_dir("fga-pg-b");
    let replica = VaultProcess::start_with_env(
        settings(&other_dir, free_port(), url.clone(), Some(schema.clone())),
        "",
        "",
        &[("AGENTWARD_VAULT_FGA_PRESHARED_KEYS", FGA_KEY)],
    )
    .await;
    let other = Fga::new(&replica.url);
    assert!(
        other
            .allowed(&store, "user:anne", "can_read", "document:1")
            .await
    );
    fga.delete(&store, &[("user:anne", "member", "group:eng")])
        .await;
    assert!(
        !other
            .allowed(&store, "user:anne", "can_read", "document:1")
            .await
    );
    other
        .write(&store, &[("user:anne", "member", "group:eng")])
        .await;
    assert!(
        fga.allowed(&store, "user:anne", "can_read", "document:1")
            .await
    );
    drop(replica);
    drop(vault);
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}
