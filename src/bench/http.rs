//! A blocking one-shot HTTP/1.0 GET, for benchmarks that poll the appliance
//! from outside it (start-up time, figures during a footprint run).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `path`; the status and body, or `None` if nothing answered.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// GETs `path` and parses JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let (_, body) = get(addr, path, Duration::from_secs(5))?;
    serde_json::from_str(&body).ok()
}
