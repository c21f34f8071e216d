//! Networking through the library API the supervisor calls, on real kernel
//! interfaces. Every test runs in a network namespace it creates (the host's
//! networking is never touched); containers are processes in their own
//! network and mount namespaces.

mod net_support;

use std::net::{Ipv4Addr, TcpListener};

use launcher::net::{self, ExposedPort, Link, NetworkMode, NetworkRequest, PortSpec};
use net_support::*;

fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn create(state: &std::path::Path, name: &str, subnet: &str) {
    net::create_network(
        state,
        &net::CreateNetwork {
            name: name.into(),
            subnet: Some(net::Subnet::parse(subnet).expect("subnet")),
            ..Default::default()
        },
    )
    .expect("create network");
}

#[test]
fn none_host_and_container_modes() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();

    // none: only lo, and it is up.
    let none = Ctr::new(dir, "nonec");
    let req = NetworkRequest {
        mode: NetworkMode::None,
        ..Default::default()
    };
    let att = none.attach(dir, &req);
    assert_eq!(att.ip, None);
    let names = none.sh("ip -o link show | cut -d: -f2");
    assert_eq!(names.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    assert!(none.sh("ip -o link show lo").contains("UP"));

    // host: sees the (test) host's interfaces.
    sh("ip link add tdummy0 type veth peer name tdummy1");
    let hostc = Ctr::in_host_ns(dir, "hostc");
    let att = hostc.attach(
        dir,
        &NetworkRequest {
            mode: NetworkMode::Host,
            ..Default::default()
        },
    );
    assert_eq!(att.mode, "host");
    assert!(hostc.sh("ip -o link show").contains("tdummy0"));

    // container:NAME: same namespace, same address, talk over 127.0.0.1.
    let mut a = Ctr::new(dir, "owner");
    let att_a = a.attach(dir, &on("bridge"));
    a.serve("tcp", 7000, "owner");
    let b = Ctr::joined(dir, "joiner", &a);
    let att_b = net::attach(
        &b.ctx(dir),
        b.pid,
        &NetworkRequest {
            mode: NetworkMode::parse("container:owner").expect("mode"),
            ..Default::default()
        },
    )
    .expect("attach container mode");
    assert_eq!(att_b.ip, att_a.ip);
    assert_eq!(att_b.mode, format!("container:{}", a.id));
    let reply = b
        .ask("tcp", "127.0.0.1", 7000, 20)
        .expect("reach owner over lo");
    assert_eq!(reply, "owner 127.0.0.1");

    for c in [&none.id, &hostc.id, &a.id, &b.id] {
        net::detach(dir, c).expect("detach");
    }
    assert!(
        strata_links().iter().all(|l| l == "strata0"),
        "{:?}",
        strata_links()
    );
}

