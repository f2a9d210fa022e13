//! POST rate limits: a token bucket per publisher (the token's name when tokens
//! are checked, else the client address; for signals, the author), kept by
//! governor's keyed limiter
//! (GCRA, state sharded over a concurrent map, so concurrent POSTs do not
//! queue on one lock). Over the limit is `429` with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use server::error::ApiError;

/// Senders tracked before the limiter forgets those whose bucket is full again.
const MAX_TRACKED: usize = 100_000;
/// The sweep past [`MAX_TRACKED`] runs at most this often, so a limiter full of
/// active senders does not sweep on every POST.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Who a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    Name(String),
    Address(IpAddr),
    Unknown,
}

pub struct RateLimiter {
    /// `None`: no limit.
    limiter: Option<DefaultKeyedRateLimiter<Sender>>,
    per_sec: u32,
    /// What is limited, as the `429` names it (`messages`, `signals`).
    what: &'static str,
    /// When the last sweep ran. A std lock, only tried, never waited for.
    swept: Mutex<Instant>,
}

impl RateLimiter {
    /// `per_sec` 0 switches limiting off.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        RateLimiter {
            limiter,
            per_sec,
            what: "messages",
            swept: Mutex::new(Instant::now()),
        }
    }

    /// The same limiter, naming what it limits in its `429` (`messages` by
    /// default).
    pub fn limiting(mut self, what: &'static str) -> Self {
        self.what = what;
        self
    }

    /// Takes one POST from `sender`'s bucket, or says when to try again.
    pub fn check(&self, sender: Sender) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.sweep_if_large(limiter);
        let Err(not_until) = limiter.check_key(&sender) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(limiter.clock().now());
        let wait = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many {}: at most {} per second",
                self.what, self.per_sec
            ),
        )
        .with_retry_after(wait.max(1)))
    }

    /// Senders the limiter tracks now.
    pub fn tracked(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, DefaultKeyedRateLimiter::len)
    }

    /// Past [`MAX_TRACKED`] senders, forgets those whose bucket is full again
    /// (at most once per [`SWEEP_EVERY`], by whichever POST gets there first).
    fn sweep_if_large(&self, limiter: &DefaultKeyedRateLimiter<Sender>) {
        if limiter.len() < MAX_TRACKED {
            return;
        }
        let Ok(mut swept) = self.swept.try_lock() else {
            return;
        };
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
        limiter.retain_recent();
        limiter.shrink_to_fit();
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
    fn senders_back_to_a_full_bucket_are_forgotten_past_the_bound() {
        let limiter = RateLimiter::new(1_000, 1);
        for n in 0..MAX_TRACKED as u32 {
            let sender = Sender::Address(IpAddr::from(n.to_be_bytes()));
            assert!(limiter.check(sender).is_ok());
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        std::thread::sleep(SWEEP_EVERY + Duration::from_millis(10));
        assert!(limiter.check(Sender::Unknown).is_ok());
        assert!(
            limiter.tracked() < 10,
            "after a sweep only recent senders are kept: {}",
            limiter.tracked()
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
