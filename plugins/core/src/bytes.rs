//! Byte comparisons eight bytes at a time, for the paths every request
//! takes. In wasm, `==` on byte slices calls the C library's `memcmp`, which
//! wasi-libc runs a byte at a time, and `str::from_utf8` checks four bytes
//! at a time (wasm32's `usize`); wasm has 64-bit integers, so a `u64` per
//! step does the same work in a fraction of the instructions (scope-fga's
//! cached decision compares ~500 bytes of identity headers per request).

/// Whether `a` and `b` hold the same bytes (not in constant time: for
/// public values, see `proof::same` for secrets).
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let ((a8, a_rest), (b8, b_rest)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    a8.iter()
        .zip(b8)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_rest.iter().eq(b_rest)
}

/// `Option<&str>`s that are both absent or hold the same text.
pub fn eq_opt(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => eq(a.as_bytes(), b.as_bytes()),
        (None, None) => true,
        _ => false,
    }
}

/// `bytes` as text when it is UTF-8; all-ASCII text (every header value a
/// plugin reads, in practice) is recognised eight bytes at a time.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (words, rest) = bytes.as_chunks::<8>();
    let high = words.iter().fold(0, |acc, w| acc | u64::from_ne_bytes(*w)) & HIGH;
    if high == 0 && rest.is_ascii() {
        // SAFETY: every byte is below 0x80: ASCII, which is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_matches_slice_equality_at_every_length_and_position() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(eq(a, a));
            assert!(!eq(a, &base[..len + 1]));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x01;
                assert!(!eq(a, &b), "len {len}, byte {at}");
            }
        }
        assert!(eq_opt(None, None) && eq_opt(Some("x-1"), Some("x-1")));
        assert!(!eq_opt(Some(""), None) && !eq_opt(Some("a"), Some("b")));
    }

    #[test]
    fn utf8_agrees_with_the_standard_library() {
        let cases: [&[u8]; 8] = [
            b"",
            b"Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
            "caf\u{e9} au lait, long enough to span words".as_bytes(),
            b"seven!!",
            b"eight!!!\xff",
            b"\xc3\x28 invalid two-byte sequence here",
            b"abcdefgh\x80abcdefgh",
            "\u{1F600} four bytes".as_bytes(),
        ];
        for c in cases {
            assert_eq!(utf8(c), std::str::from_utf8(c).ok(), "{c:?}");
        }
    }
}
