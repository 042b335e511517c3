//! Adding and removing the virtual addresses through rtnetlink (never by running
//! `ip`): idempotent, so a restart or a repeated event does no harm.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::Handle;

use super::iface;
use crate::config::Vip;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Vips {
    handle: Handle,
    default_dev: String,
}

/// What the VIP worker is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipOp {
    /// Add (or renew the lifetime of) every VIP.
    Add,
    Remove,
}

/// The VIP worker's inbox: only the latest request counts (`send_replace`; each send
/// wakes the worker, so a renewal after an add is still news). Adverts that flip the
/// machine between master and backup as fast as they arrive therefore cost at most
/// one netlink round per VIP at a time, never a queue that grows with them.
pub type VipRequests = tokio::sync::watch::Sender<VipOp>;

/// One VIP change waits this long for the kernel's answer at most: the VIPs live 3 s
/// and are renewed every second, one after another, so a lost answer must not hold
/// the rest of the list past their lifetime.
pub const NETLINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The op of the worker's last round done, announced after each round (its failures
/// are logged; a takeover's ARP waits for the add's round, done either way).
pub type VipDone = tokio::sync::watch::Receiver<VipOp>;

/// Runs VIP changes off the advert loop: a netlink round trip on a busy host can
/// take longer than three 10 ms advert intervals, and an advert that waits for it
/// makes the backup take over. The latest request wins, so a removal asked after an
/// add (mastership lost) always does; the last request is run before the worker
/// ends (the sender dropped). Failures: one line per 10 s, with the count between.
pub async fn worker(
    vips: Vips,
    list: Vec<Vip>,
    lifetime_secs: u32,
    mut ops: tokio::sync::watch::Receiver<VipOp>,
    done: tokio::sync::watch::Sender<VipOp>,
) {
    let mut failed = crate::throttle::LogThrottle::new(std::time::Duration::from_secs(10));
    while ops.changed().await.is_ok() {
        let op = *ops.borrow_and_update();
        for v in &list {
            // A netlink answer that never comes must not stall every later change
            // (renewals, removal) and the takeover's ARP behind it.
            let change = async {
                match op {
                    VipOp::Add => vips.add(v, lifetime_secs).await,
                    VipOp::Remove => vips.remove(v).await,
                }
            };
            let r = match tokio::time::timeout(NETLINK_TIMEOUT, change).await {
                Ok(r) => r,
                Err(_) => Err(VipError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no netlink answer within {NETLINK_TIMEOUT:?}"),
                ))),
            };
            if let Err(e) = r
                && let Some(more) = failed.allow(std::time::Instant::now())
            {
                tracing::error!(vip = %v, op = ?op, error = %e, failed_since_last_line = more, "VIP change failed");
            }
        }
        // Announced even when the op is the last one's again (a new round).
        done.send_replace(op);
    }
}

impl Vips {
    /// Opens a netlink connection; its driver runs as a tokio task.
    pub fn open(default_dev: &str) -> Result<Vips, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Vips {
            handle,
            default_dev: default_dev.to_string(),
        })
    }

    fn dev<'a>(&'a self, v: &'a Vip) -> &'a str {
        v.dev.as_deref().unwrap_or(&self.default_dev)
    }

    /// Adds (or refreshes) `v` with a valid lifetime of `lifetime_secs`: the master
    /// renews it every second, so if the process dies the kernel drops the address
    /// by itself and the dead host stops answering ARP for it.
    pub async fn add(&self, v: &Vip, lifetime_secs: u32) -> Result<(), VipError> {
        use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
        let index = iface::index(self.dev(v))?;
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V4(v.addr), v.prefix)
            .replace();
        let mut ci = CacheInfo::default();
        ci.ifa_preferred = lifetime_secs;
        ci.ifa_valid = lifetime_secs;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(ci));
        req.execute().await?;
        Ok(())
    }

    /// The netlink messages for `v` on its interface (zero or one).
    fn find(
        &self,
        v: &Vip,
    ) -> Result<
        impl futures_util::Stream<
            Item = Result<rtnetlink::packet_route::address::AddressMessage, rtnetlink::Error>,
        > + use<>,
        VipError,
    > {
        let index = iface::index(self.dev(v))?;
        Ok(self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(v.addr))
            .execute())
    }

    /// Removes `v` if present.
    pub async fn remove(&self, v: &Vip) -> Result<(), VipError> {
        let mut found = std::pin::pin!(self.find(v)?);
        while let Some(msg) = found.try_next().await? {
            self.handle.address().del(msg).execute().await?;
        }
        Ok(())
    }
}
