//! Test helpers: a running appliance with its own temporary directory, an
//! HTTP client, and waiting for conditions with a deadline instead of sleeping.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil::{Config, RunReport};

/// Settings that make a test appliance quick: fast flushes and restarts,
/// quiet logs, one HTTP worker, pacing that no host's heat or load can
/// move (no thermal source, no load monitor), no HTTP rate limit and no memory
/// guard. Tests append their
/// `[[sensors]]`; pacing tests change `pacing` in the parsed config.
pub const BASE: &str = r#"
[server]
bind = "127.0.0.1:0"
workers = 1
slow_request_ms = 10000

[log]
filter = "warn"

[storage]
flush_interval_ms = 100
batch_size = 100

[supervisor]
backoff_base_ms = 100
backoff_max_ms = 800
max_restarts = 100
restart_window_secs = 60
shutdown_timeout_ms = 5000

[pacing]
use_load = false
use_hwmon = false
vcgencmd = ""
thermal_root = "/nonexistent/vigil-test-thermal"

# Tests poll every 20 ms and restart things at will: rate limits are tested
# where they are the point (guards.rs).
[guard.http]
enabled = false

[guard.admin]
ops_per_minute = 60000
burst = 1000

# The memory guard measures the whole process, and a test process holds
# several appliances (under emulation, the emulator's code as well): one
# test's footprint must not shed another's live feed. guards.rs turns it on.
[guard.memory]
soft_limit_mib = 0
"#;

/// A config from [`BASE`] plus `extra`, with its database in `dir`.
pub fn config(dir: &tempfile::TempDir, extra: &str) -> Config {
    let mut c = Config::from_toml(&format!("{BASE}\n{extra}"), "test config")
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    c.storage.path = dir.path().join("vigil.db");
    c
}

/// Writes (atomically, so a reader never sees half a value) a `cpu-thermal`
/// zone under `root` reading `celsius`: a temperature a test sets for the
/// thermal watchdog or a `cpu_temp` sensor.
pub fn set_temp(root: &std::path::Path, celsius: f64) {
    let dir = root.join("thermal_zone0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("type"), "cpu-thermal\n").unwrap();
    let tmp = dir.join("temp.new");
    std::fs::write(&tmp, format!("{}\n", (celsius * 1000.0).round() as i64)).unwrap();
    std::fs::rename(&tmp, dir.join("temp")).unwrap();
}

/// The appliance, running inside the test's actix system.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<RunReport, vigil::RunError>>,
    client: awc::Client,
}

impl TestServer {
    /// Starts an appliance with [`BASE`] plus `sensors_toml`.
    pub async fn start(sensors_toml: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = config(&dir, sensors_toml);
        TestServer::start_with(dir, cfg).await
    }

    pub async fn start_with(dir: tempfile::TempDir, cfg: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        TestServer::start_on(dir, cfg, listener).await
    }

    /// Starts an appliance on a listener the test bound (for example on
    /// every interface, to be reached through a non-loopback address).
    pub async fn start_on(
        dir: tempfile::TempDir,
        cfg: Config,
        listener: TcpListener,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let db = cfg.storage.path.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = actix_rt::spawn(vigil::run(cfg, listener, async move {
            let _ = rx.await;
        }));
        let server = TestServer {
            addr,
            dir,
            db,
            stop: Some(tx),
            task,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        };
        server
            .wait_for("the server to answer", Duration::from_secs(10), async |s| {
                s.try_get("/health").await.is_some()
            })
            .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let mut res = self.client.get(self.url(path)).send().await.ok()?;
        let status = res.status().as_u16();
        let body = res.body().limit(50 * 1024 * 1024).await.ok()?;
        Some((status, serde_json::from_slice(&body).ok()?))
    }

    /// GETs `path` and parses the JSON body; panics if either fails.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path)
            .await
            .unwrap_or_else(|| panic!("GET {path} failed or was not JSON"))
    }

    /// GETs `path`, expecting 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POSTs to `path`, with a bearer token if given; the status and the
    /// JSON body (null if the body is not JSON).
    pub async fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.post_to(&self.url(path), token).await
    }

    /// POSTs to a full URL (another address of this server).
    pub async fn post_to(&self, url: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(url).timeout(Duration::from_secs(60));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
        let status = res.status().as_u16();
        let body = res.body().limit(50 * 1024 * 1024).await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// POSTs a JSON body to `path`; the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut res = self
            .client
            .post(self.url(path))
            .timeout(Duration::from_secs(60))
            .send_json(body)
            .await
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        let status = res.status().as_u16();
        let body = res.body().limit(10 * 1024 * 1024).await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The HTTP client the server's helpers use.
    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// The `/api/sensors` entry of one sensor.
    pub async fn sensor(&self, name: &str) -> Value {
        let body = self.get_ok("/api/sensors").await;
        body["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no sensor {name} in {body}"))
    }

    /// Polls `cond` every 20 ms until it holds; panics after `deadline`.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl AsyncFnMut(&TestServer) -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if cond(self).await {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out after {deadline:?} waiting for {what}");
    }

    /// Asks the appliance to shut down and waits for its report.
    pub async fn stop(mut self) -> (RunReport, tempfile::TempDir, PathBuf) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let report = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("shutdown within 30 s")
            .expect("run task")
            .expect("run returned an error");
        (report, self.dir, self.db)
    }
}

