//! The dashboard's static files (SPEC section 8): `web/` at the repository
//! root, built into the binary with `include_bytes!`, served on `GET /` and
//! `GET /assets/<build>/<path>`.
//!
//! Invariants:
//! - Every file is read-only, in the binary; nothing is read from disk, so
//!   the dashboard works offline and matches the daemon it came with.
//! - Each file's strong `ETag` (a SHA-256 prefix) is computed once, the first
//!   time any file is asked for; its gzip form is compressed once, the first
//!   time a client accepts it, and kept (it is never compressed per request).
//! - Asset URLs carry a build id (a hash over every file), so a changed file
//!   gets a new URL: assets under the current build id are cached for a year
//!   (`immutable`), `index.html` is `no-cache` (revalidated with its ETag, 304).
//!   Relative imports between modules inherit the prefix, so the JavaScript
//!   needs no build step to be versioned.
//! - Every answer carries the Content-Security-Policy below and `nosniff`;
//!   these paths are open without auth (the data behind them is not).

use std::sync::{LazyLock, OnceLock};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::http::router::{Route, refuse};
use crate::http::{RequestHead, reason};

/// No script, style or connection to anywhere but this daemon.
pub const CSP: &str =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'";

/// Cache lifetime of an asset under the current build id.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html`, and assets asked for under another build id.
const REVALIDATE: &str = "no-cache";

/// The placeholder in `index.html` replaced by the build id.
const BUILD_MARK: &str = "@BUILD@";

macro_rules! web_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../web/", $path)) as &[u8])),*]
    };
}

/// Every file under `web/` that is served (`index.html` is served at `/`).
const FILES: &[(&str, &[u8])] = web_files![
    "index.html",
    "app.css",
    "js/main.js",
    "js/socket.js",
    "js/store.js",
    "js/logstore.js",
    "js/ansi.js",
    "js/dom.js",
    "js/format.js",
    "js/api.js",
    "js/chart.js",
    "js/views/servers.js",
    "js/views/containers.js",
    "js/views/logs.js",
    "js/views/charts.js",
    "js/views/alerts.js",
    "js/views/commands.js",
    "js/views/login.js",
];

/// One file as served.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 prefix of `bytes`; the ETag is this, quoted (plus `-gz`).
    hash: String,
    /// The gzip form, when it is smaller; compressed at first use.
    gzip: OnceLock<Option<Vec<u8>>>,
}

impl Asset {
    fn new(path: &'static str, bytes: Vec<u8>) -> Asset {
        let hash = hex_prefix(&Sha256::digest(&bytes), 16);
        Asset {
            path,
            content_type: content_type(path),
            bytes,
            hash,
            gzip: OnceLock::new(),
        }
    }

    /// The strong ETag of the identity (`gz: false`) or gzip form.
    pub fn etag(&self, gz: bool) -> String {
        if gz {
            format!("\"{}-gz\"", self.hash)
        } else {
            format!("\"{}\"", self.hash)
        }
    }

    /// The gzip bytes, compressed the first time they are asked for; `None`
    /// when compression would not make the file smaller.
    pub fn gzip(&self) -> Option<&[u8]> {
        self.gzip
            .get_or_init(|| {
                let mut enc = GzEncoder::new(Vec::new(), Compression::best());
                std::io::Write::write_all(&mut enc, &self.bytes).ok()?;
                let out = enc.finish().ok()?;
                (out.len() < self.bytes.len()).then_some(out)
            })
            .as_deref()
    }
}

/// Every file, with `index.html` already carrying the build id.
pub struct Assets {
    /// Hash over every file but `index.html`; the `/assets/<build>/` segment.
    pub build: String,
    pub index: Asset,
    pub files: Vec<Asset>,
}

impl Assets {
    fn load() -> Assets {
        let mut all = Sha256::new();
        for (path, bytes) in FILES.iter().filter(|(p, _)| *p != "index.html") {
            all.update(path.as_bytes());
            all.update(Sha256::digest(bytes));
        }
        let build = hex_prefix(&all.finalize(), 12);
        let index_src = FILES
            .iter()
            .find(|(p, _)| *p == "index.html")
            .map_or(&[][..], |(_, b)| *b);
        let index = String::from_utf8_lossy(index_src).replace(BUILD_MARK, &build);
        Assets {
            index: Asset::new("index.html", index.into_bytes()),
            files: FILES
                .iter()
                .filter(|(p, _)| *p != "index.html")
                .map(|(p, b)| Asset::new(p, b.to_vec()))
                .collect(),
            build,
        }
    }

