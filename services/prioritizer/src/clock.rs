//! The prioritizer's clock: the system's, moved forward by tests so that mutes, escalations and
//! Theme Tuesdays can be tested without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time.
    offset: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every copy of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}
