//! JSON shapes serde does not give directly: objects that must be objects, objects in order
//! without duplicate names, and objects of raw JSON values.
//!
//! serde's derived structs accept a JSON array of the field values in order as well as an
//! object (`["member", 5, null]` for `{"member", "score", "increment"}`), and
//! `deny_unknown_fields` does not stop that. Every body and every configured JSON object is
//! documented as an object, so they are read through [`object`] (the top level) and
//! [`Object`] (a struct nested in a map), which refuse anything else.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// Why a text is not the JSON object asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject(pub String);

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether JSON text is an object at the top level (its first byte after JSON white space,
/// the only white space serde_json skips, is `{`).
pub fn is_object(text: &[u8]) -> bool {
    text.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{')
}

/// `T` from JSON text that must be an object: anything else (an array of the field values
/// in order, a string, a number) is refused before serde sees it.
pub fn object<T: DeserializeOwned>(text: &[u8]) -> Result<T, NotAnObject> {
    if !is_object(text) {
        return Err(NotAnObject("expected a JSON object".into()));
    }
    serde_json::from_slice(text).map_err(|e| NotAnObject(e.to_string()))
}

/// A struct that must be written as a JSON object, where it is nested (a map's value); see
/// [`object`]. Only for serde_json input (it reads the value's text first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        object(raw.get().as_bytes()).map(Object).map_err(|e| D::Error::custom(e.0))
    }
}

/// A JSON object in the order it was sent, refusing a name that appears twice (serde's maps
/// keep the last silently, so `{"role":"user","role":"admin"}` would mean what a reader of
/// the first line does not expect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if entries.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!("duplicate name {name:?}")));
                    }
                    entries.push((name, map.next_value()?));
                }
                Ok(UniqueMap(entries))
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

/// Writes `(name, JSON text)` pairs as an object, each value spliced in exactly as stored
/// (a value that is not valid JSON fails the whole serialization rather than corrupt it).
pub struct RawObject<'a>(pub &'a [(String, String)]);

impl Serialize for RawObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, text) in self.0 {
            let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
            map.serialize_entry(name, raw)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_refuses_duplicates() {
        let m: UniqueMap<u32> = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        assert_eq!(m.0, vec![("b".to_owned(), 1), ("a".to_owned(), 2)]);
        let err = serde_json::from_str::<UniqueMap<u32>>(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate name"), "{err}");
        assert!(serde_json::from_str::<UniqueMap<u32>>("[]").is_err());
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Two {
        a: String,
        b: Option<u32>,
    }

    #[test]
    fn objects_only_never_arrays_of_field_values() {
        // What serde alone accepts: the reason these exist.
        assert!(serde_json::from_str::<Two>(r#"["x", 5]"#).is_ok());
        let two = Two { a: "x".into(), b: Some(5) };
        assert_eq!(object::<Two>(b" \n{\"a\": \"x\", \"b\": 5}").unwrap(), two);
        for bad in
            [&br#"["x", 5]"#[..], b"  [\"x\"]", b"\"x\"", b"5", b"null", b"", b"\xef\xbb\xbf{}"]
        {
            assert!(object::<Two>(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let nested: UniqueMap<Object<Two>> = serde_json::from_str(r#"{"k": {"a": "x"}}"#).unwrap();
        assert_eq!(nested.0[0].1 .0, Two { a: "x".into(), b: None });
        assert!(serde_json::from_str::<UniqueMap<Object<Two>>>(r#"{"k": ["x", 5]}"#).is_err());
    }

    #[test]
    fn raw_values_are_spliced_exactly() {
        let pairs =
            vec![("n".to_owned(), "1.50".to_owned()), ("s".to_owned(), r#"{"a":[1]}"#.to_owned())];
        assert_eq!(
            serde_json::to_string(&RawObject(&pairs)).unwrap(),
            r#"{"n":1.50,"s":{"a":[1]}}"#
        );
        assert!(serde_json::to_string(&RawObject(&[("x".to_owned(), "{".to_owned())])).is_err());
    }
}
