//! Bearer JWT verification (RFC 7519, RFC 8725): bounded sizes, an algorithm
//! allow-list per issuer, `crit` refused, explicit `typ` when configured,
//! signature before claims, `exp`/`nbf` with a small leeway, audience checks.

use crate::jwks::KeySet;
use crate::policy::{Algorithm, Issuer};
use crate::signature::{PureRust, SignatureCheck};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// What a verified token told us.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The verified claims.
    pub claims: Map<String, Value>,
    /// Index of the issuer in the policy.
    pub issuer: usize,
    /// `exp`, in Unix seconds.
    pub exp: u64,
}

/// Why a token was refused; [`Rejection::code`] is the short reason sent to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not three base64url JSON parts.
    Malformed,
    /// Token or JOSE header over the configured bound.
    TooLarge,
    /// `alg` not in the issuer's allow-list (includes `none` and HMAC).
    AlgNotAllowed,
    /// A `crit` header parameter is present.
    CritUnsupported,
    /// `typ` is not the configured one (or not a JWT type).
    WrongTyp,
    /// `iss` names no trusted issuer.
    UnknownIssuer,
    /// No key of the issuer has the token's `kid` (or fits its `alg`).
    UnknownKid,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` (or `iat`) is in the future (beyond the leeway).
    NotYetValid,
    /// `aud` names none of the issuer's audiences.
    WrongAudience,
    /// No `exp` claim.
    MissingExp,
    /// A registered claim has the wrong type, or a value unfit for a header.
    BadClaim,
    /// The issuer's keys are not loaded yet (index of the issuer).
    KeysUnavailable(usize),
}

impl Rejection {
    /// Every reason that is reported to clients, for metrics set-up.
    pub const REASONS: [Rejection; 13] = [
        Rejection::Malformed,
        Rejection::TooLarge,
        Rejection::AlgNotAllowed,
        Rejection::CritUnsupported,
        Rejection::WrongTyp,
        Rejection::UnknownIssuer,
        Rejection::UnknownKid,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::WrongAudience,
        Rejection::MissingExp,
        Rejection::BadClaim,
    ];

    /// Short reason code.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::TooLarge => "token_too_large",
            Rejection::AlgNotAllowed => "alg_not_allowed",
            Rejection::CritUnsupported => "crit_unsupported",
            Rejection::WrongTyp => "wrong_typ",
            Rejection::UnknownIssuer => "unknown_issuer",
            Rejection::UnknownKid => "unknown_kid",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::MissingExp => "missing_exp",
            Rejection::BadClaim => "bad_claim",
            Rejection::KeysUnavailable(_) => "jwks_unavailable",
        }
    }

    /// A sentence for `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            Rejection::Malformed => "the token is not a well-formed JWS compact serialization",
            Rejection::TooLarge => "the token is larger than allowed",
            Rejection::AlgNotAllowed => {
                "the token's signature algorithm is not allowed for its issuer"
            }
            Rejection::CritUnsupported => {
                "the token has critical header parameters that are not supported"
            }
            Rejection::WrongTyp => "the token has the wrong type (typ)",
            Rejection::UnknownIssuer => "the token's issuer is not trusted",
            Rejection::UnknownKid => "the token was signed with an unknown key",
            Rejection::BadSignature => "the token's signature is invalid",
            Rejection::Expired => "the token has expired",
            Rejection::NotYetValid => "the token is not valid yet",
            Rejection::WrongAudience => "the token was not issued for this resource",
            Rejection::MissingExp => "the token has no expiry (exp)",
            Rejection::BadClaim => "the token has a malformed claim",
            Rejection::KeysUnavailable(_) => "the issuer's signing keys are not available",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Size bounds applied before any parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest token, in bytes.
    pub max_token_bytes: usize,
    /// Largest decoded JOSE header, in bytes.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 8192,
            max_header_bytes: 1024,
        }
    }
}

/// Trusted issuers with their current keys.
#[derive(Debug, Clone)]
pub struct TrustStore {
    issuers: Vec<(Issuer, Option<KeySet>)>,
    clock_skew: u64,
    limits: Limits,
}

impl TrustStore {
    /// Issuers with inline `jwks` start with their keys; others wait for a fetch.
    pub fn new(issuers: Vec<Issuer>, clock_skew_seconds: u64) -> TrustStore {
        let issuers = issuers
            .into_iter()
            .map(|issuer| {
                let keys = issuer
                    .jwks
                    .as_ref()
                    .and_then(|j| KeySet::parse(j.to_string().as_bytes()).ok());
                (issuer, keys)
            })
            .collect();
        TrustStore {
            issuers,
            clock_skew: clock_skew_seconds,
            limits: Limits::default(),
        }
    }

    /// Sets the size bounds.
    pub fn with_limits(mut self, limits: Limits) -> TrustStore {
        self.limits = limits;
        self
    }

    /// Replaces an issuer's keys.
    pub fn set_keys(&mut self, issuer: usize, keys: KeySet) {
        if let Some(slot) = self.issuers.get_mut(issuer) {
            slot.1 = Some(keys);
        }
    }

