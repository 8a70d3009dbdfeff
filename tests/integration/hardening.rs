//! Databases vigil must refuse (a newer schema, a tampered one: refused at
//! start and by `migrate`, the file left byte for byte as it was), the
//! shared-memory index that cannot be made unwritable under vigil, and
//! error messages that name what they are about, once, and request bodies
//! too large, cut short or too slow answered with JSON errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::vigil;
use crate::util::{TestServer, config, open_db};

/// A database fully migrated by this vigil, closed, with `sql` applied by
/// another hand afterwards.
fn database_changed_by(dir: &Path, sql: &str) -> PathBuf {
    let db = dir.join("old.db");
    let cfg = vigil::StorageConfig {
        path: db.clone(),
        ..Default::default()
    };
    vigil::prepare(&cfg).expect("a fresh database");
    open_db(&db).execute(sql);
    db
}

fn bytes(db: &Path) -> Vec<u8> {
    std::fs::read(db).expect("the database file")
}

/// Runs the appliance on `db`, expecting it to refuse; the error's text.
async fn refused_at_start(db: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.sensors.clear();
    cfg.storage.path = db.to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    match vigil::run(cfg, listener, std::future::pending()).await {
        Ok(_) => panic!("the appliance ran on {}", db.display()),
        Err(e) => e.to_string(),
    }
}

const FUTURE: &str = "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000000');";
const TAMPERED: &str = "ALTER TABLE readings ADD COLUMN quality INTEGER NOT NULL DEFAULT 0;";

#[actix_rt::test]
async fn a_database_from_a_newer_schema_is_refused_at_start_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_changed_by(dir.path(), FUTURE);
    let before = bytes(&db);
    let e = refused_at_start(&db).await;
    assert!(e.contains("20991231000000"), "{e}");
    assert!(e.contains("old.db"), "{e}");
    assert!(e.contains("newer vigil"), "{e}");
    assert!(bytes(&db) == before, "the file was changed");
}

#[actix_rt::test]
async fn a_database_with_tampered_tables_is_refused_at_start_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_changed_by(dir.path(), TAMPERED);
    let before = bytes(&db);
    let e = refused_at_start(&db).await;
    assert!(
        e.contains("table readings has an unknown column quality"),
        "{e}"
    );
    assert!(e.contains("old.db"), "{e}");
    assert!(bytes(&db) == before, "the file was changed");
}

#[test]
fn migrate_refuses_a_newer_or_tampered_schema() {
    for (sql, says) in [(FUTURE, "20991231000000"), (TAMPERED, "quality")] {
        let dir = tempfile::tempdir().unwrap();
        let db = database_changed_by(dir.path(), sql);
        let before = bytes(&db);
        let out = vigil()
            .arg("migrate")
            .env("VIGIL_DB", &db)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says) && err.contains("old.db"), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("up to date"));
        assert!(bytes(&db) == before, "the file was changed");
    }
}

#[test]
fn errors_name_their_subject_once() {
    let dir = tempfile::tempdir().unwrap();
    // A missing config file: the path, and the OS's reason once.
    let out = vigil()
        .arg("check-config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    // A file that is not a database: its path.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let out = vigil()
        .arg("migrate")
        .env("VIGIL_DB", &junk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("junk.db") && err.contains("not a database"),
        "{err}"
    );
    assert_eq!(err.matches("not a database").count(), 1, "{err}");

    // Two sensors of one name: the file and the key.
    let dup = dir.path().join("dup.toml");
    std::fs::write(
        &dup,
        "[[sensors]]\nname = \"a\"\nkind = \"system\"\n[[sensors]]\nname = \"a\"\nkind = \"system\"\n",
    )
    .unwrap();
    let out = vigil().arg("check-config").arg(&dup).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dup.toml: sensors[a].name"), "{err}");
}

#[actix_rt::test]
async fn an_unknown_parameter_on_an_endpoint_without_parameters_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.sensors.clear();
    let s = TestServer::start_with(dir, cfg).await;
    let (status, body) = s.post("/api/admin/backup?x=1", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("unknown parameter `x`; this endpoint takes no parameters"),
        "{body}"
    );
    s.stop().await;
}

