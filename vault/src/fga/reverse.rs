//! Candidates for list-objects, found backwards from the user (OpenFGA's
//! reverse expansion): the objects of a type on which the user *might* have
//! a relation, a superset of the answer that list-objects then checks one by
//! one with [`super::check::Checker`]. Walking from the user touches the
//! tuples that lead to them, not every object of the type.
//!
//! Each relation the target depends on gets a set of object ids, grown to a
//! fixpoint: direct tuples naming the user (or its type's wildcard), tuples
//! naming a userset whose object is already in its relation's set, tuple-to-
//! userset parents already in their set, computed relations, the union of a
//! union, the intersection of an intersection, and the base of a `but not`
//! (the checks remove what the subtraction takes away). Each (relation, user
//! type, user relation, user id) lookup runs once, so a round after the
//! first only asks about ids that are new.

use super::check::Tuples;
use super::errors::FgaError;
use super::model::{Model, RelationReference, User, Userset};
use super::store;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A relation of a type: (`document`, `viewer`).
type Key = (String, String);

/// A lookup: objects of a type with a relation to users of a type (and
/// relation, `""` for plain objects).
type Edge = (String, String, String, String);

/// The reverse expansion of one list-objects request.
pub struct Reverse<'a> {
    model: &'a Model,
    tuples: Tuples<'a>,
    user: &'a User,
    deadline: Instant,
    /// Objects found per lookup and user id (absent: not asked yet).
    found: HashMap<Edge, HashMap<String, Vec<String>>>,
}

impl<'a> Reverse<'a> {
    /// A reverse expansion for `user` under `model`.
    pub fn new(model: &'a Model, tuples: Tuples<'a>, user: &'a User, deadline: Instant) -> Self {
        Reverse {
            model,
            tuples,
            user,
            deadline,
            found: HashMap::new(),
        }
    }

    /// The candidate ids of `object_type` for `relation`, in id order.
    pub async fn candidates(
        &mut self,
        object_type: &str,
        relation: &str,
    ) -> Result<BTreeSet<String>, FgaError> {
        let target: Key = (object_type.to_string(), relation.to_string());
        let keys = self.dependencies(&target);
        let mut sets: BTreeMap<Key, BTreeSet<String>> =
            keys.iter().map(|k| (k.clone(), BTreeSet::new())).collect();
        // `group:eng#member` has `member` on `group:eng`.
        if let Some(rel) = &self.user.relation {
            if let Some(set) = sets.get_mut(&(self.user.type_name.clone(), rel.clone())) {
                set.insert(self.user.id.clone());
            }
        }
        loop {
            if Instant::now() >= self.deadline {
                return Err(FgaError::deadline());
            }
            let mut changed = false;
            let model = self.model;
            for key in &keys {
                let Some(rel) = model.relation(&key.0, &key.1) else {
                    continue;
                };
                let grown = self.expand(key, &rel.rewrite, &rel.direct, &sets).await?;
                if let Some(set) = sets.get_mut(key) {
                    let before = set.len();
                    set.extend(grown);
                    changed |= set.len() != before;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(sets.remove(&target).unwrap_or_default())
    }

    /// Every relation `target` depends on, itself included.
    fn dependencies(&self, target: &Key) -> Vec<Key> {
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        let mut stack = vec![target.clone()];
        while let Some(key) = stack.pop() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let Some(rel) = self.model.relation(&key.0, &key.1) else {
                continue;
            };
            self.depends(&key.0, &rel.rewrite, &rel.direct, &mut stack);
            order.push(key);
        }
        order
    }

    fn depends(
        &self,
        object_type: &str,
        rewrite: &Userset,
        direct: &[RelationReference],
        out: &mut Vec<Key>,
    ) {
        match rewrite {
            Userset::This(_) => {
                for r in direct {
                    if let Some(user_relation) = &r.relation {
                        out.push((r.type_name.clone(), user_relation.clone()));
                    }
                }
            }
            Userset::Computed(c) => out.push((object_type.to_string(), c.relation.clone())),
            Userset::TupleToUserset(ttu) => {
                for parent in self.parents(object_type, &ttu.tupleset.relation) {
                    out.push((parent, ttu.computed.relation.clone()));
                }
            }
            Userset::Union(c) | Userset::Intersection(c) => {
                for child in &c.child {
                    self.depends(object_type, child, direct, out);
                }
            }
            Userset::Difference(d) => self.depends(object_type, &d.base, direct, out),
        }
    }

    /// The ids of `key`'s type that `rewrite` may grant, from the sets so far.
    fn expand<'b>(
        &'b mut self,
        key: &'b Key,
        rewrite: &'b Userset,
        direct: &'b [RelationReference],
        sets: &'b BTreeMap<Key, BTreeSet<String>>,
    ) -> Boxed<'b, Result<BTreeSet<String>, FgaError>> {
        Box::pin(async move {
            let set_of = |k: Key| sets.get(&k).cloned().unwrap_or_default();
            let object_type = &key.0;
            let mut out = BTreeSet::new();
            match rewrite {
                Userset::This(_) => {
                    let user = self.user;
                    if direct.iter().any(|r| user.matches(r)) {
                        let edge = edge(key, &user.type_name, user.relation.as_deref());
                        out.extend(self.lookup(edge, std::slice::from_ref(&user.id)).await?);
                    }
                    if user.relation.is_none()
                        && !user.is_wildcard()
                        && direct
                            .iter()
                            .any(|r| r.type_name == user.type_name && r.wildcard.is_some())
                    {
                        let edge = edge(key, &user.type_name, None);
                        out.extend(self.lookup(edge, &["*".to_string()]).await?);
                    }
                    for r in direct {
                        let Some(user_relation) = &r.relation else {
                            continue;
                        };
                        let ids: Vec<String> = set_of((r.type_name.clone(), user_relation.clone()))
                            .into_iter()
                            .collect();
                        let edge = edge(key, &r.type_name, Some(user_relation));
                        out.extend(self.lookup(edge, &ids).await?);
                    }
                }
                Userset::Computed(c) => out = set_of((object_type.clone(), c.relation.clone())),
                Userset::TupleToUserset(ttu) => {
                    let tupleset = (object_type.clone(), ttu.tupleset.relation.clone());
                    for parent in self.parents(object_type, &ttu.tupleset.relation) {
                        let ids: Vec<String> =
                            set_of((parent.clone(), ttu.computed.relation.clone()))
                                .into_iter()
                                .collect();
                        let edge = edge(&tupleset, &parent, None);
                        out.extend(self.lookup(edge, &ids).await?);
                    }
                }
                Userset::Union(c) => {
                    for child in &c.child {
                        out.extend(self.expand(key, child, direct, sets).await?);
                    }
                }
                Userset::Intersection(c) => {
                    for (i, child) in c.child.iter().enumerate() {
                        let grown = self.expand(key, child, direct, sets).await?;
                        out = if i == 0 {
                            grown
                        } else {
                            out.intersection(&grown).cloned().collect()
                        };
                    }
                }
                Userset::Difference(d) => out = self.expand(key, &d.base, direct, sets).await?,
            }
            Ok(out)
        })
    }

