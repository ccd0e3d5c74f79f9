//! What predicates and templates read from a request: see
//! [`crate::placeholder`], shared with scope-fga's relationship checks.

pub use crate::placeholder::{Facts, FieldRef, Root};
