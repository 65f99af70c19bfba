//! JSON shapes serde does not give directly: objects in order without duplicate names, and
//! objects of raw JSON values.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

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
