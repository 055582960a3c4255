#!/usr/bin/env bash
# Build rcrun, make a busybox bundle and run a real container in it. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
install -m 0755 "$(bash scripts/build-release.sh)" /usr/local/bin/rcrun

bundle=${BUNDLE:-/tmp/rcrun-demo}
rm -rf "$bundle"
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/etc"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$bundle/rootfs/etc/passwd"
echo "root:x:0:" > "$bundle/rootfs/etc/group"
cd "$bundle"
rcrun spec
# Non-interactive demo: a container that shows its own isolation and exits.
python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c",
    "echo \"hello from $(hostname), pid $$\"; id; "
    "grep Cap /proc/self/status; echo mounts: $(wc -l < /proc/self/mountinfo)"]
json.dump(c, open("config.json", "w"), indent=2)
PY
echo "== rcrun run -b $bundle demo"
rcrun run -b "$bundle" "demo-$$"
echo "== exit code $?; for a shell: cd $bundle && rcrun spec --help, or set process.terminal=true and args [\"sh\"]"
