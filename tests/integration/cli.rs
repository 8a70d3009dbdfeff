//! The `vigil` binary as an operator uses it: `check-config` verdicts and
//! exit codes, `migrate`, `serve` stopped by SIGTERM with every produced
//! reading stored, and what `serve` logs about access.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::open_db;

/// The `vigil` binary with none of its environment overrides set.
pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    for var in [
        "VIGIL_DB",
        "VIGIL_BIND",
        "VIGIL_LOG",
        "VIGIL_ADMIN_TOKEN",
        "VIGIL_VIEWER_TOKEN",
        "VIGIL_CONFIG",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[storage]\nbatch_size = 10\n").unwrap();
    let out = vigil().arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = dir.path().join("bad.toml");
    for (text, key) in [
        ("[storage]\nbatch_sise = 10\n", "batch_sise"),
        ("[storage]\nbatch_size = 0\n", "storage.batch_size"),
        ("[server]\nbind = \"127.0.0.1:99999\"\n", "server.bind"),
        (
            "[supervisor]\nmax_restarts = \"five\"\n",
            "supervisor.max_restarts",
        ),
        (
            "[storage]\npath = \"/nonexistent-vigil-dir/v.db\"\n",
            "storage.path: directory /nonexistent-vigil-dir does not exist",
        ),
        (
            "[server]\nsession_ttl_secs = 18446744073709551615\n",
            "server.session_ttl_secs",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = vigil().arg("check-config").arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
    }

    let out = vigil()
        .arg("check-config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));

    // The environment is checked too.
    let out = vigil()
        .arg("check-config")
        .env("VIGIL_BIND", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VIGIL_BIND"));
}

#[test]
fn migrate_creates_the_schema_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let run = || {
        vigil()
            .arg("migrate")
            .env("VIGIL_DB", &db)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied"));
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
    assert_eq!(open_db(&db).raw_count(), 0);
}

/// A plain HTTP/1.0 GET on loopback; the body, if the server answered.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// `vigil serve` on a free port; returns the child and the port it chose.
fn spawn_serve(
    dir: &std::path::Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    u16,
) {
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        r#"
[server]
bind = "127.0.0.1:0"
[storage]
flush_interval_ms = 600000
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 10
[[sensors]]
name = "system"
kind = "system"
interval_ms = 300
# A driver wedged for ten minutes must not hold up shutdown.
[[sensors]]
name = "wedged"
kind = "simulated"
timeout_ms = 100
priority = "optional"
[sensors.options]
hang_every = 1
hang_ms = 600000
"#,
    )
    .unwrap();
    let mut child = vigil()
        .args(["serve", "--config"])
        .arg(&config)
        .env("VIGIL_DB", dir.join("serve.db"))
        .env("VIGIL_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    let port = loop {
        assert!(
            Instant::now() < deadline,
            "vigil never said where it listens"
        );
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("vigil exited early");
        }
        if let Some(rest) = line.split("serving http://127.0.0.1:").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (child, err, port)
}

#[test]
fn sigterm_exits_zero_with_every_produced_reading_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut err, port) = spawn_serve(dir.path());
    // Let readings accumulate (all of them still queued: the flush interval
    // is ten minutes).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = http_get(port, "/api/sensors") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let reads = v["sensors"][0]["reads"].as_u64().unwrap_or(0);
            if reads > 100 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no readings");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let summary = rest
        .lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("no summary in {rest}"));
    // "stopped: A readings accepted, S stored this run, D dropped, U left unstored"
    let numbers: Vec<i64> = summary
        .split("stopped: ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    let [accepted, stored, dropped, unstored] = numbers[..] else {
        panic!("unexpected summary {summary}");
    };
    assert!(accepted > 100, "{summary}");
    assert_eq!((stored, dropped, unstored), (accepted, 0, 0), "{summary}");
    let mut db = open_db(&dir.path().join("serve.db"));
    assert_eq!(db.raw_count(), stored);
    assert_eq!(db.integrity_check(), "ok");
}

#[test]
fn the_appliance_has_no_benchmarks_and_the_bench_tool_has_them_all() {
    let help = vigil().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["serve", "migrate", "check-config", "optimize", "backup"] {
        assert!(text.contains(command), "{text}");
    }
    assert!(!text.contains("bench"), "{text}");
    let bench = vigil().arg("bench").output().unwrap();
    assert!(!bench.status.success(), "`vigil bench` is not a command");

    #[cfg(feature = "bench")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_vigil-bench"))
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for what in [
            "query",
            "startup",
            "footprint",
            "restart",
            "ingest",
            "fanout",
            "series",
            "retention",
            "schema",
        ] {
            assert!(text.contains(what), "{what} missing from:\n{text}");
        }
        // A missing appliance binary is named, not a panic.
        let out = Command::new(env!("CARGO_BIN_EXE_vigil-bench"))
            .args(["--vigil", "/nonexistent/vigil", "startup", "--runs", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/nonexistent/vigil"), "{err}");
    }
}

/// Sends raw HTTP/1.0 to loopback; the whole answer, if there was one.
fn http_raw(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = request.replacen("\r\n", "\r\nHost: localhost\r\n", 1);
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `vigil serve` bound to every address with these environment
/// overrides; the child, its log so far (up to "serving") and the port.
fn serve_everywhere(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
    u16,
) {
    let mut cmd = vigil();
    cmd.arg("serve")
        .env("VIGIL_DB", dir.join("serve.db"))
        .env("VIGIL_BIND", "0.0.0.0:0")
        .env("VIGIL_LOG", "info")
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let port = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("vigil exited early: {log}");
        }
        log.push_str(&line);
        if let Some(rest) = line.split("serving http://0.0.0.0:").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    (child, err, log, port)
}

fn stop(mut child: std::process::Child, mut err: BufReader<std::process::ChildStderr>) -> String {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{rest}");
    rest
}

#[test]
fn serving_the_network_without_a_viewer_token_warns_and_tokens_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (child, err, log, port) = serve_everywhere(dir.path(), &[]);
    assert!(
        log.contains("WARN") && log.contains("no server.viewer_token"),
        "{log}"
    );
    let page = http_raw(port, "GET /api/session HTTP/1.0\r\n\r\n").unwrap();
    assert!(page.contains("\"open_to_network\":true"), "{page}");
    stop(child, err);

    let dir = tempfile::tempdir().unwrap();
    let (child, err, log, port) = serve_everywhere(
        dir.path(),
        &[
            ("VIGIL_VIEWER_TOKEN", "viewer-tok-4242"),
            ("VIGIL_ADMIN_TOKEN", "admin-tok-4242"),
        ],
    );
    assert!(!log.contains("no server.viewer_token"), "{log}");
    let form = "token=guessed-tok-4242";
    let wrong = http_raw(
        port,
        &format!(
            "POST /login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .unwrap();
    assert!(wrong.starts_with("HTTP/1.0 401"), "{wrong}");
    let read = http_raw(
        port,
        "GET /api/sensors HTTP/1.0\r\nAuthorization: Bearer viewer-tok-4242\r\n\r\n",
    )
    .unwrap();
    assert!(read.starts_with("HTTP/1.0 200"), "{read}");
    let admin = http_raw(
        port,
        "POST /api/admin/backup HTTP/1.0\r\nContent-Length: 0\r\nAuthorization: Bearer wrong-tok-4242\r\n\r\n",
    )
    .unwrap();
    assert!(admin.starts_with("HTTP/1.0 401"), "{admin}");
    let all = log + &stop(child, err);
    assert!(all.contains("failed login from 127.0.0.1"), "{all}");
    assert!(!all.contains("tok-4242"), "a token in the log: {all}");
}
