//! Authorization models, schema 1.1 (and 1.2, its modular form), in OpenFGA's JSON form (what
//! `fga model transform` writes from the `.fga` DSL), their validation, and
//! the parsed tuple parts the evaluator works on.

use super::errors::FgaError;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The largest model accepted, in bytes of JSON (OpenFGA's default).
pub const MAX_MODEL_BYTES: usize = 256 * 1024;

/// `null` read as the type's default (Go clients send `null` for empty
/// lists and strings).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An authorization model as written and read over the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthorizationModel {
    /// The model's id (a ULID); empty in a write request.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// `1.1`.
    #[serde(default, deserialize_with = "null_default", alias = "schemaVersion")]
    pub schema_version: String,
    /// The types.
    #[serde(default, deserialize_with = "null_default", alias = "typeDefinitions")]
    pub type_definitions: Vec<TypeDefinition>,
    /// Conditions (CEL): refused, this engine does not evaluate them.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub conditions: serde_json::Map<String, serde_json::Value>,
}

/// One type and its relations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TypeDefinition {
    /// The type's name, e.g. `document`.
    #[serde(rename = "type")]
    pub name: String,
    /// Each relation's rewrite.
    #[serde(default, deserialize_with = "null_default")]
    pub relations: BTreeMap<String, Userset>,
    /// The type restrictions of directly assignable relations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// A type's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    /// Per relation.
    #[serde(default, deserialize_with = "null_default")]
    pub relations: BTreeMap<String, RelationMetadata>,
    /// Kept as written (module, source information).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A relation's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RelationMetadata {
    /// The types (`user`), wildcards (`user:*`) and usersets
    /// (`group#member`) a tuple of this relation may name as its user.
    #[serde(
        default,
        deserialize_with = "null_default",
        alias = "directlyRelatedUserTypes"
    )]
    pub directly_related_user_types: Vec<RelationReference>,
    /// Kept as written.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One allowed user type of a directly assignable relation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelationReference {
    /// The user's type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `group#member`: the relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// `user:*`: present (an empty object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard: Option<serde_json::Value>,
    /// A condition's name: refused.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub condition: String,
}

/// A relation's rewrite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Userset {
    /// Directly assigned by tuples (`[user, group#member]`).
    #[serde(rename = "this")]
    This(Empty),
    /// Another relation of the same object (`viewer: editor`).
    #[serde(rename = "computedUserset", alias = "computed_userset")]
    Computed(ObjectRelation),
    /// A relation of the objects a tupleset relation points at
    /// (`viewer from parent`).
    #[serde(rename = "tupleToUserset", alias = "tuple_to_userset")]
    TupleToUserset(TupleToUserset),
    /// Any child (`or`).
    #[serde(rename = "union")]
    Union(Children),
    /// Every child (`and`).
    #[serde(rename = "intersection")]
    Intersection(Children),
    /// `base but not subtract`.
    #[serde(rename = "difference")]
    Difference(Difference),
}

/// `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Empty {}

/// A relation reference inside a rewrite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRelation {
    /// Unused by schema 1.1 (empty).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub object: String,
    /// The relation.
    #[serde(default, deserialize_with = "null_default")]
    pub relation: String,
}

/// `computed from tupleset`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TupleToUserset {
    /// The relation whose tuples point at the other objects.
    pub tupleset: ObjectRelation,
    /// The relation looked up on those objects.
    #[serde(rename = "computedUserset", alias = "computed_userset")]
    pub computed: ObjectRelation,
}

/// Operands of a union or an intersection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Children {
    /// The operands.
    #[serde(default, deserialize_with = "null_default")]
    pub child: Vec<Userset>,
}

/// `base but not subtract`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Difference {
    /// What grants.
    pub base: Box<Userset>,
    /// What takes away.
    pub subtract: Box<Userset>,
}

