#!/bin/sh
# Removes every trace of the real node whose state is in $1: its processes (its programs,
# every process in the node's cgroups, containerd's shims), mounts,
# network namespaces, the bridge, the iptables rules (kube-proxy's and the containment chain),
# the Pods' cgroups, the files the kubelet and CNI keep outside the state directory (only
# those that were not there before), and the state directory itself.
#
#   teardown.sh STATE BRIDGE CGROUP_ROOT KUBE_PROXY
#
# Safe to run twice, and on a node whose processes are already gone.
set -u
state=$1 bridge=$2 cgroup_root=$3 kube_proxy=$4
say() { echo "teardown: $*" >&2; }

# 1. The node's own programs, then the containers: whatever runs in the node's cgroups, until
#    nothing does, and the shims that served them. Programs are told apart by their command
#    line, which names the state directory (a recorded PID could have been reused).
ours() {
  for dir in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null < "$dir/cmdline") || continue
    case $cmd in
      *"$state/"*) ;;
      *) continue ;;
    esac
    case ${cmd%% *} in
      */kubelet|*/kube-proxy|*/coredns|*containerd|*containerd-shim*) echo "${dir#/proc/}" ;;
    esac
  done
}
for _ in $(seq 1 50); do
  pids="$(ours) $(cat /sys/fs/cgroup/pids/"$cgroup_root"/cgroup.procs \
    $(find /sys/fs/cgroup/pids/"$cgroup_root" -mindepth 2 -name cgroup.procs 2>/dev/null) 2>/dev/null)"
  [ -z "$(echo $pids)" ] && break
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
  sleep 0.1
done

# 2. Mounts under the state directory (container root filesystems, volumes, network
#    namespaces), deepest first.
for _ in 1 2 3; do
  mounts=$(awk -v s="$state/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  [ -z "$mounts" ] && break
  for m in $mounts; do umount -l "$m" 2>/dev/null; done
done

# 3. Network: kube-proxy's chains, the containment chain, the bridge (its veths went with the
#    network namespaces).
if [ -x "$kube_proxy" ]; then
  "$kube_proxy" --cleanup --v=0 >/dev/null 2>&1 || say "kube-proxy --cleanup failed"
fi
# What kube-proxy --cleanup leaves: the kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
# KUBE-IPTABLES-HINT) and the jumps to them, for IPv4 and IPv6; then the containment chains.
# Rules are deleted by iptables-restore from iptables-save's own lines (never by a shell
# reading them). (The machine runs no other kubelet.)
for family in iptables ip6tables; do
  for table in filter nat mangle; do
    saved=$("$family-save" -t "$table" 2>/dev/null) || continue
    {
      echo "*$table"
      printf '%s\n' "$saved" | grep -E '^-A [A-Z]+ .*-j (KUBE-|COFFER-)' | sed 's/^-A /-D /'
      printf '%s\n' "$saved" | grep -E -- "^-A [A-Z]+ .*(-i|-o) $bridge -j DROP" | sed 's/^-A /-D /'
      printf '%s\n' "$saved" | sed -n 's/^:\(\(KUBE\|COFFER\)-[^ ]*\) .*/-F \1/p'
      printf '%s\n' "$saved" | sed -n 's/^:\(\(KUBE\|COFFER\)-[^ ]*\) .*/-X \1/p'
      echo "COMMIT"
    } | "$family-restore" -w 5 --noflush 2>/dev/null || say "$family-restore -t $table failed"
  done
done
ip link del "$bridge" 2>/dev/null

# 4. The Pods' cgroups, deepest first.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy$cgroup_root" ] || continue
  find "$hierarchy$cgroup_root" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 5. What the kubelet and CNI keep in fixed places, where it was not there before (only once
#    the node recorded what was: a node that never started touched none of them).
if [ -f "$state/preexisting" ]; then
  for path in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd; do
    if ! grep -qx "$path" "$state/preexisting"; then
      rm -rf "$path"
    fi
  done
fi
rm -f /var/lib/cni/results/coffer-* 2>/dev/null
find /var/log/containers -maxdepth 1 -type l -lname "$state/*" -delete 2>/dev/null

# 6. The kernel settings the node changed, as they were before it started.
if [ -f "$state/sysctl" ]; then
  while read -r name value; do
    [ -n "$name" ] && printf '%s\n' "$value" > "/proc/sys/$name" 2>/dev/null
  done < "$state/sysctl"
fi

# 7. The state directory, unless asked to keep it (COFFER_TEST_KEEP=1 keeps the logs).
if [ "${COFFER_TEST_KEEP:-}" = 1 ]; then
  say "kept $state"
else
  rm -rf "$state"
fi
exit 0
