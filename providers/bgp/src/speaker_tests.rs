//! The tokio driver over real loopback TCP, against a second [`Session`]
//! playing the router (accepting side). Runs without privileges.

use super::*;
use crate::config::PeerConfig;
use crate::peer_task::{dial, sleep_until};
use crate::route::RouteAttrs;
use crate::route::Routes;
use crate::session::Output;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A minimal router: accepts one connection and runs a session on it.
/// Returns its final session after the connection ends.
async fn router(listener: TcpListener, asn: u32, peer_asn: u32) -> Session {
    router_on(&listener, asn, peer_asn).await
}

/// [`router`] on a listener that stays open for the next connection.
async fn router_on(listener: &TcpListener, asn: u32, peer_asn: u32) -> Session {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let local = stream.local_addr().expect("local");
    let mut s = Session::new(SessionConfig {
        hold_time: 9,
        ..SessionConfig::new(asn, peer_asn, Ipv4Addr::new(127, 0, 0, 1))
    });
    let now = || Instant::now().into_std();
    s.start(now());
    s.handle_connected(now(), local);
    let mut buf = vec![0u8; 65536];
    loop {
        while let Some(o) = s.poll_output() {
            match o {
                Output::Transmit(b) => stream.write_all(&b).await.expect("write"),
                Output::Disconnect => return s,
                Output::Connect => {}
            }
        }
        let deadline = s.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => { s.handle_closed(now()); return s; }
                Ok(n) => s.handle_data(now(), &buf[..n]),
            },
            () = sleep_until(deadline) => s.handle_timeout(now()),
        }
    }
}

fn config(port: u16) -> BgpConfig {
    BgpConfig {
        local_asn: 64513,
        router_id: "10.0.0.2".into(),
        peers: vec![PeerConfig {
            address: "127.0.0.1".into(),
            asn: 64512,
            local_asn: None,
            port,
            hold_time: Duration::from_secs(9),
            keepalive_time: Duration::from_secs(3),
            source_address: String::new(),
            ebgp_multihop: 1,
            node_selector: BTreeMap::new(),
            password_secret: None,
            graceful_restart: false,
            graceful_restart_time: Duration::from_secs(120),
            bfd: None,
        }],
        advertisements: vec![],
    }
}

async fn wait_status(h: &SpeakerHandle, what: &str, f: impl Fn(&PeerStatus) -> bool) -> PeerStatus {
    let mut rx = h.watch_status();
    let check = async {
        loop {
            if let Some(s) = rx.borrow_and_update().first().filter(|s| f(s)) {
                return s.clone();
            }
            rx.changed().await.expect("speaker alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), check)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", h.peer_states()))
}

#[tokio::test]
async fn advertises_over_tcp_and_ceases_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = tokio::spawn(router(listener, 64512, 64513));
    let node = NodeInfo {
        name: "n1".into(),
        ..NodeInfo::default()
    };
    let h = Speaker::spawn(&config(port), &node, |_| None).expect("spawn");
    wait_status(&h, "Established", |s| s.state == State::Established).await;
    let routes: Routes = (1..=3u8)
        .map(|i| {
            (
                IpNet::from(IpAddr::from([203, 0, 113, i])),
                RouteAttrs::default(),
            )
        })
        .collect();
    h.set_routes(routes);
    let st = wait_status(&h, "3 prefixes", |s| s.stats.prefixes_advertised == 3).await;
    // One UPDATE for the three routes plus the two End-of-RIB markers.
    assert_eq!(st.stats.updates_sent, 3, "{st:?}");
    assert_eq!(
        st.stats.families,
        vec![crate::Family::Ipv4, crate::Family::Ipv6]
    );
    // A change of one prefix: one more UPDATE, then its withdrawal, one more again.
    let fourth = IpNet::from(IpAddr::from([203, 0, 113, 4]));
    h.update([(fourth, vec![RouteAttrs::default()])]);
    let st = wait_status(&h, "4 prefixes", |s| s.stats.prefixes_advertised == 4).await;
    assert_eq!(st.stats.updates_sent, 4, "{st:?}");
    h.update([(fourth, vec![])]);
    let st = wait_status(&h, "3 prefixes again", |s| s.stats.prefixes_advertised == 3).await;
    assert_eq!(st.stats.updates_sent, 5, "{st:?}");
    h.shutdown().await;
    let r = tokio::time::timeout(Duration::from_secs(5), router)
        .await
        .expect("router ends")
        .expect("router task");
    assert_eq!(r.state(), State::Idle);
    let err = r.stats().last_error.clone().unwrap_or_default();
    assert!(err.contains("Cease (6/2)"), "router saw: {err}");
}

#[tokio::test]
async fn refused_connections_back_off_and_recover() {
    // Reserve a port, close it: connections are refused until a router listens.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let h = Speaker::spawn(&config(port), &NodeInfo::default(), |_| None).expect("spawn");
    let st = wait_status(&h, "a refused connect", |s| s.stats.last_error.is_some()).await;
    assert!(
        st.stats
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connect failed"),
        "{st:?}"
    );
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let router = tokio::spawn(router(listener, 64512, 64513));
    wait_status(&h, "Established after retry", |s| {
        s.state == State::Established
    })
    .await;
    h.shutdown().await;
    let _ = router.await;
}

