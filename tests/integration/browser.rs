//! The dashboard end to end in headless Chromium, driven through
//! chromedriver's WebDriver API: it loads without console errors, live values
//! change, the history view draws from the API, it fits a phone screen, and
//! it reconnects by itself after the appliance goes away and comes back.
//! Screenshots are saved under the test's output directory.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup` installs
//! them; `VIGIL_CHROMIUM` / `VIGIL_CHROMEDRIVER` override the paths).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{TestServer, config};

struct Driver {
    child: Child,
    base: String,
    session: String,
    client: awc::Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    async fn start() -> Driver {
        let driver = std::env::var("VIGIL_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        let browser = std::env::var("VIGIL_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Drop can end the browsers it
            // starts too, even when a failing test never quits the session.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {driver} ({e}); run scripts/setup"));
        let profile = tempfile::tempdir().unwrap();
        let mut d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut r) = d.client.get(format!("{}/status", d.base)).send().await
                && r.json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                    format!("--user-data-dir={}", d._profile.path().display()),
                ],
            },
        }}});
        let v = d.raw("POST", "/session", Some(caps)).await;
        d.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        d
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        res.json::<Value>()
            .limit(64 * 1024 * 1024)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        let v = self.raw(method, &p, body).await;
        assert!(
            v["value"].get("error").is_none(),
            "{method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn wait_js(&self, what: &str, script: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != false {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self
                    .js("return document.querySelector('main').innerText.slice(0, 2000);")
                    .await;
                let console = self.console().await;
                panic!("timed out waiting for {what}; page: {page}; console: {console:?}");
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Browser console entries since the last call.
    async fn console(&self) -> Vec<Value> {
        let v = self
            .cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap());
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn set_window(&self, w: u32, h: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": w, "height": h})),
        )
        .await;
    }

    async fn quit(self) {
        let p = format!("/session/{}", self.session);
        self.raw("DELETE", &p, None).await;
    }
}

