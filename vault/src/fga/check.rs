//! The evaluator: does `user` have `relation` on `object`, under a model,
//! over the stored tuples plus a request's contextual tuples. It follows
//! OpenFGA's semantics: direct tuples within the relation's type
//! restrictions (wildcards, usersets expanded), computed usersets,
//! tuple-to-userset, union, intersection and exclusion. Cycles in the
//! tuples answer as the `fga` CLI's embedded OpenFGA does: a cycle closed by
//! a relation's own recursion (`member: [group#member]`, `viewer from parent`
//! in `viewer`) is plain false; any other cycle marks its branch, and a
//! marked branch is false under `and` and spoils a whole `but not` (base or
//! subtract) to false; following more than [`MAX_DEPTH`] tuples deep (usersets,
//! tuple-to-userset; computed usersets do not count) is an error
//! (`authorization_model_resolution_too_complex`), as the `fga` CLI's
//! embedded OpenFGA answers (25 levels pass, 26 fail).

use super::cache::{StoredUser, Users, View, MAX_ENTRY_USERS, MAX_LOAD_ROWS};
use super::errors::FgaError;
use super::model::{Model, Object, Tuple, User, Userset};
use super::store;
use crate::store::Store;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// OpenFGA's default resolve depth (`OPENFGA_RESOLVE_NODE_LIMIT`): tuples
/// followed from the checked object.
pub const MAX_DEPTH: u32 = 25;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The stored tuples of one FGA store, overlaid with contextual tuples.
#[derive(Debug, Clone, Copy)]
pub struct Tuples<'a> {
    /// The database.
    pub db: &'a Store,
    /// The FGA store.
    pub store_id: &'a str,
    /// The request's contextual tuples (already validated).
    pub contextual: &'a [Tuple],
    /// The tuple cache at the revision the request read; `None`: every
    /// lookup asks the database.
    pub cache: Option<View<'a>>,
}

