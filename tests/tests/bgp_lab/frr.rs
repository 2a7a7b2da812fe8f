//! FRR (Debian's `frr`, 8.4 on bookworm) as the lab's router: zebra, bfdd and bgpd in the
//! router namespace, each with its own sockets and logs in the lab directory (nothing under
//! /etc/frr or /var/run/frr is used), queried with `vtysh --vty_socket`.

use super::{Lab, ROUTER_ASN, ROUTER_V4, wait_for};
use serde_json::Value;
use std::time::Duration;

/// The FRR programs the lab runs.
pub const TOOLS: &[&str] = &[
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bfdd",
    "/usr/lib/frr/bgpd",
    "/usr/bin/vtysh",
];

/// One node as FRR's neighbor.
#[derive(Clone, Debug)]
pub struct FrrNeighbor {
    /// The node's address.
    pub address: String,
    /// The node's ASN (`ROUTER_ASN` for iBGP).
    pub asn: u32,
    /// TCP MD5 password.
    pub password: Option<String>,
    /// BFD with the `fast` profile (100 ms × 3).
    pub bfd: bool,
}

impl Lab {
    /// Writes the configuration and starts zebra, bfdd and bgpd (passive towards the nodes,
    /// 3/9 s timers, graceful restart helper as FRR's default, 8 paths); returns once bgpd
    /// answers.
    pub fn start_frr(&mut self, neighbors: &[FrrNeighbor]) {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut bgpd = format!(
            "router bgp {ROUTER_ASN}\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n"
        );
        for n in neighbors {
            let a = &n.address;
            bgpd += &format!(
                " neighbor {a} remote-as {}\n neighbor {a} passive\n neighbor {a} timers 3 9\n",
                n.asn
            );
            if let Some(pw) = &n.password {
                bgpd += &format!(" neighbor {a} password {pw}\n");
            }
            if n.bfd {
                bgpd += &format!(" neighbor {a} bfd\n neighbor {a} bfd profile fast\n");
            }
        }
        for af in ["ipv4", "ipv6"] {
            bgpd += &format!(
                " address-family {af} unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n"
            );
            for n in neighbors {
                bgpd += &format!("  neighbor {} activate\n", n.address);
            }
            bgpd += " exit-address-family\n";
        }
        let bfdd = "bfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n!\n";
        for (daemon, conf) in [
            ("zebra", "!\n".to_string()),
            ("bfdd", bfdd.to_string()),
            ("bgpd", bgpd),
        ] {
            let file = format!("{dir}/{daemon}.conf");
            std::fs::write(&file, conf).expect("write FRR config");
            let mut args = vec![
                format!("/usr/lib/frr/{daemon}"),
                "-f".into(),
                file,
                "-i".into(),
                format!("{dir}/{daemon}.pid"),
                "-z".into(),
                format!("{dir}/zserv.api"),
                "--vty_socket".into(),
                dir.clone(),
                "-u".into(),
                "frr".into(),
                "-g".into(),
                "frr".into(),
                // No TCP vty: only the unix sockets in the lab directory.
                "-P".into(),
                "0".into(),
                "--log".into(),
                format!("file:{dir}/{daemon}.log"),
            ];
            match daemon {
                "bfdd" => args.extend(["--bfdctl".into(), format!("{dir}/bfdd.sock")]),
                // BGP on the router's lab address only; routes stay out of the kernel.
                "bgpd" => args.extend([
                    "-l".into(),
                    ROUTER_V4.into(),
                    "-l".into(),
                    "2001:db8:1::1".into(),
                ]),
                _ => {}
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut child = self.spawn_in_router(&format!("{daemon}.out"), &argv);
            // The lab's Drop kills it; this reaps it then.
            std::thread::spawn(move || child.wait());
            let sock = self.dir.join(format!("{daemon}.vty"));
            wait_for(&format!("FRR {daemon} up"), Duration::from_secs(15), || {
                sock.exists().then_some(())
            });
        }
        wait_for("FRR bgpd answers", Duration::from_secs(15), || {
            self.vtysh_json("show bgp summary json")
        });
    }

    /// `vtysh -c CMD` (a `json` command), parsed.
    pub fn vtysh_json(&self, cmd: &str) -> Option<Value> {
        let dir = self.dir.to_string_lossy().into_owned();
        let out = self.in_router(&["vtysh", "--vty_socket", &dir, "-c", cmd])?;
        serde_json::from_str(&out).ok()
    }

    /// `vtysh -c CMD`; true on success.
    pub fn vtysh(&self, cmd: &str) -> bool {
        let dir = self.dir.to_string_lossy().into_owned();
        self.in_router(&["vtysh", "--vty_socket", &dir, "-c", cmd])
            .is_some()
    }

    /// FRR's paths for `prefix` (`show bgp <family> unicast <prefix> json`), none if absent.
    pub fn frr_paths(&self, family: &str, prefix: &str) -> Vec<Value> {
        self.vtysh_json(&format!("show bgp {family} unicast {prefix} json"))
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default()
    }

    /// FRR's view of a neighbor (`show bgp neighbors <addr> json`).
    pub fn frr_neighbor(&self, address: &str) -> Value {
        self.vtysh_json(&format!("show bgp neighbors {address} json"))
            .map(|v| v[address].clone())
            .unwrap_or(Value::Null)
    }

    /// Whether FRR has the session with `address` Established.
    pub fn frr_established(&self, address: &str) -> bool {
        self.frr_neighbor(address)["bgpState"] == "Established"
    }
}

/// The next hop of an FRR path.
pub fn next_hop(path: &Value) -> String {
    path["nexthops"][0]["ip"].as_str().unwrap_or("").to_string()
}
