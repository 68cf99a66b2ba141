//! Ids that the datasets write as numbers in one file and strings in another (VQAv2 image ids are
//! integers, VizWiz image ids are file names, Flickr30K ids are file stems).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A JSON id: a non-negative integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JsonId {
    /// An integer id (written in decimal by [`fmt::Display`]).
    Int(u64),
    /// A string id.
    Str(String),
}

impl fmt::Display for JsonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonId::Int(i) => write!(f, "{i}"),
            JsonId::Str(s) => f.write_str(s),
        }
    }
}

impl JsonId {
    /// The id as a JSON value (a number or a string, as read).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            JsonId::Int(i) => serde_json::Value::from(*i),
            JsonId::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }
}

impl Serialize for JsonId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonId::Int(i) => s.serialize_u64(*i),
            JsonId::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for JsonId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id (a non-negative integer or a string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonId, E> {
                Ok(JsonId::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonId, E> {
                u64::try_from(v)
                    .map(JsonId::Int)
                    .map_err(|_| E::custom(format!("negative id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonId, E> {
                // Some converters write integer ids as floats (`123.0`).
                if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
                    Ok(JsonId::Int(v as u64))
                } else {
                    Err(E::custom(format!("id {v} is not an integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonId, E> {
                Ok(JsonId::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<JsonId, E> {
                Ok(JsonId::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}
