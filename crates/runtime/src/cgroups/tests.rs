use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder,
};

use super::*;

static N: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "rcrun-test-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Kills the child on drop so a failing test leaves no `sleep` behind.
struct Sleeper(Child);
impl Sleeper {
    fn spawn() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("100")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes the cgroup when a test panics half-way.
struct Guard(Cgroup);
impl std::ops::Deref for Guard {
    type Target = Cgroup;
    fn deref(&self) -> &Cgroup {
        &self.0
    }
}
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

fn opts<'a>(id: &'a str, path: Option<&'a Path>) -> CgroupOptions<'a> {
    CgroupOptions {
        container_id: id,
        cgroups_path: path,
        systemd: false,
        rootless: false,
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

fn all_dirs(cg: &Cgroup) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = cg.state.hierarchies.iter().map(|h| h.dir.clone()).collect();
    v.extend(cg.state.created.iter().cloned());
    v
}

fn proc_state(pid: Pid) -> char {
    let s = read(format!("/proc/{pid}/stat"));
    // "pid (comm) S ..."
    s.rsplit_once(") ")
        .and_then(|(_, r)| r.chars().next())
        .unwrap_or('?')
}

fn test_resources(with_hugetlb: Option<&str>) -> LinuxResources {
    let mut b = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * 1024 * 1024i64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(10i64)
                .minor(229i64)
                .access("rw")
                .build()
                .unwrap(),
        ]);
    if let Some(size) = with_hugetlb {
        b = b.hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size(size.to_string())
            .limit(4 * 1024 * 1024i64)
            .build()
            .unwrap()]);
    }
    b.build().unwrap()
}

/// 2MB pages on the unified hierarchy (hybrid host) if this host can test it.
fn unified_hugetlb_size(cg: &Cgroup) -> Option<String> {
    if cg.mode() == CgroupMode::Unified || cg.controller_dir("hugetlb").is_some() {
        // v1-mounted hugetlb or pure v2: test the first size too.
    }
    let sizes = hugetlb_sizes();
    let on_unified = cg.unified_available().iter().any(|c| c == "hugetlb");
    let on_v1 = cg.state.hierarchies.iter().any(|h| h.has("hugetlb"));
    if !(on_unified || on_v1) {
        return None;
    }
    sizes
        .iter()
        .find(|s| s.as_str() == "2MB")
        .or(sizes.first())
        .cloned()
}

#[test]
fn clean_path_like_runc() {
    assert_eq!(clean_path(Path::new("/a/../b/./c")), PathBuf::from("/b/c"));
    assert_eq!(clean_path(Path::new("../../x")), PathBuf::from("x"));
    assert_eq!(clean_path(Path::new("a//b/")), PathBuf::from("a/b"));
    assert_eq!(clean_path(Path::new("/..")), PathBuf::from("/"));
}

#[test]
fn default_and_invalid_paths() {
    let o = opts("abc", None);
    assert_eq!(resolve_spec_path(&o).unwrap(), PathBuf::from("/abc"));
    let p = PathBuf::from("/..");
    let o = opts("abc", Some(&p));
    let e = resolve_spec_path(&o).unwrap_err().to_string();
    assert!(e.contains("cgroupsPath") && e.contains("/.."), "{e}");
    let o = opts("a/b", None);
    assert!(resolve_spec_path(&o).is_err());
}

#[test]
fn systemd_paths() {
    assert_eq!(
        systemd_cgroup_path("system.slice", "rcrun", "x", true),
        PathBuf::from("/system.slice/rcrun-x.scope")
    );
    assert_eq!(
        systemd_cgroup_path("a-b.slice", "p", "n", true),
        PathBuf::from("/a.slice/a-b.slice/p-n.scope")
    );
    assert_eq!(page_size_name(2048 * 1024), "2MB");
    assert_eq!(page_size_name(1024 * 1024 * 1024), "1GB");
}

