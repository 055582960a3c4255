//! Mounts: the default set, tmpfs/bind with flags, readonly root, masked
//! and readonly paths, devices, sysctl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::util::{find_mount, parse_mountinfo, MountEntry};
use rcrun_conformance::*;

fn mountinfo(rt: &Runtime, b: &mut Bundle) -> Vec<MountEntry> {
    parse_mountinfo(&rt.sh_ok(b, "cat /proc/self/mountinfo"))
}

fn must<'a>(ms: &'a [MountEntry], mp: &str) -> &'a MountEntry {
    find_mount(ms, mp).unwrap_or_else(|| panic!("no mount at {mp}: {ms:#?}"))
}

#[test]
fn default_mounts_have_the_right_types_and_flags() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let ms = mountinfo(&rt, &mut b);

    let root = must(&ms, "/");
    assert!(root.has_opt("ro"), "readonly root: {root:?}");

    let proc_ = must(&ms, "/proc");
    assert_eq!(proc_.fstype, "proc");

    let dev = must(&ms, "/dev");
    assert_eq!(dev.fstype, "tmpfs");
    assert!(dev.has_opt("nosuid"), "{dev:?}");
    assert!(
        dev.has_super_opt("mode=755") && dev.has_super_opt("size=65536k"),
        "{dev:?}"
    );

    let pts = must(&ms, "/dev/pts");
    assert_eq!(pts.fstype, "devpts");
    assert!(pts.has_opt("nosuid") && pts.has_opt("noexec"), "{pts:?}");
    assert!(
        pts.has_super_opt("gid=5")
            && pts.has_super_opt("mode=620")
            && pts.has_super_opt("ptmxmode=666"),
        "{pts:?}"
    );

    let shm = must(&ms, "/dev/shm");
    assert_eq!(shm.fstype, "tmpfs");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(shm.has_opt(o), "/dev/shm lacks {o}: {shm:?}");
    }
    assert!(shm.has_super_opt("size=65536k"), "{shm:?}");

    let mq = must(&ms, "/dev/mqueue");
    assert_eq!(mq.fstype, "mqueue");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(mq.has_opt(o), "/dev/mqueue lacks {o}: {mq:?}");
    }

    let sys = must(&ms, "/sys");
    assert_eq!(sys.fstype, "sysfs");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(sys.has_opt(o), "/sys lacks {o}: {sys:?}");
    }

    // /sys/fs/cgroup: v1 = tmpfs with one read-only cgroup mount per hierarchy; v2 = cgroup2
    if cgroups::is_pure_v2() {
        let cg = must(&ms, "/sys/fs/cgroup");
        assert_eq!(cg.fstype, "cgroup2", "{cg:?}");
        assert!(cg.has_opt("ro"), "{cg:?}");
    } else {
        let cgs: Vec<&MountEntry> = ms.iter().filter(|m| m.fstype == "cgroup").collect();
        assert!(
            cgs.iter().any(|m| m.mount_point == "/sys/fs/cgroup/memory"),
            "{ms:#?}"
        );
        for m in &cgs {
            assert!(m.mount_point.starts_with("/sys/fs/cgroup/"), "{m:?}");
            assert!(m.has_opt("ro"), "cgroup mount must be ro: {m:?}");
        }
    }
}

#[test]
fn tmpfs_mount_with_options() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.mount(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=700"]}),
    );
    let out = rt.sh_ok(&mut b, "cat /proc/self/mountinfo; echo; stat -c %a /scratch; echo hi > /scratch/f && cat /scratch/f");
    let (info, rest) = out.split_once("\n\n").unwrap();
    let ms = parse_mountinfo(info);
    let m = must(&ms, "/scratch");
    assert_eq!(m.fstype, "tmpfs");
    for o in ["nosuid", "nodev", "noexec", "rw"] {
        assert!(m.has_opt(o), "lacks {o}: {m:?}");
    }
    assert!(m.has_super_opt("size=1024k"), "{m:?}");
    assert!(m.has_super_opt("mode=700"), "{m:?}");
    assert_eq!(rest, "700\nhi\n");
}

