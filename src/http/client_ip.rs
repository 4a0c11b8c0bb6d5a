//! Who the client is, as every per-client limit sees it.
//!
//! Behind a reverse proxy every connection comes from the proxy; only the proxy knows the
//! client, and says so in `X-Forwarded-For`. That header is believed only from the proxies
//! named in `TRUSTED_PROXIES`: read from the right, the first address that is not a trusted
//! proxy is the client (anything left of it was written by the client and proves nothing).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use super::AppState;

/// The client's address, set on every request by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client behind `peer`, given the `X-Forwarded-For` values in the order they came.
pub fn client_of<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage: the nearest address known stands for the client.
            None => break,
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1` or `[2001:db8::1]:567`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The address the connection came from (set by the server loop), before any proxy header.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Middleware: records the [`ClientIp`] of each request.
pub async fn resolve(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = peer(req.extensions()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let trusted = &app.config.http.trusted_proxies;
    let ip = if trusted.is_empty() {
        peer
    } else {
        let values = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        client_of(peer, values, trusted)
    };
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

impl ClientIp {
    /// The client of a request that went through [`resolve`].
    pub fn of(extensions: &axum::http::Extensions) -> IpAddr {
        extensions
            .get::<ClientIp>()
            .map(|c| c.0)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_of(ip("203.0.113.9"), ["1.1.1.1"].into_iter(), &trusted);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client forged the leftmost entry; the proxies appended the rest.
        let got = client_of(
            ip("10.0.0.2"),
            ["6.6.6.6, 198.51.100.7", "192.168.1.1"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn ports_brackets_and_garbage() {
        let trusted = nets(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_of(peer, ["[2001:db8::1]:443"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_of(peer, ["198.51.100.7:5555"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(client_of(peer, ["nonsense"].into_iter(), &trusted), peer);
        assert_eq!(client_of(peer, std::iter::empty(), &trusted), peer);
    }
}
