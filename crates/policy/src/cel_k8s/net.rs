//! The `ip` and `cidr` libraries, on `std::net`: `ip(s)`, `isIP(s)`,
//! `ip.isCanonical(s)`, and on an address `family`, `isUnspecified`,
//! `isLoopback`, `isLinkLocalMulticast`, `isLinkLocalUnicast`,
//! `isGlobalUnicast`; `cidr(s)`, `isCIDR(s)`, and on a network `ip`,
//! `masked`, `prefixLength`, `containsIP`, `containsCIDR`; `string(x)` of
//! either.
//!
//! As in the API server, an IPv4 address written inside IPv6
//! (`::ffff:1.2.3.4`) and a zone (`fe80::1%eth0`) are refused, and so are
//! leading zeros in IPv4 octets (std refuses those itself).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cel::common::types::{CelInt, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError};

use super::{boolean, opaque_type, owned, read, string, take, text, wrap};

const IP: &str = "net.IP";
const CIDR: &str = "net.CIDR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeIp(IpAddr);

/// A network as written: the address keeps its host bits (`ip()` returns
/// it), `masked()` clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeCidr {
    addr: IpAddr,
    bits: u8,
}

impl Opaque for KubeIp {
    fn runtime_type_name(&self) -> &str {
        IP
    }
}

impl Opaque for KubeCidr {
    fn runtime_type_name(&self) -> &str {
        CIDR
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("IPv4-mapped IPv6 address {0:?} is not allowed")]
    Mapped(String),
    #[error("{0:?} is not a CIDR (an IP address, '/' and a prefix length)")]
    NotACidr(String),
}

impl KubeIp {
    pub fn parse(text: &str) -> Result<KubeIp, NetError> {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| NetError::NotAnAddress(text.to_string()))?;
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(NetError::Mapped(text.to_string()));
        }
        Ok(KubeIp(addr))
    }

    fn is_link_local_multicast(self) -> bool {
        match self.0 {
            IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
            // ff02::/16, whatever the flags nibble.
            IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
        }
    }

    fn is_link_local_unicast(self) -> bool {
        match self.0 {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        }
    }

    /// Not unspecified, loopback, multicast, link-local or (IPv4) the
    /// broadcast address: private ranges count as global.
    fn is_global_unicast(self) -> bool {
        let broadcast = self.0 == IpAddr::V4(Ipv4Addr::BROADCAST);
        !(broadcast
            || self.0.is_unspecified()
            || self.0.is_loopback()
            || self.0.is_multicast()
            || self.is_link_local_unicast())
    }
}

impl KubeCidr {
    pub fn parse(text: &str) -> Result<KubeCidr, NetError> {
        let invalid = || NetError::NotACidr(text.to_string());
        let (addr, bits) = text.split_once('/').ok_or_else(invalid)?;
        let addr = KubeIp::parse(addr)?.0;
        // Decimal, without a sign or leading zeros, at most the family's
        // address length.
        let well_formed = !bits.is_empty()
            && bits.bytes().all(|b| b.is_ascii_digit())
            && (bits == "0" || !bits.starts_with('0'));
        let bits: u8 = if well_formed { bits.parse().ok() } else { None }.ok_or_else(invalid)?;
        if bits > max_bits(addr) {
            return Err(invalid());
        }
        Ok(KubeCidr { addr, bits })
    }

    fn masked(self) -> KubeCidr {
        let addr = match self.addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        KubeCidr { addr, ..self }
    }

    fn contains_ip(self, ip: IpAddr) -> bool {
        let same_family = ip.is_ipv4() == self.addr.is_ipv4();
        same_family
            && KubeCidr {
                addr: ip,
                bits: self.bits,
            }
            .masked()
            .addr
                == self.masked().addr
    }

    fn contains_cidr(self, other: KubeCidr) -> bool {
        other.bits >= self.bits && self.contains_ip(other.addr)
    }
}