#[test]
fn user_network_names_aliases_restart_and_isolation() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();
    create(dir, "front", "10.31.0.0/24");
    create(dir, "back", "10.32.0.0/24");

    let mut a = Ctr::new(dir, "alpha");
    let mut b = Ctr::new(dir, "bravo");
    let mut req_a = on("front");
    req_a.aliases = vec!["web".into()];
    let mut req_b = on("front");
    req_b.aliases = vec!["db".into()];
    let att_a = a.attach(dir, &req_a);
    let att_b = b.attach(dir, &req_b);
    a.serve("tcp", 7000, "alpha");
    b.serve("tcp", 7000, "bravo");

    // Both ways, by name and by alias.
    let r = a
        .ask("tcp", "bravo", 7000, 20)
        .expect("alpha -> bravo by name");
    assert_eq!(r, format!("bravo {}", ip_of(&att_a)));
    assert!(a
        .ask("tcp", "db", 7000, 5)
        .expect("alpha -> db")
        .starts_with("bravo "));
    let r = b
        .ask("tcp", "alpha", 7000, 20)
        .expect("bravo -> alpha by name");
    assert_eq!(r, format!("alpha {}", ip_of(&att_b)));
    assert!(b
        .ask("tcp", "web", 7000, 5)
        .expect("bravo -> web")
        .starts_with("alpha "));

    // A container on another network cannot reach them, by name or address.
    let c = Ctr::new(dir, "charlie");
    let att_c = c.attach(dir, &on("back"));
    assert!(!c.hosts_text().contains("alpha"));
    assert!(c.ask("tcp", "alpha", 7000, 1).is_none());
    assert!(
        c.ask("tcp", &ip_of(&att_a).to_string(), 7000, 1).is_none(),
        "charlie on back reached alpha on front"
    );
    assert!(ip_of(&att_c).to_string().starts_with("10.32.0."));

    // bravo restarts (new process, new namespace) and gets a new address;
    // the name follows it.
    let old_ip = ip_of(&att_b);
    b.stop();
    net::detach(dir, &b.id).expect("detach bravo");
    assert!(
        !a.hosts_text().contains("bravo"),
        "stale name left:\n{}",
        a.hosts_text()
    );
    let mut b2 = Ctr::new(dir, "bravo");
    let att_b2 = b2.attach(dir, &req_b);
    b2.serve("tcp", 7000, "bravo2");
    assert_ne!(
        ip_of(&att_b2),
        old_ip,
        "restart should move to a new address"
    );
    assert!(a
        .hosts_text()
        .contains(&format!("{}\tbravo db", ip_of(&att_b2))));
    assert!(a
        .ask("tcp", "bravo", 7000, 20)
        .expect("name follows restart")
        .starts_with("bravo2 "));
    assert!(a
        .ask("tcp", "db", 7000, 5)
        .expect("alias follows restart")
        .starts_with("bravo2 "));

    // connect / disconnect on a running container.
    net::connect(dir, "back", "alpha", &net::ConnectOptions::default()).expect("connect");
    assert!(c.hosts_text().contains("alpha"));
    let mut c_serv = c;
    c_serv.serve("tcp", 7001, "charlie");
    assert!(a
        .ask("tcp", "charlie", 7001, 20)
        .expect("alpha reaches charlie after connect")
        .starts_with("charlie "));
    net::disconnect(dir, "back", "alpha").expect("disconnect");
    assert!(!c_serv.hosts_text().contains("alpha"));
    assert!(a.ask("tcp", "charlie", 7001, 1).is_none());

    // A network in use cannot be removed; afterwards it can.
    assert!(matches!(
        net::remove_network(dir, "front"),
        Err(net::NetError::NetworkInUse { .. })
    ));
    for id in [&a.id, &b2.id, &c_serv.id] {
        net::detach(dir, id).expect("detach");
    }
    net::remove_network(dir, "front").expect("rm front");
    assert_eq!(
        net::prune_networks(dir).expect("prune"),
        vec!["back".to_string()]
    );
    assert!(strata_links().is_empty(), "{:?}", strata_links());
}

#[test]
fn default_bridge_ip_yes_name_no_link_yes() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();

    let mut srv = Ctr::new(dir, "server");
    let mut req = on("bridge");
    req.expose = ExposedPort::parse("80").expect("expose");
    let att_s = srv.attach(dir, &req);
    srv.serve("tcp", 80, "server");
    // Default bridge: a subnet that does not clash with the (empty) routes.
    assert!(ip_of(&att_s).to_string().starts_with("172.17."));

    let plain = Ctr::new(dir, "plain");
    plain.attach(dir, &on("bridge"));
    let ip = ip_of(&att_s).to_string();
    assert!(plain
        .ask("tcp", &ip, 80, 20)
        .expect("by ip")
        .starts_with("server "));
    assert!(
        plain.ask("tcp", "server", 80, 1).is_none(),
        "name resolved on the default bridge"
    );

    let linked = Ctr::new(dir, "linked");
    let mut req = on("bridge");
    req.links = vec![Link::parse("server:db").expect("link")];
    let att_l = linked.attach(dir, &req);
    assert!(linked
        .ask("tcp", "db", 80, 20)
        .expect("by link alias")
        .starts_with("server "));
    let env: std::collections::BTreeMap<_, _> = att_l.link_env.iter().cloned().collect();
    assert_eq!(env.get("DB_PORT_80_TCP_ADDR"), Some(&ip));
    assert_eq!(
        env.get("DB_PORT_80_TCP_PORT").map(String::as_str),
        Some("80")
    );
    assert_eq!(env.get("DB_PORT").cloned(), Some(format!("tcp://{ip}:80")));
    assert_eq!(env.get("DB_NAME").map(String::as_str), Some("/linked/db"));

    // A link to a container that is not there is a clear error, leaving nothing.
    let lone = Ctr::new(dir, "lone");
    let mut req = on("bridge");
    req.links = vec![Link::parse("ghost").expect("link")];
    let err = net::attach(&lone.ctx(dir), lone.pid, &req).expect_err("link to ghost");
    assert!(err.to_string().contains("ghost"), "{err}");
    for c in [&srv.id, &plain.id, &linked.id] {
        net::detach(dir, c).expect("detach");
    }
    assert_eq!(strata_links(), vec!["strata0".to_string()]);
}

