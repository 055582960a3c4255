#!/usr/bin/env python3
"""rcrun real-kernel test guest: boots Debian 12's 6.1 kernel under qemu TCG
with a harness-built initramfs and runs one command inside.

Entry points (thin wrappers next to this file):
  guest/run        [options] [--] CMD...   boot a guest, run CMD, report
  guest/run-suite  [options] [-- TEST-ARGS] build rcrun + rcrun-conformance, run it
  guest/build      [--force]               only prepare kernel + base initramfs

Python 3 standard library only.  See docs/testing.md.
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILDER_VERSION = "12"  # bump to force a base initramfs rebuild

# MACs of the net profile's spare NICs (conformance/tests/net_devices.rs and net.rs look for them)
SPARE_NIC_MACS = ("52:54:00:c0:ff:10", "52:54:00:c0:ff:11")

PROFILES = ("cgroup2", "cgroup1", "numa", "net", "criu", "base")
DEFAULT_PROFILE = "cgroup2"
DEFAULT_TIMEOUT = 900
DEFAULT_MEMORY = "2G"
CPUS = 2  # the harness uses at most 2 host cores (2 vCPUs)

# commands the harness needs on the host -> Debian package providing them
HOST_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "cpio": "cpio",
    "depmod": "kmod",
    "kmod": "kmod",
    "ip": "iproute2",
    "criu": "criu",
    "runc": "runc",
    "objcopy": "binutils",
    "xtables-nft-multi": "iptables",  # CRIU's network locking runs iptables-restore
    "keyctl": "keyutils",  # breakout.rs: the session keyring of a container
    "strace": "strace",  # hostile.rs: SIGKILL injected at every step
}
BUSYBOX_PKG = "busybox-static"

# modules put in the base initramfs (with their dependencies); all profiles
# share one base image, the profile only decides what /init loads
MODULES = [
    # net profile
    "bonding", "8021q", "dummy", "ipvlan", "macvlan", "veth", "bridge", "tun",
    # net profile: two spare PCI NICs standing in for SR-IOV VFs (they outlive a netns)
    "virtio_net",
    # criu profile
    "inet_diag", "tcp_diag", "udp_diag", "raw_diag", "unix_diag", "netlink_diag",
    "af_packet_diag", "nf_tables", "nft_reject_inet", "nft_ct", "crc32c_generic",
    "nf_conntrack_netlink",
    # crates/net: NAT and published ports (nftables), QoS (tc)
    "nft_chain_nat", "nft_nat", "nft_masq", "nft_fib_ipv4", "nft_fib_ipv6", "sch_tbf",
    "sch_ingress", "cls_matchall", "act_police",
    # generally useful for container tests / --share
    "overlay", "9p", "9pnet_virtio", "virtio_pci", "loop", "br_netfilter", "nf_conntrack",
]

# host programs copied into the base image (with their shared libraries)
HOST_TOOLS = {
    # guest path: candidates on the host.  /bin/sh is dash, not busybox: Debian's
    # busybox-static prefers its own applets over $PATH inside its shell, which
    # would shadow iproute2's ip, kmod's modprobe, ...
    "/usr/bin/dash": ["/usr/bin/dash", "/bin/dash"],
    "/usr/bin/bash": ["/usr/bin/bash", "/bin/bash"],
    "/usr/sbin/ip": ["/usr/bin/ip", "/bin/ip", "/usr/sbin/ip", "/sbin/ip"],
    "/usr/bin/kmod": ["/usr/bin/kmod", "/bin/kmod"],
    "/usr/sbin/criu": ["/usr/sbin/criu", "/sbin/criu"],
    "/usr/sbin/runc": ["/usr/sbin/runc", "/usr/bin/runc"],
    "/usr/sbin/xtables-nft-multi": ["/usr/sbin/xtables-nft-multi"],
    "/usr/bin/keyctl": ["/usr/bin/keyctl", "/bin/keyctl"],
    "/usr/bin/strace": ["/usr/bin/strace"],
    # a bash script (breakout.rs copies a dynamic runc's libraries into a rootfs with it)
    "/usr/bin/ldd": ["/usr/bin/ldd"],
    # crates/net and the conformance net suites: NAT rules, qdiscs, traffic between netns
    "/usr/sbin/nft": ["/usr/sbin/nft"],
    "/usr/sbin/tc": ["/usr/sbin/tc", "/sbin/tc"],
    "/usr/bin/iperf3": ["/usr/bin/iperf3"],
    "/usr/bin/nsenter": ["/usr/bin/nsenter"],
    # CRIU dumps tmpfs mounts with GNU tar (busybox tar lacks its options)
    "/usr/bin/tar": ["/usr/bin/tar", "/bin/tar"],
}
XTABLES_LINKS = ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
                 "ip6tables-restore"]
KMOD_LINKS = {"/usr/sbin/modprobe", "/usr/sbin/insmod", "/usr/sbin/rmmod", "/usr/sbin/lsmod",
              "/usr/sbin/depmod", "/usr/sbin/modinfo"}

# libraries in the base image in any case: what Rust test executables and
# runtimes link against
BASE_LIBS = ["libgcc_s.so.1", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2",
             "librt.so.1", "libutil.so.1", "libz.so.1", "libseccomp.so.2", "libcap.so.2",
             "libselinux.so.1", "libstdc++.so.6"]

QUIET = False


def ldconfig_lookup(soname):
    r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        p = line.strip().split(" => ")
        if len(p) == 2 and p[0].split()[0] == soname and "x86-64" in p[0]:
            return p[1]
    return None


def log(msg):
    if not QUIET:
        print(f"rcrun-guest: {msg}", file=sys.stderr, flush=True)


def die(msg, code=125):
    print(f"rcrun-guest: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# --------------------------------------------------------------- cache dir
def cache_dir():
    d = os.environ.get("RCRUN_GUEST_CACHE")
    if not d:
        d = "/var/cache/rcrun-guest"
        try:
            os.makedirs(d, exist_ok=True)
            if not os.access(d, os.W_OK):
                raise PermissionError(d)
        except OSError:
            d = os.path.join(HERE, ".cache")
    os.makedirs(d, exist_ok=True)
    return d


# ------------------------------------------------------- host packages
_apt_updated = False


def apt_update():
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
        _apt_updated = True


def apt_install(pkgs):
    if not pkgs:
        return
    log("installing host packages: " + " ".join(sorted(pkgs)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + sorted(pkgs)
    if run(cmd, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        apt_update()
        run(cmd, env=env, stdout=subprocess.DEVNULL)


def busybox_static():
    for p in ("/usr/bin/busybox", "/bin/busybox"):
        if os.path.exists(p):
            r = subprocess.run(["ldd", p], capture_output=True, text=True)
            if "not a dynamic executable" in (r.stdout + r.stderr) or "statically linked" in r.stdout:
                return p
    return None


def ensure_host_packages(optional=("runc", "xtables-nft-multi")):
    missing = set()
    for cmd, pkg in HOST_PACKAGES.items():
        if not shutil.which(cmd) and not os.path.exists(f"/usr/sbin/{cmd}"):
            missing.add(pkg)
    if not busybox_static():
        missing.add(BUSYBOX_PKG)
    if not missing:
        return
    try:
        apt_install(missing)
    except subprocess.CalledProcessError:
        req = missing - {HOST_PACKAGES[o] for o in optional}
        if req != missing:
            apt_install(req)
        else:
            raise
    if not busybox_static():
        die("busybox-static is required (a static /usr/bin/busybox)")


# ------------------------------------------------------------- kernel
def apt_lists_sig():
    sig = []
    for p in ("/var/lib/apt/lists", "/var/cache/apt/pkgcache.bin", "/var/lib/dpkg/status"):
        try:
            sig.append(f"{p}:{os.stat(p).st_mtime_ns}")
        except OSError:
            sig.append(f"{p}:-")
    return " ".join(sig)


def resolve_kernel_package(cache=None):
    """linux-image-amd64's dependency; the answer is cached until apt's lists change
    (apt-cache takes most of a second)."""
    pkg = os.environ.get("RCRUN_GUEST_KERNEL_PKG")
    if pkg:
        return pkg
    memo = os.path.join(cache, "kernel", "resolved.json") if cache else None
    sig = apt_lists_sig()
    if memo and os.path.exists(memo):
        try:
            with open(memo) as f:
                m = json.load(f)
            if m.get("sig") == sig:
                return m["pkg"]
        except (OSError, ValueError, KeyError):
            pass
    pkg = _resolve_kernel_package()
    if pkg and memo:
        tmp = f"{memo}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"sig": apt_lists_sig(), "pkg": pkg}, f)
        os.replace(tmp, memo)
    return pkg


def _resolve_kernel_package():
    for attempt in range(2):
        r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                           capture_output=True, text=True)
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", r.stdout)
        if m:
            return m.group(1)
        if attempt == 0:
            try:
                apt_update()
            except subprocess.CalledProcessError:
                break
    return None


def kernel(cache):
    """Returns (vmlinuz, modules_root, kernel_release).  Downloads and unpacks
    the linux-image-amd64 dependency the first time."""
    kroot = os.path.join(cache, "kernel")
    os.makedirs(kroot, exist_ok=True)
    pkg = resolve_kernel_package(cache)
    if pkg is None:
        done = sorted(d for d in os.listdir(kroot)
                      if os.path.exists(os.path.join(kroot, d, ".done")))
        if not done:
            die("cannot resolve the linux-image-amd64 dependency (apt-cache) and no kernel is cached")
        pkg = done[-1]
        log(f"apt-cache failed, using cached {pkg}")
    dest = os.path.join(kroot, pkg)
    if not os.path.exists(os.path.join(dest, ".done")):
        debs = os.path.join(cache, "debs")
        os.makedirs(debs, exist_ok=True)
        have = [f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb")]
        if not have:
            log(f"apt-get download {pkg}")
            t = time.time()
            r = subprocess.run(["apt-get", "download", "-o", "APT::Sandbox::User=root", pkg],
                               cwd=debs, stdout=subprocess.DEVNULL)
            if r.returncode != 0:
                apt_update()
                run(["apt-get", "download", "-o", "APT::Sandbox::User=root", pkg], cwd=debs,
                    stdout=subprocess.DEVNULL)
            log(f"downloaded in {time.time() - t:.1f}s")
            have = [f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb")]
        shutil.rmtree(dest, ignore_errors=True)
        log(f"dpkg -x {have[0]}")
        run(["dpkg", "-x", os.path.join(debs, sorted(have)[-1]), dest])
        kver = kernel_release(dest)
        run(["depmod", "-b", dest, kver])
        open(os.path.join(dest, ".done"), "w").close()
    kver = kernel_release(dest)
    vmlinuz = os.path.join(dest, "boot", f"vmlinuz-{kver}")
    if os.environ.get("RCRUN_GUEST_BZIMAGE"):
        return vmlinuz, dest, kver
    return pvh_vmlinux(vmlinuz) or vmlinuz, dest, kver


def has_pvh_note(elf):
    """ELF64 with a Xen PHYS32_ENTRY note, what qemu needs for a PVH boot."""
    import struct
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, = struct.unpack_from("<I", elf, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        off, = struct.unpack_from("<Q", elf, phoff + i * phentsize + 8)
        size, = struct.unpack_from("<Q", elf, phoff + i * phentsize + 32)
        pos = off
        while pos + 12 <= off + size:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_vmlinux(vmlinuz):
    """The uncompressed ELF vmlinux inside the bzImage (Debian's is xz-compressed).
    qemu boots it directly through its PVH entry point, which skips the BIOS and
    the in-guest decompression: about 2 s less per boot under TCG."""
    out = vmlinuz.replace("vmlinuz-", "vmlinux-")
    if os.path.exists(out):
        return out
    import lzma
    import zlib
    with open(vmlinuz, "rb") as f:
        data = f.read()
    elf = None
    i = data.find(b"\xfd7zXZ\x00")
    if i >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(data[i:])
        except lzma.LZMAError:
            elf = None
    if elf is None:
        i = data.find(b"\x1f\x8b\x08")
        if i >= 0:
            try:
                elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[i:])
            except zlib.error:
                elf = None
    if not elf or not has_pvh_note(elf):
        log("no PVH-bootable vmlinux inside the bzImage; booting the bzImage")
        return None
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, out)
    return out


def kernel_release(dest):
    vm = [f for f in os.listdir(os.path.join(dest, "boot")) if f.startswith("vmlinuz-")]
    if not vm:
        die(f"no vmlinuz in {dest}/boot")
    return vm[0][len("vmlinuz-"):]


def module_dir(kroot, kver):
    for base in ("lib/modules", "usr/lib/modules"):
        d = os.path.join(kroot, base, kver)
        if os.path.isdir(d):
            return d
    die(f"no modules for {kver} in {kroot}")


def module_closure(moddir, names):
    """Module files (relative to moddir) for names plus dependencies, from modules.dep."""
    deps = {}
    byname = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            k, _, v = line.partition(":")
            deps[k] = v.split()
            n = os.path.basename(k).split(".ko")[0]
            byname[n] = k
            byname[n.replace("-", "_")] = k
    softdep = {}
    sd = os.path.join(moddir, "modules.softdep")
    if os.path.exists(sd):
        with open(sd) as f:
            for line in f:
                p = line.split()
                if len(p) >= 3 and p[0] == "softdep":
                    softdep[p[1]] = [x for x in p[2:] if not x.endswith(":")]
    out, missing, todo = set(), [], list(names)
    while todo:
        n = todo.pop()
        k = byname.get(n) or byname.get(n.replace("-", "_"))
        if k is None:
            if n not in missing:
                missing.append(n)
            continue
        if k in out:
            continue
        out.add(k)
        todo.extend(os.path.basename(d).split(".ko")[0] for d in deps[k])
        todo.extend(x for x in softdep.get(n.replace("-", "_"), []) if x in byname)
    return sorted(out), missing


# ------------------------------------------------------------ ELF + libs
def ldd_libs(path):
    """Shared libraries (absolute host paths, incl. the loader) needed by path."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    libs = []
    for line in r.stdout.splitlines():
        line = line.strip()
        m = re.match(r"\S+ => (/\S+) \(", line) or re.match(r"(/\S+) \(", line)
        if m:
            libs.append(m.group(1))
    return libs


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def canonical(path):
    """Host path with directory symlinks resolved (usr-merge: /lib -> /usr/lib),
    the last component kept, so sonames stay sonames."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


# ------------------------------------------------------------ base initramfs
def host_tool_paths():
    found = {}
    for gpath, cands in HOST_TOOLS.items():
        for c in cands:
            if os.path.exists(c):
                found[gpath] = os.path.realpath(c)
                break
    return found


def stat_sig(path):
    st = os.stat(path)
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


def base_initramfs(cache, force=False):
    """Builds (or reuses) the profile-independent base image.  Returns (vmlinuz, cpio, kver)."""
    vmlinuz, kroot, kver = kernel(cache)
    moddir = module_dir(kroot, kver)
    bb = busybox_static()
    tools = host_tool_paths()
    with open(os.path.join(HERE, "init"), "rb") as f:
        init_bytes = f.read()
    h = hashlib.sha256()
    h.update(BUILDER_VERSION.encode())
    h.update(init_bytes)
    h.update(kver.encode())
    h.update(" ".join(MODULES).encode())
    for p in [bb] + [tools[k] for k in sorted(tools)]:
        h.update(stat_sig(p).encode())
        for lib in ldd_libs(p):
            h.update(stat_sig(os.path.realpath(lib)).encode())
    key = h.hexdigest()[:16]
    outdir = os.path.join(cache, "initramfs")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, f"base-{kver}-{key}.cpio")
    if os.path.exists(out) and not force:
        return vmlinuz, out, kver
    t0 = time.time()
    log(f"building base initramfs {os.path.basename(out)}")
    stage = tempfile.mkdtemp(prefix="stage-", dir=outdir)
    try:
        build_base_tree(stage, moddir, kver, bb, tools, init_bytes)
        tmp = f"{out}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            cpio_dir(stage, f)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for old in os.listdir(outdir):  # keep the cache small
        if old.startswith("base-") and old.endswith(".cpio") and old != os.path.basename(out):
            os.unlink(os.path.join(outdir, old))
    log(f"base initramfs built in {time.time() - t0:.1f}s "
        f"({os.path.getsize(out) / 1e6:.0f} MB)")
    return vmlinuz, out, kver


def cpio_dir(root, fobj):
    names = []
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        for n in sorted(dns + fns):
            names.append(os.path.normpath(os.path.join(rel, n)))
    run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root,
        input="\n".join(names).encode() + b"\n", stdout=fobj)


def copy_in(stage, host, guest=None):
    guest = canonical(guest or host)
    dst = os.path.join(stage, guest.lstrip("/"))
    if os.path.exists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(host, dst)  # follows symlinks


def build_base_tree(stage, moddir, kver, bb, tools, init_bytes):
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "etc", "dev", "proc",
              "sys", "tmp", "run", "root", "var/tmp", "mnt", "rcrun-guest"):
        os.makedirs(os.path.join(stage, d), exist_ok=True)
    for link, tgt in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                      ("lib64", "usr/lib64")):
        os.symlink(tgt, os.path.join(stage, link))
    os.chmod(os.path.join(stage, "tmp"), 0o1777)
    os.mknod(os.path.join(stage, "dev/console"), 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(os.path.join(stage, "dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(os.path.join(stage, "init"), "wb") as f:
        f.write(init_bytes)
    os.chmod(os.path.join(stage, "init"), 0o755)

    # host tools + libraries
    for gpath, hpath in tools.items():
        copy_in(stage, hpath, gpath)
        for lib in ldd_libs(hpath):
            copy_in(stage, lib)
    for lib in BASE_LIBS:  # so that binaries on a --share run without a payload
        path = ldconfig_lookup(lib)
        if path:
            copy_in(stage, path)
    if "/usr/bin/kmod" in tools:
        for l in KMOD_LINKS:
            os.symlink("../bin/kmod", os.path.join(stage, l.lstrip("/")))
    if "/usr/sbin/xtables-nft-multi" in tools:
        for l in XTABLES_LINKS:
            os.symlink("xtables-nft-multi", os.path.join(stage, "usr/sbin", l))
        ext = os.path.join(os.path.dirname(os.path.realpath(ldd_libs(
            tools["/usr/sbin/xtables-nft-multi"])[0])), "xtables")
        if os.path.isdir(ext):
            shutil.copytree(ext, os.path.join(stage, canonical(ext).lstrip("/")), dirs_exist_ok=True)
    if "/usr/bin/dash" in tools:
        os.symlink("dash", os.path.join(stage, "usr/bin/sh"))
    if "/usr/sbin/ip" in tools:
        os.symlink("../sbin/ip", os.path.join(stage, "usr/bin/ip"))

    # busybox and its applets (never shadowing a real tool)
    copy_in(stage, bb, "/usr/bin/busybox")
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True)
    for a in applets.stdout.split():
        name = os.path.basename(a)
        for d in ("usr/bin", "usr/sbin"):
            if os.path.lexists(os.path.join(stage, d, name)):
                break
        else:
            d = "usr/sbin" if "sbin" in a else "usr/bin"
            os.symlink("/usr/bin/busybox", os.path.join(stage, d, name))

    # kernel modules
    files, missing = module_closure(moddir, MODULES)
    if missing:
        log("modules not in this kernel (skipped): " + " ".join(missing))
    gmod = os.path.join(stage, "usr/lib/modules", kver)
    for rel in files:
        dst = os.path.join(gmod, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(moddir, rel), dst)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if os.path.exists(os.path.join(moddir, f)):
            shutil.copy2(os.path.join(moddir, f), os.path.join(gmod, f))
    run(["depmod", "-b", stage, kver])

    etc = os.path.join(stage, "etc")
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost rcrun-guest\n::1 localhost\n",
        "hostname": "rcrun-guest\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "resolv.conf": "",
        "os-release": 'NAME="rcrun test guest"\nID=rcrun-guest\n',
    }
    for n, c in files.items():
        with open(os.path.join(etc, n), "w") as f:
            f.write(c)
    os.symlink("/proc/self/mounts", os.path.join(etc, "mtab"))


# ------------------------------------------------------------ payload
def collect_payload(paths, shared=()):
    """Host files/dirs to put into the guest at the same absolute path,
    plus the shared libraries of every ELF among them.  Files under a
    9p-shared directory are not copied (only their libraries are)."""
    files = []
    seen = set()
    shared = [os.path.join(os.path.realpath(s), "") for s in shared]

    def add(p):
        c = canonical(p)
        if c in seen:
            return
        seen.add(c)
        files.append((c, p))

    for p in paths:
        p = os.path.abspath(p)
        if os.path.isdir(p):
            for dp, dns, fns in os.walk(p):
                for n in fns:
                    fp = os.path.join(dp, n)
                    if os.path.isfile(fp):
                        add(fp)
        elif os.path.isfile(p):
            add(p)
        else:
            die(f"--add: no such file or directory: {p}")
    for guest, host in list(files):
        if is_elf(host):
            for lib in ldd_libs(host):
                add(lib)
    return [(g, h) for g, h in files
            if not any(os.path.realpath(h).startswith(s) for s in shared)]


def stripped_copy(cache, host):
    """Debug-info-stripped copy of an ELF file, cached by path/size/mtime.
    Panic messages keep their file:line (compiled in); backtraces keep
    function names (symbol table), only their file:line go."""
    st = os.stat(host)
    if st.st_size < 4 << 20 or not is_elf(host) or not shutil.which("objcopy"):
        return host
    key = hashlib.sha256(f"{os.path.realpath(host)}:{st.st_size}:{st.st_mtime_ns}".encode())
    d = os.path.join(cache, "stripped")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, key.hexdigest()[:20] + "-" + os.path.basename(host))
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}.tmp"
        r = subprocess.run(["objcopy", "--strip-debug", host, tmp], capture_output=True)
        if r.returncode != 0:
            return host
        os.replace(tmp, out)
        for old in os.listdir(d):  # drop stale copies of the same file
            if old.endswith("-" + os.path.basename(host)) and old != os.path.basename(out):
                os.unlink(os.path.join(d, old))
    return out


def write_payload(fobj, files, generated, workdir, strip=True, cache=None):
    """Appends a newc archive with the generated {guest_path: bytes} and the
    host files at their (canonical) host paths.  The staging tree is made of
    hard links where possible, so big test executables are not copied twice."""
    stage = os.path.join(workdir, "payload")
    for gpath, data in generated.items():
        dst = os.path.join(stage, gpath.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data)
        os.chmod(dst, 0o755)
    for guest, host in files:
        src = stripped_copy(cache, host) if strip else host
        dst = os.path.join(stage, guest.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            continue
        try:
            os.link(os.path.realpath(src), dst)
        except OSError:
            shutil.copy2(src, dst)
    fobj.flush()
    cpio_dir(stage, fobj)


# ------------------------------------------------------------ qemu
def qemu_cmd(vmlinuz, initrd, profiles, memory, shares, verbose, interactive):
    append = ["console=ttyS0", "panic=-1", "oops=panic", "tsc=reliable", "no_timer_check",
              "rdinit=/init", "nokaslr", "mitigations=off"]
    if not verbose:
        append += ["quiet", "loglevel=3"]
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "pc",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-m", memory, "-smp", str(CPUS), "-kernel", vmlinuz, "-initrd", initrd,
           "-append", " ".join(append)]
    if interactive:
        cmd += ["-serial", "mon:stdio"]
    else:
        cmd += ["-serial", "stdio", "-monitor", "none"]
    if "net" in profiles:
        # Two NICs with no way out (restrict=on): PCI devices that, unlike veth or dummy,
        # return to the host namespace when a container's netns dies, as SR-IOV VFs do.
        # Tests find them by these MACs.
        for i, mac in enumerate(SPARE_NIC_MACS):
            cmd += ["-netdev", f"user,id=vf{i},restrict=on",
                    "-device", f"virtio-net-pci,netdev=vf{i},mac={mac}"]
    if "numa" in profiles:
        mb = parse_mem_mb(memory)
        half = mb // 2
        cmd += ["-object", f"memory-backend-ram,id=m0,size={half}M",
                "-object", f"memory-backend-ram,id=m1,size={mb - half}M",
                "-numa", "node,nodeid=0,cpus=0,memdev=m0",
                "-numa", "node,nodeid=1,cpus=1,memdev=m1"]
    for i, d in enumerate(shares):
        cmd += ["-virtfs", f"local,path={d},mount_tag=share{i},security_model=passthrough,id=fs{i}"]
    return cmd


def parse_mem_mb(m):
    m = m.strip().upper()
    if m.endswith("G"):
        return int(float(m[:-1]) * 1024)
    if m.endswith("M"):
        return int(m[:-1])
    return int(m)


# ------------------------------------------------------------ libtest report
TEST_RESULT = re.compile(r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored")


def libtest_report(lines):
    passed = failed = ignored = 0
    seen = False
    failures = []  # (name, text)
    i = 0
    while i < len(lines):
        m = TEST_RESULT.match(lines[i])
        if m:
            seen = True
            passed += int(m.group(2))
            failed += int(m.group(3))
            ignored += int(m.group(4))
        elif lines[i] == "failures:" and i + 1 < len(lines) and (
                lines[i + 1] == "" or lines[i + 1].startswith("---- ")):
            # detail section: "---- name stdout ----" blocks until the name list
            j = i + 1
            cur, buf = None, []
            while j < len(lines) and lines[j] != "failures:":
                mm = re.match(r"^---- (.+?) std(out|err) ----$", lines[j])
                if mm:
                    if cur:
                        failures.append((cur, "\n".join(buf).strip("\n")))
                    cur, buf = mm.group(1), []
                elif cur is not None:
                    buf.append(lines[j])
                j += 1
            if cur:
                failures.append((cur, "\n".join(buf).strip("\n")))
            i = j
        i += 1
    if not seen:
        return None
    failed_names = []
    for ln in lines:
        m = re.match(r"^test (\S+) \.\.\. FAILED$", ln)
        if m and m.group(1) not in failed_names:
            failed_names.append(m.group(1))
    return passed, failed, ignored, failures, failed_names


# ------------------------------------------------------------ guest/run
def boot_and_run(argv_cmd, profiles, timeout=DEFAULT_TIMEOUT, memory=DEFAULT_MEMORY, adds=(),
                 env=None, shares=(), cwd=None, verbose=False, shell=None, modules=(),
                 install=True, strip=True):
    t_start = time.time()
    cache = cache_dir()
    if install:
        ensure_host_packages()
    vmlinuz, base, kver = base_initramfs(cache)
    t_base = time.time()

    adds = list(adds)
    nonce = secrets.token_hex(6)
    interactive = not argv_cmd and shell is None
    script = None
    if shell is not None:
        script = shell
    elif argv_cmd:
        first = argv_cmd[0]
        if os.path.isfile(first) and ("/" in first):
            first = os.path.abspath(first)
            adds.append(first)
            argv_cmd = [first] + list(argv_cmd[1:])
        if len(argv_cmd) == 1 and not os.path.isfile(argv_cmd[0]):
            script = argv_cmd[0]  # one argument: a shell snippet
        else:
            script = "exec " + shlex.join(argv_cmd)
    env = dict(env or {})
    for k, v in os.environ.items():  # forwarded from the host
        if (k.startswith("RCRUN_") and not k.startswith("RCRUN_GUEST_")) or k in (
                "RUST_LOG", "RUST_BACKTRACE", "RUST_TEST_THREADS", "RUST_TEST_NOCAPTURE"):
            env.setdefault(k, v)
    if "RCRUN_BIN" in env and os.path.isfile(env["RCRUN_BIN"]):
        env["RCRUN_BIN"] = os.path.abspath(env["RCRUN_BIN"])
        adds.append(env["RCRUN_BIN"])

    shares = [os.path.abspath(s) for s in shares]
    files = collect_payload(adds, shares)
    config = (f"PROFILES={shlex.quote(','.join(profiles))}\nNONCE={nonce}\n"
              f"SHARES={shlex.quote(' '.join(shares))}\n"
              f"EXTRA_MODULES={shlex.quote(' '.join(modules))}\n"
              f"GUEST_CWD={shlex.quote(cwd or '/')}\n")
    if not verbose:
        config += "QUIET_KERNEL='3 4 1 3'\n"
    generated = {"/rcrun-guest/config": config.encode(),
                 "/rcrun-guest/env": "".join(f"export {k}={shlex.quote(v)}\n"
                                             for k, v in sorted(env.items())).encode()}
    if script is not None:
        generated["/rcrun-guest/cmd.sh"] = (script + "\n").encode()

    rundir = tempfile.mkdtemp(prefix="run-", dir=cache)
    initrd = os.path.join(rundir, "initrd.cpio")
    try:
        shutil.copyfile(base, initrd)
        with open(initrd, "ab") as f:
            write_payload(f, files, generated, rundir, strip, cache)
        t_initrd = time.time()
        size = os.path.getsize(initrd) / 1e6
        log(f"kernel {kver}, profile {','.join(profiles)}, initrd {size:.0f} MB "
            f"(base {t_base - t_start:.1f}s, payload {t_initrd - t_base:.1f}s)")
        cmd = qemu_cmd(vmlinuz, initrd, profiles, memory, shares, verbose, interactive)
        if os.environ.get("RCRUN_GUEST_DEBUG"):
            log("qemu: " + shlex.join(cmd))
        if interactive:
            log("interactive shell: exit the shell to power off, Ctrl-A x kills qemu")
            return subprocess.call(cmd)
        return stream_qemu(cmd, nonce, timeout, t_initrd)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def stream_qemu(cmd, nonce, timeout, t0):
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return _stream_qemu(proc, nonce, timeout, t0)
    finally:
        if proc.poll() is None:  # Ctrl-C, SIGTERM, a bug: never leave qemu behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _stream_qemu(proc, nonce, timeout, t0):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = t0 + timeout
    buf = b""
    lines = []  # command output lines (after READY)
    ready_at = None
    exit_code = None
    out = sys.stdout
    ready_re = re.compile(r"^RCRUN-GUEST-READY uptime=(\S+) nonce=" + nonce + "$")
    exit_re = re.compile(r"RCRUN-GUEST-EXIT=(\d+) nonce=" + nonce + "$")
    boot_log = []
    timed_out = False

    def handle(line):
        nonlocal ready_at, exit_code
        line = line.rstrip("\r")
        m = ready_re.match(line)
        if m:
            ready_at = time.time()
            log(f"guest ready after {ready_at - t0:.1f}s (guest uptime {m.group(1)}s)")
            return
        m = exit_re.search(line)
        if m:
            pre = line[:m.start()]
            if pre:
                out.write(pre + "\n")
                lines.append(pre)
            exit_code = int(m.group(1))
            return
        if ready_at is None:
            boot_log.append(line)
            if not QUIET:
                out.write(line + "\n")
        elif exit_code is None:
            lines.append(line)
            out.write(line + "\n")
        out.flush()

    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            timed_out = True
            break
        events = sel.select(timeout=min(remaining, 1.0))
        if not events:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            handle(line.decode("utf-8", "replace"))
        if exit_code is not None:
            break
    if buf and exit_code is None:
        handle(buf.decode("utf-8", "replace"))
    # the guest powers off by itself; give it a moment, then make sure
    try:
        proc.wait(timeout=3 if exit_code is not None else 0.1)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    t_end = time.time()

    if timed_out:
        log(f"TIMEOUT: guest did not finish within {timeout}s; qemu killed")
        report_tests(lines)
        return 124
    if exit_code is None:
        if ready_at is None:
            log(f"guest never became ready (qemu exited with {proc.returncode}); boot log tail:")
            if QUIET:
                for ln in boot_log[-30:]:
                    print("  | " + ln, file=sys.stderr)
        else:
            log(f"guest stopped without reporting an exit code (qemu status {proc.returncode})")
        report_tests(lines)
        return 125
    log(f"command exit status {exit_code}; command ran {t_end - (ready_at or t0):.1f}s, "
        f"total {t_end - t0:.1f}s")
    report_tests(lines)
    return exit_code


def report_tests(lines):
    rep = libtest_report(lines)
    if rep is None:
        return
    passed, failed, ignored, failures, failed_names = rep
    print(f"\n===== rcrun-guest test summary =====", flush=True)
    for name, text in failures:
        print(f"--- FAILED: {name}")
        if text:
            print(text)
    for n in failed_names:
        if n not in {f[0] for f in failures}:
            print(f"--- FAILED: {n} (no captured output)")
    print(f"{passed} passed, {failed} failed" + (f", {ignored} ignored" if ignored else ""),
          flush=True)


def parse_profiles(s):
    out = []
    for p in (s or DEFAULT_PROFILE).split(","):
        p = p.strip()
        if not p:
            continue
        if p not in PROFILES:
            die(f"unknown profile {p!r} (known: {', '.join(PROFILES)})", 2)
        out.append(p)
    if "cgroup1" in out and "cgroup2" in out:
        die("cgroup1 and cgroup2 are exclusive", 2)
    if not {"cgroup1", "cgroup2", "base"} & set(out):
        out.insert(0, "cgroup2")  # containers need a cgroup fs; `base` opts out
    return out


def common_args(ap):
    ap.add_argument("--profile", "-p", default=DEFAULT_PROFILE,
                    help=f"comma-separated from {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    ap.add_argument("--timeout", "-t", type=int, default=DEFAULT_TIMEOUT,
                    help=f"kill the guest after SECS (default {DEFAULT_TIMEOUT})")
    ap.add_argument("--memory", "-m", default=DEFAULT_MEMORY, help="guest memory (default 2G)")
    ap.add_argument("--add", "-a", action="append", default=[], metavar="PATH",
                    help="host file/dir to copy into the guest at the same path (repeatable)")
    ap.add_argument("--env", "-e", action="append", default=[], metavar="K=V",
                    help="environment variable for the command (repeatable)")
    ap.add_argument("--share", action="append", default=[], metavar="DIR",
                    help="share a host dir into the guest at the same path over 9p (virtfs)")
    ap.add_argument("--modules", default="", help="extra kernel modules to load (comma list)")
    ap.add_argument("--cwd", help="working directory of the command in the guest")
    ap.add_argument("--verbose", "-v", action="store_true", help="show kernel messages")
    ap.add_argument("--quiet", "-q", action="store_true", help="only the command's output")
    ap.add_argument("--no-install", action="store_true",
                    help="do not apt-get install missing host packages")
    ap.add_argument("--no-strip", action="store_true",
                    help="copy ELF files as they are (default: objcopy --strip-debug, cached)")


def parse_env(items):
    env = {}
    for e in items:
        if "=" not in e:
            die(f"--env wants K=V, got {e!r}", 2)
        k, v = e.split("=", 1)
        env[k] = v
    return env


def main_run(argv):
    global QUIET
    ap = argparse.ArgumentParser(prog="guest/run", description="Boot the rcrun test guest "
                                 "and run CMD inside (no CMD: interactive shell).")
    common_args(ap)
    ap.add_argument("-c", dest="shell", metavar="SCRIPT", help="run a shell snippet")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    QUIET = a.quiet
    return boot_and_run(cmd, parse_profiles(a.profile), a.timeout, a.memory, a.add,
                        parse_env(a.env), a.share, a.cwd, a.verbose, a.shell,
                        [m for m in a.modules.split(",") if m], not a.no_install, not a.no_strip)


def cargo_executables(args, cwd):
    """Runs cargo with --message-format=json, returns test executables."""
    r = subprocess.run(args + ["--message-format=json-render-diagnostics"], cwd=cwd,
                       stdout=subprocess.PIPE)
    if r.returncode != 0:
        die("cargo failed: " + shlex.join(args), 1)
    exes = []
    for line in r.stdout.decode().splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable"):
            if m.get("profile", {}).get("test") or m["target"].get("test"):
                exes.append(m["executable"])
    return exes


def main_suite(argv):
    global QUIET
    ap = argparse.ArgumentParser(prog="guest/run-suite", description="Build rcrun and the "
                                 "rcrun-conformance test executables and run them in the guest.")
    common_args(ap)
    ap.add_argument("--release", action="store_true", help="build rcrun with --release")
    ap.add_argument("--package", action="append", help="test package, repeatable (default: "
                    "rcrun-runtime and rcrun-conformance: the library's unit tests, cgroup v2 "
                    "ones included, and the integration suite)")
    ap.add_argument("--workspace", default=REPO, help="cargo workspace (default: this repo)")
    ap.add_argument("--rcrun", help="use this rcrun binary instead of building one")
    ap.add_argument("--with-clients", action="store_true", help="also run the clients_* test "
                    "executables (containerd/docker/podman: they need those packages, which the "
                    "guest image does not carry; the host run covers them)")
    ap.add_argument("--with-hostile", action="store_true", help="also run the hostile and "
                    "storage test executables of the conformance suite (parallel creates, kill "
                    "injection, runs under load; image imports of large layers: the runtime's "
                    "robustness and the store's logic, not kernel features; ~20 min under TCG, "
                    "and the host run covers them; the kernel-dependent overlay mount path is "
                    "tested in the guest by rcrun-storage-overlay2's own mount_overlay tests)")
    ap.add_argument("--only", action="append", help="run only the test executables whose name "
                    "starts with this (repeatable), e.g. --only checkpoint")
    ap.add_argument("--jobs", "-j", default=str(CPUS))
    ap.add_argument("test_args", nargs=argparse.REMAINDER,
                    help="after --: arguments for the test executables (filters, --test-threads)")
    a = ap.parse_args(argv)
    QUIET = a.quiet
    packages = a.package or ["rcrun-runtime", "rcrun-conformance"]
    targs = a.test_args[1:] if a.test_args[:1] == ["--"] else a.test_args
    ws = os.path.abspath(a.workspace)
    t0 = time.time()
    if a.rcrun:
        rcrun = os.path.abspath(a.rcrun)
    else:
        build = ["cargo", "build", "-j", a.jobs, "-p", "rcrun", "-p", "rcrun-net-cli"] + (
            ["--release"] if a.release else [])
        log("$ " + shlex.join(build))
        if subprocess.run(build, cwd=ws).returncode != 0:
            die("building rcrun failed", 1)
        meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version=1", "--no-deps"],
                                         cwd=ws, capture_output=True, check=True).stdout)
        rcrun = os.path.join(meta["target_directory"], "release" if a.release else "debug", "rcrun")
    tests = ["cargo", "test", "-j", a.jobs, "--no-run"] + [x for p in packages for x in ("-p", p)]
    log("$ " + shlex.join(tests))
    exes = cargo_executables(tests, ws)
    if not a.with_clients:
        exes = [e for e in exes if not os.path.basename(e).startswith("clients_")]
    if not a.with_hostile:
        exes = [e for e in exes if not os.path.basename(e).startswith(("hostile-", "storage-"))]
    if a.only:
        exes = [e for e in exes if os.path.basename(e).startswith(tuple(a.only))]
    if not exes:
        die(f"no test executables from {' '.join(packages)}", 1)
    log(f"built in {time.time() - t0:.1f}s: rcrun={rcrun}, tests: " + " ".join(
        os.path.basename(e) for e in exes))
    lines = ["rc=0"]
    for e in exes:
        lines.append(f"echo '### {os.path.basename(e)}'")
        lines.append(f"{shlex.quote(e)} {shlex.join(targs)} || rc=1")
    lines.append("exit $rc")
    env = parse_env(a.env)
    env["RCRUN_BIN"] = rcrun
    # like `cargo test`: run from the package directory, which is copied in
    # (sources and fixtures only, it is small)
    adds = a.add + exes + [rcrun]
    # companions the suites find beside rcrun: the network hook (conformance net suites)
    for companion in ("rcrun-net",):
        c = os.path.join(os.path.dirname(rcrun), companion)
        if os.path.exists(c):
            adds.append(c)
    for package in packages:
        pkgdir = package_dir(ws, package)
        if pkgdir:
            if package == packages[-1]:
                env.setdefault("CARGO_MANIFEST_DIR", pkgdir)
            adds += [os.path.join(pkgdir, f) for f in os.listdir(pkgdir) if f != "target"]
    return boot_and_run([], parse_profiles(a.profile), a.timeout, a.memory, adds,
                        env, a.share, a.cwd or pkgdir, a.verbose, "\n".join(lines),
                        [m for m in a.modules.split(",") if m], not a.no_install, not a.no_strip)


def package_dir(ws, package):
    r = subprocess.run(["cargo", "metadata", "--format-version=1", "--no-deps"], cwd=ws,
                       capture_output=True)
    if r.returncode != 0:
        return None
    for p in json.loads(r.stdout).get("packages", []):
        if p["name"] == package:
            return os.path.dirname(p["manifest_path"])
    return None


def main_build(argv):
    ap = argparse.ArgumentParser(prog="guest/build", description="Prepare the kernel and the "
                                 "base initramfs (cached).")
    ap.add_argument("--force", action="store_true", help="rebuild the base initramfs")
    ap.add_argument("--no-install", action="store_true")
    a = ap.parse_args(argv)
    if not a.no_install:
        ensure_host_packages()
    vmlinuz, base, kver = base_initramfs(cache_dir(), force=a.force)
    print(f"kernel:    {vmlinuz}\ninitramfs: {base}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        die("usage: rcguest.py run|run-suite|build ...", 2)
    sub, rest = sys.argv[1], sys.argv[2:]
    fn = {"run": main_run, "run-suite": main_suite, "build": main_build}.get(sub)
    if fn is None:
        die(f"unknown subcommand {sub}", 2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(fn(rest))
    except KeyboardInterrupt:
        sys.exit(130)
