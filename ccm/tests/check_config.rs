//! `portway check-config`, the binary itself: a good file passes, a bad one fails naming
//! every problem's key path at once (not only the first), and nothing needs a cluster.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portway");

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