#[test]
fn device_rules_like_runc() {
    let r = test_resources(None);
    let w = device_writes(&r).unwrap();
    assert_eq!(w[0], ("devices.deny", "a *:* rwm".to_string()));
    assert_eq!(w[1], ("devices.allow", "c 10:229 rw".to_string()));
    assert!(w
        .iter()
        .any(|(f, r)| *f == "devices.allow" && r == "c 1:3 rwm"));
    assert!(
        !w.iter().any(|(_, r)| r.contains("10:200")),
        "no tun/tap by default"
    );
    // Duplicates (the spec's device list repeats the defaults) are written once.
    let mut r = r;
    let mut rules = r.devices().clone().unwrap();
    rules.push(
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1i64)
            .minor(3i64)
            .access("rwm")
            .build()
            .unwrap(),
    );
    r.set_devices(Some(rules));
    let w = device_writes(&r).unwrap();
    assert_eq!(w.iter().filter(|(_, r)| r == "c 1:3 rwm").count(), 1);
    assert_eq!(w.iter().filter(|(_, r)| r == "a *:* rwm").count(), 1);
    assert_eq!(w[0], ("devices.deny", "a *:* rwm".to_string()));
}

#[test]
fn systemd_gives_clear_error_without_systemd() {
    if libcgroups::systemd::booted() {
        eprintln!("systemd is running here; skipping");
        return;
    }
    let o = CgroupOptions {
        container_id: "sdtest",
        cgroups_path: None,
        systemd: true,
        rootless: false,
    };
    let e = Cgroup::create(&o, None).unwrap_err();
    assert!(matches!(e, CgroupError::SystemdNotRunning { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("systemd is not running"), "{msg}");
    assert!(msg.contains("system.slice:rcrun:sdtest"), "{msg}");
    // Bad syntax is reported as such.
    let p = PathBuf::from("/not/systemd");
    let o = CgroupOptions {
        cgroups_path: Some(&p),
        ..o
    };
    let msg = Cgroup::create(&o, None).unwrap_err().to_string();
    assert!(msg.contains("slice:prefix:name"), "{msg}");
}

#[test]
fn full_lifecycle() {
    if !is_root() {
        eprintln!("needs root; skipping");
        return;
    }
    let name = unique("life");
    let spec = PathBuf::from(format!("/{name}"));
    let mut child = Sleeper::spawn();
    let pid = child.pid();
    let cg = Guard(Cgroup::create(&opts(&name, Some(&spec)), None).unwrap());
    assert_eq!(cg.path(), spec.as_path());
    cg.add_task(pid).unwrap();
    let huge = unified_hugetlb_size(&cg);
    let res = test_resources(huge.as_deref());
    cg.apply(&res).unwrap();

    // /proc/<pid>/cgroup shows the path in every hierarchy.
    let pc = read(format!("/proc/{pid}/cgroup"));
    for line in pc.lines() {
        assert!(line.ends_with(&format!(":{}", spec.display())), "{line}");
    }

    match cg.mode() {
        CgroupMode::Legacy | CgroupMode::Hybrid => {
            let mem = cg.controller_dir("memory").unwrap();
            assert_eq!(mem, Path::new(CGROUP_ROOT).join("memory").join(&name));
            assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
            let pids = cg.controller_dir("pids").unwrap();
            assert_eq!(read(pids.join("pids.max")), "10");
            let cpu = cg.controller_dir("cpu").unwrap();
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(cpu.join("cpu.shares")), "512");
            let dev = read(cg.controller_dir("devices").unwrap().join("devices.list"));
            assert!(dev.contains("c 10:229 rw"), "{dev}");
            assert!(dev.contains("c 1:3 rwm"), "{dev}");
            assert!(!dev.contains("a *:* rwm"), "{dev}");
        }
        CgroupMode::Unified | CgroupMode::Systemd => {
            let d = cg.controller_dir("").unwrap();
            assert_eq!(read(d.join("memory.max")), "67108864");
            assert_eq!(read(d.join("pids.max")), "10");
            assert_eq!(read(d.join("cpu.max")), "50000 100000");
        }
    }
    if let Some(size) = &huge {
        let file = if let Some(h) = cg.state.hierarchies.iter().find(|h| h.has("hugetlb")) {
            h.dir.join(format!("hugetlb.{size}.limit_in_bytes"))
        } else {
            cg.controller_dir("")
                .unwrap()
                .join(format!("hugetlb.{size}.max"))
        };
        assert_eq!(read(&file), "4194304", "{}", file.display());
        if cg.mode() == CgroupMode::Hybrid {
            assert!(file.starts_with(Path::new(CGROUP_ROOT).join("unified")));
        }
    } else {
        eprintln!("hugetlb not testable on this host");
    }

    // pids()
    assert_eq!(cg.pids().unwrap(), vec![pid]);

    // freeze / thaw
    let v1_freezer = cg
        .state
        .hierarchies
        .iter()
        .find(|h| h.has("freezer"))
        .map(|h| h.dir.clone());
    cg.freeze().unwrap();
    if let Some(f) = &v1_freezer {
        assert_eq!(read(f.join("freezer.state")), "FROZEN");
    } else {
        assert_eq!(
            read(cg.controller_dir("").unwrap().join("cgroup.freeze")),
            "1"
        );
    }
    let st = proc_state(pid);
    if v1_freezer.is_some() {
        assert!(matches!(st, 'D' | 'T' | 't'), "frozen process state {st}");
    } else {
        // cgroup2 freezer: the task sleeps in the signal-delivery path and shows as S.
        let ev = read(cg.controller_dir("").unwrap().join("cgroup.events"));
        assert!(ev.contains("frozen 1"), "{ev}");
    }
    cg.thaw().unwrap();
    if let Some(f) = &v1_freezer {
        assert_eq!(read(f.join("freezer.state")), "THAWED");
    } else {
        assert_eq!(
            read(cg.controller_dir("").unwrap().join("cgroup.freeze")),
            "0"
        );
    }
    let st = proc_state(pid);
    assert!(matches!(st, 'S' | 'R'), "thawed process state {st}");

    // state round trip
    let s = cg.state_path();
    let cg2 = Cgroup::open(&s, false).unwrap();
    assert_eq!(cg2.path(), cg.path());
    assert_eq!(cg2.state_path(), s);
    assert_eq!(cg2.pids().unwrap(), vec![pid]);

    child.kill();
    cg2.remove().unwrap();
    for d in all_dirs(&cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    // Removing again is fine.
    cg.remove().unwrap();
}

#[test]
fn bad_value_error_and_cleanup() {
    if !is_root() {
        return;
    }
    let name = unique("bad");
    let spec = PathBuf::from(format!("/{name}"));
    let mut child = Sleeper::spawn();
    let cg = Cgroup::create(&opts(&name, Some(&spec)), None).unwrap();
    cg.add_task(child.pid()).unwrap();
    let r = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("99").build().unwrap())
        .build()
        .unwrap();
    let msg = cg.apply(&r).unwrap_err().to_string();
    if cg.mode() == CgroupMode::Unified {
        eprintln!("{msg}");
        assert!(msg.contains("cpuset.cpus"), "{msg}");
        assert!(msg.contains("available: 0"), "{msg}");
    } else {
        assert!(
            msg.starts_with("cgroup cpuset.cpus: cannot set to 99 ("),
            "{msg}"
        );
        assert!(msg.contains("available: 0"), "{msg}");
        assert!(
            msg.ends_with(&format!(
                " in {}",
                cg.controller_dir("cpuset").unwrap().display()
            )),
            "{msg}"
        );
        eprintln!("{msg}");
    }
    // The caller removes without killing first: remove() must still clean everything.
    cg.remove().unwrap();
    for d in all_dirs(&cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    child.kill();
}

#[test]
fn memory_below_usage_names_file() {
    if !is_root() {
        return;
    }
    let name = unique("mem");
    let spec = PathBuf::from(format!("/{name}"));
    let cg = Cgroup::create(&opts(&name, Some(&spec)), None).unwrap();
    let Some(dir) = cg.controller_dir("memory").map(Path::to_path_buf) else {
        cg.remove().unwrap();
        return;
    };
    if cg.mode() == CgroupMode::Unified {
        cg.remove().unwrap();
        return;
    }
    // A shell inside the cgroup that holds ~8 MiB of page cache in a tmpfs-less way:
    // dd into a pipe-held variable is unreliable, so allocate with a big environment string.
    let mut child = Sleeper(
        Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$1/cgroup.procs\"; x=$(head -c 8000000 /dev/zero | tr '\\0' a); sleep 100")
            .arg("sh")
            .arg(&dir)
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        let u: u64 = read(dir.join("memory.usage_in_bytes")).parse().unwrap_or(0);
        if u > 4 * 1024 * 1024 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(1i64).build().unwrap())
        .build()
        .unwrap();
    let err = cg.apply(&r).unwrap_err().to_string();
    assert!(
        err.starts_with("cgroup memory.limit_in_bytes: cannot set to 1 (device or resource busy"),
        "{err}"
    );
    child.kill();
    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn nested_and_relative_paths() {
    if !is_root() {
        return;
    }
    // Absolute with missing parents: remove() also removes the parents it made.
    let parent = unique("parent");
    let spec = PathBuf::from(format!("/{parent}/child"));
    let cg = Cgroup::create(&opts("child", Some(&spec)), None).unwrap();
    assert_eq!(cg.path(), spec.as_path());
    let top = Path::new(CGROUP_ROOT).join("pids").join(&parent);
    if cg.mode() != CgroupMode::Unified {
        assert!(top.join("child").is_dir());
    }
    cg.remove().unwrap();
    for d in all_dirs(&cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }

    // Relative: under the runtime's own cgroup in each v1 hierarchy.
    let rel = PathBuf::from(unique("rel"));
    let cg = Cgroup::create(&opts("x", Some(&rel)), None).unwrap();
    let own = own_cgroups().unwrap();
    if let Some(mem) = cg.controller_dir("memory") {
        if cg.mode() != CgroupMode::Unified {
            let mine = own.get(&vec!["memory".to_string()]).unwrap();
            let want = join_under(&join_under(Path::new("/sys/fs/cgroup/memory"), mine), &rel);
            assert_eq!(mem, want.as_path());
        }
        assert!(mem.is_dir());
    }
    let mut child = Sleeper::spawn();
    cg.add_task(child.pid()).unwrap();
    cg.apply(&LinuxResources::default()).unwrap();
    child.kill();
    cg.remove().unwrap();
    for d in all_dirs(&cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

#[test]
fn open_missing_and_bad_state() {
    assert!(Cgroup::open("{not json", false).is_err());
    assert!(Cgroup::open("relative/path", false).is_err());
    if !is_root() {
        return;
    }
    // Removing a cgroup that never existed is fine.
    let cg = Cgroup::open(&format!("/{}", unique("never")), false).unwrap();
    cg.remove().unwrap();
}

/// The cgroup v2 eBPF device filter, exercised on the unified hierarchy (works on hybrid
/// hosts too, since any cgroup2 cgroup accepts BPF_CGROUP_DEVICE programs).
#[test]
fn bpf_device_filter_on_cgroup2() {
    if !is_root() {
        return;
    }
    if !Path::new("/dev/kmsg").exists() {
        eprintln!("/dev/kmsg missing; skipping");
        return;
    }
    let name = unique("bpf");
    let spec = PathBuf::from(format!("/{name}"));
    let cg = Guard(Cgroup::create(&opts(&name, Some(&spec)), None).unwrap());
    let Some(dir) = cg.controller_dir("").map(Path::to_path_buf) else {
        eprintln!("no cgroup2 hierarchy; skipping");
        cg.remove().unwrap();
        return;
    };
    let run = || -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(
                "echo $$ > \"$1/cgroup.procs\" || exit 9; \
                 (: < /dev/kmsg) 2>/dev/null && echo kmsg-ok; \
                 (: < /dev/null) && echo null-ok; \
                 (: > /dev/full) 2>/dev/null && echo full-ok; exit 0",
            )
            .arg("sh")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deny_all = || {
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap()
    };
    // Deny all + runc defaults: /dev/null and /dev/full allowed, /dev/kmsg denied.
    let r = LinuxResourcesBuilder::default()
        .devices(vec![deny_all()])
        .build()
        .unwrap();
    apply_bpf_devices(&dir, &r, true).unwrap();
    let out = run();
    assert!(out.contains("null-ok") && out.contains("full-ok"), "{out}");
    assert!(!out.contains("kmsg-ok"), "{out}");
    // Re-apply allowing /dev/kmsg read-only (replaces the old program) and denying
    // writes to /dev/full (a later, partial deny overrides an earlier allow).
    let r = LinuxResourcesBuilder::default()
        .devices(vec![
            deny_all(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1i64)
                .minor(11i64)
                .access("r")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let mut r = r;
    // runc's defaults are appended after the user's rules, so to override a default the
    // deny has to come last: emulate with a rule list that ends with it.
    let mut rules = bpf_device_rules(&r).unwrap();
    rules.push(devfilter::Rule {
        allow: false,
        typ: Some(devfilter::DEV_CHAR),
        major: Some(1),
        minor: Some(7),
        access: devfilter::ACC_WRITE,
    });
    devfilter::attach(&dir, &devfilter::program(&rules), true).unwrap();
    let out = run();
    assert!(out.contains("kmsg-ok") && out.contains("null-ok"), "{out}");
    assert!(!out.contains("full-ok"), "{out}");
    // And through the public path again (replacing the program once more).
    r.set_devices(Some(vec![deny_all()]));
    apply_bpf_devices(&dir, &r, true).unwrap();
    let out = run();
    assert!(!out.contains("kmsg-ok") && out.contains("full-ok"), "{out}");
    cg.remove().unwrap();
    assert!(!dir.exists());
}

/// The pure-v2 code paths (libcgroups v2 manager, cgroup.freeze, cgroup.kill, eBPF devices,
/// hugetlb.<size>.max) run against the cgroup2 mount of a hybrid host, treated as if it
/// were the only hierarchy. Only controllers attached there can be limited.
#[test]
fn v2_paths_on_cgroup2_mount() {
    if !is_root() {
        return;
    }
    let mount = if is_cgroup2(Path::new(CGROUP_ROOT)) {
        PathBuf::from(CGROUP_ROOT)
    } else {
        match cgroup_mounts()
            .unwrap()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
        {
            Some(m) => m.point,
            None => {
                eprintln!("no cgroup2 mount; skipping");
                return;
            }
        }
    };
    let name = unique("v2");
    let spec = PathBuf::from(format!("/{name}/leaf"));
    let plan = plan_unified_at(&mount, &spec).unwrap();
    let cg = Guard(Cgroup::create_from_plan(plan, false, None).unwrap());
    assert_eq!(cg.mode(), CgroupMode::Unified);
    assert_eq!(cg.path(), spec.as_path());
    let dir = cg.controller_dir("memory").unwrap().to_path_buf();
    assert_eq!(dir, mount.join(&name).join("leaf"));
    // Every available controller is enabled on the way down (not in the leaf).
    let avail = read(mount.join("cgroup.controllers"));
    assert_eq!(
        read(mount.join(&name).join("cgroup.subtree_control")),
        avail
    );
    assert_eq!(read(dir.join("cgroup.subtree_control")), "");

    let mut child = Sleeper::spawn();
    let pid = child.pid();
    cg.add_task(pid).unwrap();
    let pc = read(format!("/proc/{pid}/cgroup"));
    assert!(pc.contains(&format!("0::{}", spec.display())), "{pc}");

    let huge = hugetlb_sizes()
        .into_iter()
        .find(|_| avail.split_whitespace().any(|c| c == "hugetlb"));
    let mut b = LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap()]);
    if let Some(size) = &huge {
        b = b.hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size(size.clone())
            .limit(1024 * 1024 * 1024i64)
            .build()
            .unwrap()]);
    }
    cg.apply(&b.build().unwrap()).unwrap();
    if let Some(size) = &huge {
        assert_eq!(read(dir.join(format!("hugetlb.{size}.max"))), "1073741824");
    }
    // A controller that is not enabled gives a clear error naming file and value.
    if !avail.split_whitespace().any(|c| c == "pids") {
        let r = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5i64).build().unwrap())
            .build()
            .unwrap();
        let msg = cg.apply(&r).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot apply linux.resources.pids: cgroup controller \"pids\""),
            "{msg}"
        );
        assert!(msg.contains("not enabled for"), "{msg}");
        eprintln!("{msg}");
    }

    cg.freeze().unwrap();
    assert_eq!(read(dir.join("cgroup.freeze")), "1");
    assert!(read(dir.join("cgroup.events")).contains("frozen 1"));
    cg.thaw().unwrap();
    assert_eq!(read(dir.join("cgroup.freeze")), "0");
    assert_eq!(cg.pids().unwrap(), vec![pid]);

    // clone3(CLONE_INTO_CGROUP) with clone_into_fd(): born inside, no add_task needed.
    let fd = cg.clone_into_fd().expect("clone_into_fd on cgroup2");
    let forked = crate::container::clone::clone_into(
        nix::sched::CloneFlags::empty(),
        Some(std::os::fd::AsRawFd::as_raw_fd(&fd)),
    )
    .expect("clone3");
    let cpid: i64 = match forked {
        crate::container::clone::Forked::Child => 0,
        crate::container::clone::Forked::Parent { pid, in_cgroup } => {
            assert!(in_cgroup, "this kernel has CLONE_INTO_CGROUP");
            pid.as_raw() as i64
        }
    };
    if cpid == 0 {
        // SAFETY: child of clone3: wait for the parent's SIGKILL.
        unsafe {
            libc::pause();
            libc::_exit(0)
        }
    }
    assert!(cpid > 0, "clone3: {}", std::io::Error::last_os_error());
    let cpid = Pid::from_raw(cpid as i32);
    let pc = read(format!("/proc/{cpid}/cgroup"));
    assert!(pc.contains(&format!("0::{}", spec.display())), "{pc}");
    let mut got = cg.pids().unwrap();
    got.sort();
    let mut want = vec![pid, cpid];
    want.sort();
    assert_eq!(got, want);
    nix::sys::signal::kill(cpid, nix::sys::signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(cpid, None).unwrap();

    let cg2 = Cgroup::open(&cg.state_path(), false).unwrap();
    assert_eq!(cg2.pids().unwrap(), vec![pid]);
    // Child still running: remove() kills it (cgroup.kill) and removes both levels.
    cg2.remove().unwrap();
    assert!(!dir.exists());
    assert!(!mount.join(&name).exists());
    let st = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
}

