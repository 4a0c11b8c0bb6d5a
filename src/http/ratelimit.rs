//! Per-client rate limiting of the public JSON API: a token bucket per client address (see
//! [`super::client_ip`]), in memory, per instance. The layer sits on the API's routes, so an
//! old path that aliases an API route shares its bucket. Webhooks are not limited here: they
//! are signed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::ClientIp;

/// Clients tracked at most; past this, idle buckets are forgotten first.
const MAX_CLIENTS: usize = 50_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets: `per_minute` requests a minute, bursts up to the same number.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_minute: u32,
    /// Most tokens a client can hold (its burst).
    burst: u32,
    buckets: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter::with_burst(per_minute, per_minute)
    }

    /// A bucket of `burst` tokens refilled at `per_minute`.
    pub fn with_burst(burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            burst,
            buckets: Arc::default(),
        }
    }

    /// Seconds until `ip` has a token again, without taking one; `None` if it has one now.
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let rate = self.per_minute as f64 / 60.0;
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.get(&ip)?;
        let tokens = (b.tokens + (now - b.last).as_secs_f64() * rate).min(self.burst as f64);
        (tokens < 1.0).then(|| ((1.0 - tokens) / rate).ceil().max(1.0) as u64)
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let capacity = self.burst as f64;
        let rate = self.per_minute as f64 / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            // Forget clients whose buckets have refilled: they are idle.
            buckets.retain(|_, b| (now - b.last).as_secs_f64() * rate < capacity);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        b.tokens = (b.tokens + (now - b.last).as_secs_f64() * rate).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

pub async fn limit(State(limiter): State<RateLimiter>, req: Request, next: Next) -> Response {
    let ip = ClientIp::of(req.extensions());
    if let Err(wait) = limiter.check(ip, Instant::now()) {
        return too_many(wait, "too many requests; try again shortly");
    }
    next.run(req).await
}

/// 429 with `Retry-After: wait` (seconds) and a short reason.
pub fn too_many(wait: u64, message: &'static str) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_over_time_and_are_per_client() {
        let l = RateLimiter::new(3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t = Instant::now();
        assert!(l.check(a, t).is_ok());
        assert!(l.check(a, t).is_ok());
        assert!(l.check(a, t).is_ok());
        let wait = l.check(a, t).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(l.check(b, t).is_ok(), "another client has its own bucket");
        assert!(
            l.check(a, t + Duration::from_secs(20)).is_ok(),
            "one token back after 20 s"
        );
        assert!(l.check(a, t + Duration::from_secs(20)).is_err());
    }
}