#[test]
fn bind_mount_flags_are_visible_and_enforced() {
    let rt = Runtime::rcrun();
    let host_dir = TempDir::new("bind");
    std::fs::write(host_dir.join("file"), "from-host\n").unwrap();
    std::fs::write(host_dir.join("script"), "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        host_dir.join("script"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let mut b = Bundle::new();
    b.bind(host_dir.path(), "/ro", &["ro", "nosuid", "nodev", "noexec"]);
    b.bind(host_dir.path(), "/rw", &["rw"]);
    let out = rt.sh_ok(
        &mut b,
        "cat /proc/self/mountinfo; echo; cat /ro/file; \
         touch /ro/x 2>/dev/null && echo ro-writable || echo ro-denied; \
         /ro/script 2>/dev/null || echo noexec-denied; \
         /rw/script; echo written > /rw/new",
    );
    let (info, rest) = out.split_once("\n\n").unwrap();
    let ms = parse_mountinfo(info);
    let ro = must(&ms, "/ro");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(ro.has_opt(o), "/ro lacks {o}: {ro:?}");
    }
    let rw = must(&ms, "/rw");
    assert!(rw.has_opt("rw") && !rw.has_opt("noexec"), "{rw:?}");
    assert_eq!(rest, "from-host\nro-denied\nnoexec-denied\nran\n");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("new")).unwrap(),
        "written\n"
    );
    assert!(!host_dir.join("x").exists());
}

#[test]
fn bind_mount_of_a_single_file() {
    let rt = Runtime::rcrun();
    let host_dir = TempDir::new("bindf");
    let f = host_dir.join("hosts");
    std::fs::write(&f, "127.0.0.1 conformance\n").unwrap();
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/etc/hosts", "type": "bind", "source": f, "options": ["bind", "ro"]}));
    assert_eq!(
        rt.sh_ok(&mut b, "cat /etc/hosts"),
        "127.0.0.1 conformance\n"
    );
}

#[test]
fn readonly_root() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.readonly_root(true);
    let out = rt.run_capture(&mut b, &["touch", "/x"]);
    assert_ne!(
        out.code,
        Some(0),
        "touch on a read-only root must fail:\n{out}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(!b.rootfs().join("x").exists());

    b.readonly_root(false);
    rt.run_capture(&mut b, &["touch", "/x"]).assert_ok();
    assert!(
        b.rootfs().join("x").exists(),
        "write through a rw root must reach the bundle rootfs"
    );
}

#[test]
fn masked_paths() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    std::fs::write(b.rootfs().join("etc/secret"), "top-secret\n").unwrap();
    std::fs::create_dir_all(b.rootfs().join("secretdir")).unwrap();
    std::fs::write(b.rootfs().join("secretdir/inner"), "x\n").unwrap();
    // kcore is masked in the default spec; it does not exist on every kernel
    let proc_masked: Vec<&str> = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .into_iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    let mut paths = vec!["/etc/secret", "/secretdir", "/does/not/exist"];
    paths.extend(&proc_masked);
    b.masked_paths(&paths);
    let mut script = String::from("echo \"[$(cat /etc/secret)]\"; ls -A /secretdir | wc -l; ");
    for p in &proc_masked {
        script.push_str(&format!("wc -c < {p}; "));
    }
    script.push_str("cat /proc/self/mountinfo");
    let out = rt.sh_ok(&mut b, &script);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("[]"),
        "masked file must read empty:\n{out}"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("0"),
        "masked dir must be empty:\n{out}"
    );
    for p in &proc_masked {
        assert_eq!(
            lines.next().map(str::trim),
            Some("0"),
            "{p} must read empty:\n{out}"
        );
    }
    let ms = parse_mountinfo(&lines.collect::<Vec<_>>().join("\n"));
    let dir = must(&ms, "/secretdir");
    assert!(
        dir.has_opt("ro"),
        "masked dir should be a read-only mount: {dir:?}"
    );
    must(&ms, "/etc/secret");
    // the original stays on the host
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("etc/secret")).unwrap(),
        "top-secret\n"
    );
}

#[test]
fn readonly_paths() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.readonly_root(false);
    std::fs::create_dir_all(b.rootfs().join("data")).unwrap();
    b.readonly_paths(&["/proc/sys", "/data", "/proc/sysrq-trigger"]);
    let out = rt.sh_ok(
        &mut b,
        "echo x > /proc/sys/kernel/hostname 2>/dev/null && echo sys-writable || echo sys-denied; \
         touch /data/f 2>/dev/null && echo data-writable || echo data-denied; \
         touch /other && echo other-writable; cat /proc/self/mountinfo",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("sys-denied"), "{out}");
    assert_eq!(lines.next(), Some("data-denied"), "{out}");
    assert_eq!(lines.next(), Some("other-writable"), "{out}");
    let ms = parse_mountinfo(&lines.collect::<Vec<_>>().join("\n"));
    assert!(must(&ms, "/proc/sys").has_opt("ro"));
    assert!(must(&ms, "/data").has_opt("ro"));
}

