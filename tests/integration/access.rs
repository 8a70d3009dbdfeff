//! Who may read and who may administer: the viewer and admin tokens as
//! bearers and as login sessions, for every class of route, over HTTP and
//! the WebSocket; the client address through a trusted proxy, on IPv4,
//! IPv6 and a dual-stack socket; the login throttle; the open-data flag.

use std::net::TcpListener;
use std::time::Duration;

use awc::http::header::HeaderMap;
use serde_json::Value;

use crate::util::{TestServer, config};

const VIEWER: &str = "l00k-only";
const ADMIN: &str = "adm1n-s3cret";

/// A client that shows redirects instead of following them.
fn raw() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// One request: the status, the headers and the body.
async fn call(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, HeaderMap, Vec<u8>) {
    let mut req = raw().request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = match body {
        Some(b) => {
            req = req.insert_header(("Content-Type", "application/x-www-form-urlencoded"));
            req.send_body(b.to_owned()).await
        }
        None => req.send().await,
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .body()
        .limit(10 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    (status, headers, body)
}

/// Opens the live feed; the upgrade's status (101 when it opened).
async fn ws_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = raw().ws(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.connect().await {
        Ok((res, _)) => res.status().as_u16(),
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("ws {url}: {e}"),
    }
}

/// Logs in with `token`; the session cookie (`name=value`).
async fn login(s: &TestServer, token: &str, extra: &[(&str, &str)]) -> String {
    let (status, headers, body) = call(
        &s.url("/login"),
        "POST",
        extra,
        Some(&format!("token={token}")),
    )
    .await;
    assert_eq!(status, 303, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers.get("location").unwrap(), "/");
    let cookie = headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(token), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// Request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The read routes of each class: page, asset, API, document, metrics.
const READS: &[&str] = &[
    "/",
    "/assets/app.js",
    "/api/sensors",
    "/api/readings?limit=1",
    "/api/openapi.json",
    "/metrics",
];

async fn guarded() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.server.viewer_token = VIEWER.into();
    cfg.server.admin_token = ADMIN.into();
    TestServer::start_with(dir, cfg).await
}

#[actix_rt::test]
async fn with_a_viewer_token_every_read_needs_a_credential() {
    let s = guarded().await;
    let viewer = format!("Bearer {VIEWER}");
    let admin = format!("Bearer {ADMIN}");
    let viewer_cookie = login(&s, VIEWER, &[]).await;
    let admin_cookie = login(&s, ADMIN, &[]).await;
    for path in READS {
        let url = s.url(path);
        let (status, _, body) = call(&url, "GET", &[], None).await;
        assert_eq!(status, 401, "{path} without a credential");
        let err: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["error"]["code"], "unauthorized", "{path}");
        let (status, _, _) = call(&url, "GET", &[("Authorization", "Bearer nope")], None).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _, _) = call(&url, "GET", &[("Cookie", "vigil_session=00ff")], None).await;
        assert_eq!(status, 401, "{path} with a made-up session");
        for (what, header) in [
            ("viewer bearer", ("Authorization", viewer.as_str())),
            ("admin bearer", ("Authorization", admin.as_str())),
            ("viewer session", ("Cookie", viewer_cookie.as_str())),
            ("admin session", ("Cookie", admin_cookie.as_str())),
        ] {
            let (status, _, _) = call(&url, "GET", &[header], None).await;
            assert_eq!(status, 200, "{path} with the {what}");
        }
    }
    // A browser asking for the page is sent to the login form, which is open.
    let (status, headers, _) = call(&s.url("/"), "GET", &[("Accept", "text/html")], None).await;
    assert_eq!(status, 303);
    assert_eq!(headers.get("location").unwrap(), "/login");
    let (status, _, page) = call(&s.url("/login"), "GET", &[], None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("name=\"token\""));
    // Probes need nothing.
    assert_eq!(call(&s.url("/health"), "GET", &[], None).await.0, 200);
    // The live feed authenticates at the upgrade.
    let ws = s.url("/ws");
    assert_eq!(ws_status(&ws, &[]).await, 401);
    assert_eq!(
        ws_status(&ws, &[("Authorization", "Bearer nope")]).await,
        401
    );
    assert_eq!(ws_status(&ws, &[("Authorization", &viewer)]).await, 101);
    assert_eq!(ws_status(&ws, &[("Authorization", &admin)]).await, 101);
    assert_eq!(ws_status(&ws, &[("Cookie", &viewer_cookie)]).await, 101);
    s.stop().await;
}