#[test]
fn published_ports_tcp_udp_all_source_and_release() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();

    // A client "machine" next to the host, to show the real source address.
    let client = NetNs::new();
    sh(&format!(
        "ip link add tcl0 type veth peer name eth0 netns {} && ip addr add 10.250.0.1/24 dev tcl0 && ip link set tcl0 up",
        client.pid
    ));
    {
        let _c = client.enter();
        sh("ip addr add 10.250.0.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.250.0.1");
    }

    let mut web = Ctr::new(dir, "web");
    let mut req = on("bridge");
    req.publish = [
        "127.0.0.1:18080:80",
        "18081:80/udp",
        "18082:80",
        "18090-18091:90-91",
    ]
    .iter()
    .map(|p| PortSpec::parse(p).expect("port spec"))
    .collect();
    req.publish_all = true;
    req.expose = ExposedPort::parse("9000").expect("expose");
    let att = web.attach(dir, &req);
    web.serve("tcp", 80, "tcp80");
    web.serve("udp", 80, "udp80");
    web.serve("tcp", 9000, "tcp9000");
    web.serve("tcp", 91, "tcp91");
    let gw = att.gateway.expect("gateway").to_string();

    // 127.0.0.1 on the host: answered; loopback sources reach the container
    // masqueraded to the gateway (127.0.0.1 cannot be routed into it).
    let r = ask("tcp", "127.0.0.1", 18080, 20).expect("127.0.0.1:18080");
    assert_eq!(r, format!("tcp80 {gw}"));
    let r = ask("udp", "127.0.0.1", 18081, 20).expect("udp 18081");
    assert!(r.starts_with("udp80 "), "{r}");
    let r = ask("tcp", "127.0.0.1", 18091, 20).expect("range 18091");
    assert!(r.starts_with("tcp91 "), "{r}");
    // 18080 is bound to 127.0.0.1 only.
    {
        let _c = client.enter();
        assert!(
            ask("tcp", "10.250.0.1", 18080, 1).is_none(),
            "127.0.0.1-only port answered outside"
        );
        // A remote client: the container sees its real address.
        let r = ask("tcp", "10.250.0.1", 18082, 20).expect("10.250.0.1:18082 from client");
        assert_eq!(r, "tcp80 10.250.0.2", "source address not kept");
        let r = ask("udp", "10.250.0.1", 18081, 20).expect("udp from client");
        assert_eq!(r, "udp80 10.250.0.2", "udp source not kept");
    }

    // Hairpin: a container on the bridge uses the published port through
    // the host's (gateway) address.
    let peer = Ctr::new(dir, "peer");
    peer.attach(dir, &on("bridge"));
    let r = peer
        .ask("tcp", &gw, 18082, 20)
        .expect("hairpin to published port");
    assert_eq!(r, format!("tcp80 {gw}"));
    net::detach(dir, &peer.id).expect("detach peer");
    drop(peer);

    // -P: 9000 on a pool port, shown by port_lines.
    let p9000 = att
        .ports
        .iter()
        .find(|b| b.container_port == 9000)
        .expect("-P published 9000")
        .host_port;
    assert!(p9000 >= 1024);
    let r = ask("tcp", "127.0.0.1", p9000, 20).expect("-P port");
    assert!(r.starts_with("tcp9000 "), "{r}");
    let lines = net::port_lines(dir, "web", None).expect("port lines");
    assert!(
        lines.contains(&"80/tcp -> 127.0.0.1:18080".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"80/udp -> 0.0.0.0:18081".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("9000/tcp -> 0.0.0.0:{p9000}")),
        "{lines:?}"
    );
    assert_eq!(
        net::port_lines(dir, "web", Some("80/udp"))
            .expect("filter")
            .len(),
        1
    );
    let settings = att.network_settings();
    assert_eq!(settings["Ports"]["80/tcp"][0]["HostPort"], "18080");
    assert_eq!(
        settings["Networks"]["bridge"]["IPAddress"],
        ip_of(&att).to_string()
    );

    // Taken ports: by another container, and by another program.
    let other = Ctr::new(dir, "other");
    let mut dup = on("bridge");
    dup.publish = vec![PortSpec::parse("18080:80").expect("spec")];
    let err = net::attach(&other.ctx(dir), other.pid, &dup).expect_err("port taken by web");
    assert!(
        err.to_string().contains("18080") && err.to_string().contains("in use"),
        "{err}"
    );
    let squatter = TcpListener::bind("127.0.0.1:18083").expect("bind squatter");
    dup.publish = vec![PortSpec::parse("18083:80").expect("spec")];
    let err = net::attach(&other.ctx(dir), other.pid, &dup).expect_err("port taken by a program");
    assert!(err.to_string().contains("another program"), "{err}");
    drop(squatter);
    // The failed attaches left no veth or lease behind.
    assert_eq!(strata_links().len(), 2, "{:?}", strata_links());

    // While published, the host port is held; after detach it is free and
    // the rules are gone.
    assert!(TcpListener::bind("127.0.0.1:18082").is_err());
    net::detach(dir, &web.id).expect("detach");
    drop(att);
    web.stop();
    for port in [18080, 18082, 18090, 18091, p9000] {
        TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} not freed: {e}"));
    }
    std::net::UdpSocket::bind("0.0.0.0:18081").expect("udp port freed");
    let table = sh("nft list table ip strata");
    assert!(!table.contains("dnat to"), "rules left:\n{table}");
    sh("ip link del tcl0");
}

