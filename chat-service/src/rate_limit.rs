//! POST rate limits: a token bucket per publisher (the token's name when tokens
//! are checked, else the client address). Over the limit is `429` with
//! `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::http::StatusCode;
use protocol::ApiError;

/// Buckets kept before idle ones (full again) are dropped.
const MAX_TRACKED: usize = 100_000;

/// Who a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    Name(String),
    Address(IpAddr),
    Unknown,
}

pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<Sender, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_sec` 0 switches limiting off.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one POST from `sender`'s bucket, or says when to try again.
    pub fn check(&self, sender: Sender) -> Result<(), ApiError> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(sender).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.per_sec).ceil().max(1.0) as u64;
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many messages: at most {} per second", self.per_sec),
        )
        .with_retry_after(wait))
    }

    fn forget_full(&self, buckets: &mut HashMap<Sender, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_sec;
            bucket.tokens + refill < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_next_is_told_when_to_retry() {
        let limiter = RateLimiter::new(1, 3);
        let ann = || Sender::Name("ann".into());
        for _ in 0..3 {
            assert!(limiter.check(ann()).is_ok());
        }
        let refused = limiter.check(ann()).expect_err("over the limit");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            limiter.check(Sender::Name("bob".into())).is_ok(),
            "per sender"
        );
    }

    #[test]
    fn zero_per_second_is_no_limit() {
        let limiter = RateLimiter::new(0, 1);
        for _ in 0..100 {
            assert!(limiter.check(Sender::Unknown).is_ok());
        }
    }
}
