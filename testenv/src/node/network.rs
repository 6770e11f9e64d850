//! The node's network: the project's own bridge with the node's address, forwarding only on
//! that bridge, and a containment chain that drops whatever would cross between the bridge
//! and any other interface. Torn down by `teardown.sh`.

use std::path::Path;
use std::process::Command;

use super::config::{BRIDGE, NODE_IP, POD_CIDR};
use crate::process::run;
use crate::{Result, TestEnvError};

/// The chain (mangle table, ahead of anything kube-proxy or CNI adds to filter/nat) that
/// keeps Pod traffic on this machine.
pub(crate) const CONTAIN: &str = "COFFER-CONTAIN";
/// The chain (mangle PREROUTING) that drops what comes from another interface to the bridge's
/// addresses.
pub(crate) const CONTAIN_IN: &str = "COFFER-CONTAIN-IN";
/// The chain (mangle INPUT) that lets Pods reach this host only at the API server's port and
/// cluster DNS (and answer what the host asked them): no other service of the machine, none
/// of which could then carry their traffic further.
pub(crate) const CONTAIN_HOST: &str = "COFFER-CONTAIN-HOST";

fn ip6tables(args: &[&str]) -> Result<()> {
    run(
        &format!("ip6tables {}", args.join(" ")),
        Command::new("ip6tables").args(["-w", "5"]).args(args),
    )
    .map(|_| ())
}

fn ip(args: &[&str]) -> Result<()> {
    run(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
    .map(|_| ())
}

fn iptables(args: &[&str]) -> Result<()> {
    run(
        &format!("iptables {}", args.join(" ")),
        Command::new("iptables").args(["-w", "5"]).args(args),
    )
    .map(|_| ())
}

/// Creates the bridge and the containment rules; Pods may reach this host at `api_port` and
/// port 53 of the node's address.
pub(crate) fn create(api_port: u16) -> Result<()> {
    crate::find_program("ip", "iproute2", &[])?;
    crate::find_program("iptables", "iptables", &[])?;
    let prefix = POD_CIDR.rsplit('/').next().unwrap_or("24");
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{NODE_IP}/{prefix}"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    // Forwarding on the bridge (a Service's address is translated on this host, then the
    // packet goes back out on the bridge). The CNI bridge plugin also turns the machine's
    // ip_forward on; the teardown puts it back, and the chains below drop whatever would be
    // forwarded between the bridge and another interface meanwhile.
    let forwarding = format!("/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding");
    std::fs::write(&forwarding, b"1").map_err(TestEnvError::io(format!("writing {forwarding}")))?;
    // No IPv6 on the bridge: the rules below are IPv4's.
    let no_ipv6 = format!("/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6");
    if Path::new(&no_ipv6).exists() {
        std::fs::write(&no_ipv6, b"1").map_err(TestEnvError::io(format!("writing {no_ipv6}")))?;
    }
    // Bridged packets must pass iptables for Services between Pods on the bridge to work
    // (the teardown puts the recorded setting back).
    let bridged = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !bridged.exists() {
        let _ = Command::new("modprobe").arg("br_netfilter").status();
    }
    if std::fs::write(bridged, b"1").is_err() {
        return Err(TestEnvError::ControlPlane(format!(
            "{} cannot be set: load br_netfilter (modprobe br_netfilter)",
            bridged.display()
        )));
    }
    iptables(&["-t", "mangle", "-N", CONTAIN])?;
    // Nothing from the bridge to another interface, nothing from another interface to the
    // bridge or to the node's address (the API server and kubelet listen there).
    iptables(&[
        "-t", "mangle", "-A", CONTAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP",
    ])?;
    iptables(&[
        "-t", "mangle", "-A", CONTAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP",
    ])?;
    iptables(&["-t", "mangle", "-I", "FORWARD", "1", "-j", CONTAIN])?;
    iptables(&["-t", "mangle", "-N", CONTAIN_IN])?;
    iptables(&["-t", "mangle", "-A", CONTAIN_IN, "-i", "lo", "-j", "RETURN"])?;
    iptables(&[
        "-t", "mangle", "-A", CONTAIN_IN, "-i", BRIDGE, "-j", "RETURN",
    ])?;
    iptables(&["-t", "mangle", "-A", CONTAIN_IN, "-j", "DROP"])?;
    iptables(&[
        "-t",
        "mangle",
        "-I",
        "PREROUTING",
        "1",
        "-d",
        POD_CIDR,
        "-j",
        CONTAIN_IN,
    ])?;
    let api = api_port.to_string();
    iptables(&["-t", "mangle", "-N", CONTAIN_HOST])?;
    for rule in [
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "RETURN",
        ][..],
        &["-d", NODE_IP, "-p", "tcp", "--dport", &api, "-j", "RETURN"],
        &["-d", NODE_IP, "-p", "udp", "--dport", "53", "-j", "RETURN"],
        &["-d", NODE_IP, "-p", "tcp", "--dport", "53", "-j", "RETURN"],
        &["-j", "DROP"],
    ] {
        let mut args = vec!["-t", "mangle", "-A", CONTAIN_HOST];
        args.extend_from_slice(rule);
        iptables(&args)?;
    }
    iptables(&[
        "-t",
        "mangle",
        "-I",
        "INPUT",
        "1",
        "-i",
        BRIDGE,
        "-j",
        CONTAIN_HOST,
    ])?;
    // And for IPv6, should a Pod's interface get an address: nothing in, nothing through.
    for (chain, direction) in [("INPUT", "-i"), ("FORWARD", "-i"), ("FORWARD", "-o")] {
        ip6tables(&[
            "-t", "mangle", "-I", chain, "1", direction, BRIDGE, "-j", "DROP",
        ])?;
    }
    Ok(())
}