/// A GET on a fresh HTTP/1.0 connection (closed after the answer); the body.
pub async fn http_get_fresh(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut text))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&text).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Opens the database file directly (as a second process would).
/// `vigil serve` as a child process on `config` and the database `db`
/// (`VIGIL_DB`), with no bind, log or notify overrides from the test's
/// environment: the child, the port it says it serves on once it does
/// (`None` if the line does not parse), and its stderr lines once it ends.
pub struct Served {
    pub child: std::process::Child,
    pub port: std::sync::mpsc::Receiver<Option<u16>>,
    pub log: std::thread::JoinHandle<Vec<String>>,
}

pub fn spawn_serve(config: &std::path::Path, db: &std::path::Path) -> Served {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config"])
        .arg(config)
        .env("VIGIL_DB", db)
        .env_remove("VIGIL_BIND")
        .env_remove("VIGIL_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, port) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("serving http://127.0.0.1:").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().and_then(|p| p.parse().ok()));
            }
            lines.push(line);
        }
        lines
    });
    Served { child, port, log }
}

pub fn open_db(path: &std::path::Path) -> rusqlite_lite::Db {
    rusqlite_lite::Db::open(path)
}

/// Minimal direct SQLite access for assertions, through diesel.
pub mod rusqlite_lite {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    pub struct Db(SqliteConnection);

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = Text)]
        integrity_check: String,
    }

    impl Db {
        pub fn open(path: &std::path::Path) -> Db {
            Db(SqliteConnection::establish(path.to_str().unwrap()).expect("open database"))
        }

        pub fn count(&mut self, sql: &str) -> i64 {
            diesel::sql_query(sql)
                .get_result::<Count>(&mut self.0)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .n
        }

        /// Raw readings stored, in rows, head blocks and sealed chunks.
        pub fn raw_count(&mut self) -> i64 {
            // A database killed between migrations may lack the newer
            // tables.
            if self.count("SELECT count(*) AS n FROM sqlite_master WHERE name = 'head_blocks'") == 0
            {
                return self.count("SELECT count(*) AS n FROM readings");
            }
            vigil::chunk::count_all(&mut self.0).unwrap() as i64
        }

        /// Readings of one sensor (all metrics): rows, head blocks, sealed.
        pub fn readings_of(&mut self, sensor: &str) -> i64 {
            self.count(&format!(
                "SELECT (SELECT count(*) FROM readings JOIN series ON series.id = readings.series_id \
                 WHERE series.sensor = '{sensor}') + (SELECT coalesce(sum(count), 0) FROM chunks \
                 JOIN series ON series.id = chunks.series_id WHERE series.sensor = '{sensor}') \
                 + (SELECT coalesce(sum(count), 0) FROM head_blocks \
                 JOIN series ON series.id = head_blocks.series_id WHERE series.sensor = '{sensor}') AS n"
            ))
        }

        /// Timestamps of one sensor's metric, ascending.
        pub fn timestamps(&mut self, sensor: &str, metric: &str) -> Vec<i64> {
            self.values(sensor, metric)
                .into_iter()
                .map(|p| p.0)
                .collect()
        }

        /// Runs statements (set-up and garbage making in tests).
        pub fn execute(&mut self, sql: &str) {
            use diesel::connection::SimpleConnection;
            self.0
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }

        /// (ts, value) of one sensor's metric, ascending.
        /// Rows and sealed readings alike, through the store's own read.
        pub fn values(&mut self, sensor: &str, metric: &str) -> Vec<(i64, f64)> {
            let id = self.count(&format!(
                "SELECT coalesce((SELECT id FROM series WHERE sensor = '{sensor}' \
                 AND metric = '{metric}'), -1) AS n"
            ));
            vigil::chunk::points(
                &mut self.0,
                id,
                i64::MIN,
                i64::MAX,
                vigil::Order::Asc,
                usize::MAX,
            )
            .unwrap()
        }

        /// Raw readings stored with `ts <= upto`, of every series.
        pub fn raw_count_upto(&mut self, upto: i64) -> usize {
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            let ids: Vec<Id> = diesel::sql_query("SELECT id FROM series")
                .load(&mut self.0)
                .unwrap();
            ids.iter()
                .map(|s| {
                    vigil::chunk::points(
                        &mut self.0,
                        s.id,
                        i64::MIN,
                        upto,
                        vigil::Order::Asc,
                        usize::MAX,
                    )
                    .unwrap()
                    .len()
                })
                .sum()
        }

        pub fn integrity_check(&mut self) -> String {
            diesel::sql_query("PRAGMA integrity_check")
                .get_result::<Check>(&mut self.0)
                .unwrap()
                .integrity_check
        }
    }
}

/// Runs `promtool check metrics` (Debian's, installed by scripts/setup, or
/// `VIGIL_PROMTOOL`) on an exposition and fails the test with its verdict.
pub fn promtool_check_metrics(text: &str) {
    use std::process::{Command, Stdio};
    let promtool = std::env::var("VIGIL_PROMTOOL").unwrap_or("promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool} ({e}); run scripts/setup"));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads one HTTP/1.1 response from a blocking stream: its status and body
/// (by `content-length`). `None` when the stream fails or ends before a
/// whole response.
pub fn read_http_response(stream: &mut impl std::io::Read) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
