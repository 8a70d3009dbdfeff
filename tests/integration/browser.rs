//! The dashboard end to end in headless Chromium, driven through
//! chromedriver's WebDriver API: it loads without console errors, live values
//! change, the history view draws from the API, it fits a phone screen, and
//! it reconnects by itself after the appliance goes away and comes back;
//! charts have data at first paint, zooming changes the range and the
//! storage tier, times are shown in the zone chosen, a sensor added from
//! the page reads while another keeps its cadence, the config file keeps
//! its comments, a bad value shows the field's error, and the first load
//! stays under 150 KB. Screenshots (1400×1000 and 390×844 among them) are
//! saved under the test's output directory.
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

    /// Drags across the element `css` from `dx0` to `dx1` pixels right of
    /// its centre, as a mouse would.
    async fn drag(&self, css: &str, dx0: i64, dx1: i64) {
        let found = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let origin = found.clone();
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "origin": origin, "x": dx0, "y": 0, "duration": 0},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerMove", "origin": found, "x": dx1, "y": 0, "duration": 200},
                {"type": "pointerUp", "button": 0},
            ],
        }]});
        self.cmd("POST", "/actions", Some(actions)).await;
    }

    /// Double-clicks the centre of the element `css`.
    async fn double_click(&self, css: &str) {
        let found = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let click = [
            json!({"type": "pointerDown", "button": 0}),
            json!({"type": "pointerUp", "button": 0}),
        ];
        let mut steps = vec![json!({"type": "pointerMove", "origin": found, "x": 0, "y": 0})];
        steps.extend(click.iter().cloned());
        steps.extend(click.iter().cloned());
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": steps,
        }]});
        self.cmd("POST", "/actions", Some(actions)).await;
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
        "const c = document.querySelector('article[data-sensor=\"sim\"] .spark'); \
         return c && Number(c.dataset.points) > 3 && c.querySelector('canvas') !== null;",
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
        "const s = document.getElementById('history-sensor'); s.value = 'sim'; \
          s.dispatchEvent(new Event('change')); \
          document.querySelector('[data-range=\"300000\"]').click(); return true;",
    )
    .await;
    let note = d
        .wait_js(
            "the history chart",
            "const c = document.getElementById('history-chart'); \
             return Number(c.dataset.points) > 1 && c.dataset.tier === 'raw' \
               ? document.getElementById('history-note').textContent : null;",
            Duration::from_secs(15),
        )
        .await;
    let note = note.as_str().unwrap();
    assert!(note.contains("sim:") && note.contains("raw tier"), "{note}");

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

/// The history chart's range, tier and points, as the page shows them.
const HISTORY_STATE: &str = "const c = document.getElementById('history-chart'); \
     return c.dataset.tier ? {from: Number(c.dataset.from), to: Number(c.dataset.to), \
       tier: c.dataset.tier, points: Number(c.dataset.points)} : null;";

/// A config file for the configuration test: two fast sensors with comments.
fn editable_config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = crate::util::BASE.replace(
        "[storage]\n",
        &format!("[storage]\npath = \"{}\"\n", dir.join("vigil.db").display()),
    ) + r#"
# steady: its cadence must not change while others are edited.
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 100 # ten reads a second
[sensors.options]
unit = "°C"

# sim: a second chart.
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 100
[sensors.options]
waveform = "random_walk"
unit = "V"

