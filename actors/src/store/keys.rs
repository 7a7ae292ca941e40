//! Key encoding for the store's trees.
//!
//! Keys are concatenations of fixed-width big-endian parts, so that byte order is the order an
//! index needs and a prefix scan over the leading parts is a lookup by them
//! (`messages`: conversation ++ seq, `conv_by_bot`: chatbot ++ created ++ conversation).

/// Joins key parts.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// A `u64` as 8 big-endian bytes, so byte order is numeric order.
pub fn u64_be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian `u64` at `at`.
pub fn read_u64_be(key: &[u8], at: usize) -> Option<u64> {
    key.get(at..at + 8)?.try_into().ok().map(u64::from_be_bytes)
}

/// Milliseconds since the epoch of a timestamp, clamped at zero, for time-ordered keys.
pub fn millis(at: chrono::DateTime<chrono::Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn big_endian_keys_sort_like_their_numbers(a: u64, b: u64, prefix: [u8; 16]) {
            let ka = join(&[&prefix, &u64_be(a)]);
            let kb = join(&[&prefix, &u64_be(b)]);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(read_u64_be(&ka, 16), Some(a));
        }

        #[test]
        fn a_prefix_scan_never_sees_another_prefix(a: [u8; 16], b: [u8; 16], n: u64) {
            prop_assume!(a != b);
            let key = join(&[&b, &u64_be(n)]);
            prop_assert!(!key.starts_with(&a));
        }
    }
}