    /// An issuer's keys, if loaded.
    pub fn keys(&self, issuer: usize) -> Option<&KeySet> {
        self.issuers.get(issuer).and_then(|i| i.1.as_ref())
    }

    /// The issuers, in policy order.
    pub fn issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.iter().map(|i| &i.0)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Verifies a compact JWS bearer token against the trust store at `now`
/// (Unix seconds). `check` verifies signatures; algorithms it cannot take go
/// through [`PureRust`].
pub fn verify(
    token: &str,
    trust: &TrustStore,
    now: u64,
    check: &dyn SignatureCheck,
) -> Result<Verified, Rejection> {
    let limits = trust.limits;
    if token.len() > limits.max_token_bytes {
        return Err(Rejection::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    if h64.len() > limits.max_header_bytes.div_ceil(3) * 4 {
        return Err(Rejection::TooLarge);
    }
    let header: Header = decode_json(h64)?;
    let claims: Map<String, Value> = decode_json(p64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| Rejection::Malformed)?;

    if header.crit.is_some() {
        return Err(Rejection::CritUnsupported);
    }
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Rejection::BadClaim),
        None => return Err(Rejection::UnknownIssuer),
    };
    let (index, issuer, keys) = trust
        .issuers
        .iter()
        .enumerate()
        .find(|(_, (i, _))| i.issuer == iss)
        .map(|(n, (i, k))| (n, i, k))
        .ok_or(Rejection::UnknownIssuer)?;
    let alg = Algorithm::from_name(&header.alg)
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(Rejection::AlgNotAllowed)?;
    check_typ(header.typ.as_deref(), issuer.typ.as_deref())?;
    check_claim_types(&claims)?;

    // JWS fixes the signature width of these algorithms (RFC 7518 §3.4,
    // RFC 8037): any other length is no signature, whatever a verifier
    // would make of it (BoringSSL takes DER, which has many spellings).
    let width = match alg {
        Algorithm::ES256 | Algorithm::EdDSA => Some(64),
        Algorithm::ES384 => Some(96),
        _ => None,
    };
    if width.is_some_and(|w| signature.len() != w) {
        return Err(Rejection::BadSignature);
    }
    let keys = keys.as_ref().ok_or(Rejection::KeysUnavailable(index))?;
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let mut candidates = keys.candidates(alg, header.kid.as_deref()).peekable();
    if candidates.peek().is_none() {
        return Err(Rejection::UnknownKid);
    }
    let valid = candidates.take(4).any(|key| {
        check
            .check(alg, key, signing_input, &signature)
            .or_else(|| PureRust.check(alg, key, signing_input, &signature))
            .unwrap_or(false)
    });
    if !valid {
        return Err(Rejection::BadSignature);
    }

    let skew = trust.clock_skew;
    let exp = numeric_date(&claims, "exp")?.ok_or(Rejection::MissingExp)?;
    if now > exp.saturating_add(skew) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > now.saturating_add(skew) {
            return Err(Rejection::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(&claims, "iat")? {
        if iat > now.saturating_add(skew) {
            return Err(Rejection::NotYetValid);
        }
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => issuer.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
        }),
        _ => false,
    };
    if !audience_ok {
        return Err(Rejection::WrongAudience);
    }
    Ok(Verified {
        claims,
        issuer: index,
        exp,
    })
}

/// Reads the `iss` and `kid` of a token without verifying anything, to
/// decide which issuer's keys a request waits for.
pub fn peek_issuer_and_kid(token: &str) -> Option<(String, Option<String>)> {
    let mut parts = token.split('.');
    let header: Header = decode_json(parts.next()?).ok()?;
    let claims: Map<String, Value> = decode_json(parts.next()?).ok()?;
    let iss = claims.get("iss")?.as_str()?.to_string();
    Some((iss, header.kid))
}

/// The claims of a token, unverified: only for tokens a filter earlier in
/// the chain has verified.
pub fn peek_claims(token: &str) -> Option<Map<String, Value>> {
    decode_json(token.split('.').nth(1)?).ok()
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Malformed)
}

/// `typ`, when present, must be a JWT type; when the issuer requires one, it must be that.
fn check_typ(typ: Option<&str>, required: Option<&str>) -> Result<(), Rejection> {
    let normalize = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_string)
            .unwrap_or(t)
    };
    match (typ.map(normalize), required.map(normalize)) {
        (Some(t), Some(r)) if t == r => Ok(()),
        (_, Some(_)) => Err(Rejection::WrongTyp),
        (Some(t), None) if t == "jwt" || t.ends_with("+jwt") => Ok(()),
        (Some(_), None) => Err(Rejection::WrongTyp),
        (None, None) => Ok(()),
    }
}

/// Registered claims must have their registered types before any use.
fn check_claim_types(claims: &Map<String, Value>) -> Result<(), Rejection> {
    for name in ["sub", "azp", "client_id", "jti"] {
        match claims.get(name) {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(Rejection::BadClaim),
        }
    }
    for name in ["exp", "nbf", "iat"] {
        numeric_date(claims, name)?;
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(Rejection::BadClaim),
    }
}

/// A NumericDate: a non-negative integer number of seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(Rejection::BadClaim),
    }
}