/// A relation of a validated model.
#[derive(Debug, Clone)]
pub struct Relation {
    /// Its rewrite.
    pub rewrite: Userset,
    /// Its allowed user types (empty unless directly assignable).
    pub direct: Vec<RelationReference>,
}

/// A validated model, indexed for evaluation.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model's id.
    pub id: String,
    types: HashMap<String, HashMap<String, Relation>>,
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.chars().count() <= max
        && !name
            .chars()
            .any(|c| c == ':' || c == '#' || c == '@' || c.is_whitespace())
}

impl Model {
    /// Validates `model` (schema 1.1: names, references, type restrictions,
    /// tuple-to-userset shape, entry points; no conditions) and indexes it.
    pub fn build(model: &AuthorizationModel) -> Result<Model, FgaError> {
        // 1.2 is 1.1 written in modules (`fga.mod`): the same semantics.
        if model.schema_version != "1.1" && model.schema_version != "1.2" {
            return Err(FgaError::input(
                "invalid_authorization_model",
                format!(
                    "invalid schema version {:?}: this server supports schema 1.1 (and 1.2, modular)",
                    model.schema_version
                ),
            ));
        }
        if model.type_definitions.is_empty() {
            return Err(FgaError::input(
                "type_definitions_too_few_items",
                "type_definitions: at least one type is required",
            ));
        }
        if !model.conditions.is_empty() {
            return Err(unsupported_conditions());
        }
        let mut types: HashMap<String, HashMap<String, Relation>> = HashMap::new();
        for t in &model.type_definitions {
            if !valid_name(&t.name, 254) || t.name == "self" || t.name == "this" {
                return Err(FgaError::invalid_model(format!(
                    "the type name {:?} is invalid",
                    t.name
                )));
            }
            if types.contains_key(&t.name) {
                return Err(FgaError::input(
                    "cannot_allow_duplicate_types_in_one_request",
                    format!("the type `{}` is defined more than once", t.name),
                ));
            }
            let metadata = t.metadata.clone().unwrap_or_default();
            for name in metadata.relations.keys() {
                if !t.relations.contains_key(name) {
                    return Err(FgaError::invalid_model(format!(
                        "the relation `{name}` in the metadata of type `{}` is not defined",
                        t.name
                    )));
                }
            }
            let mut relations = HashMap::new();
            for (name, rewrite) in &t.relations {
                if !valid_name(name, 50) || name == "self" || name == "this" {
                    return Err(FgaError::invalid_model(format!(
                        "the relation name {name:?} in type `{}` is invalid",
                        t.name
                    )));
                }
                let direct = metadata
                    .relations
                    .get(name)
                    .map(|m| m.directly_related_user_types.clone())
                    .unwrap_or_default();
                if direct.iter().any(|r| !r.condition.is_empty()) {
                    return Err(unsupported_conditions());
                }
                relations.insert(
                    name.clone(),
                    Relation {
                        rewrite: rewrite.clone(),
                        direct,
                    },
                );
            }
            types.insert(t.name.clone(), relations);
        }
        let built = Model {
            id: model.id.clone(),
            types,
        };
        built.check_references()?;
        built.check_entry_points()?;
        Ok(built)
    }

    /// The relation `relation` of type `type_name`.
    pub fn relation(&self, type_name: &str, relation: &str) -> Option<&Relation> {
        self.types.get(type_name)?.get(relation)
    }

    /// Whether the model defines `type_name`.
    pub fn has_type(&self, type_name: &str) -> bool {
        self.types.contains_key(type_name)
    }