#[actix_rt::test]
async fn admin_endpoints_take_only_the_admin_bearer() {
    let s = guarded().await;
    let viewer_cookie = login(&s, VIEWER, &[]).await;
    let admin_cookie = login(&s, ADMIN, &[]).await;
    let url = s.url("/api/admin/backup");
    let cases: &[(&str, Headers, u16)] = &[
        ("nothing", &[], 401),
        ("a wrong token", &[("Authorization", "Bearer nope")], 401),
        (
            "the viewer token",
            &[("Authorization", "Bearer l00k-only")],
            403,
        ),
        ("a viewer session", &[("Cookie", &viewer_cookie)], 401),
        ("an admin session", &[("Cookie", &admin_cookie)], 401),
        (
            "the admin token",
            &[("Authorization", "Bearer adm1n-s3cret")],
            200,
        ),
    ];
    for (what, headers, want) in cases {
        let (status, _, body) = call(&url, "POST", headers, None).await;
        assert_eq!(status, *want, "{what}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains(ADMIN));
        assert!(!String::from_utf8_lossy(&body).contains(VIEWER));
    }
    s.stop().await;
}

#[actix_rt::test]
async fn a_session_ends_at_logout() {
    let s = guarded().await;
    let cookie = login(&s, VIEWER, &[]).await;
    let (status, _, body) = call(&s.url("/api/session"), "GET", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&me["login_required"], &me["role"], &me["session"]),
        (
            &Value::from(true),
            &Value::from("viewer"),
            &Value::from(true)
        )
    );
    let (status, headers, _) = call(&s.url("/logout"), "POST", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 303);
    assert_eq!(headers.get("location").unwrap(), "/login");
    let cleared = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _, _) = call(&s.url("/api/sensors"), "GET", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 401, "the session is gone");
    // Bad forms are refused without a session.
    for form in ["", "tok=x", "token=%ZZ"] {
        let (status, headers, _) = call(&s.url("/login"), "POST", &[], Some(form)).await;
        assert!(status == 400 || status == 401, "{form}: {status}");
        assert!(headers.get("set-cookie").is_none());
    }
    s.stop().await;
}

#[actix_rt::test]
async fn failed_logins_are_throttled_per_client_through_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.server.viewer_token = VIEWER.into();
    cfg.guard.http.trusted_proxies = vec!["127.0.0.1".into()];
    let s = TestServer::start_with(dir, cfg).await;
    let mallory = [("X-Forwarded-For", "192.168.1.66")];
    let alice = [("X-Forwarded-For", "192.168.1.20")];
    for i in 0..5 {
        let (status, _, _) = call(&s.url("/login"), "POST", &mallory, Some("token=guess")).await;
        assert_eq!(status, 401, "failure {i}");
    }
    let (status, headers, page) =
        call(&s.url("/login"), "POST", &mallory, Some("token=guess")).await;
    assert_eq!(status, 429);
    let wait: u64 = headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(String::from_utf8_lossy(&page).contains("Too many failed logins"));
    // Blocked before the token is compared: the right one does not help.
    let (status, headers, _) = call(
        &s.url("/login"),
        "POST",
        &mallory,
        Some(&format!("token={VIEWER}")),
    )
    .await;
    assert_eq!(status, 429);
    assert!(headers.get("set-cookie").is_none());
    // Another client behind the same proxy is not.
    login(&s, VIEWER, &alice).await;
    s.stop().await;
}

