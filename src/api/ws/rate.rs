//! The rate of messages one socket may send: a token bucket of `client_messages_burst` tokens
//! refilled at `client_messages_per_s`. A message without a token is refused (the client gets
//! an `error` message and the message is dropped); a client that has as many messages refused
//! as the burst before its bucket fills up again is not slowing down, and is closed with 1008.
//!
//! A hand-written bucket rather than `governor`: each bucket belongs to one socket's reader
//! task, so it needs no atomics, no shared clock and no keyed store, and herald also needs the
//! count of refusals since the client last calmed down, which `governor` does not keep. It is
//! a few lines of arithmetic on `Instant`s, tested below with a clock the test moves.

use std::time::Instant;

/// What to do with a client's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Over the rate: drop it and tell the client.
    Refuse,
    /// Over the rate for as many messages as the burst: close the socket (1008).
    Close,
}

pub struct MessageRate {
    /// Tokens per second; 0 turns the limit off.
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    /// Messages refused since the bucket was last full.
    refused: u32,
}

impl MessageRate {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            refilled_at: now,
            refused: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.per_second == 0.0 {
            return Verdict::Admit;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= self.burst {
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Admit;
        }
        self.refused = self.refused.saturating_add(1);
        if f64::from(self.refused) >= self.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    /// The limit, for the client's error message.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let start = Instant::now();
        let mut rate = MessageRate::new(10, 20, start);
        for _ in 0..20 {
            assert_eq!(rate.check(start), Verdict::Admit);
        }
        assert_eq!(rate.check(start), Verdict::Refuse);
        // 100 ms later: one token back.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.check(later), Verdict::Admit);
        assert_eq!(rate.check(later), Verdict::Refuse);
    }

    #[test]
    fn steady_sending_at_the_rate_is_never_refused() {
        let start = Instant::now();
        let mut rate = MessageRate::new(50, 1, start);
        for n in 0..1000u64 {
            let at = start + Duration::from_millis(20 * n);
            assert_eq!(rate.check(at), Verdict::Admit, "message {n}");
        }
    }

    #[test]
    fn persistent_excess_closes_and_calming_down_forgives() {
        let start = Instant::now();
        let mut rate = MessageRate::new(10, 5, start);
        for _ in 0..5 {
            rate.check(start);
        }
        for _ in 0..4 {
            assert_eq!(rate.check(start), Verdict::Refuse);
        }
        // Quiet long enough to fill the bucket: the refusals are forgotten.
        let calm = start + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(rate.check(calm), Verdict::Admit);
        }
        for _ in 0..4 {
            assert_eq!(rate.check(calm), Verdict::Refuse);
        }
        assert_eq!(rate.check(calm), Verdict::Close);
    }

    #[test]
    fn zero_is_no_limit() {
        let start = Instant::now();
        let mut rate = MessageRate::new(0, 0, start);
        for _ in 0..10_000 {
            assert_eq!(rate.check(start), Verdict::Admit);
        }
    }
}
