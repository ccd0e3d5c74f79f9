//! `GET /playground/`: the policy playground's static files
//! (`cargo xtask playground` builds them into `target/playground/`), served
//! from the configured `playground_dir`. Only the playground's own file
//! names are served, so no path reaches outside it. The page runs entirely
//! in the browser: its content security policy lets it talk to nothing but
//! this origin (for its own files).

use crate::app::Vault;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// Where the playground is served.
pub const PATH: &str = "/playground";

/// The playground's files and their media types.
const FILES: [(&str, &str); 5] = [
    ("index.html", "text/html; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("agentward_playground.js", "text/javascript; charset=utf-8"),
    ("agentward_playground_bg.wasm", "application/wasm"),
];

/// The page may load its own files and compile its wasm; nothing else.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /playground`: to `/playground/`, so the page's relative links work.
pub async fn root() -> Redirect {
    Redirect::permanent("/playground/")
}

/// `GET /playground/`: the page.
pub async fn index(vault: State<Arc<Vault>>, headers: HeaderMap) -> Response {
    serve(vault, Path("index.html".to_string()), headers).await
}

/// `GET /playground/{file}`: one of the playground's files; its gzip form
/// (`{file}.gz`, which `cargo xtask playground` writes beside it) to a
/// client that accepts gzip.
pub async fn serve(
    State(vault): State<Arc<Vault>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(dir) = &vault.config.playground_dir else {
        return missing("the playground is not configured (`playground_dir`)");
    };
    let Some((name, media_type)) = FILES.iter().find(|(name, _)| *name == file) else {
        return missing("no such playground file");
    };
    let path = dir.join(name);
    if accepts_gzip(&headers) {
        if let Ok(bytes) = tokio::fs::read(path.with_file_name(format!("{name}.gz"))).await {
            let mut answer = page_file(media_type, bytes);
            let gzip = header::HeaderValue::from_static("gzip");
            answer.headers_mut().insert(header::CONTENT_ENCODING, gzip);
            return answer;
        }
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => page_file(media_type, bytes),
        Err(e) => {
            tracing::warn!(file = name, error = %e, "playground file unreadable (cargo xtask playground builds them)");
            missing("the playground is not built (cargo xtask playground)")
        }
    }
}

fn page_file(media_type: &'static str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, media_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "accept-encoding"),
        ],
        bytes,
    )
        .into_response()
}

/// Whether `Accept-Encoding` names gzip (and does not refuse it with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                matches!(
                    p.replace(' ', "").as_str(),
                    "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
                )
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn missing(description: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_goes_to_clients_that_accept_it() {
        assert!(accepting("gzip, deflate, br, zstd"));
        assert!(accepting("br;q=1.0, GZIP;q=0.5"));
        assert!(accepting("*"));
        assert!(!accepting("br, deflate"));
        assert!(!accepting("gzip;q=0"));
        assert!(!accepting("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
