//! Integration tests: the real appliance on `127.0.0.1:0` with a temporary
//! database, driven over HTTP (and, for the CLI, as a child process).
//! One test binary so the crate is linked once; helpers live in `util`.

mod alerts;
mod api;
mod bench;
mod browser;
mod cli;
mod crash;
mod dbfaults;
mod faults;
mod guards;
mod hardening;
mod hardware;
mod headers;
mod lifecycle;
mod live;
mod openapi;
mod pacing;
mod performance;
mod storage;
mod systemd;
mod util;