impl Tuples<'_> {
    /// The stored users of `object#relation`: from the cache, or loaded into
    /// it; [`Users::Many`] (ask the database) when too many or uncached.
    async fn users(&self, object: &Object, relation: &str) -> Result<Users, FgaError> {
        let Some(view) = self.cache else {
            return Ok(Users::Many);
        };
        if let Some(users) = view.get(&object.type_name, &object.id, relation) {
            return Ok(users);
        }
        let rows = store::object_users(
            self.db,
            self.store_id,
            &object.type_name,
            &object.id,
            relation,
            MAX_ENTRY_USERS + 1,
        )
        .await?;
        let users = Users::from_rows(rows);
        view.put(
            self.store_id,
            &object.type_name,
            &object.id,
            relation,
            users.clone(),
        );
        Ok(users)
    }

    /// Loads the entries of `relation` on the objects `object_type:id` for
    /// `ids` that the cache lacks, in one query per 500 objects, so that
    /// evaluating them one by one finds them in memory.
    pub async fn prefetch(
        &self,
        object_type: &str,
        ids: &[String],
        relation: &str,
    ) -> Result<(), FgaError> {
        let Some(view) = self.cache else {
            return Ok(());
        };
        if ids.len() < 2 {
            return Ok(());
        }
        let missing = view.missing(object_type, ids, relation);
        if missing.len() < 2 {
            return Ok(());
        }
        for chunk in missing.chunks(500) {
            let rows = store::objects_users(
                self.db,
                self.store_id,
                object_type,
                chunk,
                relation,
                MAX_LOAD_ROWS + 1,
            )
            .await?;
            if rows.len() > MAX_LOAD_ROWS {
                // Too much at once: one by one, as they are needed.
                return Ok(());
            }
            let mut by_object: HashMap<String, Vec<StoredUser>> =
                chunk.iter().map(|id| (id.clone(), Vec::new())).collect();
            for (id, user) in rows {
                if let Some(users) = by_object.get_mut(&id) {
                    users.push(user);
                }
            }
            for (id, users) in by_object {
                view.put(
                    self.store_id,
                    object_type,
                    &id,
                    relation,
                    Users::from_rows(users),
                );
            }
        }
        Ok(())
    }

    async fn exists(&self, t: &Tuple) -> Result<bool, FgaError> {
        if self.contextual.contains(t) {
            return Ok(true);
        }
        let users = self.users(&t.object, &t.relation).await?;
        let relation = t.user.relation.as_deref().unwrap_or("");
        match users.contains(&t.user.type_name, &t.user.id, relation) {
            Some(found) => Ok(found),
            None => store::exists(self.db, self.store_id, t).await,
        }
    }

    async fn user_ids(
        &self,
        object: &Object,
        relation: &str,
        user_type: &str,
        user_relation: Option<&str>,
    ) -> Result<Vec<String>, FgaError> {
        let users = self.users(object, relation).await?;
        let mut ids = match users.ids(user_type, user_relation.unwrap_or("")) {
            Some(ids) => ids,
            None => {
                store::user_ids(
                    self.db,
                    self.store_id,
                    object,
                    relation,
                    user_type,
                    user_relation.unwrap_or(""),
                )
                .await?
            }
        };
        for t in self.contextual {
            if &t.object == object
                && t.relation == relation
                && t.user.type_name == user_type
                && t.user.relation.as_deref() == user_relation
                && !ids.contains(&t.user.id)
            {
                ids.push(t.user.id.clone());
            }
        }
        Ok(ids)
    }

    /// Whether any of `users` has `relation` on any object `object_type:id`
    /// for `ids` (direct tuples only).
    async fn any_exists(
        &self,
        object_type: &str,
        ids: &[String],
        relation: &str,
        users: &[User],
    ) -> Result<bool, FgaError> {
        for t in self.contextual {
            if t.object.type_name == object_type
                && t.relation == relation
                && users.contains(&t.user)
                && ids.contains(&t.object.id)
            {
                return Ok(true);
            }
        }
        let mut uncached = Vec::new();
        if self.cache.is_some() {
            self.prefetch(object_type, ids, relation).await?;
            for id in ids {
                let object = Object {
                    type_name: object_type.to_string(),
                    id: id.clone(),
                };
                let listed = self.users(&object, relation).await?;
                for user in users {
                    let user_relation = user.relation.as_deref().unwrap_or("");
                    match listed.contains(&user.type_name, &user.id, user_relation) {
                        Some(true) => return Ok(true),
                        Some(false) => {}
                        None => {
                            uncached.push(id.clone());
                            break;
                        }
                    }
                }
            }
        } else {
            uncached.extend_from_slice(ids);
        }
        if uncached.is_empty() {
            return Ok(false);
        }
        for user in users {
            if store::exists_any(
                self.db,
                self.store_id,
                object_type,
                &uncached,
                relation,
                user,
            )
            .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// One branch's answer: allowed, or not; `cycle` marks a branch that met a
/// cycle (see the module's comment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    cycle: bool,
}

const NO: Outcome = Outcome {
    allowed: false,
    cycle: false,
};
const YES: Outcome = Outcome {
    allowed: true,
    cycle: false,
};
const CYCLE: Outcome = Outcome {
    allowed: false,
    cycle: true,
};

impl Outcome {
    fn granted(self) -> bool {
        self.allowed && !self.cycle
    }
}

/// How the evaluator reached a relation: through the relation's own
/// recursion (a userset or parent of the same type and relation) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Recursive,
    Other,
}

/// A check under one model over one store's tuples.
#[derive(Debug, Clone, Copy)]
pub struct Checker<'a> {
    /// The model.
    pub model: &'a Model,
    /// The tuples.
    pub tuples: Tuples<'a>,
    /// Past this instant the check fails with `deadline_exceeded`.
    pub deadline: Option<Instant>,
}

impl<'a> Checker<'a> {
    /// Whether `user` has `relation` on `object`. The caller has validated
    /// the three against the model.
    pub async fn check(
        &self,
        object: &Object,
        relation: &str,
        user: &User,
    ) -> Result<bool, FgaError> {
        let out = self
            .resolve(object, relation, user, 0, &[], Edge::Other)
            .await?;
        Ok(out.granted())
    }

