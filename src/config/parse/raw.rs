//! How serde reads the config file's values: any TOML value as it was written ([`Raw`]), a key
//! declared with the kind it must become ([`Key`]), and tables that take whatever the file
//! holds ([`Table`], [`Tables`]). Nothing here fails on a value of the wrong type: the problem
//! is kept for the validation pass, which reports it with the others.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A value as the file holds it. Tables keep no contents: a key that wanted a value and got a
/// table is a problem whatever the table says, and the message describes it from the document.
pub(crate) enum Raw {
    Str(String),
    Int(i64),
    Float,
    Bool(bool),
    Datetime,
    Array(Vec<Raw>),
    Table,
}

/// What the TOML deserializer hands a map to mark a date-time value.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or(Raw::Float, Raw::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut datetime = false;
        while let Some(key) = map.next_key::<String>()? {
            datetime |= key == DATETIME_FIELD;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(if datetime { Raw::Datetime } else { Raw::Table })
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// The kinds a key's value becomes; [`super::reader::Entry`] offers each kind's conversions.
pub(crate) mod kind {
    pub(crate) enum Str {}
    pub(crate) enum Int {}
    pub(crate) enum Bool {}
    pub(crate) enum Duration {}
    pub(crate) enum Path {}
    pub(crate) enum Addr {}
    /// An array of strings.
    pub(crate) enum List {}
    /// A key that no longer exists, kept to say what replaced it.
    pub(crate) enum Removed {}
}

/// A key's value, declared with the kind it must become.
pub(crate) struct Key<K> {
    pub(super) raw: Raw,
    kind: PhantomData<K>,
}

impl<'de, K> Deserialize<'de> for Key<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Key {
            raw: Raw::deserialize(d)?,
            kind: PhantomData,
        })
    }
}

/// A table read into its file struct `T`, with the keys `T` does not declare; or `Other`
/// when the file put another kind of value where a table belongs (the message quotes it from
/// the document).
pub(crate) enum Table<T> {
    Read { file: T, unknown: Vec<String> },
    Other,
}

/// An array of tables (`[[name]]`, or an array of inline tables), or `Other` value.
pub(crate) enum Tables<T> {
    Read(Vec<Table<T>>),
    Other,
}

/// Everything that is not a table, or not an array, is read (and dropped) as [`Raw`].
macro_rules! other_values {
    ($variant:path) => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            RawVisitor.visit_bool(v).map(|_| $variant)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            RawVisitor.visit_i64(v).map(|_| $variant)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            RawVisitor.visit_u64(v).map(|_| $variant)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            RawVisitor.visit_f64(v).map(|_| $variant)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            RawVisitor.visit_str(v).map(|_| $variant)
        }
    };
}

struct TableVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for TableVisitor<T> {
    type Value = Table<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }
    other_values!(Table::Other);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Table<T>, A::Error> {
        RawVisitor.visit_seq(seq).map(|_| Table::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Table<T>, A::Error> {
        // serde_ignored reports every key the derived struct skipped, at any depth; a nested
        // table reports its own, so only this table's direct keys are kept here.
        let mut unknown = Vec::new();
        let file = serde_ignored::deserialize(
            serde::de::value::MapAccessDeserializer::new(map),
            |path| {
                if let serde_ignored::Path::Map {
                    parent: serde_ignored::Path::Root,
                    key,
                } = path
                {
                    unknown.push(key.clone());
                }
            },
        )?;
        if unknown.iter().any(|k| k == DATETIME_FIELD) {
            return Ok(Table::Other);
        }
        Ok(Table::Read { file, unknown })
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TableVisitor(PhantomData))
    }
}

struct TablesVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for TablesVisitor<T> {
    type Value = Tables<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tables")
    }
    other_values!(Tables::Other);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tables<T>, A::Error> {
        let mut tables = Vec::new();
        while let Some(table) = seq.next_element()? {
            tables.push(table);
        }
        Ok(Tables::Read(tables))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Tables<T>, A::Error> {
        RawVisitor.visit_map(map).map(|_| Tables::Other)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Tables<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TablesVisitor(PhantomData))
    }
}

/// The keys a file struct declares, in declaration order, as its derived `Deserialize` names
/// them: the "did you mean" hints and the "known keys" lists come from the declaration itself.
/// serde exposes the list only to a deserializer, so this one asks for it and stops.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names(&'static [&'static str]);

    impl<'de> Deserializer<'de> for &mut Names {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("names taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}
