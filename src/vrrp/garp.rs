//! Gratuitous ARP: an ARP request with sender = target = VIP, broadcast from the
//! interface's MAC, so switches and neighbours move the VIP to us at once.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike, sendto, socket,
};

pub const FRAME_LEN: usize = 42;

/// The Ethernet frame of a gratuitous ARP request for `vip` from `mac`.
pub fn frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]); // broadcast
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    // Target MAC stays zero (RFC 5227 announcement form); target IP = the VIP.
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An AF_PACKET socket to send raw frames on one interface.
pub struct GarpSocket {
    fd: OwnedFd,
    dest: LinkAddr,
}

impl GarpSocket {
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let ll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: 0x0806u16.to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
        };
        // nix reads link-layer addresses (recvfrom, getifaddrs) but has no safe
        // constructor for one to send to.
        // SAFETY: `ll` is a complete, initialised sockaddr_ll and the length given is
        // its size; from_raw copies it.
        let dest = unsafe {
            LinkAddr::from_raw(
                (&raw const ll).cast(),
                Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
            )
        }
        .ok_or_else(|| io::Error::other("sockaddr_ll rejected"))?;
        Ok(GarpSocket { fd, dest })
    }

    /// Broadcasts one gratuitous ARP for `vip` from `mac`.
    pub fn send(&self, mac: [u8; 6], vip: Ipv4Addr) -> io::Result<()> {
        sendto(
            self.fd.as_raw_fd(),
            &frame(mac, vip),
            &self.dest,
            MsgFlags::empty(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x51];
        let f = frame(mac, Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &[203, 0, 113, 10], "sender IP = VIP");
        assert_eq!(&f[38..42], &[203, 0, 113, 10], "target IP = VIP");
    }
}