#[test]
fn ipam_fifty_containers_no_reuse_no_leak() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();
    create(dir, "many", "10.77.0.0/26"); // 62 hosts, gateway .1

    let mut live: Vec<(Ctr, Ipv4Addr)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50 {
        let c = Ctr::new(dir, &format!("m{i}"));
        let att = c.attach(dir, &on("many"));
        let ip = ip_of(&att);
        assert_ne!(ip, Ipv4Addr::new(10, 77, 0, 1), "gateway handed out");
        assert!(
            live.iter().all(|(_, l)| *l != ip),
            "{ip} handed out twice while live"
        );
        seen.insert(ip);
        live.push((c, ip));
        // Remove every third container as we go, so free and taken mix.
        if i % 3 == 2 {
            let (mut old, _) = live.remove(0);
            net::detach(dir, &old.id).expect("detach");
            old.stop();
        }
    }
    // Interfaces match the live containers exactly.
    assert_eq!(strata_links().len(), live.len() + 1);
    // A fixed address that is taken is refused; a free one is given.
    let fixed = Ctr::new(dir, "fixed");
    let mut req = on("many");
    req.ip = Some(live[0].1);
    assert!(matches!(
        net::attach(&fixed.ctx(dir), fixed.pid, &req),
        Err(net::NetError::AddressInUse { .. })
    ));
    let free = (2..63u8)
        .map(|d| Ipv4Addr::new(10, 77, 0, d))
        .find(|ip| live.iter().all(|(_, l)| l != ip))
        .expect("a free address");
    req.ip = Some(free);
    assert_eq!(fixed.attach(dir, &req).ip, Some(free));
    assert!(fixed
        .sh("ip -o -4 addr show eth0")
        .contains(&free.to_string()));
    net::detach(dir, &fixed.id).expect("detach fixed");

    for (c, _) in live.iter_mut() {
        net::detach(dir, &c.id).expect("detach");
        c.stop();
    }
    let info = net::inspect_networks(dir, &["many".to_string()]).expect("inspect");
    assert_eq!(
        info[0]["Containers"],
        serde_json::json!({}),
        "leases leaked"
    );
    let state = std::fs::read_to_string(dir.join("net/state.json")).expect("state");
    let v: serde_json::Value = serde_json::from_str(&state).expect("json");
    assert_eq!(
        v["networks"]["many"]["pool"]["leases"],
        serde_json::json!({})
    );
    assert_eq!(
        strata_links(),
        vec![links()
            .into_iter()
            .find(|l| l.starts_with("st-"))
            .unwrap_or_default()]
    );
    net::remove_network(dir, "many").expect("rm");
    assert!(strata_links().is_empty());
}

