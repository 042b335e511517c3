//! Every key the parser accepts, derived from the serde types themselves (tests only).
//!
//! How: [`accepted`] deserializes a [`Raw`] from [`Probe`], a deserializer with no input. A
//! `#[derive(Deserialize)]` struct asks its deserializer for `deserialize_struct(name, FIELDS,
//! visitor)`, and `FIELDS` is serde's own list of the key names it accepts (after `rename`s;
//! with `deny_unknown_fields` nothing else is accepted). The probe records `FIELDS` under the
//! current key path, then feeds the visitor every one of those keys, each value probed in
//! turn: `Option`s are `Some`, sequences hold one element (so `[[backend]]` records
//! `backend.name`), enums take their first variant, scalars a harmless value. So a key added
//! to any `Raw*` struct shows up here without anyone listing it. (`#[serde(flatten)]` or a
//! map type would not be walked; the probe fails loudly on a map.)

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::raw::Raw;

/// The accepted key paths: `tables` are sections (`listen`, `backend`), `keys` are the
/// values inside them (`listen.sip`, `backend.name`).
#[derive(Debug, Default)]
pub(super) struct Accepted {
    pub tables: BTreeSet<String>,
    pub keys: BTreeSet<String>,
}

pub(super) fn accepted() -> Accepted {
    let seen = RefCell::new(Accepted::default());
    Raw::deserialize(Probe {
        path: String::new(),
        seen: &seen,
    })
    .unwrap_or_else(|e| panic!("probing the config types failed: {e}"));
    let mut a = seen.into_inner();
    let tables = a.tables.clone();
    a.keys.retain(|k| !tables.contains(k));
    a
}

struct Probe<'a> {
    path: String,
    seen: &'a RefCell<Accepted>,
}

impl<'a> Probe<'a> {
    fn child(&self, key: &str) -> Probe<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Probe {
            path,
            seen: self.seen,
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    /// Only `listen.relay`'s one-or-many reader asks for "anything": a string will do.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("x")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_f64(1.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("x")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("x")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(OneElement(Some(self)))
    }
    fn deserialize_map<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "{}: a map's keys are not known from its type; keys.rs cannot list them",
            self.path
        )))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        {
            let mut seen = self.seen.borrow_mut();
            if !self.path.is_empty() {
                seen.tables.insert(self.path.clone());
            }
            for f in fields {
                seen.keys.insert(self.child(f).path);
            }
        }
        v.visit_map(Fields {
            probe: self,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let first: StrDeserializer<'_, Error> = variants[0].into_deserializer();
        v.visit_enum(first)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

/// A sequence of one element, probed at the sequence's own path.
struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|p| seed.deserialize(p)).transpose()
    }
}

/// A struct's fields, each key once, each value probed under `path.key`.
struct Fields<'a> {
    probe: Probe<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(f) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = f.into_deserializer();
        seed.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let f = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.probe.child(f))
    }
}