    fn file(&self, path: &str) -> Option<&Asset> {
        self.files.iter().find(|a| a.path == path)
    }
}

/// The files, loaded (and hashed) at first use.
pub fn assets() -> &'static Assets {
    static ASSETS: LazyLock<Assets> = LazyLock::new(Assets::load);
    &ASSETS
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes
        .iter()
        .take(n / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// True when `Accept-Encoding` takes gzip (`gzip` or `*`, with q above 0).
pub fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else {
        return false;
    };
    header.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if !(coding.eq_ignore_ascii_case("gzip") || coding == "*") {
            return false;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        q > 0.0
    })
}

/// True when `If-None-Match` names `asset` in either form (the weak
/// comparison RFC 9110 asks for on `If-None-Match`).
fn not_modified(header: Option<&str>, asset: &Asset) -> bool {
    let Some(header) = header else {
        return false;
    };
    let (plain, gz) = (asset.etag(false), asset.etag(true));
    header.split(',').any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == plain || tag == gz
    })
}

/// The answer to a request for the dashboard, or `None` when `head.path` is
/// not one of its paths.
pub fn route(head: &RequestHead, keep_alive: bool) -> Option<Route> {
    // Other paths never load (and hash) the files.
    if !matches!(head.path.as_str(), "/" | "/index.html") && !head.path.starts_with("/assets/") {
        return None;
    }
    let all = assets();
    let (asset, cache) = match head.path.as_str() {
        "/" | "/index.html" => (&all.index, REVALIDATE),
        path => {
            let rest = path.strip_prefix("/assets/")?;
            match rest.split_once('/') {
                Some((build, file)) if build == all.build => (all.file(file)?, IMMUTABLE),
                // Another build's URL (a page loaded before an upgrade): the
                // current file, revalidated each time.
                Some((_, file)) => (all.file(file).or_else(|| all.file(rest))?, REVALIDATE),
                None => (all.file(rest)?, REVALIDATE),
            }
        }
    };
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Some(refuse(
            405,
            "Allow: GET, HEAD\r\n",
            "method not allowed",
            keep_alive,
            "method",
        ));
    }
    Some(answer(head, asset, cache, keep_alive))
}

