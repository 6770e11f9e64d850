//! The node's network: the project's own bridge with the node's address, forwarding only on
//! that bridge, and a containment chain that drops whatever would cross between the bridge
//! and any other interface. Torn down by `teardown.sh`.

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

/// Creates the bridge and the containment rules.
pub(crate) fn create() -> Result<()> {
    crate::find_program("ip", "iproute2", &[])?;
    crate::find_program("iptables", "iptables", &[])?;
    let prefix = POD_CIDR.rsplit('/').next().unwrap_or("24");
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{NODE_IP}/{prefix}"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    // Forwarding on the bridge only (a Service's address is translated on this host, then
    // the packet goes back out on the bridge); the machine's own setting is left alone.
    let forwarding = format!("/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding");
    std::fs::write(&forwarding, b"1").map_err(TestEnvError::io(format!("writing {forwarding}")))?;
    // Bridged packets must pass iptables for Services between Pods on the bridge to work.
    let bridged = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if std::fs::read_to_string(bridged)
        .map(|v| v.trim() != "1")
        .unwrap_or(true)
    {
        return Err(TestEnvError::ControlPlane(format!(
            "{bridged} is not 1: load br_netfilter (modprobe br_netfilter) and set it to 1"
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
    Ok(())
}
