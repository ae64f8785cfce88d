//! `GET /recordings/{file}?exp=<unix s>&sig=<hex>`: a recording by signed
//! link (`links`). The checks, in order: the name is a plain file name
//! (else 404, whatever the signature), the signature and expiry hold (else
//! 403, before anything about the disk is told), the file exists under the
//! recordings directory (else 404). Served by tower-http's `ServeFile`, so
//! Range requests get their 206 and the player can seek.

use super::App;
use super::links::LinkError;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

/// A recording name that names a file directly in the recordings directory:
/// not empty, no separators, no leading dot (`.`, `..`, hidden files), no
/// NUL or control characters, at most 255 bytes.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

pub async fn serve(
    State(app): State<App>,
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let Ok(Path(file)) = file else { return (StatusCode::NOT_FOUND, "not found\n").into_response() };
    if !plain_name(&file) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(exp), Some(sig)) = (get("exp").and_then(|e| e.parse::<i64>().ok()), get("sig")) else {
        return (StatusCode::FORBIDDEN, "a recording needs a signed link\n").into_response();
    };
    match app.links.verify(&file, exp, sig, super::now_ms() / 1000) {
        Ok(()) => {}
        Err(LinkError::Expired) => return (StatusCode::FORBIDDEN, "this link has expired\n").into_response(),
        Err(LinkError::BadSignature) => return (StatusCode::FORBIDDEN, "bad signature\n").into_response(),
    }
    let mut path = app.recordings.join(&file);
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        // On a cluster another node may have taken the call: its recordings are in the shared store.
        let fetched = match app.publisher.cluster() {
            Some(cluster) => crate::cluster::recordings::fetch(cluster, &app.recordings, &file).await,
            None => Ok(None),
        };
        match fetched {
            Ok(Some(p)) => path = p,
            Ok(None) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
            Err(e) => {
                tracing::warn!(file = file.as_str(), error = %e, "a recording could not be fetched from the shared store");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the recording is on another node; the shared store is not reachable\n",
                )
                    .into_response();
            }
        }
    }
    let mut res = match tower_http::services::ServeFile::new(&path).oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            tracing::warn!(file = ?path, "serving a recording: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "could not read the recording\n").into_response();
        }
    };
    tracing::debug!(file = file.as_str(), status = res.status().as_u16(), "recording served");
    let h = res.headers_mut();
    if file.to_ascii_lowercase().ends_with(".wav") {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    res
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn only_plain_names_pass() {
        for ok in ["abc-need.wav", "0b9e3f6c-5f4a-4a8e-9d1e-2f7c1a6b4d10-call.wav", "a..b.wav", "x"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "..\\x.wav",
            "/etc/passwd",
            "a/b.wav",
            "a\\b.wav",
            ".hidden.wav",
            "a\0b.wav",
            "a\nb.wav",
            &"x".repeat(256),
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