#[test]
fn remove_frozen_cgroup_with_live_process() {
    if !is_root() {
        return;
    }
    let name = unique("frozen");
    let spec = PathBuf::from(format!("/{name}"));
    let mut child = Sleeper::spawn();
    let cg = Guard(Cgroup::create(&opts(&name, Some(&spec)), None).unwrap());
    cg.add_task(child.pid()).unwrap();
    cg.freeze().unwrap();
    let t = std::time::Instant::now();
    cg.remove().unwrap();
    eprintln!(
        "remove of a frozen cgroup with a live task: {:?}",
        t.elapsed()
    );
    for d in all_dirs(&cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    let st = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
}

#[test]
#[ignore]
fn bench_bpf_load_only() {
    let r = test_resources(None);
    let full = devfilter::program(&bpf_device_rules(&r).unwrap());
    let trivial = devfilter::program(&[devfilter::Rule {
        allow: true,
        typ: None,
        major: None,
        minor: None,
        access: 7,
    }]);
    for (name, p) in [("trivial", &trivial), ("full", &full)] {
        let t = std::time::Instant::now();
        for _ in 0..50 {
            devfilter::load_only(p).unwrap();
        }
        eprintln!("{name} ({} insns): {:?}", p.len(), t.elapsed() / 50);
    }
}

/// blockIO throttling and (v1) net_cls / net_prio, where the host has them.
#[test]
fn blkio_and_network() {
    if !is_root() {
        return;
    }
    let Some((maj, min)) = fs::read_dir("/sys/block").ok().and_then(|rd| {
        rd.flatten().find_map(|e| {
            let d = read_trim(&e.path().join("dev")).ok()?;
            let (a, b) = d.split_once(':')?;
            Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?))
        })
    }) else {
        eprintln!("no block device; skipping");
        return;
    };
    let name = unique("io");
    let spec = PathBuf::from(format!("/{name}"));
    let cg = Guard(Cgroup::create(&opts(&name, Some(&spec)), None).unwrap());
    let io: oci_spec::runtime::LinuxBlockIo = serde_json::from_value(serde_json::json!({
        "throttleReadBpsDevice": [{"major": maj, "minor": min, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": maj, "minor": min, "rate": 300}]
    }))
    .unwrap();
    let mut r = LinuxResources::default();
    r.set_block_io(Some(io));
    let v1_net = cg.mode() != CgroupMode::Unified
        && cg.state.hierarchies.iter().any(|h| h.has("net_cls"))
        && cg.state.hierarchies.iter().any(|h| h.has("net_prio"));
    if v1_net {
        let net: oci_spec::runtime::LinuxNetwork = serde_json::from_value(serde_json::json!({
            "classID": 1048577,
            "priorities": [{"name": "lo", "priority": 5}]
        }))
        .unwrap();
        r.set_network(Some(net));
    }
    cg.apply(&r).unwrap();
    if cg.mode() == CgroupMode::Unified {
        let max = read(cg.controller_dir("").unwrap().join("io.max"));
        assert!(
            max.contains(&format!(
                "{maj}:{min} rbps=1048576 wbps=max riops=max wiops=300"
            )),
            "{max}"
        );
    } else {
        let dir = cg.controller_dir("blkio").unwrap();
        let v = read(dir.join("blkio.throttle.read_bps_device"));
        assert_eq!(v, format!("{maj}:{min} 1048576"));
        let v = read(dir.join("blkio.throttle.write_iops_device"));
        assert_eq!(v, format!("{maj}:{min} 300"));
    }
    if v1_net {
        let d = cg.controller_dir("net_cls").unwrap();
        assert_eq!(read(d.join("net_cls.classid")), "1048577");
        let d = cg.controller_dir("net_prio").unwrap();
        assert!(read(d.join("net_prio.ifpriomap")).contains("lo 5"));
    } else if cg.mode() != CgroupMode::Unified {
        // Requested but not mounted: a clear error.
        let net: oci_spec::runtime::LinuxNetwork =
            serde_json::from_value(serde_json::json!({"classID": 7})).unwrap();
        let mut r = LinuxResources::default();
        r.set_network(Some(net));
        let msg = cg.apply(&r).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "cannot apply linux.resources.network.classID: cgroup controller \"net_cls\""
            ),
            "{msg}"
        );
    }
}

