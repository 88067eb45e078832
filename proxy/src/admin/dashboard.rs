//! The HTML dashboard (`GET /` and `GET /stats`), in the spirit of HAProxy's
//! stats page: one table per upstream with state colours and a live chart
//! of requests per second and open WebSockets. The page is static; its
//! script reads `/stats.json` and posts to the control API, so it shows
//! exactly what those endpoints say and can do nothing they refuse.
//!
//! The three files are compiled into the binary; the page loads nothing
//! from elsewhere, and its Content-Security-Policy forbids it to.

/// A static file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const PAGE: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("dashboard/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("dashboard/dashboard.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("dashboard/dashboard.css"),
};

/// The dashboard file served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/stats" => Some(PAGE),
        "/dashboard.js" => Some(SCRIPT),
        "/dashboard.css" => Some(STYLE),
        _ => None,
    }
}

/// Headers that keep the page to its own origin: scripts, styles and
/// requests from the admin listener only, no framing (the buttons cannot be
/// clickjacked), no referrer leaving the page.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_only_to_its_own_files() {
        let html = std::str::from_utf8(PAGE.body).unwrap();
        assert!(html.contains(r#"src="/dashboard.js""#));
        assert!(html.contains(r#"href="/dashboard.css""#));
        for text in [html, std::str::from_utf8(SCRIPT.body).unwrap()] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn"));
        }
        assert!(asset("/stats").is_some() && asset("/").is_some());
        assert!(asset("/index.html").is_none());
    }
}