impl Drop for Driver {
    /// Kills chromedriver's whole process group: chromedriver alone would
    /// leave its Chromium processes running after a failed test.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Decodes standard base64 (the screenshot).
fn base64_decode(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn severe(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["level"] == "SEVERE").collect()
}

const SENSORS: &str = r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 200
[sensors.options]
unit = "°C"
period_ms = 5000

[[sensors]]
name = "system"
kind = "system"
interval_ms = 1000

[[alerts.rules]]
name = "sim watched"
sensor = "sim"
condition = "above"
threshold = -1000.0
severity = "warning"
message = "sim is being watched"
"#;

const VALUE_TEXT: &str = "const e = document.querySelector('article[data-sensor=\"sim\"] .metric-value'); \
     return e && e.textContent !== '–' ? e.textContent : null;";

#[actix_rt::test]
async fn the_dashboard_shows_live_data_history_and_recovers_from_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, SENSORS);
    let s = TestServer::start_with(dir, cfg.clone()).await;
    let d = Driver::start().await;
    d.goto(&s.url("/")).await;

    // Live values arrive and change; the chart draws.
    let first = d
        .wait_js("a live value", VALUE_TEXT, Duration::from_secs(15))
        .await;
    let changed = format!(
        "const e = document.querySelector('article[data-sensor=\"sim\"] .metric-value'); \
         return e && e.textContent !== {first} && e.textContent !== '–';"
    );
    d.wait_js("the value to change", &changed, Duration::from_secs(15))
        .await;
    assert!(first.as_str().unwrap().ends_with("°C"), "{first}");
    d.wait_js(
        "the live chart",
        "const c = document.querySelector('canvas[data-series=\"sim/value\"]'); \
         return c && Number(c.dataset.points) > 3;",
        Duration::from_secs(15),
    )
    .await;
    d.wait_js(
        "the connection indicator",
        "return document.getElementById('conn').classList.contains('conn-live');",
        Duration::from_secs(10),
    )
    .await;
    d.wait_js(
        "sensor status and supervision tree",
        "return document.querySelector('article[data-sensor=\"sim\"] .badge').textContent === 'running' \
         && document.querySelectorAll('#tree .node').length >= 4;",
        Duration::from_secs(10),
    )
    .await;
    d.wait_js(
        "the pacing panel",
        "const b = document.querySelector('#pacing .badge'); return b && b.textContent.length > 0;",
        Duration::from_secs(10),
    )
    .await;
    d.wait_js(
        "the guards panel with the database breaker",
        "const b = document.querySelector('#guards [data-breaker=\"database\"] .badge'); \
         return b && b.textContent === 'closed';",
        Duration::from_secs(10),
    )
    .await;
    d.wait_js(
        "system health",
        "return /CPU/.test(document.getElementById('health').textContent);",
        Duration::from_secs(10),
    )
    .await;

    // History from the API (committed or not), once the readings span more
    // than one of the chart's 2 s buckets: 20 readings 200 ms apart.
    s.wait_for(
        "readings for the chart",
        Duration::from_secs(15),
        async |s| s.get_ok("/api/readings?sensor=sim&limit=20").await["count"] == 20,
    )
    .await;
    d.js(
        "document.getElementById('history-series').value = 'sim/value'; \
          document.getElementById('history-range').value = '900000'; \
          document.querySelector('#history-form button').click(); return true;",
    )
    .await;
    let note = d
        .wait_js(
            "the history chart",
            "const c = document.getElementById('history-chart'); \
             return Number(c.dataset.points) > 1 ? document.getElementById('history-note').textContent : null;",
            Duration::from_secs(15),
        )
        .await;
    let note = note.as_str().unwrap();
    assert!(
        note.contains("sim/value") && note.contains("/api/series (raw"),
        "{note}"
    );

    // A firing alert is shown prominently and can be acknowledged (from
    // loopback no token is needed).
    d.wait_js(
        "the alert banner",
        "const a = document.querySelector('#alerts .alert'); \
         return a && !document.getElementById('alerts').hidden && /being watched/.test(a.textContent);",
        Duration::from_secs(15),
    )
    .await;
    d.js("document.querySelector('#alerts .alert button').click(); return true;")
        .await;
    d.wait_js(
        "the acknowledgement",
        "return /acknowledged/.test(document.querySelector('#alerts .alert').textContent);",
        Duration::from_secs(10),
    )
    .await;
    d.screenshot("dashboard.png").await;

    // A phone-sized screen: no sideways scrolling.
    d.set_window(390, 844).await;
    d.wait_js(
        "a narrow layout",
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        Duration::from_secs(5),
    )
    .await;
    d.screenshot("dashboard-phone.png").await;
    d.set_window(1280, 1600).await;

    let errors = d.console().await;
    assert!(
        severe(&errors).is_empty(),
        "console errors: {:?}",
        severe(&errors)
    );

    // The appliance goes away and comes back on the same address: the page
    // notices, reconnects with backoff, resubscribes and moves again.
    let addr = s.addr;
    let (_, dir, _) = s.stop().await;
    d.wait_js(
        "the offline indicator",
        "return document.getElementById('conn').classList.contains('conn-offline');",
        Duration::from_secs(15),
    )
    .await;
    let listener = TcpListener::bind(addr).expect("rebind the same port");
    let s = TestServer::start_on(dir, cfg, listener).await;
    d.wait_js(
        "the page to reconnect",
        "return document.getElementById('conn').classList.contains('conn-live');",
        Duration::from_secs(30),
    )
    .await;
    let before = d.js(VALUE_TEXT).await;
    let changed = format!(
        "const e = document.querySelector('article[data-sensor=\"sim\"] .metric-value'); \
         return e && e.textContent !== {before};"
    );
    d.wait_js("values to move again", &changed, Duration::from_secs(15))
        .await;
    // During the outage only connection failures may be logged.
    let errors = d.console().await;
    let unexpected: Vec<_> = severe(&errors)
        .into_iter()
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !(m.contains("ERR_CONNECTION_REFUSED") || m.contains("WebSocket connection"))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:?}");
    d.quit().await;
    s.stop().await;
}