#[tokio::test]
async fn spawn_checks_config_and_passwords() {
    let mut c = config(179);
    c.peers[0].hold_time = Duration::from_secs(2);
    match Speaker::spawn(&c, &NodeInfo::default(), |_| None) {
        Err(SpeakerError::InvalidConfig(issues)) => {
            assert_eq!(issues[0].path, "bgp.peers[0].holdTime")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let mut c = config(179);
    c.router_id = String::new();
    assert!(matches!(
        Speaker::spawn(&c, &NodeInfo::default(), |_| None),
        Err(SpeakerError::NoRouterId)
    ));
    let mut c = config(179);
    c.peers[0].password_secret = Some(SecretRef {
        namespace: "portway-system".into(),
        name: "bgp".into(),
        key: "pw".into(),
    });
    // A second router without a password: a missing or overlong password
    // leaves its own peer out, never the other one.
    let mut open_peer = c.peers[0].clone();
    open_peer.address = "127.0.0.2".into();
    open_peer.password_secret = None;
    c.peers.push(open_peer);
    let h = Speaker::spawn(&c, &NodeInfo::default(), |_| None).expect("spawn");
    assert!(matches!(
        h.skipped(),
        [SpeakerError::MissingPassword { .. }]
    ));
    let peers: Vec<IpAddr> = h.peer_states().iter().map(|p| p.address.ip()).collect();
    assert_eq!(peers, ["127.0.0.2".parse::<IpAddr>().expect("ip")]);
    h.shutdown().await;
    let long = "x".repeat(81);
    let h = Speaker::spawn(&c, &NodeInfo::default(), |_| Some(long.clone())).expect("spawn");
    assert!(matches!(
        h.skipped(),
        [SpeakerError::PasswordTooLong { .. }]
    ));
    assert_eq!(h.peer_states().len(), 1);
    h.shutdown().await;
    // A node outside the peer's nodeSelector gets no peers at all.
    let mut c = config(179);
    c.peers[0].node_selector.insert("bgp".into(), "yes".into());
    let h = Speaker::spawn(&c, &NodeInfo::default(), |_| None).expect("spawn");
    assert!(h.peer_states().is_empty());
    h.shutdown().await;
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    assert!(matches!(
        Speaker::spawn(&config(179), &NodeInfo::default(), |_| None),
        Err(SpeakerError::NoRuntime)
    ));
}

#[tokio::test]
async fn ebgp_hop_limit_is_set_for_both_families_before_connect() {
    for local in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(listener) = TcpListener::bind(local).await else {
            // No IPv6 loopback on this host: nothing to dial. CI must have one.
            assert!(
                local.starts_with('[') && std::env::var_os("PORTWAY_REQUIRE_PRIVILEGED").is_none(),
                "no loopback to bind {local}"
            );
            eprintln!("SKIP: no IPv6 loopback; the IPv6 hop limit is untested here");
            continue;
        };
        let remote = listener.local_addr().expect("addr");
        let accept = tokio::spawn(async move { listener.accept().await });
        let stream = dial(Dialer {
            remote,
            source: None,
            password: None,
            ttl: Some(3),
        })
        .await
        .expect("dial");
        let hops = if remote.is_ipv4() {
            stream.ttl().expect("ttl")
        } else {
            socket2::SockRef::from(&stream)
                .unicast_hops_v6()
                .expect("hops")
        };
        assert_eq!(hops, 3, "hop limit towards {remote}");
        let _ = accept.await;
    }
}

/// The first message a speaker sends to a raw listener: its OPEN.
async fn first_open(config: &BgpConfig, listener: TcpListener) -> crate::wire::PeerOpen {
    let node = NodeInfo {
        name: "n1".into(),
        ..NodeInfo::default()
    };
    let h = Speaker::spawn(config, &node, |_| None).expect("spawn");
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut buf = Vec::new();
    let open = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the OPEN");
        buf.extend_from_slice(&chunk[..n]);
        if let Some((msg, _)) = crate::wire::decode(&buf).expect("well-formed") {
            break msg;
        }
    };
    drop(stream);
    h.shutdown().await;
    match open {
        crate::wire::Message::Open(o) => o,
        other => panic!("expected OPEN, got {other:?}"),
    }
}