/// cargo test --release -- --ignored bench --nocapture
#[test]
#[ignore]
fn bench_create_apply_remove() {
    if !is_root() {
        return;
    }
    let res = test_resources(None);
    let n = 100u32;
    let mut child = Sleeper::spawn();
    let t = std::time::Instant::now();
    let (mut tc, mut ta, mut tapp, mut tr) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for _ in 0..n {
        let name = unique("bench");
        let spec = PathBuf::from(format!("/{name}"));
        let t0 = std::time::Instant::now();
        let cg = Cgroup::create(&opts(&name, Some(&spec)), Some(&res)).unwrap();
        let t1 = std::time::Instant::now();
        cg.add_task(child.pid()).unwrap();
        let t2 = std::time::Instant::now();
        cg.apply(&res).unwrap();
        let t3 = std::time::Instant::now();
        // move the child out again so remove() does not kill it
        for h in &cg.state.hierarchies {
            write_raw(&h.mount.join(CGROUP_PROCS), &child.pid().to_string()).unwrap();
        }
        let t4 = std::time::Instant::now();
        cg.remove().unwrap();
        let t5 = std::time::Instant::now();
        tc += t1 - t0;
        ta += t2 - t1;
        tapp += t3 - t2;
        tr += t5 - t4;
    }
    // The eBPF device filter alone (cgroup2).
    let name = unique("benchbpf");
    let spec = PathBuf::from(format!("/{name}"));
    let cg = Guard(Cgroup::create(&opts(&name, Some(&spec)), None).unwrap());
    if let Some(dir) = cg.controller_dir("") {
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            apply_bpf_devices(dir, &res, true).unwrap();
        }
        eprintln!(
            "eBPF device filter load+attach+replace: {:?}",
            t0.elapsed() / n
        );
    }
    drop(cg);
    eprintln!(
        "{n} iterations: total {:?}; per iteration: create {:?}, add_task {:?}, apply {:?}, remove {:?}",
        t.elapsed(),
        tc / n,
        ta / n,
        tapp / n,
        tr / n
    );
    child.kill();
}