    /// The objects of `edge` for `ids`: stored and contextual tuples, each
    /// id asked of the database once per request.
    async fn lookup(&mut self, edge: Edge, ids: &[String]) -> Result<Vec<String>, FgaError> {
        let known = self.found.entry(edge.clone()).or_default();
        let new: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains_key(*id))
            .cloned()
            .collect();
        if !new.is_empty() {
            let (object_type, relation, user_type, user_relation) = &edge;
            let mut by_user: HashMap<String, Vec<String>> =
                new.iter().map(|id| (id.clone(), Vec::new())).collect();
            let pairs = store::objects_of_users(
                self.tuples.db,
                self.tuples.store_id,
                object_type,
                relation,
                user_type,
                user_relation,
                &new,
            )
            .await?;
            for (user_id, object_id) in pairs {
                if let Some(objects) = by_user.get_mut(&user_id) {
                    objects.push(object_id);
                }
            }
            for t in self.tuples.contextual {
                if &t.object.type_name == object_type
                    && &t.relation == relation
                    && &t.user.type_name == user_type
                    && t.user.relation.as_deref().unwrap_or("") == user_relation
                {
                    if let Some(objects) = by_user.get_mut(&t.user.id) {
                        objects.push(t.object.id.clone());
                    }
                }
            }
            self.found.entry(edge.clone()).or_default().extend(by_user);
        }
        let known = self.found.get(&edge);
        Ok(ids
            .iter()
            .filter_map(|id| known.and_then(|k| k.get(id)))
            .flatten()
            .cloned()
            .collect())
    }

    /// The plain-object types a tupleset relation may point at.
    fn parents(&self, object_type: &str, tupleset: &str) -> Vec<String> {
        let Some(rel) = self.model.relation(object_type, tupleset) else {
            return Vec::new();
        };
        rel.direct
            .iter()
            .filter(|r| r.relation.is_none() && r.wildcard.is_none())
            .map(|r| r.type_name.clone())
            .collect()
    }
}

fn edge(key: &Key, user_type: &str, user_relation: Option<&str>) -> Edge {
    (
        key.0.clone(),
        key.1.clone(),
        user_type.to_string(),
        user_relation.unwrap_or("").to_string(),
    )
}
