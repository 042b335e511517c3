//! The system calls: the one place that talks to the kernel below what std, tokio and
//! socket2 offer (epoll, `recvmmsg`, the socket error queue, resource limits, socket
//! options, memory hints, random numbers). Everything above uses these safe wrappers.

pub mod epoll;
pub mod errqueue;
pub mod fdlimit;
pub mod localroute;
pub mod mem;
pub mod mmsg;
pub mod pktinfo;
pub mod random;
pub mod socket;
pub mod timer;
pub mod wake;