fn answer(head: &RequestHead, asset: &Asset, cache: &str, keep_alive: bool) -> Route {
    let gzip = if accepts_gzip(head.accept_encoding.as_deref()) {
        asset.gzip()
    } else {
        None
    };
    let etag = asset.etag(gzip.is_some());
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let common = format!(
        "ETag: {etag}\r\nCache-Control: {cache}\r\nVary: Accept-Encoding\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\nConnection: {connection}\r\n"
    );
    if not_modified(head.if_none_match.as_deref(), asset) {
        let bytes = format!("HTTP/1.1 304 {}\r\n{common}\r\n", reason(304)).into_bytes();
        return Route::Reply {
            status: 304,
            bytes,
            keep_alive,
            refusal: None,
        };
    }
    let body: &[u8] = gzip.unwrap_or(&asset.bytes);
    let encoding = if gzip.is_some() {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    let mut bytes = format!(
        "HTTP/1.1 200 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{encoding}{common}\r\n",
        reason(200),
        asset.content_type,
        body.len()
    )
    .into_bytes();
    if head.method != "HEAD" {
        bytes.extend_from_slice(body);
    }
    Route::Reply {
        status: 200,
        bytes,
        keep_alive,
        refusal: None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn get(path: &str) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: path.into(),
            ..RequestHead::default()
        }
    }

    /// Splits a reply into status, head text and body.
    fn parts(route: Route) -> (u16, String, Vec<u8>) {
        let Route::Reply { status, bytes, .. } = route else {
            panic!("not a reply")
        };
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            status,
            String::from_utf8(bytes[..end].to_vec()).unwrap(),
            bytes[end..].to_vec(),
        )
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn index_is_html_no_cache_with_build_id_and_csp() {
        let (status, head, body) = parts(route(&get("/"), true).unwrap());
        assert_eq!(status, 200);
        assert_eq!(
            header(&head, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(header(&head, "cache-control"), Some("no-cache"));
        assert_eq!(header(&head, "content-security-policy"), Some(CSP));
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert_eq!(
            header(&head, "content-length"),
            Some(body.len().to_string().as_str())
        );
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains(BUILD_MARK));
        assert!(text.contains(&format!("/assets/{}/js/main.js", assets().build)));
    }

    #[test]
    fn content_types_by_extension() {
        let build = &assets().build;
        for (path, ctype) in [
            ("app.css", "text/css; charset=utf-8"),
            ("js/main.js", "text/javascript; charset=utf-8"),
            ("js/views/logs.js", "text/javascript; charset=utf-8"),
        ] {
            let (status, head, _) =
                parts(route(&get(&format!("/assets/{build}/{path}")), true).unwrap());
            assert_eq!(status, 200, "{path}");
            assert_eq!(header(&head, "content-type"), Some(ctype), "{path}");
            assert_eq!(header(&head, "cache-control"), Some(IMMUTABLE), "{path}");
        }
        assert_eq!(content_type("x.svg"), "image/svg+xml");
        assert_eq!(content_type("x"), "application/octet-stream");
    }

    #[test]
    fn other_paths_are_not_ours_and_unknown_assets_are_not_served() {
        assert!(route(&get("/healthz"), true).is_none());
        assert!(route(&get("/api/v1/containers"), true).is_none());
        assert!(route(&get("/assets/nope.js"), true).is_none());
        assert!(
            route(
                &get(&format!("/assets/{}/../Cargo.toml", assets().build)),
                true
            )
            .is_none()
        );
        // An old build id still gets the file, revalidated.
        let (status, head, _) = parts(route(&get("/assets/0123456789ab/app.css"), true).unwrap());
        assert_eq!(status, 200);
        assert_eq!(header(&head, "cache-control"), Some(REVALIDATE));
    }

    #[test]
    fn etag_is_strong_and_stable_and_304_answers_if_none_match() {
        let (_, first, _) = parts(route(&get("/"), true).unwrap());
        let (_, again, _) = parts(route(&get("/"), true).unwrap());
        let etag = header(&first, "etag").unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
        assert_eq!(header(&again, "etag"), Some(etag.as_str()));

        let mut cond = get("/");
        cond.if_none_match = Some(format!("\"other\", {etag}"));
        let (status, head, body) = parts(route(&cond, true).unwrap());
        assert_eq!(status, 304);
        assert!(body.is_empty());
        assert_eq!(header(&head, "etag"), Some(etag.as_str()));
        assert!(header(&head, "content-length").is_none());

        cond.if_none_match = Some("\"stale\"".into());
        assert_eq!(parts(route(&cond, true).unwrap()).0, 200);
        // The gzip form's tag revalidates too, and a weak prefix is ignored.
        cond.if_none_match = Some(format!("W/{}", assets().index.etag(true)));
        assert_eq!(parts(route(&cond, true).unwrap()).0, 304);
    }

    #[test]
    fn gzip_when_accepted_and_it_round_trips() {
        let path = format!("/assets/{}/js/main.js", assets().build);
        let mut req = get(&path);
        req.accept_encoding = Some("br;q=1.0, gzip;q=0.8".into());
        let (status, head, body) = parts(route(&req, true).unwrap());
        assert_eq!(status, 200);
        let asset = assets().file("js/main.js").unwrap();
        assert!(asset.gzip().is_some(), "main.js compresses");
        assert_eq!(header(&head, "content-encoding"), Some("gzip"));
        assert_eq!(header(&head, "etag"), Some(asset.etag(true).as_str()));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, asset.bytes);
        // Compressed once: the same bytes every time.
        let a = asset.gzip().map(<[u8]>::as_ptr);
        assert_eq!(a, asset.gzip().map(<[u8]>::as_ptr));

        req.accept_encoding = Some("gzip;q=0, deflate".into());
        let (_, head, body) = parts(route(&req, true).unwrap());
        assert!(header(&head, "content-encoding").is_none());
        assert_eq!(body, asset.bytes);
        assert_eq!(header(&head, "vary"), Some("Accept-Encoding"));
    }

    #[test]
    fn accept_encoding_parsing() {
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("GZIP")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("deflate, br")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn head_has_no_body_and_post_is_405() {
        let mut req = get("/");
        req.method = "HEAD".into();
        let (status, head, body) = parts(route(&req, true).unwrap());
        assert_eq!(status, 200);
        assert!(body.is_empty());
        assert!(header(&head, "content-length").unwrap() != "0");
        req.method = "POST".into();
        let (status, head, _) = parts(route(&req, false).unwrap());
        assert_eq!(status, 405);
        assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
    }
}
