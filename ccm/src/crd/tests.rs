//! The CRDs committed under deploy/ are the ones the code generates, and their schemas
//! carry the server-side checks.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const COMMITTED: [&str; 2] = [
    "deploy/base/crds.yaml",
    "deploy/helm/portway/crds/portway.yaml",
];

#[test]
fn the_committed_crds_are_the_generated_ones() {
    let want = super::yaml().expect("yaml");
    for path in COMMITTED {
        if std::env::var_os("PORTWAY_BLESS").is_some() {
            std::fs::write(repo().join(path), &want).expect("write");
        }
        let have = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run `cargo run -p portway -- crds > {path}` (or this test with PORTWAY_BLESS=1)"
        );
    }
}

#[test]
fn the_schemas_carry_the_cel_rules_and_printer_columns() {
    let text = super::yaml().expect("yaml");
    for needle in [
        "x-kubernetes-validations",
        "isCIDR(a)",
        "duration(self.spec.keepaliveTime)",
        "additionalPrinterColumns",
        "V4 Free",
        "subresources",
    ] {
        assert!(text.contains(needle), "the CRDs lack {needle}");
    }
    // Only the formats the API server knows (it warns about others, e.g. uint32).
    assert!(
        !text.contains("format: uint"),
        "unsigned formats in the CRDs"
    );
    for crd in super::all() {
        assert_eq!(crd.spec.group, super::GROUP);
        assert_eq!(crd.spec.scope, "Cluster", "{}", crd.spec.names.kind);
    }
}