/// The shared-memory fault of the issue: `chattr +i` on `<db>-shm` under a
/// running appliance. There is no such file for SQLite to map (the index is
/// in vigil's memory), so one made by hand and frozen changes nothing; then
/// the database itself refuses writes, which is an ordinary fault: readings
/// wait, and every accepted reading is stored after recovery.
#[actix_rt::test]
async fn an_immutable_shared_memory_file_kills_nothing_and_loses_nothing() {
    use crate::dbfaults::{Immutable, committed, disk_dir, is_root, quick_breaker};
    if !is_root() {
        eprintln!("skipped: making files immutable needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = disk_dir();
    let mut cfg = config(&dir, crate::dbfaults::FAST);
    cfg.storage.path = data.path().join("vigil.db");
    cfg.storage.flush_interval_ms = 50;
    cfg.guard.database = quick_breaker();
    let db = cfg.storage.path.clone();
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("commits", Duration::from_secs(10), async |s| {
        committed(s).await > 0
    })
    .await;
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    assert!(!shm.exists(), "SQLite made {}", shm.display());

    // A -shm that someone made and froze, as in the issue.
    std::fs::write(&shm, vec![0u8; 32768]).unwrap();
    let mut frozen = Immutable::set(vec![shm.clone()]);
    let first = committed(&s).await;
    s.wait_for("commits to go on", Duration::from_secs(10), async |s| {
        committed(s).await > first + 200
    })
    .await;

    // The database and its WAL refuse writes, then accept them again.
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut ro = Immutable::set(vec![db.clone(), wal]);
    s.wait_for(
        "the database breaker to open",
        Duration::from_secs(30),
        async |s| s.get("/health").await.0 == 503,
    )
    .await;
    ro.clear();
    s.wait_for("the queue to drain", Duration::from_secs(60), async |s| {
        let (status, h) = s.get("/health").await;
        status == 200 && h["writer"]["queue"]["len"].as_u64() < Some(200)
    })
    .await;
    frozen.clear();
    let (report, _dir, db) = s.stop().await;
    let produced: u64 = report.produced.iter().map(|(_, n)| n).sum();
    let mut conn = open_db(&db);
    assert_eq!(conn.integrity_check(), "ok");
    let stored = conn.raw_count();
    assert_eq!(report.queue.dropped, 0);
    assert_eq!(stored as u64, produced, "every produced reading is stored");
}

/// A raw HTTP/1.1 connection from a chosen loopback address, so that the
/// test's own clients (on 127.0.0.1) never count against its limits.
struct Raw(std::net::TcpStream);

impl Raw {
    fn connect(from: [u8; 4], to: std::net::SocketAddr) -> Raw {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from((from, 0)).into())
            .unwrap();
        s.connect(&to.into()).unwrap();
        let s: std::net::TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    /// Reads one response; its status, or None if the connection ended
    /// before a status line.
    fn read_status(&mut self) -> Option<u16> {
        self.read_response().map(|(status, _)| status)
    }

    /// Reads one response: its status and body.
    fn read_response(&mut self) -> Option<(u16, String)> {
        crate::util::read_http_response(&mut self.0)
    }

    /// Sends a keep-alive GET and reads its status.
    fn get(&mut self, path: &str) -> Option<u16> {
        self.get_body(path).map(|(status, _)| status)
    }

    fn get_body(&mut self, path: &str) -> Option<(u16, String)> {
        use std::io::Write;
        self.0
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: vigil\r\n\r\n").as_bytes())
            .ok()?;
        self.read_response()
    }
}

#[actix_rt::test]
async fn connections_beyond_the_limits_are_refused_and_established_ones_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.sensors.clear();
    cfg.server.connections.max_connections = 8;
    cfg.server.connections.max_per_client = 4;
    cfg.server.connections.keep_alive_ms = 60_000;
    let s = TestServer::start_with(dir, cfg).await;
    let addr = s.addr;
    let (per_client, total, live) = actix_web::rt::task::spawn_blocking(move || {
        // One client takes its whole share; each connection works.
        let mut first: Vec<Raw> = (0..4).map(|_| Raw::connect([127, 0, 0, 2], addr)).collect();
        for c in &mut first {
            assert_eq!(c.get("/api/live"), Some(200));
        }
        // Its fifth is refused with a 503, before it sends anything.
        let mut fifth = Raw::connect([127, 0, 0, 2], addr);
        let per_client = fifth.read_status();
        // Other clients fill the rest; beyond the total they are refused.
        let mut others = Vec::new();
        let mut total = None;
        for _ in 0..8 {
            let mut c = Raw::connect([127, 0, 0, 3], addr);
            match c.get("/api/live") {
                Some(200) => others.push(c),
                status => {
                    total = Some((status, others.len()));
                    break;
                }
            }
        }
        // The established connections were not disturbed.
        for c in first.iter_mut().chain(others.iter_mut()) {
            assert_eq!(c.get("/api/live"), Some(200), "an established connection");
        }
        // A place given back is taken again.
        drop(first.pop());
        let mut again = None;
        for _ in 0..100 {
            let mut c = Raw::connect([127, 0, 0, 2], addr);
            if c.get("/api/live") == Some(200) {
                again = Some(c);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(again.is_some(), "a freed place is admitted again");
        drop((first, others, again));
        let mut live = None;
        for _ in 0..100 {
            if let Some((200, body)) = Raw::connect([127, 0, 0, 4], addr).get_body("/api/live") {
                live = Some(body);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            per_client,
            total,
            live.expect("the stats once the connections closed"),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        per_client,
        Some(503),
        "the connection over the client's share"
    );
    let (status, admitted) = total.expect("a connection over the total is refused");
    assert_eq!(status, Some(503));
    assert!(admitted + 4 <= 8, "{admitted} admitted beside the first 4");
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert!(
        live["connections_refused_per_client"].as_u64() >= Some(1),
        "{live}"
    );
    assert!(
        live["connections_refused_total"].as_u64() >= Some(1),
        "{live}"
    );
    s.stop().await;
}

/// A smoke run of `vigil-bench flood` at a tiny size: it floods, the limit
/// refuses the excess, the server closes the rest, and figures come out.
#[cfg(feature = "bench")]
#[test]
fn the_flood_benchmark_runs_at_a_tiny_size() {
    let o = vigil::bench::flood::FloodOptions {
        connections: 60,
        rounds: 1,
        settle_secs: 0,
        warmup_secs: 0,
        max_connections: Some(40),
        max_per_client: Some(20),
        memory_check_ms: None,
    };
    let f = vigil::bench::flood::run(Path::new(env!("CARGO_BIN_EXE_vigil")), &o).unwrap();
    let r = &f.rounds[0];
    assert_eq!(r.opened, 60, "{f:?}");
    assert!(r.refused >= 40 && r.held >= 1, "{f:?}");
    assert_eq!(r.refused + r.held, 60, "{f:?}");
    assert!(r.peak_mib >= r.before_mib && f.start_mib > 0.0, "{f:?}");
    assert!(r.peak_fds > f.start_fds, "{f:?}");
}

/// Request bodies too large, cut short or too slow are answered like every
/// other API error: JSON with its code, 413, 400 and 408; the login form
/// gets its page with the same statuses.
#[actix_rt::test]
async fn bodies_too_large_cut_short_or_too_slow_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, "");
    cfg.server.connections.body_timeout_ms = 300;
    let s = TestServer::start_with(dir, cfg).await;
    let addr = s.addr;
    let answers = actix_web::rt::task::spawn_blocking(move || {
        use std::io::Write;
        let send_then = |head_and_body: &[u8], end: bool| {
            let mut c = Raw::connect([127, 0, 0, 1], addr);
            c.0.write_all(head_and_body).unwrap();
            if end {
                c.0.shutdown(std::net::Shutdown::Write).unwrap();
            }
            c.read_response()
        };
        let send = |head_and_body: &[u8]| send_then(head_and_body, false);
        let edit = "POST /api/admin/config/sensors?dry_run=true HTTP/1.1\r\nHost: vigil\r\n\
                    Content-Type: application/json\r\n";
        vec![
            // Declared larger than a config entry may be.
            send(format!("{edit}Content-Length: 300000\r\n\r\n{{").as_bytes()),
            // Chunked, larger than that once it has arrived.
            send(
                format!(
                    "{edit}Transfer-Encoding: chunked\r\n\r\n40000\r\n{}\r\n40000\r\n{}\r\n0\r\n\r\n",
                    "x".repeat(0x40000),
                    "x".repeat(0x40000)
                )
                .as_bytes(),
            ),
            // Chunked, and cut short: the client closes its side.
            send_then(
                format!("{edit}Transfer-Encoding: chunked\r\n\r\n20\r\n{{\"name\"").as_bytes(),
                true,
            ),
            // Eight bytes of the hundred announced, then nothing.
            send(format!("{edit}Content-Length: 100\r\n\r\n{{\"name\":").as_bytes()),
            send(
                b"POST /login HTTP/1.1\r\nHost: vigil\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                  Content-Length: 100000\r\n\r\ntoken=",
            ),
        ]
    })
    .await
    .unwrap();
    let json_error = |i: usize, status: u16, code: &str| {
        let (got, body) = answers[i]
            .clone()
            .unwrap_or_else(|| panic!("answer {i}: none"));
        assert_eq!(got, status, "answer {i}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("answer {i}: {e}: {body}"));
        assert_eq!(v["error"]["code"], code, "answer {i}: {v}");
        v
    };
    json_error(0, 413, "payload_too_large");
    json_error(1, 413, "payload_too_large");
    let cut = json_error(2, 400, "bad_parameter");
    assert_eq!(cut["error"]["parameter"], "body", "{cut}");
    json_error(3, 408, "request_timeout");
    let (status, page) = answers[4].clone().unwrap();
    assert_eq!(status, 413);
    assert!(page.contains("The form is too large."), "{page}");
    // A gzipped body is read decompressed, as the extractor did.
    let entry = br#"{"name":"tank","kind":"simulated","interval_ms":1000}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, entry).unwrap();
    let mut res = s
        .client()
        .post(s.url("/api/admin/config/sensors?dry_run=true"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Content-Encoding", "gzip"))
        .send_body(gz.finish().unwrap())
        .await
        .unwrap();
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{report}");
    assert_eq!(
        report["sensors_added"],
        serde_json::json!(["tank"]),
        "{report}"
    );
    // The appliance answers on.
    s.get_ok("/health").await;
    s.stop().await;
}
