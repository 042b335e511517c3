//! One socket per flow: the open-file limit bounds the flow table. The soft limit is
//! raised to the hard one at start (as nginx's `worker_rlimit_nofile` would), and a
//! table larger than what fits is reported once, so a full fd table is not a surprise
//! under load (it shows as `bind_failed` drops).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything that is not a relay socket and not counted by the
/// caller (public, sync, netlink, epoll sets, logs, tokio: about 20 at rest), with
/// room for files read on a reload.
const RESERVE: u64 = 64;

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the resulting soft limit.
fn raise() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Ok(hard);
    }
    Ok(soft)
}

/// Relay sockets that fit under an open-file limit of `limit` when `others`
/// descriptors (admin connections, probe sockets: one per backend) must stay free.
fn flows_that_fit(limit: u64, others: u64) -> u64 {
    limit.saturating_sub(RESERVE + others)
}

/// Raises the limit and warns when `max_flows` relay sockets cannot all be opened
/// with `others` descriptors left for the rest. Returns how many relay sockets fit
/// (`None`: the limit could not be read, nothing is held back).
pub fn prepare(max_flows: usize, others: u64) -> Option<u64> {
    match raise() {
        Ok(limit) => {
            let fit = flows_that_fit(limit, others);
            if (max_flows as u64) > fit {
                tracing::warn!(
                    max_flows,
                    open_files_limit = limit,
                    flows_that_fit = fit,
                    "limits.max_flows needs more open files than allowed: new flows past the \
                     limit fail with bind_failed; raise LimitNOFILE (systemd) or lower max_flows"
                );
            }
            Some(fit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit() {
        let soft = raise().unwrap();
        let (cur, max) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, max);
        assert_eq!(cur, max);
        assert_eq!(flows_that_fit(20_000, 66), 19_870);
        assert_eq!(flows_that_fit(100, 66), 0);
    }
}