    fn resolve<'b>(
        &'b self,
        object: &'b Object,
        relation: &'b str,
        user: &'b User,
        depth: u32,
        visited: &'b [String],
        edge: Edge,
    ) -> Boxed<'b, Result<Outcome, FgaError>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(FgaError::too_complex());
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(FgaError::deadline());
            }
            let key = format!("{object}#{relation}@{user}");
            if visited.contains(&key) {
                return Ok(match edge {
                    Edge::Recursive => NO,
                    Edge::Other => CYCLE,
                });
            }
            // `group:eng#member` is a member of `group:eng`.
            if user.relation.as_deref() == Some(relation)
                && user.type_name == object.type_name
                && user.id == object.id
            {
                return Ok(YES);
            }
            let Some(rel) = self.model.relation(&object.type_name, relation) else {
                return Ok(NO);
            };
            let mut path = Vec::with_capacity(visited.len() + 1);
            path.extend_from_slice(visited);
            path.push(key);
            self.rewrite(object, relation, &rel.rewrite, user, depth, &path)
                .await
        })
    }

    fn rewrite<'b>(
        &'b self,
        object: &'b Object,
        relation: &'b str,
        rewrite: &'b Userset,
        user: &'b User,
        depth: u32,
        path: &'b [String],
    ) -> Boxed<'b, Result<Outcome, FgaError>> {
        Box::pin(async move {
            match rewrite {
                Userset::This(_) => self.direct(object, relation, user, depth, path).await,
                // Same object: OpenFGA does not count it as a level.
                Userset::Computed(c) => {
                    self.resolve(object, &c.relation, user, depth, path, Edge::Other)
                        .await
                }
                Userset::TupleToUserset(ttu) => {
                    let parents_rel = self
                        .model
                        .relation(&object.type_name, &ttu.tupleset.relation);
                    let mut any = Any::default();
                    for r in parents_rel.map(|r| r.direct.as_slice()).unwrap_or(&[]) {
                        if r.relation.is_some() || r.wildcard.is_some() {
                            continue;
                        }
                        if self
                            .model
                            .relation(&r.type_name, &ttu.computed.relation)
                            .is_none()
                        {
                            continue;
                        }
                        let edge = if r.type_name == object.type_name
                            && ttu.computed.relation == relation
                        {
                            Edge::Recursive
                        } else {
                            Edge::Other
                        };
                        let ids = self
                            .tuples
                            .user_ids(object, &ttu.tupleset.relation, &r.type_name, None)
                            .await?;
                        self.prefetch(&r.type_name, &ids, &ttu.computed.relation)
                            .await?;
                        for id in ids {
                            if id == "*" {
                                continue;
                            }
                            let parent = Object {
                                type_name: r.type_name.clone(),
                                id,
                            };
                            let out = self
                                .resolve(
                                    &parent,
                                    &ttu.computed.relation,
                                    user,
                                    depth + 1,
                                    path,
                                    edge,
                                )
                                .await;
                            if any.add(out) {
                                return Ok(YES);
                            }
                        }
                    }
                    any.finish()
                }
                Userset::Union(c) => {
                    let mut any = Any::default();
                    for child in &c.child {
                        let out = self
                            .rewrite(object, relation, child, user, depth, path)
                            .await;
                        if any.add(out) {
                            return Ok(YES);
                        }
                    }
                    any.finish()
                }
                Userset::Intersection(c) => {
                    let mut error = None;
                    for child in &c.child {
                        match self
                            .rewrite(object, relation, child, user, depth, path)
                            .await
                        {
                            Ok(out) if !out.granted() => {
                                return Ok(Outcome {
                                    allowed: false,
                                    cycle: out.cycle,
                                })
                            }
                            Ok(_) => {}
                            Err(e) => {
                                error.get_or_insert(e);
                            }
                        }
                    }
                    match error {
                        Some(e) => Err(e),
                        None => Ok(YES),
                    }
                }
                Userset::Difference(d) => {
                    let base = self
                        .rewrite(object, relation, &d.base, user, depth, path)
                        .await;
                    if let Ok(out) = base {
                        if !out.granted() {
                            return Ok(Outcome {
                                allowed: false,
                                cycle: out.cycle,
                            });
                        }
                    }
                    let sub = self
                        .rewrite(object, relation, &d.subtract, user, depth, path)
                        .await;
                    if let Ok(out) = sub {
                        if out.allowed || out.cycle {
                            return Ok(Outcome {
                                allowed: false,
                                cycle: out.cycle,
                            });
                        }
                    }
                    base?;
                    sub?;
                    Ok(YES)
                }
            }
        })
    }

    /// Direct tuples of `object#relation` within its type restrictions:
    /// the user itself, the wildcard of its type, then each userset.
    async fn direct(
        &self,
        object: &Object,
        relation: &str,
        user: &User,
        depth: u32,
        path: &[String],
    ) -> Result<Outcome, FgaError> {
        let Some(rel) = self.model.relation(&object.type_name, relation) else {
            return Ok(NO);
        };
        let tuple = |u: User| Tuple {
            object: object.clone(),
            relation: relation.to_string(),
            user: u,
        };
        if rel.direct.iter().any(|r| user.matches(r))
            && self.tuples.exists(&tuple(user.clone())).await?
        {
            return Ok(YES);
        }
        if user.relation.is_none() && !user.is_wildcard() {
            let wildcard = User {
                type_name: user.type_name.clone(),
                id: "*".to_string(),
                relation: None,
            };
            if rel.direct.iter().any(|r| wildcard.matches(r))
                && self.tuples.exists(&tuple(wildcard)).await?
            {
                return Ok(YES);
            }
        }
        let mut any = Any::default();
        for r in &rel.direct {
            let Some(user_relation) = &r.relation else {
                continue;
            };
            let edge = if r.type_name == object.type_name && user_relation == relation {
                Edge::Recursive
            } else {
                Edge::Other
            };
            let ids = self
                .tuples
                .user_ids(object, relation, &r.type_name, Some(user_relation))
                .await?;
            if ids.is_empty() {
                continue;
            }
            self.prefetch(&r.type_name, &ids, user_relation).await?;
            // Usersets whose relation only holds plain users: one query for
            // all of them instead of one check each.
            if depth < MAX_DEPTH {
                if let Some(users) = self.leaf_users(&r.type_name, user_relation, user) {
                    if self
                        .tuples
                        .any_exists(&r.type_name, &ids, user_relation, &users)
                        .await?
                    {
                        return Ok(YES);
                    }
                    continue;
                }
            }
            for id in ids {
                let set = Object {
                    type_name: r.type_name.clone(),
                    id,
                };
                let out = self
                    .resolve(&set, user_relation, user, depth + 1, path, edge)
                    .await;
                if any.add(out) {
                    return Ok(YES);
                }
            }
        }
        any.finish()
    }
}