    fn check_references(&self) -> Result<(), FgaError> {
        for (type_name, relations) in &self.types {
            for (name, relation) in relations {
                let at = format!("relation `{name}` of type `{type_name}`");
                let has_this = contains_this(&relation.rewrite);
                if has_this && relation.direct.is_empty() {
                    return Err(FgaError::invalid_model(format!(
                        "the {at} is directly assignable but lists no allowed user type"
                    )));
                }
                if !has_this && !relation.direct.is_empty() {
                    return Err(FgaError::invalid_model(format!(
                        "the {at} lists allowed user types but is not directly assignable"
                    )));
                }
                for r in &relation.direct {
                    let Some(target) = self.types.get(&r.type_name) else {
                        return Err(FgaError::invalid_model(format!(
                            "the {at} allows the undefined type `{}`",
                            r.type_name
                        )));
                    };
                    if let Some(rel) = &r.relation {
                        if r.wildcard.is_some() {
                            return Err(FgaError::invalid_model(format!(
                                "the {at}: `{}` cannot be both a wildcard and a userset",
                                r.type_name
                            )));
                        }
                        if !target.contains_key(rel) {
                            return Err(FgaError::invalid_model(format!(
                                "the {at} allows the undefined relation `{}#{rel}`",
                                r.type_name
                            )));
                        }
                    }
                }
                self.check_rewrite(type_name, relations, &relation.rewrite, &at)?;
            }
        }
        Ok(())
    }

    fn check_rewrite(
        &self,
        type_name: &str,
        relations: &HashMap<String, Relation>,
        rewrite: &Userset,
        at: &str,
    ) -> Result<(), FgaError> {
        match rewrite {
            Userset::This(_) => Ok(()),
            Userset::Computed(c) => {
                if relations.contains_key(&c.relation) {
                    Ok(())
                } else {
                    Err(FgaError::invalid_model(format!(
                        "the {at} refers to the undefined relation `{type_name}#{}`",
                        c.relation
                    )))
                }
            }
            Userset::TupleToUserset(ttu) => {
                let Some(tupleset) = relations.get(&ttu.tupleset.relation) else {
                    return Err(FgaError::invalid_model(format!(
                        "the {at} refers to the undefined tupleset relation `{type_name}#{}`",
                        ttu.tupleset.relation
                    )));
                };
                if !matches!(tupleset.rewrite, Userset::This(_)) {
                    return Err(FgaError::invalid_model(format!(
                        "the {at}: the tupleset relation `{}` must be directly assignable only",
                        ttu.tupleset.relation
                    )));
                }
                if tupleset
                    .direct
                    .iter()
                    .any(|r| r.relation.is_some() || r.wildcard.is_some())
                {
                    return Err(FgaError::invalid_model(format!(
                        "the {at}: the tupleset relation `{}` may allow types only, not usersets or wildcards",
                        ttu.tupleset.relation
                    )));
                }
                let found = tupleset.direct.iter().any(|r| {
                    self.types
                        .get(&r.type_name)
                        .is_some_and(|t| t.contains_key(&ttu.computed.relation))
                });
                if found {
                    Ok(())
                } else {
                    Err(FgaError::invalid_model(format!(
                        "the {at}: no type of `{}` defines the relation `{}`",
                        ttu.tupleset.relation, ttu.computed.relation
                    )))
                }
            }
            Userset::Union(c) | Userset::Intersection(c) => {
                if c.child.is_empty() {
                    return Err(FgaError::invalid_model(format!(
                        "the {at} has an operator without operands"
                    )));
                }
                for child in &c.child {
                    self.check_rewrite(type_name, relations, child, at)?;
                }
                Ok(())
            }
            Userset::Difference(d) => {
                self.check_rewrite(type_name, relations, &d.base, at)?;
                self.check_rewrite(type_name, relations, &d.subtract, at)
            }
        }
    }

