//! HTTPS and WSS: the appliance serves its operator's certificate (here one
//! signed by a CA generated in the test), sets the session cookie `Secure`,
//! still counts and limits connections, refuses plain HTTP on that port,
//! stops at start-up on a certificate or key it cannot use, and its command
//! line reaches it over HTTPS.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::util::config;

/// The appliance serving HTTPS with a certificate for 127.0.0.1 signed by
/// a generated CA, and a client trusting that CA.
struct TlsServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    cert: String,
    client: awc::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<vigil::RunReport, vigil::RunError>>,
}

/// A client config trusting only the CA of `ca_pem`.
fn trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl TlsServer {
    async fn start(extra: &str, edit: impl FnOnce(&mut vigil::Config)) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = super::mqtt::test_certificates(dir.path());
        let mut cfg = config(&dir, extra);
        cfg.server.tls_cert = Some(cert.clone().into());
        cfg.server.tls_key = Some(key.into());
        edit(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = actix_rt::spawn(vigil::run(cfg, listener, async move {
            let _ = rx.await;
        }));
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .connector(
                awc::Connector::new()
                    .rustls_0_23(trusting(&ca))
                    .conn_keep_alive(Duration::from_secs(600)),
            )
            .finish();
        let s = TlsServer {
            addr,
            dir,
            cert,
            client,
            stop: Some(tx),
            task,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while s.get("/health").await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the HTTPS server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut res = self.client.get(self.url(path)).send().await.ok()?;
        let body = res.body().limit(1 << 24).await.ok()?;
        Some((res.status().as_u16(), serde_json::from_slice(&body).ok()?))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[actix_rt::test]
async fn https_and_wss_serve_the_api_and_the_live_feed() {
    let s = TlsServer::start(
        r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 50
"#,
        |_| {},
    )
    .await;
    let (status, health) = s.get("/health").await.unwrap();
    assert_eq!(status, 200, "{health}");
    let (status, sensors) = s.get("/api/sensors").await.unwrap();
    assert_eq!(status, 200, "{sensors}");

    // The live feed over WSS: the greeting, then readings.
    let (_res, mut ws) = s
        .client
        .ws(format!("wss://{}/ws", s.addr))
        .connect()
        .await
        .expect("wss connect");
    use futures_util::SinkExt;
    ws.send(awc::ws::Message::Text(
        r#"{"type":"subscribe","sensors":["sim"]}"#.into(),
    ))
    .await
    .unwrap();
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !types.iter().any(|t| t == "readings") {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a reading over WSS in time")
            .expect("the feed stays open")
            .expect("a valid frame");
        if let awc::ws::Frame::Text(text) = frame {
            let v: Value = serde_json::from_slice(&text).unwrap();
            types.push(v["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(types[0], "hello", "{types:?}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish()
        .get(format!("http://{}/health", s.addr))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP answered: {:?}",
        plain.map(|r| r.status())
    );

    // A client that does not trust the CA is refused at the handshake.
    let untrusting = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .connector(awc::Connector::new().rustls_0_23(trusting(&s.cert_of_another_ca())))
        .finish();
    assert!(untrusting.get(s.url("/health")).send().await.is_err());
    s.stop().await;
}

impl TlsServer {
    /// The CA file that signed the server's certificate.
    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The CA file of another, unrelated CA.
    fn cert_of_another_ca(&self) -> String {
        let other = self.dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        super::mqtt::test_certificates(&other).0
    }
}

#[actix_rt::test]
async fn the_session_cookie_is_secure_over_https() {
    let s = TlsServer::start("", |c| {
        c.server.viewer_token = "viewer-secret".into();
    })
    .await;
    let (status, _) = s.get("/api/sensors").await.unwrap();
    assert_eq!(status, 401);
    let res = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .disable_redirects()
        .connector(awc::Connector::new().rustls_0_23(trusting(&s.ca())))
        .finish()
        .post(s.url("/login"))
        .send_form(&[("token", "viewer-secret")])
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let res = s
        .client
        .get(s.url("/api/sensors"))
        .insert_header(("cookie", session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    s.stop().await;
}

/// One TLS connection held open by a blocking client: its handshake, then
/// requests on it.
struct TlsConn(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl TlsConn {
    fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> TlsConn {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(tls, name).unwrap();
        TlsConn(rustls::StreamOwned::new(conn, tcp))
    }

    /// GETs `/health` on the connection: the status, or `None` when the
    /// connection fails or ends first.
    fn health(&mut self) -> Option<u16> {
        use std::io::Write;
        let req = "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
        self.0
            .write_all(req.as_bytes())
            .and_then(|()| self.0.flush())
            .ok()?;
        crate::util::read_http_response(&mut self.0).map(|(status, _)| status)
    }
}

#[actix_rt::test]
async fn connection_limits_apply_to_https_connections() {
    let s = TlsServer::start("", |c| {
        c.sensors.clear();
        c.server.connections.max_per_client = 3;
        c.server.connections.keep_alive_ms = 60_000;
    })
    .await;
    let addr = s.addr;
    let tls = trusting(&s.ca());
    // The test's own client keeps one connection open in its pool (its
    // requests are one at a time): with it, two more fill the three places.
    assert_eq!(s.get("/health").await.unwrap().0, 200);
    let (refused, again) = actix_web::rt::task::spawn_blocking(move || {
        let mut held: Vec<TlsConn> = (0..2).map(|_| TlsConn::open(addr, tls.clone())).collect();
        for (i, c) in held.iter_mut().enumerate() {
            assert_eq!(c.health(), Some(200), "connection {i} within the limit");
        }
        // The fourth from the same address is closed after its handshake.
        let refused = TlsConn::open(addr, tls.clone()).health();
        for c in &mut held {
            assert_eq!(c.health(), Some(200), "an established connection");
        }
        // A place given back is taken again.
        drop(held.pop());
        let mut again = None;
        for _ in 0..100 {
            if let Some(status) = TlsConn::open(addr, tls.clone()).health() {
                again = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (refused, again)
    })
    .await
    .unwrap();
    assert_eq!(refused, None, "a connection beyond the limit was served");
    assert_eq!(again, Some(200));
    let (_, live) = s.get("/api/live").await.unwrap();
    assert!(
        live["connections_refused_per_client"].as_u64() >= Some(1),
        "the refusal is counted: {live}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn a_certificate_or_key_that_cannot_serve_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, _key) = super::mqtt::test_certificates(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, _, other_key) = super::mqtt::test_certificates(&other);
    let missing = dir.path().join("missing.pem").display().to_string();
    for (cert, key, named) in [
        (cert.as_str(), other_key.as_str(), "server.tls_key"),
        (missing.as_str(), other_key.as_str(), "server.tls_cert"),
        (cert.as_str(), missing.as_str(), "server.tls_key"),
    ] {
        let mut cfg = config(&dir, "");
        cfg.server.tls_cert = Some(cert.into());
        cfg.server.tls_key = Some(key.into());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = vigil::run(cfg, listener, std::future::pending())
            .await
            .expect_err("a start with an unusable certificate");
        let text = err.to_string();
        assert!(text.contains(named), "{cert} / {key}: {text}");
    }
    // `vigil check-config` reads and matches them the same way.
    let file = dir.path().join("vigil.toml");
    std::fs::write(
        &file,
        format!("[server]\ntls_cert = \"{cert}\"\ntls_key = \"{other_key}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls_key"), "{stderr}");
}

#[actix_rt::test]
async fn the_command_line_reaches_its_https_server() {
    let s = TlsServer::start("", |c| c.sensors.clear()).await;
    let file = s.dir.path().join("vigil.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbind = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [storage]\npath = \"{}\"\n",
            s.addr,
            s.cert,
            s.dir.path().join("server.key").display(),
            s.dir.path().join("vigil.db").display()
        ),
    )
    .unwrap();
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["optimize", "--config", file.to_str().unwrap()])
            .env("VIGIL_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("a running server holds the database"),
        "{stdout}"
    );
    s.stop().await;
}
