//! CIDR validation for egress allow-lists.

use std::net::IpAddr;

/// Checks `a.b.c.d/n` or an IPv6 CIDR.
///
/// # Errors
/// A human-readable reason.
pub fn check_cidr(s: &str) -> Result<(), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (expected address/prefix)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{s:?}: prefix length {len:?} is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("{s:?}: prefix length {len} is above {max}"));
    }
    Ok(())
}
