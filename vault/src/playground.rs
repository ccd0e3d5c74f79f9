//! `GET /playground/`: the policy playground's static files
//! (`cargo xtask playground` builds them into `target/playground/`), served
//! from the configured `playground_dir`. Only the playground's own file
//! names are served, so no path reaches outside it. The page runs entirely
//! in the browser: its content security policy lets it talk to nothing but
//! this origin (for its own files).

use crate::app::Vault;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
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
pub async fn index(vault: State<Arc<Vault>>) -> Response {
    serve(vault, Path("index.html".to_string())).await
}

/// `GET /playground/{file}`: one of the playground's files.
pub async fn serve(State(vault): State<Arc<Vault>>, Path(file): Path<String>) -> Response {
    let Some(dir) = &vault.config.playground_dir else {
        return missing("the playground is not configured (`playground_dir`)");
    };
    let Some((name, media_type)) = FILES.iter().find(|(name, _)| *name == file) else {
        return missing("no such playground file");
    };
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, *media_type),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(file = name, error = %e, "playground file unreadable (cargo xtask playground builds them)");
            missing("the playground is not built (cargo xtask playground)")
        }
    }
}

fn missing(description: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "error_description": description})),
    )
        .into_response()
}