fn max_bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl std::fmt::Display for KubeCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let ip = || opaque_type(IP);
    let cidr = || opaque_type(CIDR);
    env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], parse_ip)?;
    env.add_overload("isIP", "is_ip", vec![STRING_TYPE], is_ip)?;
    env.add_overload(
        "ip.isCanonical",
        "ip_is_canonical",
        vec![STRING_TYPE],
        is_canonical,
    )?;
    env.add_overload("string", "ip_to_string", vec![ip()], ip_to_string)?;
    env.add_member_overload("family", "ip_family", ip(), vec![], family)?;
    let predicates: [(&str, &str, cel::common::functions::Function); 5] = [
        ("isUnspecified", "ip_is_unspecified", is_unspecified),
        ("isLoopback", "ip_is_loopback", is_loopback),
        (
            "isLinkLocalMulticast",
            "ip_is_link_local_multicast",
            is_link_local_multicast,
        ),
        (
            "isLinkLocalUnicast",
            "ip_is_link_local_unicast",
            is_link_local_unicast,
        ),
        ("isGlobalUnicast", "ip_is_global_unicast", is_global_unicast),
    ];
    for (name, id, function) in predicates {
        env.add_member_overload(name, id, ip(), vec![], function)?;
    }
    env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], parse_cidr)?;
    env.add_overload("isCIDR", "is_cidr", vec![STRING_TYPE], is_cidr)?;
    env.add_overload("string", "cidr_to_string", vec![cidr()], cidr_to_string)?;
    env.add_member_overload("ip", "cidr_ip", cidr(), vec![], cidr_ip)?;
    env.add_member_overload("masked", "cidr_masked", cidr(), vec![], masked)?;
    env.add_member_overload(
        "prefixLength",
        "cidr_prefix_length",
        cidr(),
        vec![],
        prefix_length,
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_ip",
        cidr(),
        vec![ip()],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_string",
        cidr(),
        vec![STRING_TYPE],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr",
        cidr(),
        vec![cidr()],
        contains_cidr,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr_string",
        cidr(),
        vec![STRING_TYPE],
        contains_cidr,
    )?;
    Ok(())
}

fn error(function: &str, e: NetError) -> ExecutionError {
    ExecutionError::function_error(function, e)
}

/// An address argument: an `ip(..)` value or a string to parse as one.
fn address(function: &str, arg: &dyn Val) -> Result<IpAddr, ExecutionError> {
    match text(function, arg) {
        Ok(source) => KubeIp::parse(source)
            .map(|ip| ip.0)
            .map_err(|e| error(function, e)),
        Err(_) => read(function, arg, |ip: &KubeIp| ip.0),
    }
}

/// A network argument: a `cidr(..)` value or a string to parse as one.
fn network(function: &str, arg: &dyn Val) -> Result<KubeCidr, ExecutionError> {
    match text(function, arg) {
        Ok(source) => KubeCidr::parse(source).map_err(|e| error(function, e)),
        Err(_) => read(function, arg, |cidr: &KubeCidr| *cidr),
    }
}

fn parse_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("ip", args)?;
    wrap(KubeIp(address("ip", source.as_ref())?))
}

fn is_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("isIP", args)?;
    boolean(KubeIp::parse(text("isIP", source.as_ref())?).is_ok())
}

/// Whether the text is the one way its address is written (lower case,
/// longest zero run compressed): fields holding such addresses can be
/// compared as strings.
fn is_canonical<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("ip.isCanonical", args)?;
    let source = text("ip.isCanonical", source.as_ref())?;
    let ip = KubeIp::parse(source).map_err(|e| error("ip.isCanonical", e))?;
    boolean(ip.0.to_string() == source)
}

fn ip_to_string<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [ip] = take("string", args)?;
    string(address("string", ip.as_ref())?.to_string())
}

fn family<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [ip] = take("family", args)?;
    let family = if address("family", ip.as_ref())?.is_ipv4() {
        4
    } else {
        6
    };
    owned(CelInt::from(family))
}

fn ip_predicate<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    holds: fn(KubeIp) -> bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [ip] = take(function, args)?;
    boolean(holds(KubeIp(address(function, ip.as_ref())?)))
}

fn is_unspecified<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    ip_predicate("isUnspecified", args, |ip| ip.0.is_unspecified())
}

fn is_loopback<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    ip_predicate("isLoopback", args, |ip| ip.0.is_loopback())
}

fn is_link_local_multicast<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    ip_predicate(
        "isLinkLocalMulticast",
        args,
        KubeIp::is_link_local_multicast,
    )
}

fn is_link_local_unicast<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    ip_predicate("isLinkLocalUnicast", args, KubeIp::is_link_local_unicast)
}

fn is_global_unicast<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    ip_predicate("isGlobalUnicast", args, KubeIp::is_global_unicast)
}

fn parse_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("cidr", args)?;
    wrap(network("cidr", source.as_ref())?)
}

fn is_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [source] = take("isCIDR", args)?;
    boolean(KubeCidr::parse(text("isCIDR", source.as_ref())?).is_ok())
}

fn cidr_to_string<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr] = take("string", args)?;
    string(network("string", cidr.as_ref())?.to_string())
}

