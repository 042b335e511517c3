//! The stateless 503 of a [`ClientAction::Reject503`](super::ClientAction::Reject503):
//! written into a buffer the caller owns (a flood while every backend is down
//! allocates nothing), never larger than its request, within `reply_503_rate`.

use std::time::Instant;

use super::Router;
use crate::relay::stats::Suppressed;
use crate::sip::response::{Unwritable, write_response};

impl Router {
    /// Writes the 503 for `request` into `buf` and takes its token from the
    /// `reply_503_rate` budget: the bytes to send, or `None` (counted as suppressed
    /// when it would be larger than the request or no token is left). `buf` should
    /// hold twice the largest datagram: a header is written before its trailing
    /// whitespace is trimmed, so a reply that ends up no larger than its request
    /// always fits.
    pub fn write_503<'b>(
        &mut self,
        now: Instant,
        request: &[u8],
        retry_after: u32,
        buf: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        let written = write_response(
            request,
            503,
            "Service Unavailable",
            Some("sipfront-503"),
            &[("Retry-After", retry_after)],
            None,
            buf,
        );
        match written {
            // Never an amplifier: a reply larger than the request is not sent, and
            // takes no token.
            Ok(n) if n > request.len() => self.counters.suppress(Suppressed::LargerThanRequest),
            Ok(n) if self.reply_budget.take(now) => {
                self.counters.replies_503 += 1;
                return Some(&buf[..n]);
            }
            Ok(_) => self.counters.suppress(Suppressed::Rate),
            Err(Unwritable::TooLarge) => self.counters.suppress(Suppressed::TooLarge),
            // Not a request line to answer (the router refused it already).
            Err(Unwritable::NoStartLine) => {}
        }
        None
    }
}