    /// Every relation must be satisfiable by some tuple: a fixpoint from
    /// nothing, as OpenFGA refuses relations with no entry point (which
    /// also refuses pure cycles such as `a: b`, `b: a`).
    fn check_entry_points(&self) -> Result<(), FgaError> {
        let mut reachable: std::collections::HashSet<(String, String)> = Default::default();
        loop {
            let mut changed = false;
            for (type_name, relations) in &self.types {
                for (name, relation) in relations {
                    let key = (type_name.clone(), name.clone());
                    if reachable.contains(&key) {
                        continue;
                    }
                    if self.entry(type_name, relation, &relation.rewrite, &reachable) {
                        reachable.insert(key);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut missing: Vec<String> = self
            .types
            .iter()
            .flat_map(|(t, rels)| rels.keys().map(move |r| (t, r)))
            .filter(|(t, r)| !reachable.contains(&((*t).clone(), (*r).clone())))
            .map(|(t, r)| format!("{t}#{r}"))
            .collect();
        missing.sort();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(FgaError::invalid_model(format!(
                "no entrypoints defined for {first}: no tuple can ever grant it (a cycle, or an intersection/exclusion without a base)"
            ))),
        }
    }

    fn entry(
        &self,
        type_name: &str,
        relation: &Relation,
        rewrite: &Userset,
        reachable: &std::collections::HashSet<(String, String)>,
    ) -> bool {
        let has = |t: &str, r: &str| reachable.contains(&(t.to_string(), r.to_string()));
        match rewrite {
            Userset::This(_) => relation.direct.iter().any(|r| match &r.relation {
                None => true,
                Some(rel) => has(&r.type_name, rel),
            }),
            Userset::Computed(c) => has(type_name, &c.relation),
            Userset::TupleToUserset(ttu) => self
                .types
                .get(type_name)
                .and_then(|rels| rels.get(&ttu.tupleset.relation))
                .is_some_and(|ts| {
                    ts.direct
                        .iter()
                        .any(|r| has(&r.type_name, &ttu.computed.relation))
                }),
            Userset::Union(c) => c
                .child
                .iter()
                .any(|u| self.entry(type_name, relation, u, reachable)),
            Userset::Intersection(c) => c
                .child
                .iter()
                .all(|u| self.entry(type_name, relation, u, reachable)),
            Userset::Difference(d) => self.entry(type_name, relation, &d.base, reachable),
        }
    }

    /// Checks a tuple to be written (or a contextual tuple): its object's
    /// type and relation exist and its user is one of the relation's
    /// allowed types.
    pub fn check_tuple(&self, t: &Tuple) -> Result<(), FgaError> {
        let invalid = |reason: String| {
            FgaError::validation(format!("Invalid tuple '{}'. Reason: {reason}", t.key()))
        };
        let Some(relations) = self.types.get(&t.object.type_name) else {
            return Err(invalid(format!("type '{}' not found", t.object.type_name)));
        };
        let Some(relation) = relations.get(&t.relation) else {
            return Err(invalid(format!(
                "relation '{}#{}' not found",
                t.object.type_name, t.relation
            )));
        };
        let Some(user_type) = self.types.get(&t.user.type_name) else {
            return Err(invalid(format!("type '{}' not found", t.user.type_name)));
        };
        if let Some(rel) = &t.user.relation {
            if !user_type.contains_key(rel) {
                return Err(invalid(format!(
                    "relation '{}#{rel}' not found",
                    t.user.type_name
                )));
            }
        }
        if relation.direct.iter().any(|r| t.user.matches(r)) {
            Ok(())
        } else {
            Err(invalid(format!(
                "type '{}' is not an allowed type restriction for '{}#{}'",
                t.user.restriction(),
                t.object.type_name,
                t.relation
            )))
        }
    }

    /// Checks the user and object of a query (check, list-objects): their
    /// types exist, and so does a userset's relation.
    pub fn check_user(&self, user: &User) -> Result<(), FgaError> {
        let Some(rels) = self.types.get(&user.type_name) else {
            return Err(FgaError::validation(format!(
                "type '{}' not found",
                user.type_name
            )));
        };
        if let Some(rel) = &user.relation {
            if !rels.contains_key(rel) {
                return Err(FgaError::validation(format!(
                    "relation '{}#{rel}' not found",
                    user.type_name
                )));
            }
        }
        Ok(())
    }

    /// Checks that `relation` of type `type_name` exists.
    pub fn check_relation(&self, type_name: &str, relation: &str) -> Result<(), FgaError> {
        let Some(rels) = self.types.get(type_name) else {
            return Err(FgaError::validation(format!(
                "type '{type_name}' not found"
            )));
        };
        if rels.contains_key(relation) {
            Ok(())
        } else {
            Err(FgaError::validation(format!(
                "relation '{type_name}#{relation}' not found"
            )))
        }
    }
}

fn unsupported_conditions() -> FgaError {
    FgaError::validation(
        "conditions are not supported by the agentward vault's FGA engine; \
         use an OpenFGA server for models with conditions",
    )
}

fn contains_this(u: &Userset) -> bool {
    match u {
        Userset::This(_) => true,
        Userset::Computed(_) | Userset::TupleToUserset(_) => false,
        Userset::Union(c) | Userset::Intersection(c) => c.child.iter().any(contains_this),
        Userset::Difference(d) => contains_this(&d.base) || contains_this(&d.subtract),
    }
}

/// An object, `type:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Object {
    /// `document`.
    pub type_name: String,
    /// `readme`.
    pub id: String,
}

impl Object {
    /// Parses `type:id` (no `#`, no whitespace, id not `*`).
    pub fn parse(s: &str) -> Result<Object, FgaError> {
        let bad = || FgaError::validation(format!("invalid 'object' field format: {s:?}"));
        if s.len() > 256 || s.chars().any(char::is_whitespace) || s.contains('#') {
            return Err(bad());
        }
        let (t, id) = s.split_once(':').ok_or_else(bad)?;
        if t.is_empty() || id.is_empty() || id == "*" || t.contains('@') {
            return Err(bad());
        }
        Ok(Object {
            type_name: t.to_string(),
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.type_name, self.id)
    }
}

/// A tuple's user: `type:id`, `type:*` or `type:id#relation`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    /// `user`, `group`.
    pub type_name: String,
    /// `anne`, `*`, `eng`.
    pub id: String,
    /// `member` of `group:eng#member`.
    pub relation: Option<String>,
}

impl User {
    /// Parses a user.
    pub fn parse(s: &str) -> Result<User, FgaError> {
        let bad = || FgaError::validation(format!("invalid 'user' field format: {s:?}"));
        if s.len() > 512 || s.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (t, rest) = s.split_once(':').ok_or_else(bad)?;
        let (id, relation) = match rest.split_once('#') {
            Some((id, rel)) => (id, Some(rel)),
            None => (rest, None),
        };
        if t.is_empty()
            || id.is_empty()
            || t.contains('#')
            || relation.is_some_and(|r| !valid_name(r, 50))
            || (id == "*" && relation.is_some())
        {
            return Err(bad());
        }
        Ok(User {
            type_name: t.to_string(),
            id: id.to_string(),
            relation: relation.map(str::to_string),
        })
    }

    /// `user:*`.
    pub fn is_wildcard(&self) -> bool {
        self.id == "*" && self.relation.is_none()
    }

    /// Whether a tuple naming this user fits the type restriction `r`.
    pub fn matches(&self, r: &RelationReference) -> bool {
        if r.type_name != self.type_name {
            return false;
        }
        match (&self.relation, &r.relation) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (None, None) => r.wildcard.is_some() == self.is_wildcard(),
            _ => false,
        }
    }

    /// The restriction this user would need: `user`, `user:*`, `group#member`.
    pub fn restriction(&self) -> String {
        match &self.relation {
            Some(rel) => format!("{}#{rel}", self.type_name),
            None if self.is_wildcard() => format!("{}:*", self.type_name),
            None => self.type_name.clone(),
        }
    }
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.relation {
            Some(rel) => write!(f, "{}:{}#{rel}", self.type_name, self.id),
            None => write!(f, "{}:{}", self.type_name, self.id),
        }
    }
}

