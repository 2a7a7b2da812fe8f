//! The merge rules: the file wins, the older resource wins, every refusal names the field.

use super::merge::{class_pools, merge};
use crate::crd::{AddressPool, AddressPoolSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portway_provider::ipam::PoolConfig;

fn res(name: &str, addrs: &[&str], created_s: i64) -> AddressPool {
    let mut p = AddressPool::new(
        name,
        AddressPoolSpec {
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    p.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(created_s).expect("time"),
    ));
    p
}

#[test]
fn resources_join_the_file_pools_in_age_order() {
    let file = vec![PoolConfig::new("lan", &["192.168.10.0/24"])];
    let m = merge(
        &file,
        &[
            res("b", &["10.0.2.0/24"], 20),
            res("a", &["10.0.1.0/24"], 10),
        ],
    );
    let names: Vec<&str> = m.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["lan", "a", "b"]);
    assert!(m.refused.is_empty());
}

#[test]
fn the_file_wins_a_name_and_an_overlap() {
    let file = vec![PoolConfig::new("lan", &["192.168.10.0/24"])];
    let m = merge(
        &file,
        &[
            res("lan", &["10.9.0.0/24"], 1),
            res("over", &["192.168.10.128/25"], 2),
            // Starts before the file's pool: the overlap is reported on the file's entry.
            res("before", &["192.168.8.0/22"], 3),
        ],
    );
    assert_eq!(m.pools.len(), 1, "{m:?}");
    assert_eq!(m.refused["lan"].reason, "NameTaken");
    assert_eq!(m.refused["over"].reason, "Overlap");
    assert!(
        m.refused["over"].problems[0].starts_with("spec.addresses[0]: ")
            && m.refused["over"].problems[0].contains("\"lan\""),
        "{:?}",
        m.refused["over"]
    );
    assert_eq!(m.refused["before"].reason, "Overlap", "{:?}", m.refused);
}

#[test]
fn between_two_resources_the_older_wins() {
    let m = merge(
        &[],
        &[
            res("young", &["10.0.0.0/24"], 50),
            res("old", &["10.0.0.0/25"], 5),
        ],
    );
    assert_eq!(m.pools.len(), 1);
    assert_eq!(m.pools[0].name, "old");
    assert!(m.refused.contains_key("young"));
}

#[test]
fn an_invalid_resource_is_refused_naming_the_field() {
    // The server's CEL rule refuses this; a server without it (or an old CRD) does not.
    let m = merge(&[], &[res("bad", &["10.0.0.9-10.0.0.1"], 1)]);
    assert_eq!(m.refused["bad"].reason, "Invalid");
    assert!(m.refused["bad"].problems[0].starts_with("spec.addresses[0]"));
}

#[test]
fn a_class_draws_from_its_file_pools_and_the_named_ones() {
    let all = vec![
        PoolConfig::new("a", &["10.0.0.0/24"]),
        PoolConfig::new("b", &["10.0.1.0/24"]),
    ];
    let file = vec!["a".to_string()];
    assert_eq!(class_pools(&file, &[], &all), ["a"]);
    assert_eq!(class_pools(&file, &[vec!["b".into()]], &all), ["a", "b"]);
    // A policy naming no pool covers every pool.
    assert_eq!(class_pools(&[], &[vec![]], &all), ["a", "b"]);
}

/// Issue 23: an address two Services claim shows among the conflicts of the pool it lies
/// in, naming both Services, and nowhere else; the pool stays Ready (it still allocates).
#[test]
fn an_address_claimed_by_two_services_is_a_conflict_of_its_pool() {
    use portway_provider::ServiceKey;
    use portway_provider::ipam::{Contest, VipManager};
    let lab = res("lab", &["10.0.1.0/24"], 1);
    let other = res("other", &["10.0.2.0/24"], 2);
    let m = merge(&[], &[lab.clone(), other.clone()]);
    let stats = VipManager::new(&m.pools).expect("valid").stats();
    let contests = [Contest {
        ip: "10.0.1.7".parse().expect("ip"),
        pool: Some("lab".into()),
        holder: ServiceKey::new("a", "first"),
        claimant: ServiceKey::new("b", "second"),
    }];
    let st = super::status::compute(&lab, &m, &stats, &[], &contests);
    assert_eq!(st.conflicts.len(), 1, "{st:?}");
    let c = &st.conflicts[0];
    assert!(
        c.contains("10.0.1.7") && c.contains("a/first holds it") && c.contains("b/second"),
        "{c}"
    );
    assert_eq!(st.conditions[0].status, "True", "{st:?}");
    let st = super::status::compute(&other, &m, &stats, &[], &contests);
    assert!(st.conflicts.is_empty(), "{st:?}");
}
