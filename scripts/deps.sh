#!/usr/bin/env bash
# Install what rcrun's demo and tests need from Debian's packages and the Rust toolchain's
# registry. Idempotent: a fresh machine gets everything, a prepared one is left alone.
set -euo pipefail

need=()
# The test rootfs needs a static busybox (Debian's busybox package is dynamic).
if ! { [ -x /bin/busybox ] && { ldd /bin/busybox 2>&1 || true; } | grep -Eq "not a dynamic|statically linked"; }; then
  need+=(busybox-static)
fi
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# crates/net: NAT and published ports go through nft's JSON interface; the net conformance
# suite measures throughput with iperf3 (and the guest image copies both in).
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
# checkpoint/restore: CRIU (works in the guest; on a kernel newer than it, rcrun reports that)
[ -x /usr/sbin/criu ] || command -v criu >/dev/null 2>&1 || need+=(criu)
# ... and under containerd in that guest (conformance/tests/checkpoint_containerd.rs)
command -v containerd-shim-runc-v2 >/dev/null 2>&1 || need+=(containerd)
# libseccomp is the reference the seccomp compiler is tested against (tests only, never linked
# into rcrun): crates/seccomp/tests/libseccomp_diff.rs.
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev pkg-config)
for extra in "$@"; do
  command -v "$extra" >/dev/null 2>&1 || need+=("$extra")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  }
fi
