//! `portway check-config`, the binary itself: a good file passes, a bad one fails naming
//! every problem's key path at once (not only the first), and nothing needs a cluster.
//!
//! docs/bgp.md cannot drift from the parser either: every YAML block on the page is a whole
//! configuration file that check-config accepts, and every key its tables name is one that
//! docs/configuration.md documents for the `bgp` section.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portway");
const BGP_DOC: &str = include_str!("../../docs/bgp.md");
const REFERENCE: &str = include_str!("../../docs/configuration.md");

fn check(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        // No cluster and no environment overrides: the file alone is judged.
        .env_remove("KUBECONFIG")
        .env_remove("PORTWAY_DEFAULTCLASS")
        .output()
        .expect("run portway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_passes() {
    let example = include_str!("../../deploy/base/config.yaml");
    let (ok, stdout, stderr) = check(example);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

#[test]
fn every_problem_is_named_by_its_key_path() {
    let (ok, _, stderr) = check(
        "defaultClass: portway.dev/l2\n\
         pools:\n\
         - name: lan\n  addresses: [192.168.1.300/32]\n\
         l2:\n  pools: [nope]\n\
         bgp:\n  localASN: 64512\n  peers:\n  - address: 10.0.0.1\n    asn: 64500\n    holdTime: 2s\n",
    );
    assert!(!ok, "a bad file must fail");
    for path in [
        "pools[0].addresses[0]",
        "l2.pools[0]",
        "bgp.peers[0].holdTime",
    ] {
        assert!(stderr.contains(path), "{path} not named in:\n{stderr}");
    }
}

#[test]
fn a_misspelt_key_is_refused_with_the_right_spelling() {
    let (ok, _, stderr) = check("sevriceController: {}\n");
    assert!(!ok, "a typo must never silently become a default");
    assert!(
        stderr.contains("sevriceController") && stderr.contains("serviceController"),
        "{stderr}"
    );
}

/// The bodies of the page's ```yaml blocks.
fn yaml_blocks(doc: &str) -> Vec<&str> {
    doc.split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split_once("```").map_or(rest, |(block, _)| block))
        .collect()
}

#[test]
fn every_configuration_block_of_the_bgp_guide_passes_check_config() {
    let blocks = yaml_blocks(BGP_DOC);
    assert!(
        blocks.len() >= 4,
        "the guide shows its examples: {}",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        if block.contains("apiVersion: portway.dev/") {
            resources_parse(i, block);
            continue;
        }
        let (ok, _, stderr) = check(block);
        assert!(
            ok,
            "docs/bgp.md YAML block {i} is refused:\n{stderr}\n---\n{block}"
        );
        assert!(
            block.contains("bgp:"),
            "block {i} shows no bgp section:\n{block}"
        );
    }
}

/// A block of `portway.dev` resources (the guide's live BGPPeer and BGPAdvertisement):
/// each document reads as its typed resource. Their server-side schema is checked by
/// `crd_e2e` against the real API server.
fn resources_parse(i: usize, block: &str) {
    use portway::crd::{AddressPool, BGPAdvertisement, BGPPeer, L2AnnouncementPolicy};
    let docs = portway::import::parse_documents(block)
        .unwrap_or_else(|e| panic!("docs/bgp.md YAML block {i}: {e:#}"));
    assert!(!docs.is_empty(), "block {i} holds no document");
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let parsed = match kind.as_str() {
            "BGPPeer" => serde_json::from_value::<BGPPeer>(doc).map(drop),
            "BGPAdvertisement" => serde_json::from_value::<BGPAdvertisement>(doc).map(drop),
            "AddressPool" => serde_json::from_value::<AddressPool>(doc).map(drop),
            "L2AnnouncementPolicy" => serde_json::from_value::<L2AnnouncementPolicy>(doc).map(drop),
            other => panic!("docs/bgp.md YAML block {i}: unknown kind {other:?}"),
        };
        if let Err(e) = parsed {
            panic!("docs/bgp.md YAML block {i}: the {kind} does not read: {e}\n{block}");
        }
    }
}

/// The checker itself can fail: a typo in a block of the guide would be caught.
#[test]
fn a_misspelt_key_in_a_block_would_be_caught() {
    let block = yaml_blocks(BGP_DOC)[0].replace("localASN", "localAsn");
    let (ok, _, stderr) = check(&block);
    assert!(!ok && stderr.contains("localAsn"), "{stderr}");
}

/// The keys of the guide's peer and advertisement tables are the reference's.
#[test]
fn the_tables_name_only_documented_keys() {
    for (heading, prefix) in [
        ("## Peers", "peers[]."),
        ("## Advertisements and communities", "advertisements[]."),
    ] {
        let table = BGP_DOC
            .split_once(heading)
            .and_then(|(_, rest)| rest.split_once("\n## "))
            .map(|(section, _)| section)
            .unwrap_or_else(|| panic!("docs/bgp.md has {heading}"));
        let keys: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .flat_map(|l| l.split(" |").next())
            .flat_map(|cell| cell.split(", "))
            .map(|k| k.trim_matches('`'))
            .collect();
        assert!(keys.len() >= 6, "{heading}: {keys:?}");
        for key in keys {
            assert!(
                REFERENCE.contains(&format!("`{prefix}{key}`")),
                "docs/bgp.md {heading} names `{key}`, which docs/configuration.md does not document as `{prefix}{key}`"
            );
        }
    }
}

/// A YAML alias bomb (nine levels of ten aliases: 10⁹ values once expanded, 600 bytes on
/// disk) is refused by its expanded size before it is loaded, with an error that says why,
/// instead of exhausting memory (issue 20, defect 6). The run's time is printed, not
/// asserted.
#[test]
fn a_billion_laughs_file_is_refused_with_a_clear_error() {
    let mut bomb = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 10].join(",");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    let started = std::time::Instant::now();
    let (ok, _, stderr) = check(&bomb);
    eprintln!(
        "check-config refused the alias bomb in {:?}",
        started.elapsed()
    );
    assert!(!ok, "an alias bomb must not pass");
    assert!(
        stderr.contains("aliases") && stderr.contains("100000 values"),
        "the error says why:\n{stderr}"
    );
}
