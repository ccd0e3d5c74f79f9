//! The one reading of `Authorization: Bearer <token>` (RFC 6750 §2.1) that
//! every plugin and the vault share: the scheme is case-insensitive, spaces
//! around the value and between scheme and token are tolerated, and a token
//! must be one non-empty run of token68 characters (a space or a control
//! character inside is not a bearer token).

/// The token of an `Authorization` value, if it is a bearer credential.
pub fn token(authorization: &str) -> Option<&str> {
    credential(authorization).filter(|token| is_token68(token))
}

/// What follows the `Bearer` scheme, trimmed, its characters not checked:
/// for a lookup of tokens already read by [`token`] (a verified-token
/// cache), which then skips [`is_token68`]'s pass over a kilobyte per
/// request. Anything else must use [`token`].
pub fn credential(authorization: &str) -> Option<&str> {
    let value = authorization.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim_start_matches([' ', '\t']))
}

/// Whether `token` is one non-empty run of token68 characters.
pub fn is_token68(token: &str) -> bool {
    // Byte by byte through a table: a token is a kilobyte or more.
    !token.is_empty() && token.bytes().all(|b| TOKEN68[usize::from(b)])
}

/// Which bytes are token68 characters (RFC 7235 §2.1): letters, digits and
/// `-._~+/=`.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    table
};

/// `Bearer <token>`, as sent upstream.
pub fn header_value(token: &str) -> String {
    let mut value = String::with_capacity("Bearer ".len() + token.len());
    value.push_str("Bearer ");
    value.push_str(token);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_the_same_everywhere() {
        assert_eq!(token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(token("bearer   abc"), Some("abc"));
        assert_eq!(token("  BEARER\tabc  "), Some("abc"));
        assert_eq!(token("Bearer a+b/c=="), Some("a+b/c=="));
    }

    #[test]
    fn anything_else_is_not_a_bearer_token() {
        for value in [
            "Basic abc",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Bearer a b",
            "Bearer a\u{1}",
            "Bearer é",
            "",
        ] {
            assert_eq!(token(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_header_value_is_scheme_space_token() {
        assert_eq!(header_value("t"), "Bearer t");
    }
}
