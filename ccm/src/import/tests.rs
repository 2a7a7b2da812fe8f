//! MetalLB's own documentation examples (ccm/testdata/metallb, source named in each file)
//! translate into resources the API schema and the pool merge accept, serving the same
//! addresses.

use super::metallb::translate;
use super::{parse_documents, render};
use std::path::PathBuf;

fn example(name: &str) -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/metallb")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("test data");
    parse_documents(&text).expect("YAML")
}

const FILES: [&str; 4] = [
    "index.yaml",
    "advanced-bgp.yaml",
    "advanced-l2.yaml",
    "advanced-pool.yaml",
];

#[test]
fn every_documented_pool_keeps_its_addresses_and_merges_cleanly() {
    for file in FILES {
        let docs = example(file);
        let out = translate(&docs);
        // The last document of each name wins, as with kubectl apply.
        let mut want: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for d in docs.iter().filter(|d| d["kind"] == "IPAddressPool") {
            let name = d["metadata"]["name"].as_str().expect("name").to_lowercase();
            let addrs: Vec<String> = d["spec"]["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .map(|a| {
                    let a = a.as_str().expect("string");
                    a.parse::<ipnet::IpNet>()
                        .map_or(a.to_string(), |n| n.trunc().to_string())
                })
                .collect();
            want.insert(name, addrs);
        }
        let have: std::collections::BTreeMap<String, Vec<String>> = out
            .pools
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().expect("name"),
                    p.spec.addresses.clone(),
                )
            })
            .collect();
        assert_eq!(have, want, "{file}");
        // Each pool alone is valid for the allocator (the examples are separate snippets
        // and may overlap one another).
        for p in &out.pools {
            let merged = crate::pools::merge(&[], std::slice::from_ref(p));
            assert!(merged.refused.is_empty(), "{file}: {:?}", merged.refused);
        }
        let yaml = render(&out).expect("render");
        assert!(yaml.contains("apiVersion: portway.dev/v1alpha1"), "{file}");
    }
}

#[test]
fn advertisements_peers_and_notes_carry_what_metallb_said() {
    let docs = example("advanced-bgp.yaml");
    // The documented `local` advertisement (a later snippet reuses the name).
    let doc = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "local" && d["spec"]["localPref"] == 100)
        .expect("the documented local advertisement");
    let one = translate(std::slice::from_ref(doc));
    let local = one
        .advertisements
        .iter()
        .find(|a| a.metadata.name.as_deref() == Some("local"))
        .expect("the `local` advertisement");
    assert_eq!(local.spec.local_pref, 100);
    assert_eq!(local.spec.communities, ["65535:65282"]);
    assert_eq!(local.spec.pools, ["first-pool"]);
    let out = translate(&docs);
    let example_peer = out
        .peers
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("example"))
        .expect("a peer named example");
    assert_eq!(example_peer.spec.peer_address, "172.30.0.3");
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("PoolA") && n.contains("poola")),
        "renames are noted: {:?}",
        out.notes
    );
    let index = translate(&example("index.yaml"));
    assert!(
        index.notes.iter().any(|n| n.contains("bfdProfile")),
        "{:?}",
        index.notes
    );
    assert!(
        index.notes.iter().any(|n| n.contains("BFDProfile")),
        "{:?}",
        index.notes
    );
}