#[test]
fn killed_supervisor_is_cleaned_by_next_command() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();
    create(dir, "life", "10.41.0.0/24");
    let a = Ctr::new(dir, "stays");
    a.attach(dir, &on("life"));
    let b = Ctr::new(dir, "dies");
    let mut supervisor = std::process::Command::new("sleep")
        .arg("100000")
        .spawn()
        .expect("spawn fake supervisor");
    let mut ctx = b.ctx(dir);
    ctx.supervisor_pid = supervisor.id();
    let mut req = on("life");
    req.publish = vec![PortSpec::parse("18500:80").expect("spec")];
    let att = net::attach(&ctx, b.pid, &req).expect("attach");
    assert!(a.hosts_text().contains("dies"));
    assert!(sh("nft list table ip strata").contains("dport 18500"));
    // kill -9 of the supervisor: its held port goes with it in real life.
    drop(att);
    supervisor.kill().expect("kill");
    supervisor.wait().expect("wait");
    let cleaned = net::cleanup_stale(dir).expect("cleanup");
    assert_eq!(cleaned, vec![b.id.clone()]);
    assert!(!sh("nft list table ip strata").contains("18500"));
    assert!(!a.hosts_text().contains("dies"));
    assert_eq!(strata_links().len(), 2, "{:?}", strata_links()); // bridge + stays' veth
    net::detach(dir, &a.id).expect("detach");
}

