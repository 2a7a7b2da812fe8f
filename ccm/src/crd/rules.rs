//! CEL rules shared by the resources' schemas: the API server runs them, so bad input is
//! refused by `kubectl apply` with the field named, before the controller ever sees it.
//! The IP and CIDR functions (`isIP`, `isCIDR`, `ip()`) are in every server since 1.31.

/// Every entry of an address list is a CIDR, an address, or `first-last` of one family.
pub const ADDRESSES_RULE: &str = "self.all(a, isCIDR(a) || isIP(a) || \
     (a.split('-').size() == 2 && isIP(a.split('-')[0]) && isIP(a.split('-')[1]) && \
     ip(a.split('-')[0]).family() == ip(a.split('-')[1]).family()))";

/// What `kubectl apply` prints when [`ADDRESSES_RULE`] fails.
pub const ADDRESSES_MESSAGE: &str = "each entry must be a CIDR (192.168.10.0/24), an address, \
     or a range first-last of one family (192.168.10.10-192.168.10.20)";

/// A single IP address.
pub const IP_RULE: &str = "isIP(self)";

/// What `kubectl apply` prints when [`IP_RULE`] fails.
pub const IP_MESSAGE: &str = "must be an IPv4 or IPv6 address, e.g. 10.0.0.254";

/// Keepalive below hold time (RFC 4271 suggests a third), when both are set.
pub const TIMERS_RULE: &str = "!has(self.spec.holdTime) || !has(self.spec.keepaliveTime) || \
     duration(self.spec.keepaliveTime) < duration(self.spec.holdTime)";

/// What `kubectl apply` prints when [`TIMERS_RULE`] fails.
pub const TIMERS_MESSAGE: &str = "keepaliveTime must be shorter than holdTime (e.g. 30s and 90s)";

/// A Go-style duration (`90s`, `1m30s`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A BGP community `ASN:value`, each 16 bits (RFC 1997).
pub const COMMUNITY_RULE: &str = "self.all(c, c.matches('^[0-9]{1,5}:[0-9]{1,5}$') && \
     int(c.split(':')[0]) <= 65535 && int(c.split(':')[1]) <= 65535)";

/// What `kubectl apply` prints when [`COMMUNITY_RULE`] fails.
pub const COMMUNITY_MESSAGE: &str =
    "each community must be ASN:value, both 0-65535 (e.g. 64512:100)";

/// A large community `global:local1:local2`, each 32 bits (RFC 8092).
pub const LARGE_COMMUNITY_RULE: &str = "self.all(c, c.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && \
     c.split(':').all(p, int(p) <= 4294967295))";

/// What `kubectl apply` prints when [`LARGE_COMMUNITY_RULE`] fails.
pub const LARGE_COMMUNITY_MESSAGE: &str =
    "each large community must be global:local1:local2, each 0-4294967295 (e.g. 64512:1:2)";
