//! API requests refused, by reason: `sipfront_admin_refused_total{reason}` and one log
//! line per [`LOG_EVERY`] with the counts since the last (a token guessed, a page
//! that tries the API, would otherwise leave no trace).

use std::sync::Mutex;
use std::time::Instant;

use super::conn::LOG_EVERY;
use crate::throttle::ReasonTally;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or a wrong bearer token.
    Token,
    /// 403: without a token, a Host that is not a loopback name.
    Host,
    /// 403: without a token, a request a browser sent for a web page.
    WebPage,
    /// 403: without a token, a changing call.
    ReadOnly,
    /// 429: `admin.max_captures` captures run already.
    CapturesBusy,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Token,
        Refusal::Host,
        Refusal::WebPage,
        Refusal::ReadOnly,
        Refusal::CapturesBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Host => "host",
            Refusal::WebPage => "web_page",
            Refusal::ReadOnly => "read_only",
            Refusal::CapturesBusy => "captures_busy",
        }
    }
}

pub struct Refusals {
    counters: [metrics::Counter; Refusal::ALL.len()],
    /// Refusals since the last log line.
    pending: Mutex<ReasonTally<{ Refusal::ALL.len() }>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            counters: Refusal::ALL
                .map(|r| metrics::counter!("sipfront_admin_refused_total", "reason" => r.as_str())),
            pending: Mutex::new(ReasonTally::new(
                Refusal::ALL.map(Refusal::as_str),
                LOG_EVERY,
            )),
        }
    }
}

impl Refusals {
    pub fn note(&self, why: Refusal) {
        let i = why as usize;
        self.counters[i].increment(1);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        if let Some(counts) = p.note(i, Instant::now()) {
            tracing::warn!(
                refused = %counts,
                "admin API requests refused; next report in {}s at the earliest",
                LOG_EVERY.as_secs()
            );
        }
    }
}