/// `create` records the planned locator before making anything: opening it and removing must
/// undo a creation interrupted at any point (here: after one hierarchy's parent and cgroup,
/// with a process inside), parents included, and nothing else.
#[test]
fn planned_locator_undoes_an_interrupted_create() {
    if !is_root() {
        return;
    }
    let parent = unique("planned");
    let spec = PathBuf::from(format!("/{parent}/c"));
    let o = opts("c", Some(&spec));
    let planned = Cgroup::plan(&o).unwrap();
    let locator = planned.state_path();
    let state: State = serde_json::from_str(&locator).unwrap();
    assert!(!state.hierarchies.is_empty());
    // Every missing parent is named, parents before children, and only those.
    for h in &state.hierarchies {
        let p = h.dir.parent().unwrap();
        assert!(
            state.created.iter().any(|c| c == p),
            "{p:?} not in {locator}"
        );
    }

    // Interrupted: the first hierarchy's directories exist, with a process inside.
    let first = &state.hierarchies[0];
    fs::create_dir_all(&first.dir).unwrap();
    let mut child = Sleeper::spawn();
    fs::write(first.dir.join(CGROUP_PROCS), child.pid().to_string()).unwrap();
    let cg = Cgroup::open(&locator, false).unwrap();
    cg.remove().unwrap();
    for h in &state.hierarchies {
        assert!(!h.dir.exists(), "{} still exists", h.dir.display());
        assert!(
            !h.dir.parent().unwrap().exists(),
            "parent of {}",
            h.dir.display()
        );
    }
    assert!(
        matches!(proc_state(child.pid()), 'Z' | 'X' | '?'),
        "the process inside was not killed"
    );
    child.kill();

    // Not interrupted: the planned cgroup is the one `create` makes.
    let cg = Guard(Cgroup::create_planned(Cgroup::plan(&o).unwrap(), None).unwrap());
    assert_eq!(cg.path(), spec.as_path());
    for d in all_dirs(&cg) {
        assert!(d.is_dir(), "{}", d.display());
    }
}