/// A parsed relationship tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// The object.
    pub object: Object,
    /// The relation.
    pub relation: String,
    /// The user.
    pub user: User,
}

/// A tuple key as the API carries it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TupleKey {
    /// `user:anne`, `user:*`, `group:eng#member`.
    #[serde(default, deserialize_with = "null_default")]
    pub user: String,
    /// `viewer`.
    #[serde(default, deserialize_with = "null_default")]
    pub relation: String,
    /// `document:readme`.
    #[serde(default, deserialize_with = "null_default")]
    pub object: String,
    /// A condition: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

impl Tuple {
    /// Parses a tuple key (conditions refused).
    pub fn parse(k: &TupleKey) -> Result<Tuple, FgaError> {
        if k.condition.as_ref().is_some_and(|c| !c.is_null()) {
            return Err(unsupported_conditions());
        }
        if !valid_name(&k.relation, 50) {
            return Err(FgaError::validation(format!(
                "invalid 'relation' field format: {:?}",
                k.relation
            )));
        }
        Ok(Tuple {
            object: Object::parse(&k.object)?,
            relation: k.relation.clone(),
            user: User::parse(&k.user)?,
        })
    }

    /// `object#relation@user`.
    pub fn key(&self) -> String {
        format!("{}#{}@{}", self.object, self.relation, self.user)
    }