#[actix_rt::test]
async fn reads_are_open_without_a_viewer_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.server.admin_token = ADMIN.into();
    let s = TestServer::start_with(dir, cfg).await;
    for path in READS {
        assert_eq!(call(&s.url(path), "GET", &[], None).await.0, 200, "{path}");
    }
    assert_eq!(ws_status(&s.url("/ws"), &[]).await, 101);
    let me = s.get_ok("/api/session").await;
    assert_eq!(me["login_required"], false);
    assert_eq!(me["open_to_network"], false, "bound to loopback: {me}");
    assert_eq!(me["role"], Value::Null);
    assert_eq!(
        call(&s.url("/api/admin/backup"), "POST", &[], None).await.0,
        401
    );
    s.stop().await;
}

async fn without_tokens(trusted: &[&str], listener: TcpListener) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.guard.http.trusted_proxies = trusted.iter().map(|t| (*t).to_owned()).collect();
    TestServer::start_on(dir, cfg, listener).await
}

#[actix_rt::test]
async fn a_request_through_a_trusted_proxy_is_never_loopback() {
    let s = without_tokens(&["127.0.0.1"], TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let url = s.url("/api/admin/backup");
    for forwarded in ["192.168.1.9", "127.0.0.1", "::1", "10.0.0.1, 127.0.0.1"] {
        let (status, _, body) = call(&url, "POST", &[("X-Forwarded-For", forwarded)], None).await;
        assert_eq!(
            status,
            403,
            "forwarded for {forwarded}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, _, _) = call(
        &s.url("/api/admin/restart/simulated"),
        "POST",
        &[("X-Forwarded-For", "192.168.1.9")],
        None,
    )
    .await;
    assert_eq!(status, 403);
    // The proxy's host itself, talking directly, is loopback.
    assert_eq!(call(&url, "POST", &[], None).await.0, 200);
    s.stop().await;

    // From a peer that is not a trusted proxy the header changes nothing.
    let s = without_tokens(&[], TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let (status, _, _) = call(
        &s.url("/api/admin/backup"),
        "POST",
        &[("X-Forwarded-For", "192.168.1.9")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn loopback_is_recognised_on_ipv6_and_dual_stack_sockets() {
    // IPv6 only.
    match TcpListener::bind("[::1]:0") {
        Ok(listener) => {
            let port = listener.local_addr().unwrap().port();
            let s = without_tokens(&[], listener).await;
            let url = format!("http://[::1]:{port}/api/admin/backup");
            assert_eq!(call(&url, "POST", &[], None).await.0, 200, "[::1]");
            s.stop().await;
        }
        Err(e) => eprintln!("no IPv6 loopback here ({e}): skipping [::1]"),
    }
    // Dual stack: IPv4 clients arrive as ::ffff:127.0.0.1.
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        eprintln!("no IPv6 here: skipping the dual-stack case");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let s = without_tokens(&["127.0.0.1"], listener).await;
    let v4 = format!("http://127.0.0.1:{port}");
    assert_eq!(
        call(&format!("{v4}/api/admin/backup"), "POST", &[], None)
            .await
            .0,
        200,
        "an IPv4 loopback client on a dual-stack socket"
    );
    // The mapped peer is recognised as the trusted proxy, and what it
    // forwards is not loopback.
    let (status, _, _) = call(
        &format!("{v4}/api/admin/backup"),
        "POST",
        &[("X-Forwarded-For", "192.168.1.9")],
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Bound to every address: the banner's flag is up.
    let (_, _, body) = call(&format!("{v4}/api/session"), "GET", &[], None).await;
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(me["open_to_network"], true, "{me}");
    assert_eq!(me["login_required"], false, "{me}");
    s.stop().await;
}
