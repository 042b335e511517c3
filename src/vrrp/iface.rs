//! What the speaker needs to know about an interface: index, MAC, primary IPv4.

use std::ffi::{CStr, CString};
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
    let c = CString::new(name).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named `{name}`"),
        ))
    } else {
        Ok(i)
    }
}

/// Looks the interface up with getifaddrs(3).
pub fn lookup(name: &str, exclude: &[Ipv4Addr]) -> io::Result<Iface> {
    let index = index(name)?;
    let mut mac = None;
    let mut primary = None;
    // SAFETY: getifaddrs allocates a list we walk read-only and free once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || CStr::from_ptr(ifa.ifa_name).to_bytes() != name.as_bytes()
            {
                continue;
            }
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_PACKET => {
                    let ll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    if ll.sll_halen == 6 {
                        let mut m = [0u8; 6];
                        m.copy_from_slice(&ll.sll_addr[..6]);
                        mac = Some(m);
                    }
                }
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if primary.is_none() && !exclude.contains(&ip) {
                        primary = Some(ip);
                    }
                }
                _ => {}
            }
        }
        libc::freeifaddrs(head);
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
