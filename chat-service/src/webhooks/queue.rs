//! A bounded queue of events for one webhook, for events that come from no
//! log (presence): when it is full the oldest event is dropped, so memory
//! stays bounded however long the app is down, and what it gets when it is
//! back is the most recent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::event::Event;

/// Events waiting for one webhook, oldest first.
pub(super) struct EventQueue {
    /// A std lock: it is held only to push or pop one event, never across
    /// an `.await`.
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
    /// Queued plus the one being delivered, for the backlog.
    pending: AtomicU64,
    /// Wakes the delivery task; a push while it is busy leaves a permit.
    ready: Notify,
}

impl EventQueue {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        EventQueue {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            pending: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Adds `event` at the end; returns the event dropped to make room, if
    /// the queue was full.
    pub fn push(&self, event: Event) -> Option<Event> {
        let dropped = {
            let mut events = self.lock();
            let dropped = if events.len() >= self.capacity {
                events.pop_front()
            } else {
                None
            };
            events.push_back(event);
            dropped
        };
        if dropped.is_none() {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_one();
        dropped
    }

    /// The oldest event, if any; it stays pending until [`Self::done`].
    pub fn try_pop(&self) -> Option<Event> {
        self.lock().pop_front()
    }

    /// Waits for the oldest event.
    pub async fn pop(&self) -> Event {
        loop {
            if let Some(event) = self.try_pop() {
                return event;
            }
            self.ready.notified().await;
        }
    }

    /// The event popped last was delivered.
    pub fn done(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Events queued or being delivered.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// A panic while holding it leaves a valid `VecDeque`.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Event>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::event::EventType;

    fn event(n: u8) -> Event {
        Event {
            event_type: EventType::PresenceJoined,
            body: vec![n],
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_keeps_the_order() {
        let queue = EventQueue::new(3);
        for n in 1..=3 {
            assert!(queue.push(event(n)).is_none(), "room for {n}");
        }
        let dropped = queue.push(event(4)).expect("full: one dropped");
        assert_eq!(dropped.body, [1], "the oldest goes");
        assert_eq!(queue.push(event(5)).map(|e| e.body), Some(vec![2]));
        assert_eq!(queue.pending(), 3, "a drop does not grow the backlog");
        let left: Vec<Vec<u8>> = std::iter::from_fn(|| queue.try_pop())
            .map(|e| e.body)
            .collect();
        assert_eq!(left, [[3], [4], [5]]);
    }

    #[test]
    fn pending_counts_until_delivered() {
        let queue = EventQueue::new(10);
        queue.push(event(1));
        queue.push(event(2));
        let _first = queue.try_pop();
        assert_eq!(queue.pending(), 2, "the one being delivered counts");
        queue.done();
        assert_eq!(queue.pending(), 1);
        queue.done();
        queue.done();
        assert_eq!(queue.pending(), 0, "never below zero");
    }

    #[tokio::test]
    async fn a_waiting_pop_wakes_on_a_push() {
        let queue = std::sync::Arc::new(EventQueue::new(4));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await.body }
        });
        tokio::task::yield_now().await;
        queue.push(event(9));
        let body = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(body, [9]);
    }
}
