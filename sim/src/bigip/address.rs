//! Addresses with route domains, as the simulated BIG-IP stores and shows them.
//!
//! An address is `ip` or `ip%N`; without `%N` it lives in the route domain its partition
//! names as `defaultRouteDomain` (f5devcentral/f5-cccl `f5_cccl/utils/route_domain.py`
//! `normalize_address_with_route_domain`, which fills the partition default in exactly so).
//! One IP is a node once per route domain, so the simulator keys addresses by the canonical
//! `ip%N` and stores them so. How it shows them back is [`RouteDomainDisplay`].

/// How the simulated BIG-IP writes an address's route domain in what it returns.
///
/// An F5 engineer on f5devcentral/f5-cccl PR #196 ("Handle route domain for virtual source
/// addr"), asked whether the device includes the route domain when it is the partition's
/// default: "Typically, it doesn't, but it's also not consistent in all cases." The recorded
/// GET in f5-cccl `f5_cccl/test/bigip_data.json` shows node `10.2.3.5%0` with `"address":
/// "10.2.3.5"`; joel74/POSH-LTM-Rest issue #55 shows a member of partition `dev` read back
/// with address `10.100.10.1%4`. Clients must therefore accept both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RouteDomainDisplay {
    /// The typical case: `%N` is left out when N is the partition's default route domain.
    #[default]
    StripDefault,
    /// `%N` is always written, except route domain 0 in a partition whose default is 0.
    Explicit,
}

/// `10.0.0.1%2` to `("10.0.0.1", Some(2))`; `10.0.0.1` to `("10.0.0.1", None)`.
pub(super) fn split_rd(addr: &str) -> (&str, Option<u32>) {
    match addr.split_once('%') {
        Some((ip, rd)) => match rd.parse() {
            Ok(n) => (ip, Some(n)),
            Err(_) => (addr, None),
        },
        None => (addr, None),
    }
}

/// The canonical `ip%N` of an address written in a partition whose default is `default_rd`.
pub(super) fn canonical(addr: &str, default_rd: u32) -> String {
    let (ip, rd) = split_rd(addr);
    format!("{ip}%{}", rd.unwrap_or(default_rd))
}

/// A canonical address as the device shows it in a partition whose default is `default_rd`.
pub(super) fn show(canonical: &str, default_rd: u32, mode: RouteDomainDisplay) -> String {
    let (ip, rd) = split_rd(canonical);
    let rd = rd.unwrap_or(default_rd);
    let hide = match mode {
        RouteDomainDisplay::StripDefault => rd == default_rd,
        RouteDomainDisplay::Explicit => rd == 0 && default_rd == 0,
    };
    if hide {
        ip.to_string()
    } else {
        format!("{ip}%{rd}")
    }
}

/// `host:port` (IPv4 or a name) or IPv6 `addr.port`, with an optional `%N` on the host:
/// the host part, or `None` when there is no port. The IPv6 rule is f5-cccl's
/// (`f5_cccl/resource/ltm/pool_member.py` `_init_member`: `{}.{}` for IPv6).
pub(super) fn host_of(name: &str) -> Option<&str> {
    let ipv6 = name.matches(':').count() > 1;
    let (host, port) = if ipv6 {
        name.rsplit_once('.')?
    } else {
        name.rsplit_once(':')?
    };
    (!host.is_empty() && !port.is_empty()).then_some(host)
}

/// A virtual's destination `/P/host:port` (IPv6 `/P/host.port`): partition, host, port and
/// the separator used.
pub(super) fn split_destination(dest: &str) -> Option<(&str, &str, &str, char)> {
    let (partition, rest) = dest.strip_prefix('/')?.split_once('/')?;
    let host = host_of(rest)?;
    let sep_at = host.len();
    let sep = rest[sep_at..].chars().next()?;
    Some((partition, host, &rest[sep_at + 1..], sep))
}

/// A destination with its host rewritten by `f`.
pub(super) fn map_destination(dest: &str, f: impl Fn(&str) -> String) -> String {
    match split_destination(dest) {
        Some((p, host, port, sep)) => format!("/{p}/{}{sep}{port}", f(host)),
        None => dest.to_string(),
    }
}

/// A virtual's `source` `addr/len` with its address rewritten by `f`.
pub(super) fn map_source(source: &str, f: impl Fn(&str) -> String) -> String {
    match source.rsplit_once('/') {
        Some((addr, len)) => format!("{}/{len}", f(addr)),
        None => f(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_domains_are_filled_in_and_shown_by_mode() {
        assert_eq!(canonical("10.0.0.1", 2), "10.0.0.1%2");
        assert_eq!(canonical("10.0.0.1%0", 2), "10.0.0.1%0");
        use RouteDomainDisplay::*;
        assert_eq!(show("10.0.0.1%2", 2, StripDefault), "10.0.0.1");
        assert_eq!(show("10.0.0.1%2", 2, Explicit), "10.0.0.1%2");
        assert_eq!(show("10.0.0.1%0", 0, Explicit), "10.0.0.1");
        assert_eq!(show("10.0.0.1%3", 2, StripDefault), "10.0.0.1%3");
        assert_eq!(host_of("fd00::1%2.80"), Some("fd00::1%2"));
        assert_eq!(host_of("10.0.0.1%2:80"), Some("10.0.0.1%2"));
        assert_eq!(host_of("web1:80"), Some("web1"));
        assert_eq!(host_of("10.0.0.1"), None);
        assert_eq!(
            split_destination("/p/2001:db8::10%2.443"),
            Some(("p", "2001:db8::10%2", "443", '.'))
        );
        assert_eq!(
            map_destination("/p/10.0.0.1:80", |h| canonical(h, 4)),
            "/p/10.0.0.1%4:80"
        );
        assert_eq!(map_source("0.0.0.0/0", |a| canonical(a, 4)), "0.0.0.0%4/0");
    }
}
