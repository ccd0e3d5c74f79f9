//! OAuth 2.0 Protected Resource Metadata (RFC 9728), which MCP clients fetch
//! to find the authorization server.

use crate::policy::Policy;
use crate::response::{split_origin, LocalResponse};
use serde_json::json;

/// The well-known path; a resource path may follow it.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata answer if `path` asks for it.
pub fn answer(policy: &Policy, method: &str, path: &str) -> Option<LocalResponse> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let path = path.split('?').next().unwrap_or(path);
    let suffix = path.strip_prefix(WELL_KNOWN)?;
    if !(suffix.is_empty() || suffix.starts_with('/')) {
        return None;
    }
    let (origin, _) = split_origin(&policy.resource);
    let resource = if suffix.is_empty() || suffix == "/" {
        policy.resource.clone()
    } else {
        format!("{origin}{suffix}")
    };
    let mut methods = vec!["header"];
    if policy.identity.token_query_param.is_some() {
        methods.push("query");
    }
    let body = json!({
        "resource": resource,
        "authorization_servers": policy.authorization_servers,
        "scopes_supported": policy.advertised_scopes(),
        "bearer_methods_supported": methods,
    });
    let mut response = LocalResponse::json(200, body);
    response.headers.retain(|(n, _)| n != "cache-control");
    Some(
        response
            .with_header("cache-control", "max-age=300".into())
            .with_header("access-control-allow-origin", "*".into()),
    )
}
