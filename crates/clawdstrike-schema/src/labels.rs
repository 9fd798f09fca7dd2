//! [`Labels`]: an event's user labels, a small map kept in one sorted vector.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An event's user labels (`team: security`): keys are unique and kept sorted, as in a
/// `BTreeMap`, and the wire form is the same JSON object.
///
/// Stored as one vector of pairs rather than a tree: events carry a handful of labels, and a
/// `BTreeMap` allocates a node with room for eleven pairs (about 540 bytes) for the first one.
/// At tens of thousands of events in flight, that is most of an event's memory.
///
/// ```
/// use clawdstrike_schema::Labels;
///
/// let mut labels: Labels = [("team", "sec"), ("app", "agent")].into_iter().collect();
/// assert_eq!(labels.insert("team", "platform"), Some("sec".to_owned()));
/// assert_eq!(labels.get("team"), Some("platform"));
/// let keys: Vec<&str> = labels.keys().collect();
/// assert_eq!(keys, ["app", "team"]);
/// assert_eq!(serde_json::to_string(&labels).unwrap(), r#"{"app":"agent","team":"platform"}"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// No labels (allocates nothing).
    pub const fn new() -> Self {
        Labels(Vec::new())
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaces.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let key = key.into();
        let value = value.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The labels in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.0.iter().map(|(_, v)| v.as_str())
    }

    /// From pairs in any order; a repeated key keeps its last value (as JSON decoding and
    /// `BTreeMap` do).
    fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // Stable: among equal keys the input order stays, so the last one is the last kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        out.shrink_to_fit();
        Labels(out)
    }
}

/// The labels in key order, as `(&str, &str)`.
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (String, String)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Labels::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Labels {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Labels(map.into_iter().collect())
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.0.into_iter().collect()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Labels::from_pairs(pairs))
            }
        }
        d.deserialize_map(LabelsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_the_btreemap_it_replaces() {
        let ops: &[(&str, &str)] = &[
            ("b", "1"),
            ("a", "2"),
            ("b", "3"),
            ("", "e"),
            ("é", "u"),
            ("a", "4"),
            ("c", "5"),
        ];
        let mut labels = Labels::new();
        let mut map = BTreeMap::new();
        for (k, v) in ops {
            assert_eq!(
                labels.insert(*k, *v),
                map.insert(k.to_string(), v.to_string())
            );
            assert_eq!(labels.len(), map.len());
        }
        assert!(
            labels
                .iter()
                .eq(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        );
        assert_eq!(labels.remove("b"), map.remove("b"));
        assert_eq!(labels.remove("zz"), None);
        assert_eq!(labels.get("a"), Some("4"));
        assert!(!labels.contains_key("b"));
        assert_eq!(BTreeMap::from(labels.clone()), map);
        assert_eq!(Labels::from(map.clone()), labels);
        assert_eq!(
            serde_json::to_string(&labels).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(format!("{labels:?}"), format!("{map:?}"));
    }

    #[test]
    fn decoding_sorts_and_keeps_the_last_of_a_repeated_key() {
        let labels: Labels = serde_json::from_str(r#"{"z":"1","a":"2","z":"3","m":"4"}"#).unwrap();
        let map: BTreeMap<String, String> =
            serde_json::from_str(r#"{"z":"1","a":"2","z":"3","m":"4"}"#).unwrap();
        assert_eq!(BTreeMap::from(labels.clone()), map);
        assert_eq!(labels.get("z"), Some("3"));
        assert_eq!(labels.0.capacity(), 3);
        let err = serde_json::from_str::<Labels>(r#"{"a":1}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = serde_json::from_str::<Labels>(r#"["a"]"#).unwrap_err();
        assert!(
            err.to_string().contains("an object of string labels"),
            "{err}"
        );
    }
}
