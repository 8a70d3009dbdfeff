//! The admin API as seen from the command line: how `vigil optimize` and
//! `vigil backup` reach a running server that keeps the database to itself
//! (`storage.wal_index = "heap"`), so that they work the same whether the
//! server runs or not. A server on HTTPS is reached over HTTPS, trusting
//! exactly its configured certificate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why the running server could not do it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("server.bind `{0}` is not an address:port")]
    Bind(String),
    #[error("server.tls_cert: {0}")]
    Certificate(String),
    #[error("cannot reach the running server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the running server at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where to reach a server listening on `bind`: an unspecified address
/// (every interface) is reached on loopback.
pub fn local_url(bind: &str, scheme: &str, path_and_query: &str) -> Result<String, RemoteError> {
    let addr: SocketAddr = bind.parse().map_err(|_| RemoteError::Bind(bind.into()))?;
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "{scheme}://{}{path_and_query}",
        SocketAddr::new(ip, addr.port())
    ))
}

/// `POST`s to an admin endpoint of the server `server` configures (with
/// its admin token as the bearer token when there is one) and returns its
/// JSON answer. Must run inside an actix `System`.
pub async fn post_admin(
    server: &super::config::ServerConfig,
    path_and_query: &str,
    timeout: Duration,
) -> Result<serde_json::Value, RemoteError> {
    let url = local_url(&server.bind, server.scheme(), path_and_query)?;
    let client = match &server.tls_cert {
        Some(cert) => {
            let tls = crate::platform::tls::pinned_client_config(cert)
                .map_err(RemoteError::Certificate)?;
            awc::Client::builder()
                .timeout(timeout)
                .connector(awc::Connector::new().rustls_0_23(tls))
                .finish()
        }
        None => awc::Client::builder().timeout(timeout).finish(),
    };
    let mut req = client.post(&url);
    if !server.admin_token.is_empty() {
        req = req.bearer_auth(&server.admin_token);
    }
    let unreachable = |reason: String| RemoteError::Unreachable {
        url: url.clone(),
        reason,
    };
    let mut res = req.send().await.map_err(|e| unreachable(e.to_string()))?;
    let body = res
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = res.status().as_u16();
    if !res.status().is_success() {
        return Err(RemoteError::Refused {
            url,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| unreachable(format!("not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_is_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8080", "http", "/x").unwrap(),
            "http://127.0.0.1:8080/x"
        );
        assert_eq!(
            local_url("[::]:80", "http", "/x").unwrap(),
            "http://[::1]:80/x"
        );
        assert_eq!(
            local_url("192.0.2.1:9", "http", "/").unwrap(),
            "http://192.0.2.1:9/"
        );
        assert_eq!(
            local_url("0.0.0.0:8443", "https", "/x").unwrap(),
            "https://127.0.0.1:8443/x"
        );
        assert!(local_url("nowhere", "http", "/").is_err());
    }
}
