//! BIRD 2 (Debian's `bird2`, 2.0.12 on bookworm) as the lab's router, its control socket
//! and log in the lab directory, bound to the router's lab address (`strict bind`), routes
//! kept out of the kernel (no kernel protocol).

use super::{Lab, ROUTER_ASN, ROUTER_V4, wait_for};
use std::time::Duration;

/// The BIRD programs the lab runs.
pub const TOOLS: &[&str] = &["/usr/sbin/bird", "/usr/sbin/birdc"];

/// One node as a BIRD `protocol bgp`, named `n<i>`.
#[derive(Clone, Debug)]
pub struct BirdNeighbor {
    /// The protocol's name in BIRD.
    pub name: String,
    /// The node's address.
    pub address: String,
    /// The node's ASN (`ROUTER_ASN` for iBGP).
    pub asn: u32,
    /// TCP MD5 password.
    pub password: Option<String>,
}

impl Lab {
    /// Writes bird.conf (passive, 3/9 s timers, IPv4 and IPv6 imported, nothing exported)
    /// and starts BIRD; returns once birdc answers.
    pub fn start_bird(&mut self, neighbors: &[BirdNeighbor]) {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut conf =
            format!("log \"{dir}/bird.log\" all;\nrouter id {ROUTER_V4};\nprotocol device {{ }}\n");
        for n in neighbors {
            let password = n
                .password
                .as_ref()
                .map(|p| format!("  password \"{p}\";\n"))
                .unwrap_or_default();
            conf += &format!(
                "protocol bgp {} {{\n  local {ROUTER_V4} as {ROUTER_ASN};\n  neighbor {} as {};\n  strict bind on;\n  direct;\n  passive on;\n  hold time 9;\n  keepalive time 3;\n{password}  ipv4 {{ import all; export none; gateway direct; }};\n  ipv6 {{ import all; export none; gateway direct; }};\n}}\n",
                n.name, n.address, n.asn
            );
        }
        let file = format!("{dir}/bird.conf");
        std::fs::write(&file, conf).expect("write bird.conf");
        let sock = format!("{dir}/bird.ctl");
        let pid = format!("{dir}/bird.pid");
        let mut bird = self.spawn_in_router(
            "bird.out",
            &["/usr/sbin/bird", "-f", "-c", &file, "-s", &sock, "-P", &pid],
        );
        // The lab's Drop kills it; this reaps it then.
        std::thread::spawn(move || bird.wait());
        wait_for("BIRD answers", Duration::from_secs(15), || {
            self.birdc(&["show", "status"])
        });
    }

    /// `birdc ARGS` on the lab's socket: its output, `None` if it failed.
    pub fn birdc(&self, args: &[&str]) -> Option<String> {
        let sock = self.dir.join("bird.ctl").to_string_lossy().into_owned();
        let mut all = vec!["/usr/sbin/birdc", "-s", &sock];
        all.extend_from_slice(args);
        self.in_router(&all)
    }

    /// `show route for PREFIX all` style detail of one prefix (empty if absent).
    pub fn bird_route(&self, prefix: &str) -> String {
        self.birdc(&["show", "route", prefix, "all"])
            .filter(|o| o.contains(prefix))
            .unwrap_or_default()
    }

    /// `show protocols all NAME`.
    pub fn bird_protocol(&self, name: &str) -> String {
        self.birdc(&["show", "protocols", "all", name])
            .unwrap_or_default()
    }

    /// Whether BIRD's protocol `name` is Established.
    pub fn bird_established(&self, name: &str) -> bool {
        self.bird_protocol(name)
            .contains("BGP state:          Established")
    }
}