    /// Back to the API's form.
    pub fn to_key(&self) -> TupleKey {
        TupleKey {
            user: self.user.to_string(),
            relation: self.relation.clone(),
            object: self.object.to_string(),
            condition: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_objects_and_their_restrictions_parse() {
        let u = User::parse("group:eng#member").unwrap();
        assert_eq!(u.relation.as_deref(), Some("member"));
        assert_eq!(u.restriction(), "group#member");
        assert_eq!(User::parse("user:*").unwrap().restriction(), "user:*");
        assert_eq!(User::parse("user:anne").unwrap().to_string(), "user:anne");
        for bad in [
            "anne",
            ":x",
            "user:",
            "user:*#member",
            "user:a b",
            "group:eng#",
        ] {
            assert!(User::parse(bad).is_err(), "{bad}");
        }
        for bad in ["doc", "doc:", ":1", "doc:*", "doc:1#viewer", "doc: 1"] {
            assert!(Object::parse(bad).is_err(), "{bad}");
        }
        let wildcard = RelationReference {
            type_name: "user".into(),
            relation: None,
            wildcard: Some(serde_json::json!({})),
            condition: String::new(),
        };
        assert!(User::parse("user:*").unwrap().matches(&wildcard));
        assert!(!User::parse("user:anne").unwrap().matches(&wildcard));
    }

    #[test]
    fn the_json_of_fga_model_transform_round_trips() {
        let json = serde_json::json!({"schema_version": "1.1", "type_definitions": [
            {"type": "user"},
            {"type": "doc", "relations": {
                "owner": {"this": {}},
                "viewer": {"union": {"child": [{"this": {}}, {"computedUserset": {"relation": "owner"}}]}},
                "can_read": {"difference": {"base": {"computedUserset": {"relation": "viewer"}},
                                            "subtract": {"computed_userset": {"relation": "owner"}}}}},
             "metadata": {"relations": {
                "owner": {"directly_related_user_types": [{"type": "user"}]},
                "viewer": {"directly_related_user_types": [{"type": "user", "wildcard": {}}]}}}}]});
        let model: AuthorizationModel = serde_json::from_value(json).unwrap();
        let built = Model::build(&model).unwrap();
        assert!(built.relation("doc", "can_read").is_some());
        let again: AuthorizationModel =
            serde_json::from_str(&serde_json::to_string(&model).unwrap()).unwrap();
        assert_eq!(again, model);
    }
}
