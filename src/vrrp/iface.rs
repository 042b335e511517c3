//! What the speaker needs to know about an interface: index, MAC, primary IPv4.

use std::io;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// The first IPv4 address that is not one of `exclude` (the VIPs): the source of
    /// our adverts and the tie-break between equal priorities.
    pub primary: Ipv4Addr,
}

pub fn index(name: &str) -> io::Result<u32> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) if i != 0 => Ok(i),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named `{name}`"),
        )),
    }
}

/// Looks the interface up with getifaddrs(3).
pub fn lookup(name: &str, exclude: &[Ipv4Addr]) -> io::Result<Iface> {
    let index = index(name)?;
    let mut mac = None;
    let mut primary = None;
    for ifa in nix::ifaddrs::getifaddrs()? {
        if ifa.interface_name != name {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        if let Some(ll) = addr.as_link_addr() {
            if ll.halen() == 6 {
                mac = ll.addr();
            }
        } else if let Some(sin) = addr.as_sockaddr_in() {
            let ip = sin.ip();
            if primary.is_none() && !exclude.contains(&ip) {
                primary = Some(ip);
            }
        }
    }
    let primary = primary.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface `{name}` has no IPv4 address of its own (VIPs do not count)"),
        )
    })?;
    Ok(Iface {
        name: name.to_string(),
        index,
        mac: mac.unwrap_or([0; 6]),
        primary,
    })
}
