//! Reads of the partition: the whole of it (at `adopt` and once per resync period, shared by
//! every Service through the snapshot), one Service's objects by name (what a reconcile
//! reads), and the nodes a new member may name.
//!
//! Why by name: a collection GET costs the partition's size, and a device serves it slowly
//! (`GET /ltm/virtual?expandSubcollections=true` times out at a few hundred virtuals on
//! 14.1, net-utilities/BigIPReport issue #74), while "the virtual server name is part of
//! the REST endpoint URL and can be queried directly, it's quick" (joel74/POSH-LTM-Rest
//! issue #182). A single object takes `expandSubcollections=true` as a collection does, so
//! it reads back members and profiles in the same shape ([`crate::current`]).

use crate::client::{BigIp, PartitionInfo};
use crate::config::MonitorKind;
use crate::current::{self, Current};
use crate::names::uri_name;
use crate::nodes::NodeIndex;
use crate::snapshot::Names;
use portway_provider::ProviderError;
use serde_json::Value;
use std::collections::BTreeSet;

/// The kind of the monitor a pool's `monitor` names, when it is one Portway makes in
/// `partition` (its name ends with the kind's suffix, [`crate::names::monitor_name`]).
fn referenced_kinds(pool: &Value, partition: &str) -> Vec<MonitorKind> {
    let prefix = format!("/{partition}/");
    pool["monitor"]
        .as_str()
        .unwrap_or("")
        .split(" and ")
        .filter_map(|m| m.trim().strip_prefix(prefix.as_str()))
        .filter_map(|name| {
            let suffix = name.rsplit('_').next()?;
            MonitorKind::ALL.into_iter().find(|k| k.suffix() == suffix)
        })
        .collect()
}

impl BigIp {
    /// The partition: pools with members and virtuals with profiles
    /// (`expandSubcollections=true`: without it a device lists neither), then the monitors of
    /// every kind in `kinds` (`None`: every kind Portway makes) and of every kind a pool
    /// read names; normalised for route domain `rd`. A resync reads three collections when
    /// one monitor kind is in use, not one per kind Portway could make.
    pub async fn read(
        &self,
        partition: &str,
        rd: u32,
        kinds: Option<&BTreeSet<MonitorKind>>,
    ) -> Result<Current, ProviderError> {
        let filter = format!("$filter=partition+eq+{partition}");
        let pools = self
            .items(&format!(
                "/mgmt/tm/ltm/pool?{filter}&expandSubcollections=true"
            ))
            .await?;
        let virtuals = self
            .items(&format!(
                "/mgmt/tm/ltm/virtual?{filter}&expandSubcollections=true"
            ))
            .await?;
        let kinds: BTreeSet<MonitorKind> = match kinds {
            None => MonitorKind::ALL.into_iter().collect(),
            Some(k) => k
                .iter()
                .copied()
                .chain(pools.iter().flat_map(|p| referenced_kinds(p, partition)))
                .collect(),
        };
        let mut monitors = Vec::new();
        for kind in kinds {
            let coll = kind.collection();
            for m in self
                .items(&format!("/mgmt/tm/ltm/monitor/{coll}?{filter}"))
                .await?
            {
                monitors.push((kind, m));
            }
        }
        Ok(Current {
            monitors,
            pools: pools.into_iter().map(|p| current::pool(p, rd)).collect(),
            virtuals: virtuals
                .into_iter()
                .map(|v| current::virtual_server(v, rd))
                .collect(),
        })
    }

    /// The objects of `names` that exist, each read by name (one GET each, whatever the
    /// partition holds besides), normalised for route domain `rd`.
    pub(crate) async fn read_named(
        &self,
        partition: &str,
        rd: u32,
        names: &Names,
    ) -> Result<Current, ProviderError> {
        let mut c = Current::default();
        for (kind, name) in &names.monitors {
            let path = format!("monitor/{}", kind.collection());
            c.monitors.extend(
                self.get_named(&path, partition, name)
                    .await?
                    .map(|m| (*kind, m)),
            );
        }
        for name in &names.pools {
            let p = self.get_named("pool", partition, name).await?;
            c.pools.extend(p.map(|p| current::pool(p, rd)));
        }
        for name in &names.virtuals {
            let v = self.get_named("virtual", partition, name).await?;
            c.virtuals.extend(v.map(|v| current::virtual_server(v, rd)));
        }
        Ok(c)
    }

    /// `collection`'s object `name` of `partition`, expanded; `None` when there is none.
    async fn get_named(
        &self,
        collection: &str,
        partition: &str,
        name: &str,
    ) -> Result<Option<Value>, ProviderError> {
        let path = format!(
            "/mgmt/tm/ltm/{collection}/{}?expandSubcollections=true",
            uri_name(partition, name)
        );
        self.get_opt(&path).await
    }

    /// The nodes of every partition the account may read, indexed for `partition`.
    pub async fn nodes(
        &self,
        partition: &str,
        info: &PartitionInfo,
    ) -> Result<NodeIndex, ProviderError> {
        let nodes = self.items("/mgmt/tm/ltm/node").await?;
        Ok(NodeIndex::new(
            partition,
            info.route_domain,
            &info.defaults,
            &nodes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pool_names_the_kind_of_its_monitor_by_suffix() {
        let pool = |m: &str| json!({"monitor": m});
        assert_eq!(
            referenced_kinds(&pool("/portway/pw_default_web_tcp_80_tcp "), "portway"),
            [MonitorKind::Tcp]
        );
        assert_eq!(
            referenced_kinds(&pool("/portway/pw_ns_dns_udp_53_gwicmp"), "portway"),
            [MonitorKind::GatewayIcmp]
        );
        // Not Portway's: another partition's, or a built-in.
        assert!(referenced_kinds(&pool("/Common/tcp"), "portway").is_empty());
        assert!(referenced_kinds(&pool("/other/pw_x_tcp"), "portway").is_empty());
        assert!(referenced_kinds(&json!({}), "portway").is_empty());
    }
}