impl Checker<'_> {
    /// Loads the tuples of `type_name:id#relation` for `ids` at once when
    /// the relation is directly assignable (the evaluator reads them next).
    pub async fn prefetch(
        &self,
        type_name: &str,
        ids: &[String],
        relation: &str,
    ) -> Result<(), FgaError> {
        match self.model.relation(type_name, relation) {
            Some(rel) if !rel.direct.is_empty() => {
                self.tuples.prefetch(type_name, ids, relation).await
            }
            _ => Ok(()),
        }
    }

    /// When `type_name#relation` is directly assignable to plain users and
    /// wildcards only (no usersets, no rewrite), the users whose tuple would
    /// grant it to `user`: itself and its type's wildcard, as allowed.
    fn leaf_users(&self, type_name: &str, relation: &str, user: &User) -> Option<Vec<User>> {
        let rel = self.model.relation(type_name, relation)?;
        if !matches!(rel.rewrite, Userset::This(_))
            || rel.direct.iter().any(|r| r.relation.is_some())
        {
            return None;
        }
        if user.relation.is_some() {
            return None;
        }
        let mut users = Vec::new();
        if rel.direct.iter().any(|r| user.matches(r)) {
            users.push(user.clone());
        }
        let wildcard = User {
            type_name: user.type_name.clone(),
            id: "*".to_string(),
            relation: None,
        };
        if !user.is_wildcard() && rel.direct.iter().any(|r| wildcard.matches(r)) {
            users.push(wildcard);
        }
        Some(users)
    }
}

/// A union's running answer: true wins over errors, an error over false;
/// a cycle met on the way marks a false answer.
#[derive(Default)]
struct Any {
    cycle: bool,
    error: Option<FgaError>,
}

impl Any {
    /// Adds an operand's answer; true when the union is decided (allowed).
    fn add(&mut self, out: Result<Outcome, FgaError>) -> bool {
        match out {
            Ok(o) if o.granted() => true,
            Ok(o) => {
                self.cycle |= o.cycle;
                false
            }
            Err(e) => {
                self.error.get_or_insert(e);
                false
            }
        }
    }

    fn finish(self) -> Result<Outcome, FgaError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Outcome {
                allowed: false,
                cycle: self.cycle,
            }),
        }
    }
}