fn cidr_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr] = take("ip", args)?;
    wrap(KubeIp(network("ip", cidr.as_ref())?.addr))
}

fn masked<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr] = take("masked", args)?;
    wrap(network("masked", cidr.as_ref())?.masked())
}

fn prefix_length<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr] = take("prefixLength", args)?;
    owned(CelInt::from(i64::from(
        network("prefixLength", cidr.as_ref())?.bits,
    )))
}

fn contains_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr, ip] = take("containsIP", args)?;
    let cidr = network("containsIP", cidr.as_ref())?;
    boolean(cidr.contains_ip(address("containsIP", ip.as_ref())?))
}

fn contains_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [cidr, other] = take("containsCIDR", args)?;
    let cidr = network("containsCIDR", cidr.as_ref())?;
    boolean(cidr.contains_cidr(network("containsCIDR", other.as_ref())?))
}

#[cfg(test)]
mod tests {
    use crate::cel_k8s::test_support::{all_errors, all_true};

    #[test]
    fn addresses_parse_strictly() {
        all_true(&[
            "isIP('127.0.0.1') && isIP('::1') && isIP('2001:db8::abcd')",
            "!isIP('127.0.0.256') && !isIP(':::1') && !isIP('010.0.0.1')",
            "!isIP('::ffff:1.2.3.4') && !isIP('fe80::1%eth0') && !isIP('')",
            "ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::abcd')",
            "!ip.isCanonical('2001:DB8::ABCD') && !ip.isCanonical('2001:db8::0:0:0:abcd')",
            "string(ip('2001:DB8::0:0:0:ABCD')) == '2001:db8::abcd'",
            "ip('10.0.0.1') == ip('10.0.0.1') && ip('10.0.0.1') != ip('10.0.0.2')",
        ]);
        all_errors(&["ip('127.0.0.256').family() == 4"], "not an IP address");
        all_errors(&["ip('::ffff:1.2.3.4').family() == 6"], "IPv4-mapped");
        all_errors(&["ip.isCanonical('nope')"], "not an IP address");
    }

    #[test]
    fn address_kinds() {
        all_true(&[
            "ip('127.0.0.1').family() == 4 && ip('::1').family() == 6",
            "ip('0.0.0.0').isUnspecified() && ip('::').isUnspecified() && !ip('::1').isUnspecified()",
            "ip('127.0.0.1').isLoopback() && ip('::1').isLoopback() && !ip('192.168.0.1').isLoopback()",
            "ip('224.0.0.1').isLinkLocalMulticast() && !ip('224.0.1.1').isLinkLocalMulticast()",
            "ip('ff02::1').isLinkLocalMulticast() && !ip('fd00::1').isLinkLocalMulticast()",
            "ip('169.254.169.254').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()",
            "!ip('192.168.0.1').isLinkLocalUnicast() && !ip('fd80::1').isLinkLocalUnicast()",
            "ip('192.168.0.1').isGlobalUnicast() && ip('2001:db8::abcd').isGlobalUnicast()",
            "!ip('255.255.255.255').isGlobalUnicast() && !ip('ff00::1').isGlobalUnicast()",
        ]);
    }

    #[test]
    fn networks_contain_addresses_and_networks() {
        all_true(&[
            "isCIDR('192.168.0.0/16') && isCIDR('::1/128') && isCIDR('192.168.0.1/24')",
            "!isCIDR('192.168.0.0') && !isCIDR('192.168.0.0/33') && !isCIDR('10.0.0.0/08')",
            "!isCIDR('::ffff:1.2.3.4/96') && !isCIDR('10.0.0.0/-1')",
            "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))",
            "cidr('192.168.0.0/24').containsIP('192.168.0.1') && !cidr('192.168.0.0/24').containsIP('192.168.1.1')",
            "!cidr('0.0.0.0/0').containsIP('::1') && cidr('::/0').containsIP('::1')",
            "cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))",
            "cidr('192.168.0.0/16').containsCIDR('192.168.0.0/16') && !cidr('192.168.0.0/24').containsCIDR('192.168.0.0/16')",
            "cidr('192.168.0.1/24').ip() == ip('192.168.0.1')",
            "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
            "string(cidr('2001:db8::1/32').masked()) == '2001:db8::/32'",
            "cidr('10.0.0.0/8').prefixLength() == 8",
        ]);
        all_errors(&["cidr('10.0.0.0').prefixLength() == 8"], "not a CIDR");
        all_errors(&["cidr('10.0.0.0/8').containsIP('x')"], "not an IP address");
    }
}
