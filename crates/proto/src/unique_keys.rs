//! Duplicate object keys in JSON text. serde_json keeps the last of two equal keys, so
//! `{"cmd":"hello","cmd":"stop"}` would silently be a `stop`; requests are checked with
//! [`first_duplicate_key`] before they are read.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// The first key that appears twice in one object of `text`, at any depth; `None` when every
/// object's keys are distinct (or when `text` is not JSON: the caller reports that).
pub fn first_duplicate_key(text: &str) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // An error is either the duplicate (recorded in `found`) or bad JSON (found elsewhere).
    let _ = Checker { found: &mut found }.deserialize(&mut deserializer);
    found
}

/// Walks one value; records the first duplicate key and stops the walk with an error.
struct Checker<'a> {
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Checker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Checker {
                found: &mut *self.found,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.found = Some(key);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Checker {
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicates_at_any_depth() {
        assert_eq!(
            first_duplicate_key(r#"{"cmd":"hello","cmd":"stop"}"#).as_deref(),
            Some("cmd")
        );
        assert_eq!(
            first_duplicate_key(r#"{"cmd":"run","retention":{"days":1,"days":2}}"#).as_deref(),
            Some("days")
        );
        assert_eq!(
            first_duplicate_key(r#"{"a":[{"x":1},{"y":1,"y":2}]}"#).as_deref(),
            Some("y")
        );
        // Escapes are decoded before comparing: "\u0063md" is "cmd".
        assert_eq!(
            first_duplicate_key(r#"{"cmd":"hello","\u0063md":"stop"}"#).as_deref(),
            Some("cmd")
        );
    }

    #[test]
    fn distinct_keys_and_bad_json_are_no_duplicate() {
        assert_eq!(
            first_duplicate_key(r#"{"cmd":"list","id":{"cmd":1}}"#),
            None
        );
        assert_eq!(first_duplicate_key(r#"[{"a":1},{"a":1}]"#), None);
        assert_eq!(first_duplicate_key("{\"cmd\":"), None);
    }
}
