//! Brings up `lo` in a new network namespace (where it starts down) with one rtnetlink
//! request, `RTM_NEWLINK` setting `IFF_UP`, and reads the kernel's acknowledgement.

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// `NLMSG_ERROR`: the type of an acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const REQUEST_WITH_ACK: u16 = 0x1 | 0x4;
/// `IFF_UP`.
const IFF_UP: u32 = 0x1;
/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;
/// `sizeof(struct nlmsghdr) + sizeof(struct ifinfomsg)`.
const REQUEST_LEN: usize = HEADER_LEN + 16;
/// The same, as `nlmsg_len` holds it.
const REQUEST_LEN_U32: u32 = 32;
const _: () = assert!(REQUEST_LEN_U32 as usize == REQUEST_LEN);

/// A failure, and whether it was a permission refusal (the namespace grants no privileges).
#[derive(Debug)]
pub(super) struct LoopbackError {
    pub(super) message: String,
    pub(super) denied: bool,
}

impl LoopbackError {
    fn from_errno(doing: &str, e: Errno) -> Self {
        Self {
            message: format!("{doing}: {e}"),
            denied: e == Errno::PERM || e == Errno::ACCESS,
        }
    }
}

/// Sets `lo` up in the calling process's network namespace.
pub(super) fn bring_up() -> Result<(), LoopbackError> {
    let probe = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
        .map_err(|e| LoopbackError::from_errno("opening a socket", e))?;
    let index = rustix::net::netdevice::name_to_index(&probe, "lo")
        .map_err(|e| LoopbackError::from_errno("finding lo", e))?;
    let index = i32::try_from(index).map_err(|_| LoopbackError {
        message: format!("interface index {index} out of range"),
        denied: false,
    })?;
    // NETLINK_ROUTE is protocol 0.
    let nl = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(|e| LoopbackError::from_errno("opening a netlink socket", e))?;
    // An unconnected netlink socket sends to the kernel.
    rustix::net::send(&nl, &set_up_request(index, 1), SendFlags::empty())
        .map_err(|e| LoopbackError::from_errno("sending RTM_NEWLINK", e))?;
    let mut answer = [0u8; 1024];
    let (len, _) = rustix::net::recv(&nl, &mut answer[..], RecvFlags::empty())
        .map_err(|e| LoopbackError::from_errno("reading the acknowledgement", e))?;
    match ack_errno(&answer[..len]) {
        Some(0) => Ok(()),
        Some(errno) => Err(LoopbackError::from_errno(
            "setting lo up",
            Errno::from_raw_os_error(errno),
        )),
        None => Err(LoopbackError {
            message: "the kernel's answer to RTM_NEWLINK is not an acknowledgement".into(),
            denied: false,
        }),
    }
}

/// `struct nlmsghdr` + `struct ifinfomsg` asking to set `IFF_UP` on interface `index`.
fn set_up_request(index: i32, seq: u32) -> [u8; REQUEST_LEN] {
    let mut m = [0u8; REQUEST_LEN];
    m[0..4].copy_from_slice(&REQUEST_LEN_U32.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&REQUEST_WITH_ACK.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel assigns the port.
    // ifinfomsg: family AF_UNSPEC (0), padding, type 0, then index, flags, change mask.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    m[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    m[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    m
}

/// The positive errno of an `NLMSG_ERROR` acknowledgement (0: success); `None` for anything
/// else.
fn ack_errno(answer: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    let error = i32::from_ne_bytes(answer.get(HEADER_LEN..HEADER_LEN + 4)?.try_into().ok()?);
    (kind == NLMSG_ERROR).then_some(-error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = set_up_request(1, 7);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWLINK);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m[16], 0, "AF_UNSPEC");
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(m[24..28].try_into().unwrap()), IFF_UP);
        assert_eq!(u32::from_ne_bytes(m[28..32].try_into().unwrap()), IFF_UP);
    }

    #[test]
    fn acknowledgements() {
        let mut ack = [0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(1));
        ack[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        assert_eq!(ack_errno(&ack), None);
        assert_eq!(ack_errno(&ack[..10]), None);
    }
}
