//! Adj-RIB-Out arithmetic: which UPDATEs turn what a peer has from us into
//! what we want it to have. Pure functions over route maps, so the session
//! only decides *when* to call them.

use crate::route::{Family, RouteAttrs, Routes};
use crate::update::UpdateBuilder;
use crate::wire::EncodeError;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// Encoded UPDATEs, or why a group could not be encoded.
pub(crate) type Batch = Result<Vec<Vec<u8>>, EncodeError>;

/// Withdrawals for prefixes the peer has but `target` lacks, then packed
/// announcements for new or changed prefixes, grouped by family and
/// attributes. Unchanged prefixes produce nothing.
pub(crate) fn diff(builder: &UpdateBuilder, advertised: &Routes, target: &Routes) -> Vec<Batch> {
    let mut out = Vec::new();
    for family in Family::ALL {
        let gone: Vec<IpNet> = advertised
            .keys()
            .filter(|p| Family::of(p) == family && !target.contains_key(*p))
            .copied()
            .collect();
        if !gone.is_empty() {
            out.push(builder.withdraw(family, &gone));
        }
    }
    let mut groups: BTreeMap<(Family, &RouteAttrs), Vec<IpNet>> = BTreeMap::new();
    for (p, a) in target {
        if advertised.get(p) != Some(a) {
            groups.entry((Family::of(p), a)).or_default().push(*p);
        }
    }
    out.extend(
        groups
            .iter()
            .map(|((family, attrs), nets)| builder.announce(*family, attrs, nets)),
    );
    out
}

/// Everything of `family` again, for a ROUTE-REFRESH.
pub(crate) fn full(builder: &UpdateBuilder, advertised: &Routes, family: Family) -> Vec<Batch> {
    let mut groups: BTreeMap<&RouteAttrs, Vec<IpNet>> = BTreeMap::new();
    for (p, a) in advertised.iter().filter(|(p, _)| Family::of(p) == family) {
        groups.entry(a).or_default().push(*p);
    }
    groups
        .iter()
        .map(|(a, nets)| builder.announce(family, a, nets))
        .collect()
}
