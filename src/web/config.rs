//! `[server]`: the HTTP listener (plain or HTTPS), its workers, the admin
//! and viewer tokens, login sessions and the readings API's page limit.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::vocab::check::{ConfigError, positive};

/// The longest login session `server.session_ttl_secs` allows.
pub const MAX_SESSION_TTL_SECS: u64 = 366 * 24 * 3600;

/// The most HTTP workers actix-server runs (it refuses more at start).
pub const MAX_WORKERS: usize = 512;

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: String,
    /// Requests slower than this are logged with method, path and duration.
    pub slow_request_ms: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Bearer token for admin endpoints; empty means loopback-only.
    pub admin_token: String,
    /// Token every read needs (dashboard, API, live feed, `/metrics`);
    /// empty leaves reads open. The admin token works wherever it does.
    pub viewer_token: String,
    /// How long a login session lasts, in seconds (at most a year).
    pub session_ttl_secs: u64,
    /// Readings API: the largest `limit` a client may ask for.
    pub max_page_size: u32,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// What connections may cost: limits and timeouts.
    pub connections: super::connlimit::ConnectionLimits,
    /// PEM certificate chain (leaf first): with `tls_key`, the listener
    /// serves HTTPS and WSS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            slow_request_ms: 500,
            workers: 2,
            admin_token: String::new(),
            viewer_token: String::new(),
            session_ttl_secs: 43_200,
            max_page_size: 1000,
            shutdown_grace_secs: 5,
            connections: super::connlimit::ConnectionLimits::default(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// The parsed listen address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_bind(&self.bind)
    }

    /// `https` when the listener serves TLS (a validated config has both
    /// files or neither), else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The HTTPS configuration, when `tls_cert` and `tls_key` are set: the
    /// files are read and checked against each other, and an error names
    /// the key whose file is at fault.
    pub fn tls(&self) -> Result<Option<rustls::ServerConfig>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        crate::platform::tls::server_config(cert, key)
            .map(Some)
            .map_err(|e| {
                let key = match e.file {
                    crate::platform::tls::ServerFile::Cert => "server.tls_cert",
                    crate::platform::tls::ServerFile::Key => "server.tls_key",
                };
                ConfigError::invalid(key, e.message)
            })
    }
}

/// Parses a listen address, naming `server.bind` when it is not one.
pub fn parse_bind(bind: &str) -> Result<SocketAddr, ConfigError> {
    bind.parse::<SocketAddr>().map_err(|e| {
        ConfigError::invalid(
            "server.bind",
            format!("`{bind}` is not an address:port with a port in 0-65535 ({e})"),
        )
    })
}

impl ServerConfig {
    /// Checks every value that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        parse_bind(&s.bind)?;
        positive("server.workers", s.workers as u64)?;
        if s.workers > MAX_WORKERS {
            return Err(ConfigError::invalid(
                "server.workers",
                format!("must be at most {MAX_WORKERS}"),
            ));
        }
        positive("server.max_page_size", u64::from(s.max_page_size))?;
        s.connections.validate()?;
        if s.admin_token.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "server.admin_token",
                "must not contain whitespace",
            ));
        }
        if s.viewer_token.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "server.viewer_token",
                "must not contain whitespace",
            ));
        }
        if !s.viewer_token.is_empty() && s.viewer_token == s.admin_token {
            return Err(ConfigError::invalid(
                "server.viewer_token",
                "must differ from server.admin_token, or every viewer is an admin",
            ));
        }
        positive("server.session_ttl_secs", s.session_ttl_secs)?;
        if s.session_ttl_secs > MAX_SESSION_TTL_SECS {
            return Err(ConfigError::invalid(
                "server.session_ttl_secs",
                format!("must be at most {MAX_SESSION_TTL_SECS} (a year)"),
            ));
        }
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "server.tls_key",
                    "is needed with server.tls_cert (the certificate's private key, PEM)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "server.tls_cert",
                    "is needed with server.tls_key (the certificate chain, PEM)",
                ));
            }
            _ => {}
        }
        for (key, path) in [
            ("server.tls_cert", &s.tls_cert),
            ("server.tls_key", &s.tls_key),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(
                    key,
                    "is empty; leave it out to serve plain HTTP",
                ));
            }
        }
        Ok(())
    }
}