#[test]
fn overlay_two_hosts_exchange_tcp() {
    let host_a = NetNs::new();
    let host_b = NetNs::new();
    // Underlay link between the two "machines".
    {
        let _g = host_a.enter();
        sh(&format!(
            "ip link add und0 type veth peer name und0 netns {} && ip addr add 192.168.77.1/24 dev und0 && ip link set und0 up",
            host_b.pid
        ));
    }
    {
        let _g = host_b.enter();
        sh("ip addr add 192.168.77.2/24 dev und0 && ip link set und0 up");
    }
    let st_a = state_dir();
    let st_b = state_dir();
    let mk = |dir: &std::path::Path, range: &str, local: [u8; 4], peer: [u8; 4]| {
        net::create_network(
            dir,
            &net::CreateNetwork {
                name: "ov".into(),
                overlay: true,
                subnet: Some(net::Subnet::parse("10.123.0.0/24").expect("subnet")),
                ip_range: Some(net::Subnet::parse(range).expect("range")),
                peers: vec![Ipv4Addr::from(peer)],
                local: Some(Ipv4Addr::from(local)),
                ..Default::default()
            },
        )
        .expect("create overlay");
    };
    let (mut ca, att_a) = {
        let _g = host_a.enter();
        mk(
            st_a.path(),
            "10.123.0.0/25",
            [192, 168, 77, 1],
            [192, 168, 77, 2],
        );
        let c = Ctr::new(st_a.path(), "ova");
        let att = c.attach(st_a.path(), &on("ov"));
        (c, att)
    };
    let (mut cb, att_b) = {
        let _g = host_b.enter();
        mk(
            st_b.path(),
            "10.123.0.128/25",
            [192, 168, 77, 2],
            [192, 168, 77, 1],
        );
        let c = Ctr::new(st_b.path(), "ovb");
        let att = c.attach(st_b.path(), &on("ov"));
        (c, att)
    };
    assert!(ip_of(&att_a).octets()[3] < 128 && ip_of(&att_b).octets()[3] > 128);
    ca.serve("tcp", 7100, "on-a");
    cb.serve("tcp", 7100, "on-b");
    let r = ca
        .ask("tcp", &ip_of(&att_b).to_string(), 7100, 25)
        .expect("a -> b over vxlan");
    assert_eq!(
        r.split(':').next(),
        Some(format!("on-b {}", ip_of(&att_a)).as_str())
    );
    let r = cb
        .ask("tcp", &ip_of(&att_a).to_string(), 7100, 25)
        .expect("b -> a over vxlan");
    assert_eq!(
        r.split(':').next(),
        Some(format!("on-a {}", ip_of(&att_b)).as_str())
    );
    // A bigger transfer (full-size segments over the 1450-byte MTU) echoes whole.
    cb.serve_echo(7200);
    let mut echoed = String::new();
    for _ in 0..20 {
        echoed = ca.sh(&format!(
            "head -c 200000 /dev/zero | socat -T 10 -t 10 - TCP:{}:7200,connect-timeout=2 | wc -c",
            ip_of(&att_b)
        ));
        if echoed.trim() == "200000" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(echoed.trim(), "200000");

    for (ns, st, c) in [(&host_a, &st_a, &mut ca), (&host_b, &st_b, &mut cb)] {
        let _g = ns.enter();
        net::detach(st.path(), &c.id).expect("detach");
        c.stop();
        net::remove_network(st.path(), "ov").expect("rm overlay");
        assert!(strata_links().is_empty(), "{:?}", strata_links());
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let host = NetNs::new();
    let _g = host.enter();
    let st = state_dir();
    let dir = st.path();
    create(dir, "one", "10.51.0.0/24");
    let err = net::create_network(
        dir,
        &net::CreateNetwork {
            name: "two".into(),
            subnet: Some(net::Subnet::parse("10.51.0.0/16").expect("subnet")),
            ..Default::default()
        },
    )
    .expect_err("overlapping subnet");
    assert!(err.to_string().contains("overlaps network one"), "{err}");
    assert!(matches!(
        net::create_network(
            dir,
            &net::CreateNetwork {
                name: "one".into(),
                ..Default::default()
            }
        ),
        Err(net::NetError::NetworkExists(_))
    ));
    assert!(matches!(
        net::remove_network(dir, "bridge"),
        Err(net::NetError::Predefined(_))
    ));
    assert!(matches!(
        net::remove_network(dir, "nope"),
        Err(net::NetError::NoSuchNetwork(_))
    ));
    let c = Ctr::new(dir, "badreq");
    let mut req = on("bridge");
    req.ip = Some(Ipv4Addr::new(172, 17, 0, 9));
    let err = net::attach(&c.ctx(dir), c.pid, &req).expect_err("--ip on default bridge");
    assert!(err.to_string().contains("user-defined network"), "{err}");
    let mut req = on("one");
    req.ip = Some(Ipv4Addr::new(10, 52, 0, 9));
    assert!(matches!(
        net::attach(&c.ctx(dir), c.pid, &req),
        Err(net::NetError::AddressOutside { .. })
    ));
    let names: Vec<String> = net::list_networks(dir)
        .expect("ls")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["bridge", "host", "none", "one"]);
    net::remove_network(dir, "one").expect("rm");
    assert!(strata_links().iter().all(|l| l == "strata0"));
}

#[test]
fn host_namespace_is_untouched() {
    // Runs in the test process's own namespace: nothing strata makes may
    // appear here, whatever the other tests do inside theirs.
    need_tools();
    let leftovers = strata_links();
    assert!(
        leftovers.is_empty(),
        "strata interfaces in the host namespace: {leftovers:?}"
    );
    let tables = sh_any("nft list tables 2>/dev/null");
    assert!(
        !tables.contains("ip strata"),
        "strata nft table in the host namespace"
    );
    let named = sh_any("ip netns list 2>/dev/null");
    assert!(
        !named.contains("strata"),
        "strata network namespaces left: {named}"
    );
}
