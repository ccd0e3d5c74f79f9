//! Whether an identity value (a user, an agent, an actor, a scope, a claim
//! copied into a header) can travel in a request header and still mean one
//! thing. Proxies and frameworks join repeated headers with commas and split
//! them again; logs and terminals break lines at U+2028; invisible format
//! characters make `alice` and `ali\u{200B}ce` look the same; surrounding
//! whitespace is trimmed by some readers and kept by others. A value with any
//! of those could split into two identities or pass for another one, so it
//! is refused (never rewritten: a rewritten identity is someone else's).

/// Whether `value` is fit to be forwarded as an identity: no comma, no
/// control character (C0, DEL, C1), no line or paragraph separator, no
/// format character (Unicode category Cf: zero-width, bidi controls, BOM,
/// tags, soft hyphen), and no whitespace at either end.
pub fn is_fit(value: &str) -> bool {
    let ends_clean =
        !value.starts_with(char::is_whitespace) && !value.ends_with(char::is_whitespace);
    ends_clean && !value.chars().any(is_unfit)
}

/// A character no identity value may hold.
fn is_unfit(c: char) -> bool {
    c == ',' || c.is_control() || c == '\u{2028}' || c == '\u{2029}' || is_format(c)
}

/// Unicode general category Cf (format characters), Unicode 15.1.
fn is_format(c: char) -> bool {
    const CF: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let c = u32::from(c);
    // ASCII has no format characters: skip the table for the common case.
    c >= 0x80 && CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identities_are_fit() {
        for v in [
            "alice",
            "auth0|5f7c8ec7",
            "stock-agent@clients",
            "Zoë Ångström",
            "用户",
            "a b",
            "portfolio:read",
            "https://idp.example.com/",
        ] {
            assert!(is_fit(v), "{v:?}");
        }
    }

    #[test]
    fn separators_controls_and_invisible_characters_are_unfit() {
        for v in [
            "alice,root",
            ",",
            "alice\r\nx-agentward-sub: root",
            "alice\tx",
            "alice\u{0}",
            "alice\u{7F}",
            "alice\u{85}",
            "alice\u{9B}",
            "alice\u{2028}root",
            "alice\u{2029}",
            "ali\u{200B}ce",
            "alice\u{200D}",
            "\u{202E}ecila",
            "\u{2066}alice",
            "\u{FEFF}alice",
            "ali\u{AD}ce",
            "alice\u{E0041}",
            " alice",
            "alice ",
            "alice\u{A0}",
            "\u{3000}alice",
        ] {
            assert!(!is_fit(v), "{v:?}");
        }
    }
}
