//! The dashboard: a page, a script and a style sheet written for vigil, and
//! the chart library it draws with (uPlot, MIT, vendored unmodified in
//! `vendor/` with its licence), all compiled into the binary, so nothing
//! needs building or installing to see it. Served with ETags so a reload
//! costs a 304.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");

/// One embedded file and its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let mut h = DefaultHasher::new();
            self.body.hash(&mut h);
            format!("\"{:016x}\"", h.finish())
        })
    }

    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let etag = self.etag();
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut res = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        res.insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, "no-cache"));
        if fresh {
            res.finish()
        } else {
            res.insert_header((header::CONTENT_TYPE, self.content_type))
                .body(self.body)
        }
    }
}

static PAGE: Asset = Asset::new(INDEX, "text/html; charset=utf-8");
static APP_JS: Asset = Asset::new(SCRIPT, "text/javascript; charset=utf-8");
static STYLE_CSS: Asset = Asset::new(STYLE, "text/css; charset=utf-8");
static CHART_JS: Asset = Asset::new(UPLOT_JS, "text/javascript; charset=utf-8");
static CHART_CSS: Asset = Asset::new(UPLOT_CSS, "text/css; charset=utf-8");

pub async fn page(req: HttpRequest) -> HttpResponse {
    PAGE.respond(&req)
}

pub async fn script(req: HttpRequest) -> HttpResponse {
    APP_JS.respond(&req)
}

pub async fn style(req: HttpRequest) -> HttpResponse {
    STYLE_CSS.respond(&req)
}

pub async fn chart_script(req: HttpRequest) -> HttpResponse {
    CHART_JS.respond(&req)
}

pub async fn chart_style(req: HttpRequest) -> HttpResponse {
    CHART_CSS.respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_what_the_page_links_to() {
        for asset in [
            "/assets/app.js",
            "/assets/style.css",
            "/assets/vendor/uplot.js",
            "/assets/vendor/uplot.css",
        ] {
            assert!(INDEX.contains(asset), "{asset}");
        }
        assert!(UPLOT_JS.starts_with("/*! https://github.com/leeoniya/uPlot"));
        assert_ne!(PAGE.etag(), APP_JS.etag());
    }
}