[[sensors]]
name = "system"
kind = "system"
interval_ms = 1000
"#;
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn steady_node(s: &TestServer) -> Value {
    let sup = s.get_ok("/api/supervisor").await;
    sup["tree"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sensors")
        .and_then(|c| c["children"].as_array())
        .and_then(|c| c.iter().find(|n| n["name"] == "steady"))
        .cloned()
        .unwrap()
}

#[actix_rt::test]
async fn charts_zoom_times_and_configuration_from_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let file = editable_config(dir.path());
    let original = std::fs::read_to_string(&file).unwrap();
    let cfg = vigil::Config::load(Some(&file)).unwrap();
    let s = TestServer::start_with(dir, cfg).await;
    // Three seconds of readings before the page opens.
    s.wait_for(
        "readings spanning 3 s",
        Duration::from_secs(20),
        async |s| {
            let r = s.get_ok("/api/readings?sensor=sim&order=asc&limit=1").await;
            let first = r["readings"][0]["ts_ms"].as_i64();
            let r = s
                .get_ok("/api/readings?sensor=sim&order=desc&limit=1")
                .await;
            let last = r["readings"][0]["ts_ms"].as_i64();
            matches!((first, last), (Some(a), Some(b)) if b - a >= 3000)
        },
    )
    .await;
    let d = Driver::start().await;
    d.set_window(1400, 1000).await;
    d.goto(&s.url("/")).await;

    // Charts have data at first paint: drawn from /api/series (which has
    // the uncommitted head), before the live feed adds anything.
    let first = d
        .wait_js(
            "the first paint of the sim card",
            "const c = document.querySelector('article[data-sensor=\"sim\"] .spark'); \
             return c && c.dataset.firstPoints ? Number(c.dataset.firstPoints) : null;",
            Duration::from_secs(15),
        )
        .await;
    assert!(
        first.as_u64().unwrap() >= 3,
        "first paint had {first} points"
    );
    d.wait_js(
        "every card's chart",
        "return ['steady', 'sim', 'system'].every((n) => { \
           const c = document.querySelector(`article[data-sensor=\"${n}\"] .spark`); \
           return c && Number(c.dataset.points) > 0 && c.querySelector('canvas'); });",
        Duration::from_secs(15),
    )
    .await;

    // The history chart: several metrics of a sensor on one chart, a time
    // axis, units in the legend.
    d.js(
        "const s = document.getElementById('history-sensor'); s.value = 'system'; \
         s.dispatchEvent(new Event('change')); \
         document.querySelector('[data-range=\"86400000\"]').click(); return true;",
    )
    .await;
    let day = d
        .wait_js(
            "the 24 h chart",
            &format!(
                "{} ",
                HISTORY_STATE.replace("return c.dataset.tier", "return c.dataset.tier === 'minute' && document.querySelectorAll('#history-chart .u-legend .u-series').length >= 5")
            ),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(day["tier"], "minute", "{day}");
    let span = day["to"].as_i64().unwrap() - day["from"].as_i64().unwrap();
    assert_eq!(span, 86_400_000, "{day}");
    let legend = d
        .js("return document.querySelector('#history-chart .u-legend').textContent;")
        .await;
    assert!(legend.as_str().unwrap().contains("cpu (%)"), "{legend}");
    let axis = d
        .js("return Array.from(document.querySelectorAll('#history-chart .u-axis')).length;")
        .await;
    assert!(axis.as_u64().unwrap() >= 2, "time and value axes: {axis}");

    // Drag to zoom: a narrower range, read from a finer tier.
    d.drag("#history-chart .u-over", 250, 450).await;
    let zoomed = d
        .wait_js(
            "the zoomed range",
            &HISTORY_STATE.replace(
                "return c.dataset.tier ?",
                "return c.dataset.tier === 'raw' ?",
            ),
            Duration::from_secs(15),
        )
        .await;
    let zoomed_span = zoomed["to"].as_i64().unwrap() - zoomed["from"].as_i64().unwrap();
    assert!(zoomed_span < span / 2, "{zoomed}");
    assert!(zoomed["from"].as_i64() > day["from"].as_i64(), "{zoomed}");
    // Double-click: back to the chosen range and its tier.
    d.double_click("#history-chart .u-over").await;
    let reset = d
        .wait_js(
            "the reset range",
            &HISTORY_STATE.replace(
                "return c.dataset.tier ?",
                "return c.dataset.tier === 'minute' ?",
            ),
            Duration::from_secs(15),
        )
        .await;
    let reset_span = reset["to"].as_i64().unwrap() - reset["from"].as_i64().unwrap();
    assert_eq!(reset_span, span, "{reset}");
    // The same from the keyboard-reachable buttons.
    d.js("document.getElementById('zoom-in').click(); return true;")
        .await;
    d.wait_js(
        "zoom in by button",
        &format!(
            "const c = document.getElementById('history-chart'); \
             return Number(c.dataset.to) - Number(c.dataset.from) <= {};",
            span / 2 + 1
        ),
        Duration::from_secs(15),
    )
    .await;

    // Times: the zone is said, UTC can be chosen, and the clock is 24-hour.
    let zone = d
        .js("return document.getElementById('tz-name').textContent;")
        .await;
    assert!(zone.as_str().unwrap().contains("24-hour"), "{zone}");
    d.js("const z = document.getElementById('tz'); z.value = 'utc'; \
         z.dispatchEvent(new Event('change')); return true;")
        .await;
    d.wait_js(
        "UTC times",
        "return document.getElementById('tz-name').textContent.startsWith('UTC') \
         && /^\\d\\d:\\d\\d:\\d\\d /.test(document.querySelector('#events li').textContent);",
        Duration::from_secs(10),
    )
    .await;
    // Recent events: the list leaves room for two-digit numbers.
    let fits = d
        .js("const ol = document.getElementById('events'); \
             const ctx = document.createElement('canvas').getContext('2d'); \
             ctx.font = getComputedStyle(ol).font; \
             return parseFloat(getComputedStyle(ol).paddingLeft) > ctx.measureText('20. ').width;")
        .await;
    assert_eq!(fits, true, "event numbers would be clipped");
    // Every control is reachable from the keyboard.
    let unreachable = d
        .js(
            "return Array.from(document.querySelectorAll('button, select, input, textarea')) \
             .filter((e) => e.tabIndex < 0 || e.disabled).map((e) => e.outerHTML);",
        )
        .await;
    assert_eq!(unreachable, json!([]), "{unreachable}");

    // A bad value shows the field's error and saves nothing.
    d.wait_js(
        "the configuration section",
        "return document.querySelectorAll('#config-sensors li').length === 3;",
        Duration::from_secs(15),
    )
    .await;
    let fill = |name: &str, interval: &str| {
        format!(
            "const f = document.getElementById('sensor-form'); \
             f.querySelector('[data-action=\"cancel\"]').click(); \
             f.name.value = '{name}'; f.kind.value = 'simulated'; f.interval_ms.value = '{interval}'; \
             f.priority.value = 'optional'; \
             f.options.value = 'waveform = \"constant\"\\noffset = 3.5\\nunit = \"cm\"'; \
             f.querySelector('button[type=\"submit\"]').click(); return true;"
        )
    };
    d.js(&fill("tank", "0")).await;
    let error = d
        .wait_js(
            "the interval's error",
            "const e = document.querySelector('#sensor-form [data-error=\"interval_ms\"]'); \
             return e.textContent && document.querySelector('#sensor-form [name=\"interval_ms\"]') \
               .getAttribute('aria-invalid') === 'true' ? e.textContent : null;",
            Duration::from_secs(15),
        )
        .await;
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("sensors[tank].interval_ms"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);

    // A sensor added from the page appears and reads; steady's actor and
    // cadence are untouched.
    let before = steady_node(&s).await;
    d.js(&fill("tank", "100")).await;
    d.wait_js(
        "the new sensor's reading",
        "const e = document.querySelector('article[data-sensor=\"tank\"] .metric-value'); \
         return e && /3\\.50 cm/.test(e.textContent);",
        Duration::from_secs(20),
    )
    .await;
    let status = d
        .js("return document.getElementById('config-status').textContent;")
        .await;
    assert!(status.as_str().unwrap().contains("saved to"), "{status}");
    let after = steady_node(&s).await;
    assert_eq!(after["restarts"], before["restarts"]);
    assert_eq!(after["running_since"], before["running_since"]);
    assert_eq!(s.sensor("steady").await["effective_interval_ms"], 100);
    // The file keeps every comment, and has the sensor.
    let text = std::fs::read_to_string(&file).unwrap();
    for line in original.lines().filter(|l| l.contains('#')) {
        assert!(text.contains(line), "lost {line:?} in:\n{text}");
    }
    assert!(text.contains("name = \"tank\""), "{text}");
    d.js("document.getElementById('config').scrollIntoView(); return true;")
        .await;
    d.screenshot("dashboard-config.png").await;
    // Disabled from the page: the card and the tree say so.
    d.js(
        "Array.from(document.querySelectorAll('#config-sensors li')) \
         .find((li) => li.dataset.configSensor === 'tank') \
         .querySelectorAll('button')[1].click(); return true;",
    )
    .await;
    d.wait_js(
        "tank disabled in the tree",
        "const n = document.querySelector('#tree [data-node=\"tank\"] .badge'); \
         return n && n.textContent === 'disabled';",
        Duration::from_secs(20),
    )
    .await;

    // Page weight: everything the first load fetched, compressed.
    let weight = d
        .js(
            "const nav = performance.getEntriesByType('navigation')[0]; \
             const res = performance.getEntriesByType('resource'); \
             return {total: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0), \
               html: nav.transferSize, \
               assets: res.filter((r) => r.name.includes('/assets/')).reduce((a, r) => a + r.transferSize, 0)};",
        )
        .await;
    eprintln!("dashboard first load: {weight}");
    assert!(
        weight["total"].as_u64().unwrap() < 150 * 1024,
        "the page weighs {weight}"
    );

    // Screenshots: desktop, and a phone showing several sensors at once.
    d.js("window.scrollTo(0, 0); return true;").await;
    d.screenshot("dashboard-desktop.png").await;
    d.set_window(390, 844).await;
    d.wait_js(
        "a narrow layout",
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        Duration::from_secs(5),
    )
    .await;
    d.screenshot("dashboard-phone-390x844.png").await;
    let visible = d
        .wait_js(
            "several cards on a phone screen",
            "if (document.documentElement.scrollWidth > window.innerWidth + 1) return null; \
             const cards = Array.from(document.querySelectorAll('#sensors .card')); \
             const seen = cards.filter((c) => c.getBoundingClientRect().bottom <= window.innerHeight); \
             return seen.length >= 3 ? seen.length : null;",
            Duration::from_secs(10),
        )
        .await;
    eprintln!("cards on a 390x844 screen: {visible}");

    // The refused edit is the only error the console may show.
    let errors = d.console().await;
    let unexpected: Vec<_> = severe(&errors)
        .into_iter()
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !(m.contains("/api/admin/config/sensors?dry_run=true") && m.contains("400"))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:?}");
    d.quit().await;
    s.stop().await;
}

