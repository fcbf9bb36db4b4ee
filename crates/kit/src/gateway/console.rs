//! The web console's static files (`crates/kit/console/`), embedded in the binary and served
//! by the gateway at [`PREFIX`] on the gRPC port.
//!
//! The page is a client of the JSON gateway on the same origin: every data call is a `/v1/…`
//! request with `Authorization: Bearer <token>`, so authentication, roles, visibility, limits
//! and audit are the API's own; nothing here reads a store. The static files themselves need
//! no token (like `/openapi.json`). Every answer carries a strict `Content-Security-Policy`
//! (`default-src 'self'`, no inline script or style, no framing) and `nosniff`; the files are
//! revalidated on each load (`Cache-Control: no-cache` with an `ETag`), so a new binary's
//! console is never mixed with an old cached script.

use std::sync::OnceLock;

use bytes::Bytes;
use tonic::body::Body;

/// Where the console is served (`/console` redirects here).
pub const PREFIX: &str = "/console/";

/// The policy sent with every console answer: only this origin's scripts, styles, images
/// and `fetch` targets; no plugins, no `<base>`, no framing, no inline code.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under [`PREFIX`] (`""` is the page).
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

/// The console's files. Chart.js is vendored unchanged with its licence
/// (`crates/kit/console/vendor/`, version in `crates/kit/console/README.md`).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../console/index.html"),
    },
    Asset {
        path: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/console.js"),
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
    },
    Asset {
        path: "vendor/chart.umd.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/vendor/chart.umd.js"),
    },
    Asset {
        path: "vendor/LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../console/vendor/LICENSE.md"),
    },
];

/// The strong `ETag` of each asset (SHA-256, first 16 bytes in hex), computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = ring::digest::digest(&ring::digest::SHA256, a.body);
                let hex: String = d.as_ref()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Whether `path` is the console's (`/console` or under [`PREFIX`]).
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with(PREFIX)
}

/// The answer to a request for a console path ([`is_console`]): the file (`GET`, `HEAD`),
/// 304 when `If-None-Match` names its tag, a redirect from `/console`, 404 for a path with
/// no file, 405 for another method.
pub fn serve(req: &http::Request<Body>) -> http::Response<Body> {
    use http::{StatusCode, header};
    let path = req.uri().path();
    let head = req.method() == http::Method::HEAD;
    if req.method() != http::Method::GET && !head {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "只支持 GET\n");
        resp.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if path == "/console" {
        let mut resp = text(StatusCode::PERMANENT_REDIRECT, "");
        resp.headers_mut()
            .insert(header::LOCATION, http::HeaderValue::from_static(PREFIX));
        return resp;
    }
    let rel = path.strip_prefix(PREFIX).unwrap_or("");
    let rel = if rel == "index.html" { "" } else { rel };
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.path == rel) else {
        return text(StatusCode::NOT_FOUND, "控制台没有这个文件\n");
    };
    let tag = &etags()[i];
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if head {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.body))
    };
    let mut resp = http::Response::new(Body::new(http_body_util::Full::new(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(asset.content_type),
    );
    if let Ok(v) = http::HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    resp
}

/// The headers every console answer carries.
fn secure(h: &mut http::HeaderMap) {
    use http::{HeaderValue, header};
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn text(code: http::StatusCode, body: &'static str) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&str, &str)]) -> http::Response<Body> {
        let mut b = http::Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        serve(&b.body(Body::empty()).expect("request"))
    }

    #[test]
    fn files_have_their_types_the_policy_and_revalidate() {
        for (path, ty) in [
            ("/console/", "text/html; charset=utf-8"),
            ("/console/index.html", "text/html; charset=utf-8"),
            ("/console/console.js", "text/javascript; charset=utf-8"),
            ("/console/console.css", "text/css; charset=utf-8"),
            (
                "/console/vendor/chart.umd.js",
                "text/javascript; charset=utf-8",
            ),
        ] {
            let r = get(path, &[]);
            assert_eq!(r.status(), 200, "{path}");
            let h = r.headers();
            assert_eq!(h[http::header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(
                h[http::header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(h[http::header::CACHE_CONTROL], "no-cache");
            let tag = h[http::header::ETAG].to_str().expect("tag").to_string();
            let again = get(path, &[("if-none-match", &tag)]);
            assert_eq!(again.status(), 304, "{path}");
        }
        assert_eq!(get("/console/nothing.js", &[]).status(), 404);
        let r = get("/console", &[]);
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()[http::header::LOCATION], PREFIX);
        let post = http::Request::post("/console/")
            .body(Body::empty())
            .expect("request");
        assert_eq!(serve(&post).status(), 405);
        let head = http::Request::head("/console/console.js")
            .body(Body::empty())
            .expect("request");
        let r = serve(&head);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(http_body::Body::size_hint(r.body()).exact(), Some(0));
        assert!(is_console("/console") && is_console("/console/x") && !is_console("/consoles"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        // Every <script> has a src on this origin and no body; no style attribute or element.
        for part in html.split("<script").skip(1) {
            let tag = &part[..part.find('>').expect("closed tag")];
            assert!(tag.contains("src=\"/console/"), "{tag}");
            assert!(part[tag.len() + 1..].starts_with("</script>"), "{part}");
        }
        assert!(!html.contains("style="), "inline style");
        assert!(!html.contains("<style"), "style element");
        let inline_handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
        for a in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            assert!(!text.contains("http://"), "{}", a.path);
            assert!(!text.contains("https://"), "{}", a.path);
        }
    }
}
