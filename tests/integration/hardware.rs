//! Hardware sensors on a machine without the hardware: every configured
//! kind shows `unavailable` with the reason in `/api/sensors` and `/health`,
//! is probed again without restarts, and the rest of the appliance runs on.

use std::time::Duration;

use serde_json::Value;

use crate::util::TestServer;

const HARDWARE: &str = r#"
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "constant"

[[sensors]]
name = "door"
kind = "gpio"
interval_ms = 100
unavailable_retry_ms = 100
[sensors.options]
pin = 27
pull = "up"
active = "low"

[[sensors]]
name = "climate"
kind = "bme280"
interval_ms = 100
unavailable_retry_ms = 100
[sensors.options]
address = 0x77

[[sensors]]
name = "air"
kind = "ads1115"
interval_ms = 100
unavailable_retry_ms = 100
[sensors.options]
channel = "a0"
[sensors.options.mq135]
warmup_secs = 60

[[sensors]]
name = "noise"
kind = "sound"
interval_ms = 100
unavailable_retry_ms = 100
priority = "optional"

[[sensors]]
name = "power"
kind = "throttled"
interval_ms = 100
unavailable_retry_ms = 100
"#;

const HARDWARE_NAMES: [&str; 5] = ["door", "climate", "air", "noise", "power"];

fn reason(sensor: &Value) -> String {
    sensor["unavailable_reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no unavailable_reason in {sensor}"))
        .to_owned()
}

#[actix_rt::test]
async fn hardware_sensors_off_a_pi_are_unavailable_with_reasons_and_the_rest_runs() {
    if vigil::raspberry_pi_model().is_some() {
        // On a real Pi these sensors may well be present.
        return;
    }
    let s = TestServer::start(HARDWARE).await;
    s.wait_for(
        "every hardware sensor to be unavailable",
        Duration::from_secs(20),
        async |s| {
            let body = s.get_ok("/api/sensors").await;
            HARDWARE_NAMES.iter().all(|name| {
                body["sensors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["name"] == *name && x["status"] == "unavailable")
            })
        },
    )
    .await;

    let pi_reason = if cfg!(feature = "pi") {
        "not a Raspberry Pi"
    } else {
        "without the `pi` feature"
    };
    for name in ["door", "climate", "air"] {
        let r = reason(&s.sensor(name).await);
        assert!(r.contains(pi_reason), "{name}: {r}");
    }
    // vcgencmd needs no cargo feature; the board check applies either way.
    let r = reason(&s.sensor("power").await);
    assert!(r.contains("not a Raspberry Pi"), "power: {r}");
    let r = reason(&s.sensor("noise").await);
    if cfg!(feature = "audio") {
        assert!(!r.is_empty());
    } else {
        assert!(r.contains("without the `audio` feature"), "noise: {r}");
    }

    // Probed again (every 100 ms here) without ever being restarted, while
    // the simulated sensor beside them keeps producing.
    let before = s.sensor("steady").await["reads"].as_u64().unwrap();
    s.wait_for(
        "the simulated sensor to keep reading",
        Duration::from_secs(20),
        async |s| s.sensor("steady").await["reads"].as_u64().unwrap() >= before + 10,
    )
    .await;
    for name in HARDWARE_NAMES {
        let x = s.sensor(name).await;
        assert_eq!(x["status"], "unavailable", "{x}");
        assert_eq!(x["restarts"], 0, "{x}");
        assert_eq!(x["reads"], 0, "{x}");
    }

    // Unavailable sensors are warnings, not a failed appliance.
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let warnings = health["warnings"].to_string();
    for name in HARDWARE_NAMES {
        assert!(
            warnings.contains(&format!("sensor {name} unavailable")),
            "{warnings}"
        );
    }

    let (report, _dir, _db) = s.stop().await;
    assert!(report.stored > 0, "{report:?}");
}
