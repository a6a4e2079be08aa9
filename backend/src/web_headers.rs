//! Security headers for what a browser loads from us: the web client's pages and assets,
//! and the JSON endpoints.
//!
//! The page's Content-Security-Policy allows scripts from this origin and the page's own
//! inline bootstrap script by its hash (computed from the built `index.html` whenever a
//! page is served: pages are read from disk on each request, so a rebuilt client, whose
//! bootstrap names new asset files, is served with its own hash), WebAssembly compilation
//! (`'wasm-unsafe-eval'`, not the much wider `'unsafe-eval'`), and connections to this
//! origin only. Styles may be inline: the client sets `style` attributes, and a style
//! cannot run code. Nothing may frame the app (clickjacking).

use std::path::Path;

use axum::http::{HeaderMap, HeaderValue, Response, header};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Headers every response to a browser gets.
fn common(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Adds the common headers (assets, JSON).
pub(crate) fn secure<B>(mut response: Response<B>) -> Response<B> {
    common(response.headers_mut());
    response
}

/// Adds the common headers and the Content-Security-Policy to a page of the client built
/// into `static_dir`.
pub(crate) fn secure_page<B>(mut response: Response<B>, static_dir: &Path) -> Response<B> {
    let headers = response.headers_mut();
    common(headers);
    headers.insert(header::CONTENT_SECURITY_POLICY, page_policy(static_dir));
    response
}

/// The policy for the client built into `static_dir`: its `index.html`'s inline scripts
/// allowed by hash; without a built client, no inline script at all.
fn page_policy(static_dir: &Path) -> HeaderValue {
    let html = std::fs::read_to_string(static_dir.join("index.html")).unwrap_or_default();
    let hashes: String = inline_scripts(&html)
        .map(|script| {
            let digest = Sha256::digest(script.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    let policy = format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"))
}

/// The contents of the `<script>` elements without a `src`, exactly as the browser hashes
/// them (everything between the opening tag's `>` and `</script>`).
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (tag, after) = rest.split_once('>')?;
        let (body, _) = after.split_once("</script>")?;
        (!tag.contains("src=")).then_some(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_exactly_and_external_ones_skipped() {
        let html = "<head><script src=\"/a.js\"></script></head>\
                    <body><script type=\"module\">\n  init();\n</script></body>";
        let scripts: Vec<&str> = inline_scripts(html).collect();
        assert_eq!(scripts, ["\n  init();\n"]);
    }

    #[test]
    fn the_policy_names_the_pages_inline_script_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<script type=\"module\">init();</script>",
        )
        .unwrap();
        let policy = page_policy(dir.path());
        let value = policy.to_str().unwrap();
        // sha256("init();"), base64.
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"init();"));
        assert!(value.contains(&format!("'sha256-{expected}'")), "{value}");
        assert!(value.contains("'wasm-unsafe-eval'"), "{value}");
        assert!(value.contains("frame-ancestors 'none'"), "{value}");
        assert!(!value.contains("'unsafe-eval'"), "{value}");

        let without_client = page_policy(&dir.path().join("missing"));
        assert!(!without_client.to_str().unwrap().contains("sha256-"));
    }
}
