//! CIDR validation for egress allow-lists.

use std::net::IpAddr;

/// Checks `a.b.c.d/n` or an IPv6 CIDR in the strict form every engine accepts: a network
/// address (no bits set beyond the prefix length: `10.0.0.0/8`, not `10.0.0.1/8`), a prefix
/// length without leading zeros, and no IPv4-mapped IPv6 address (`::ffff:10.0.0.0/104` is
/// written `10.0.0.0/8`). Kubernetes refuses the others in NetworkPolicy `ipBlock`s
/// (`StrictIPCIDRValidation`), and an ambiguous form (`10.0.0.1/8`: the network or one address?)
/// would mean different things to different backends.
///
/// # Errors
/// A human-readable reason, naming the form to write instead where there is one.
pub fn check_cidr(s: &str) -> Result<(), String> {
    let (addr, len_text) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (expected address/prefix)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let len: u8 = len_text
        .parse()
        .ok()
        .filter(|_| len_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{s:?}: prefix length {len_text:?} is not a number"))?;
    if len_text.len() > 1 && len_text.starts_with('0') {
        return Err(format!(
            "{s:?}: the prefix length must not have leading zeros"
        ));
    }
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("{s:?}: prefix length {len} is above {max}"));
    }
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(format!(
            "{s:?} is an IPv4-mapped IPv6 range: write it as IPv4 ({v4}/{})",
            len.saturating_sub(96)
        ));
    }
    let network = network_address(addr, len);
    if network != addr {
        return Err(format!(
            "{s:?} has bits set beyond the prefix length: write the network {network}/{len}, \
             or {addr}/{max} for one address"
        ));
    }
    Ok(())
}

/// `addr` with the bits beyond `len` cleared.
fn network_address(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_cidr;
    use rstest::rstest;

    #[rstest]
    #[case("10.0.0.0/8")]
    #[case("0.0.0.0/0")]
    #[case("203.0.113.7/32")]
    #[case("::/0")]
    #[case("fd00:ec2::254/128")]
    #[case("2001:db8::/32")]
    fn network_forms_pass(#[case] cidr: &str) {
        assert_eq!(check_cidr(cidr), Ok(()));
    }

    #[rstest]
    #[case("10.0.0.0", "is not a CIDR")]
    #[case("10.0.0/8", "is not an IP address")]
    #[case("10.0.0.0/x", "is not a number")]
    #[case("10.0.0.0/+8", "is not a number")]
    #[case("10.0.0.0/08", "leading zeros")]
    #[case("10.0.0.0/33", "prefix length 33 is above 32")]
    #[case("10.0.0.1/8", "write the network 10.0.0.0/8, or 10.0.0.1/32")]
    #[case("2001:db8::1/32", "write the network 2001:db8::/32")]
    #[case("::ffff:10.0.0.0/104", "write it as IPv4 (10.0.0.0/8)")]
    fn ambiguous_forms_are_refused_with_the_fix(#[case] cidr: &str, #[case] want: &str) {
        let error = check_cidr(cidr).unwrap_err();
        assert!(error.contains(want), "{cidr}: {error}");
    }
}