#[tokio::test]
async fn graceful_restart_is_announced_only_when_the_peer_asks_for_it() {
    // Default: no capability, so a router drops our routes when the session drops.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let open = first_open(&config(port), listener).await;
    assert!(
        !open.graceful_restart,
        "graceful restart must be off by default"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut cfg = config(port);
    cfg.peers[0].graceful_restart = true;
    cfg.peers[0].graceful_restart_time = Duration::from_secs(30);
    let open = first_open(&cfg, listener).await;
    assert!(open.graceful_restart);
}

#[test]
fn a_dialers_debug_output_holds_no_password() {
    let d = Dialer {
        remote: "192.0.2.1:179".parse().expect("addr"),
        source: None,
        password: Some(Arc::from(&b"md5-secret-value"[..])),
        ttl: None,
    };
    let text = format!("{d:?}");
    assert!(!text.contains("md5"), "{text}");
    // Not as bytes either (a derived Debug prints [109, 100, 53, ...]).
    assert!(!text.contains("109, 100, 53"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

/// Waits until the peer at `port` satisfies `f`.
async fn wait_peer(h: &SpeakerHandle, port: u16, what: &str, f: impl Fn(&PeerStatus) -> bool) {
    let mut rx = h.watch_status();
    let check = async {
        loop {
            if rx
                .borrow_and_update()
                .iter()
                .any(|s| s.address.port() == port && f(s))
            {
                return;
            }
            rx.changed().await.expect("speaker alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), check)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", h.peer_states()));
}

#[tokio::test]
async fn reconfigure_restarts_only_the_changed_peer_and_new_ones_get_every_route() {
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let (pa, pb) = (
        la.local_addr().expect("addr").port(),
        lb.local_addr().expect("addr").port(),
    );
    let mut c = config(pa);
    let mut b = c.peers[0].clone();
    b.port = pb;
    c.peers.push(b);
    let router_a = tokio::spawn(router(la, 64512, 64513));
    // B's router accepts twice: the first session ends with the reconfiguration.
    let lb = Arc::new(lb);
    let router_b = {
        let lb = lb.clone();
        tokio::spawn(async move { router_on(&lb, 64512, 64513).await })
    };
    let mut h = Speaker::spawn(&c, &NodeInfo::default(), |_| None).expect("spawn");
    let prefix = IpNet::from(IpAddr::from([203, 0, 113, 9]));
    h.set_routes(Routes::from_iter([(prefix, RouteAttrs::default())]));
    for port in [pa, pb] {
        wait_peer(&h, port, "both advertise", |s| {
            s.state == State::Established && s.stats.prefixes_advertised == 1
        })
        .await;
    }
    // Same configuration: nothing restarts.
    let same = h
        .reconfigure(&c, &NodeInfo::default(), |_| None)
        .await
        .expect("reconfigure");
    assert_eq!(same.started, Vec::<SocketAddr>::new());
    assert_eq!(same.kept.len(), 2);
    // B's hold time changes: B restarts with a Cease, A keeps its session.
    c.peers[1].hold_time = Duration::from_secs(12);
    let router_b2 = {
        let lb = lb.clone();
        tokio::spawn(async move { router_on(&lb, 64512, 64513).await })
    };
    let r = h
        .reconfigure(&c, &NodeInfo::default(), |_| None)
        .await
        .expect("reconfigure");
    let b_addr = SocketAddr::from(([127, 0, 0, 1], pb));
    assert_eq!(
        (r.stopped.clone(), r.started.clone()),
        (vec![b_addr], vec![b_addr])
    );
    assert_eq!(r.kept, vec![SocketAddr::from(([127, 0, 0, 1], pa))]);
    let old_b = tokio::time::timeout(Duration::from_secs(5), router_b)
        .await
        .expect("B's first session ends")
        .expect("router task");
    let err = old_b.stats().last_error.clone().unwrap_or_default();
    assert!(err.contains("Cease (6/2)"), "router B saw: {err}");
    // The new session gets the whole route set without a set_routes call.
    wait_peer(&h, pb, "B again with the route", |s| {
        s.state == State::Established && s.stats.prefixes_advertised == 1 && s.stats.flaps == 0
    })
    .await;
    assert!(!router_a.is_finished(), "A's session was not touched");
    let a = h.peer_states()[0].clone();
    assert_eq!((a.state, a.stats.flaps), (State::Established, 0), "{a:?}");
    // A is removed: its session ends with a Cease, B stays.
    c.peers.remove(0);
    let r = h
        .reconfigure(&c, &NodeInfo::default(), |_| None)
        .await
        .expect("reconfigure");
    assert_eq!(r.kept, vec![b_addr]);
    let old_a = tokio::time::timeout(Duration::from_secs(5), router_a)
        .await
        .expect("A ends")
        .expect("router task");
    let err = old_a.stats().last_error.clone().unwrap_or_default();
    assert!(err.contains("Cease (6/2)"), "router A saw: {err}");
    assert_eq!(h.peer_states().len(), 1);
    // An invalid configuration changes nothing.
    c.peers[0].hold_time = Duration::from_secs(2);
    assert!(matches!(
        h.reconfigure(&c, &NodeInfo::default(), |_| None).await,
        Err(SpeakerError::InvalidConfig(_))
    ));
    assert!(
        !router_b2.is_finished(),
        "B's new session survives a bad config"
    );
    h.shutdown().await;
    let _ = router_b2.await;
}