/// With a viewer token, the browser is sent to the login page, logs in with
/// the token (a wrong one is refused on the page), sees the dashboard with
/// live values and a logout button, and after logging out is back at the
/// login page. Bound to every address with no token, the page shows the
/// open-data banner.
#[actix_rt::test]
async fn the_browser_logs_in_and_out_and_sees_the_open_data_banner() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSORS);
    cfg.server.viewer_token = "l00k-only".into();
    let s = TestServer::start_with(dir, cfg).await;
    let d = Driver::start().await;
    d.goto(&s.url("/")).await;
    d.wait_js(
        "the login page",
        "return location.pathname === '/login' && document.getElementById('token') !== null;",
        Duration::from_secs(15),
    )
    .await;
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = '{token}'; \
             document.querySelector('form').submit(); return true;"
        )
    };
    d.js(&submit("wrong")).await;
    d.wait_js(
        "the refusal",
        "const e = document.querySelector('.error'); return e && e.textContent.includes('not this');",
        Duration::from_secs(15),
    )
    .await;
    d.js(&submit("l00k-only")).await;
    d.wait_js("a live value", VALUE_TEXT, Duration::from_secs(20))
        .await;
    let shown = d
        .js("return [document.getElementById('logout').hidden, document.getElementById('open-banner').hidden];")
        .await;
    assert_eq!(shown, json!([false, true]), "logout shown, banner hidden");
    let cookie = d.js("return document.cookie;").await;
    assert_eq!(cookie, "", "the session cookie is HttpOnly: {cookie}");
    d.js("document.querySelector('#logout button').click(); return true;")
        .await;
    d.wait_js(
        "the login page after logout",
        "return location.pathname === '/login';",
        Duration::from_secs(15),
    )
    .await;
    d.goto(&s.url("/")).await;
    d.wait_js(
        "the login page again",
        "return location.pathname === '/login';",
        Duration::from_secs(15),
    )
    .await;
    s.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, SENSORS);
    let s = TestServer::start_on(dir, cfg, TcpListener::bind("0.0.0.0:0").unwrap()).await;
    d.goto(&s.url("/")).await;
    d.wait_js(
        "the open-data banner",
        "return !document.getElementById('open-banner').hidden && \
         document.getElementById('logout').hidden;",
        Duration::from_secs(15),
    )
    .await;
    d.quit().await;
    s.stop().await;
}
