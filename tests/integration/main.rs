//! Integration tests: the real appliance on `127.0.0.1:0` with a temporary
//! database, driven over HTTP (and, for the CLI, as a child process).
//! One test binary so the crate is linked once; helpers live in `util`.

mod api;
mod cli;
mod faults;
mod headers;
mod lifecycle;
mod storage;
mod util;
