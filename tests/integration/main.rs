//! Integration tests: the real appliance on `127.0.0.1:0` with a temporary
//! database, driven over HTTP (and, for the CLI, as a child process).
//! One test binary so the crate is linked once; helpers live in `util`.

mod access;
mod alerts;
mod api;
mod architecture;
#[cfg(feature = "bench")]
mod bench;
mod browser;
mod cli;
mod config_edit;
mod crash;
mod dbfaults;
mod faults;
mod guards;
mod hardening;
mod hardware;
mod head;
mod headers;
mod import;
mod lifecycle;
mod live;
mod mqtt;
mod openapi;
mod pacing;
mod performance;
mod sealing;
mod states;
mod storage;
mod systemd;
mod tls;
mod util;
mod wsfuzz;
// The WebSocket client the fan-out benchmark uses, self-contained (it
// imports nothing of vigil), shared by path so the tests need no feature.
mod mqtt_sensor;
#[allow(dead_code)]
#[path = "../../src/bench/wsclient.rs"]
mod wsclient;
