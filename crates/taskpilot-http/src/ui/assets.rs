//! The dashboard's static files, compiled into the binary: htmx and uPlot (vendored with
//! their licences under `static/vendor/`), and our one script and one stylesheet.
//!
//! Each is served at `/ui/static/<name>` and linked as `/ui/static/<name>?v=<digest of its
//! bytes>`, so a browser may keep it for a year: a file that changes gets another address.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the dashboard serves.
const ASSETS: [Asset; 5] = [
    Asset {
        name: "vendor/htmx.min.js",
        content_type: JS,
        body: include_bytes!("../../static/vendor/htmx-2.0.11/htmx.min.js"),
    },
    Asset {
        name: "vendor/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("../../static/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    },
    Asset {
        name: "vendor/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("../../static/vendor/uplot-1.6.32/uPlot.min.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: JS,
        body: include_bytes!("../../static/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: CSS,
        body: include_bytes!("../../static/dashboard.css"),
    },
];

/// A digest of each file's bytes, in the order of [`ASSETS`]. It only has to change when the
/// bytes do, within one binary, so the standard library's hasher serves.
static DIGESTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let mut hasher = DefaultHasher::new();
            asset.body.hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        })
        .collect()
});

/// The address to link `name` by, with the digest that lets browsers cache it for good;
/// `/ui/static/<name>` for a name that is not embedded (a bug the browser test would see).
pub fn url(name: &str) -> String {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => format!("/ui/static/{name}?v={}", DIGESTS[i]),
        None => format!("/ui/static/{name}"),
    }
}

/// `GET /ui/static/{name}`: the file, cached for a year; 404 for any other name.
pub async fn serve(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|a| a.name == name.as_str()) {
        Some(asset) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, asset.content_type))
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .body(asset.body),
        None => HttpResponse::NotFound()
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("no such file"),
    }
}
