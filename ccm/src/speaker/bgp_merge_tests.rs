use super::*;
use crate::crd::BGPAdvertisementSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn peer(name: &str, address: &str, age: u32) -> BGPPeer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "portway.dev/v1alpha1",
        "kind": "BGPPeer",
        "metadata": {"name": name, "creationTimestamp": format!("2026-01-01T00:00:{age:02}Z")},
        "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": address},
    }))
    .expect("peer")
}

fn file() -> BgpConfig {
    BgpConfig::from_value(serde_json::json!({
        "localASN": 64513,
        "peers": [{"address": "10.0.0.1", "asn": 64512}],
    }))
    .expect("file")
}

fn adv(peers: &[&str], local_pref: i64) -> BGPAdvertisement {
    BGPAdvertisement::new(
        "a",
        BGPAdvertisementSpec {
            pools: vec!["dc".into()],
            local_pref,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..BGPAdvertisementSpec::default()
        },
    )
}

#[test]
fn the_file_wins_then_the_older_resource() {
    let peers = [
        peer("clash-file", "10.0.0.1", 0),
        peer("newer", "10.0.0.2", 20),
        peer("older", "10.0.0.2", 10),
    ];
    let e = effective(&file(), &peers, &[], &BTreeMap::new());
    let addrs: Vec<&str> = e.config.peers.iter().map(|p| p.address.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(e.named.keys().collect::<Vec<_>>(), ["older"]);
    assert!(e.refused["clash-file"].contains("already a peer"), "{e:?}");
    assert!(e.refused.contains_key("newer"));
    assert!(e.config.validate().is_empty(), "{:?}", e.config.validate());
}

#[test]
fn node_selectors_any_match_and_bad_timers_name_the_field() {
    let mut picky = peer("picky", "10.0.0.3", 0);
    picky.spec.node_selectors = vec![
        LabelSelector {
            match_labels: Some([("rack".to_string(), "r9".to_string())].into()),
            ..LabelSelector::default()
        },
        LabelSelector {
            match_labels: Some([("rack".to_string(), "r1".to_string())].into()),
            ..LabelSelector::default()
        },
    ];
    let mut bad = peer("bad", "10.0.0.4", 0);
    bad.spec.hold_time = Some("2s".into());
    let peers = [picky, bad];
    let off = effective(&file(), &peers, &[], &BTreeMap::new());
    assert!(!off.named.contains_key("picky"));
    let r1 = [("rack".to_string(), "r1".to_string())].into();
    let on = effective(&file(), &peers, &[], &r1);
    assert!(on.named.contains_key("picky"));
    assert!(on.refused["bad"].contains("spec.holdTime"), "{on:?}");
    // myASN differs from the file's localASN: the session uses its own.
    let mut other = peer("other-asn", "10.0.0.5", 0);
    other.spec.my_asn = 65001;
    let e = effective(&file(), &[other], &[], &r1);
    assert_eq!(e.config.peers[1].local_asn, Some(65001));
}

#[test]
fn advertisements_name_peers_that_become_addresses() {
    let peers = [peer("a", "10.0.0.2", 0)];
    let e = effective(
        &file(),
        &peers,
        &[adv(&["a"], 200), adv(&["elsewhere"], 0), adv(&[], 0)],
        &BTreeMap::new(),
    );
    let got: Vec<(Vec<String>, u32, u8)> = e
        .config
        .advertisements
        .iter()
        .map(|a| (a.peers.clone(), a.local_pref, a.aggregation_length))
        .collect();
    // The one naming only a peer that does not peer from here is left out, not widened.
    assert_eq!(
        got,
        [(vec!["10.0.0.2".to_string()], 200, 32), (vec![], 0, 32)]
    );
}
