//! docs/bgp.md cannot drift from the parser: every YAML block on the page is a whole
//! configuration file that `portway check-config` (the binary) accepts, and every key its
//! tables name is one that docs/configuration.md documents for the `bgp` section.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portway");
const DOC: &str = include_str!("../../docs/bgp.md");
const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// The bodies of the page's ```yaml blocks.
fn yaml_blocks(doc: &str) -> Vec<&str> {
    doc.split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split_once("```").map_or(rest, |(block, _)| block))
        .collect()
}

fn check_config(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .env_remove("KUBECONFIG")
        .env_remove("PORTWAY_DEFAULTCLASS")
        .output()
        .expect("run portway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_configuration_block_of_the_bgp_guide_passes_check_config() {
    let blocks = yaml_blocks(DOC);
    assert!(
        blocks.len() >= 4,
        "the guide shows its examples: {}",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        let (ok, stderr) = check_config(block);
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

/// The checker itself can fail: a typo in a block of the guide would be caught.
#[test]
fn a_misspelt_key_in_a_block_would_be_caught() {
    let block = yaml_blocks(DOC)[0].replace("localASN", "localAsn");
    let (ok, stderr) = check_config(&block);
    assert!(!ok && stderr.contains("localAsn"), "{stderr}");
}

/// The keys of the guide's peer and advertisement tables are the reference's.
#[test]
fn the_tables_name_only_documented_keys() {
    for (heading, prefix) in [
        ("## Peers", "peers[]."),
        ("## Advertisements and communities", "advertisements[]."),
    ] {
        let table = DOC
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