#[test]
fn default_devices() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    let out = rt.sh_ok(
        &mut b,
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do echo /dev/$l $(readlink /dev/$l); done; \
         stat -c '%n %F' /dev/pts /dev/shm /dev/pts/ptmx; \
         echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 3 /dev/urandom | wc -c",
    );
    let want = "\
/dev/null character special file 1:3 666
/dev/zero character special file 1:5 666
/dev/full character special file 1:7 666
/dev/random character special file 1:8 666
/dev/urandom character special file 1:9 666
/dev/tty character special file 5:0 666
/dev/fd /proc/self/fd
/dev/stdin /proc/self/fd/0
/dev/stdout /proc/self/fd/1
/dev/stderr /proc/self/fd/2
/dev/ptmx pts/ptmx
/dev/pts directory
/dev/shm directory
/dev/pts/ptmx character special file
3
3
";
    assert_eq!(out, want);
    // writing to /dev/full fails with ENOSPC
    let out = rt.run_capture(&mut b, &["sh", "-c", "echo x > /dev/full"]);
    assert_ne!(out.code, Some(0), "{out}");
    // host devices are not exposed
    let out = rt.sh_ok(&mut b, "ls /dev");
    for d in ["vda", "sda", "kmsg", "mem", "console"] {
        assert!(
            !out.split_whitespace().any(|x| x == d),
            "/dev/{d} must not exist: {out}"
        );
    }
}

#[test]
fn linux_devices_are_created() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.device(
        json!({"path": "/dev/conf-null", "type": "c", "major": 1, "minor": 3,
                    "fileMode": 0o640, "uid": 1000, "gid": 1000}),
    )
    .device(json!({"path": "/dev/sub/conf-zero", "type": "c", "major": 1, "minor": 5}))
    .allow_device("c", 1, 3, "rwm")
    .allow_device("c", 1, 5, "rwm");
    let out = rt.sh_ok(
        &mut b,
        "stat -c '%F %t:%T %a %u:%g' /dev/conf-null /dev/sub/conf-zero; echo x > /dev/sub/conf-zero && head -c 2 /dev/sub/conf-zero | wc -c",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "character special file 1:3 640 1000:1000",
        "{out}"
    );
    assert!(lines[1].starts_with("character special file 1:5 "), "{out}");
    assert_eq!(lines[2].trim(), "2", "{out}");
    // root without CAP_DAC_OVERRIDE is held to the 0640/1000 ownership
    let out = rt.run_capture(&mut b, &["sh", "-c", "echo x > /dev/conf-null"]);
    assert_ne!(out.code, Some(0), "{out}");
}

#[test]
fn device_cgroup_denies_unlisted_devices() {
    // the default spec denies everything but the default devices; a node for
    // an unlisted device (mem, 1:1) is created but cannot be opened
    // (v2 enforces this with eBPF: same observable result)
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.device(
        json!({"path": "/dev/conf-mem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o600}),
    );
    let out = rt.run_capture(&mut b, &["sh", "-c", "head -c 1 /dev/conf-mem > /dev/null"]);
    assert_ne!(
        out.code,
        Some(0),
        "opening a device not allowed by the device cgroup must fail:\n{out}"
    );
    assert!(out.stderr.contains("not permitted"), "{out}");
}

#[test]
fn sysctl_in_new_network_namespace() {
    let rt = Runtime::rcrun();
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host_fwd.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::new();
    b.sysctl("net.ipv4.ip_forward", want)
        .sysctl("kernel.msgmax", "4096");
    let out = rt.sh_ok(
        &mut b,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax",
    );
    assert_eq!(out, format!("{want}\n4096\n"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd,
        "host sysctl changed"
    );
}

#[test]
fn mount_destination_is_created_in_rootfs() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/deep/new/dir", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]}));
    let ms = mountinfo(&rt, &mut b);
    assert_eq!(must(&ms, "/deep/new/dir").fstype, "tmpfs");
}

#[test]
fn no_pivot_still_jails_the_process() {
    let rt = Runtime::rcrun();
    let mut b = Bundle::new();
    std::fs::write(b.rootfs().join("etc/marker"), "in-rootfs\n").unwrap();
    b.sh("cat /etc/marker; ls /");
    let _g = rt.guard(&b.id);
    let out = rt.run(&b, &["--no-pivot"]);
    out.assert_ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("in-rootfs"), "{out}");
    let entries: Vec<&str> = lines.collect();
    assert!(
        entries.contains(&"bin") && !entries.contains(&"work"),
        "/ is not the bundle rootfs: {entries:?}"
    );
}
