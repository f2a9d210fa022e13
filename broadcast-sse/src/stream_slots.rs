//! Limits on what one client can hold open: streams per client address. A
//! client over the limit gets `429 too_many_streams`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use server::error::ApiError;

/// Seconds a refused client is asked to wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Clone)]
pub struct StreamSlots {
    max_per_address: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open stream of an address; gives the slot back when dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    address: IpAddr,
}

impl StreamSlots {
    /// `max_per_address` 0: no limit.
    pub fn new(max_per_address: usize) -> Self {
        StreamSlots {
            max_per_address,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn acquire(&self, address: Option<IpAddr>) -> Result<Option<StreamSlot>, ApiError> {
        let Some(address) = address.filter(|_| self.max_per_address > 0) else {
            return Ok(None);
        };
        let mut open = self.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "at most {} open streams per client address",
                    self.max_per_address
                ),
            )
            .with_retry_after(RETRY_AFTER_SECS));
        }
        *count += 1;
        Ok(Some(StreamSlot {
            slots: self.clone(),
            address,
        }))
    }

    fn release(&self, address: IpAddr) {
        let mut open = self.lock();
        if let Some(count) = open.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&address);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.release(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_streams_back_as_they_close() {
        let slots = StreamSlots::new(2);
        let here: Option<IpAddr> = "127.0.0.1".parse().ok();
        let first = slots.acquire(here).expect("first");
        let _second = slots.acquire(here).expect("second");
        let refused = slots.acquire(here).err().expect("third is refused");
        assert_eq!(refused.code, "too_many_streams");
        assert!(
            slots.acquire("127.0.0.2".parse().ok()).is_ok(),
            "per address"
        );
        drop(first);
        assert!(
            slots.acquire(here).is_ok(),
            "a closed stream frees its slot"
        );
    }
}
