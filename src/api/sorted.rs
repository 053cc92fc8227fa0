//! Writing a field of an answer with its object keys sorted, as `serde_json::json!` (a tree
//! whose maps are sorted) wrote every answer before the answers were types: for the fields
//! whose type, declared elsewhere, writes its keys in declaration order. Top-level fields keep
//! the same order by being declared sorted.

use serde::{Serialize, Serializer};

/// `#[serde(serialize_with = "crate::api::sorted::keys")]`: `value` as a JSON tree, so that
/// its objects' keys come out sorted.
pub fn keys<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}
