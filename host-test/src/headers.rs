//! Header maps and their wire format.
//!
//! The ABI serializes a map as a little-endian `u32` count, then one
//! (`u32` key length, `u32` value length) pair per entry, then every key and
//! value each followed by a NUL byte. Names are kept lower-case, as Envoy
//! does, and looked up without regard to case.

/// An ordered multimap of HTTP headers (or trailers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, String)>,
}

impl HeaderMap {
    /// A map holding `pairs`, names lower-cased.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        let mut map = HeaderMap::default();
        for (name, value) in pairs {
            map.add(name.as_ref(), value.as_ref());
        }
        map
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Appends a value, keeping existing ones.
    pub fn add(&mut self, name: &str, value: &str) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Sets `name` to this one value.
    pub fn replace(&mut self, name: &str, value: &str) {
        match self
            .entries
            .iter()
            .position(|(key, _)| key.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                self.entries[first].1 = value.to_string();
                let mut index = 0;
                self.entries.retain(|(key, _)| {
                    index += 1;
                    index - 1 == first || !key.eq_ignore_ascii_case(name)
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    /// The entries, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The ABI wire format of this map.
    pub fn serialize(&self) -> Vec<u8> {
        serialize(&self.entries)
    }

    /// Parses the ABI wire format; `None` when it is truncated.
    pub fn deserialize(bytes: &[u8]) -> Option<Self> {
        deserialize(bytes).map(|pairs| HeaderMap::from_pairs(&pairs))
    }
}

/// Serializes pairs in the ABI map format.
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// Parses the ABI map format (empty input is an empty map); `None` when the
/// sizes do not fit the data.
pub fn deserialize(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let word = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut take = |len: usize| -> Option<String> {
        let text = bytes.get(data..data.checked_add(len)?)?;
        data += len + 1;
        Some(String::from_utf8_lossy(text).into_owned())
    };
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let key_len = u32_at(4 + index * 8)?;
        let value_len = u32_at(8 + index * 8)?;
        let key = take(key_len)?;
        let value = take(value_len)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_matches_the_abi_layout() {
        let bytes = serialize(&[("a", "bc"), ("", "")]);
        let expected: Vec<u8> = [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            b"a\0bc\0\0\0",
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn map_round_trips_through_the_wire_format() {
        let map = HeaderMap::from_pairs(&[(":path", "/x"), ("X-Multi", "1"), ("x-multi", "2")]);
        let back = HeaderMap::deserialize(&map.serialize());
        assert_eq!(back.as_ref(), Some(&map));
        assert_eq!(map.get_all("x-MULTI"), vec!["1", "2"]);
    }

    #[test]
    fn truncated_map_is_rejected_not_read_past_its_end() {
        let bytes = serialize(&[("key", "value")]);
        assert_eq!(deserialize(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize(&[1, 0, 0]), None);
        assert_eq!(deserialize(&[]), Some(Vec::new()));
    }

    #[test]
    fn replace_keeps_one_value_in_the_first_position() {
        let mut map = HeaderMap::from_pairs(&[("a", "1"), ("b", "2"), ("A", "3")]);
        map.replace("a", "9");
        assert_eq!(
            map.pairs(),
            &[("a".into(), "9".into()), ("b".into(), "2".into())]
        );
        map.remove("B");
        map.replace("c", "4");
        assert_eq!(map.get("a"), Some("9"));
        assert_eq!(map.get("c"), Some("4"));
        assert_eq!(map.len(), 2);
    }
}
