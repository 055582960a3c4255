//! Shared-memory channels injected by the `org.rcrun.shm.channels` annotation (docs/shm.md):
//! two real containers (own ipc, mount and pid namespaces) talk through the region rcrun
//! mounts into both; integrity under load; a peer killed mid-message; the region's life
//! (removed with the last container, also by `delete --force` without state.json); malformed
//! annotations fail `create` leaving nothing behind; NUMA placement (guest, two nodes).
//!
//! Needs the static demo binary (it runs inside the busybox rootfs):
//!   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
//!     --target x86_64-unknown-linux-gnu -p rcrun-ipc-shm --bin rcrun-shm
//! found there (under $CARGO_TARGET_DIR or <workspace>/target) or named by RCRUN_SHM_DEMO_BIN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::env::{is_static_elf, workspace_root};
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ANN: &str = "org.rcrun.shm.channels";

/// The static rcrun-shm binary for the container rootfs.
fn demo_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RCRUN_SHM_DEMO_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_static_elf(&p),
            "RCRUN_SHM_DEMO_BIN={} is not a static executable",
            p.display()
        );
        return p;
    }
    let mut targets = vec![workspace_root().join("target")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        targets.insert(0, PathBuf::from(t));
    }
    for t in &targets {
        for sub in [
            "x86_64-unknown-linux-gnu/release",
            "aarch64-unknown-linux-gnu/release",
            "release",
        ] {
            let p = t.join(sub).join("rcrun-shm");
            if is_static_elf(&p) {
                return p;
            }
        }
    }
    panic!(
        "no static rcrun-shm: build it with RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build \
         --release --target x86_64-unknown-linux-gnu -p rcrun-ipc-shm --bin rcrun-shm, or set RCRUN_SHM_DEMO_BIN"
    )
}

/// A private shm root on tmpfs (RCRUN_SHM_ROOT for the runtime), removed on drop.
struct ShmRoot(PathBuf);

impl ShmRoot {
    fn new() -> ShmRoot {
        let p = Path::new("/dev/shm").join(unique_id("rcrun-shm-root"));
        std::fs::create_dir_all(&p).unwrap();
        ShmRoot(p)
    }
    fn channel(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Channel directories left under the root.
    fn channels(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ShmRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busybox bundle with the demo binary at /bin/rcrun-shm, running it with `args`.
fn bundle(channels: &Value, args: &[&str]) -> Bundle {
    let mut b = Bundle::new();
    std::fs::copy(demo_bin(), b.rootfs().join("bin/rcrun-shm")).unwrap();
    let mut a = vec!["/bin/rcrun-shm"];
    a.extend_from_slice(args);
    b.args(&a).annotation(ANN, &channels.to_string());
    b
}

fn create(rt: &Runtime, b: &Bundle, root: &ShmRoot) -> Output {
    b.write();
    rt.remember(&b.id, b);
    let bp = b.path().to_string_lossy().into_owned();
    rt.exec_opts(
        &["create", "--bundle", &bp, &b.id],
        Opts {
            env: vec![("RCRUN_SHM_ROOT".into(), root.0.display().to_string())],
            ..Opts::default()
        },
    )
}

fn ns(pid: i64, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn users(root: &ShmRoot, chan: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.channel(chan).join("users"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait for a stopped container, then its stdout (the create's, inherited) as text.
fn wait_stopped(rt: &Runtime, id: &str, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || {
        rt.status(id).as_deref() == Some("stopped")
    })
}

#[test]
fn two_containers_exchange_ordered_intact_messages_through_the_injected_channel() {
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let count = "20000";
    // Sizes past the frame limit (ring 256 KiB: frames up to 128 KiB) are fragmented.
    let a = bundle(
        &json!([{"name": "c1", "role": "listen", "size": "256KiB"}]),
        &["listen", "c1", "recv", "--count", count],
    );
    let b = bundle(
        &json!([{"name": "c1", "role": "connect", "size": "256KiB"}]),
        &["connect", "c1", "send", "--count", count, "--size", "3000"],
    );
    let _ga = rt.guard(&a.id);
    let _gb = rt.guard(&b.id);
    let out_a = create(&rt, &a, &root);
    out_a.assert_ok();
    let out_b = create(&rt, &b, &root);
    out_b.assert_ok();

    // One region, two users, mounted in both containers; separate namespaces.
    let region = root.channel("c1").join("region");
    let meta = std::fs::metadata(&region).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o660, "region mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "region owner");
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(users(&root, "c1"), want);
    let (pa, pb) = (rt.pid(&a.id), rt.pid(&b.id));
    for kind in ["ipc", "mnt", "pid"] {
        assert_ne!(ns(pa, kind), ns(pb, kind), "{kind} namespace shared");
        assert_ne!(ns(pa, kind), ns(1, kind), "{kind} namespace is the host's");
    }
    for pid in [pa, pb] {
        let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        assert!(
            mi.lines().any(|l| l.contains(" /dev/rcrun-shm/c1 ")),
            "no /dev/rcrun-shm/c1 in {pid}'s mounts:\n{mi}"
        );
    }

    rt.start(&a.id).assert_ok();
    rt.start(&b.id).assert_ok();
    assert!(wait_stopped(&rt, &a.id, 60), "receiver did not finish");
    assert!(wait_stopped(&rt, &b.id, 60), "sender did not finish");
    let got = out_a.stdout_now();
    assert!(
        got.contains(&format!("\"received\":{count}")) && got.contains("\"ok\":true"),
        "receiver: {got:?} stderr {:?}",
        std::fs::read_to_string(&out_a.stderr_path).unwrap_or_default()
    );
    assert!(out_b.stdout_now().contains(&format!("\"sent\":{count}")));

    // The region lives while a container uses it.
    rt.delete(&a.id).assert_ok();
    assert!(
        region.exists(),
        "region removed while {} still uses it",
        b.id
    );
    assert_eq!(users(&root, "c1"), vec![b.id.clone()]);
    rt.delete(&b.id).assert_ok();
    assert!(root.channels().is_empty(), "left: {:?}", root.channels());
    assert_no_leftovers(&rt, &a, &a.id, Some(pa));
    assert_no_leftovers(&rt, &b, &b.id, Some(pb));
}

#[test]
fn large_messages_fragmented_and_checked_between_containers() {
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let a = bundle(
        &json!([{"name": "big", "role": "listen", "size": "64KiB"}]),
        &["listen", "big", "recv", "--count", "300"],
    );
    let b = bundle(
        &json!([{"name": "big", "role": "connect", "size": "64KiB"}]),
        &["connect", "big", "send", "--count", "300", "--size", "1MiB"],
    );
    let _ga = rt.guard(&a.id);
    let _gb = rt.guard(&b.id);
    let out_a = create(&rt, &a, &root);
    out_a.assert_ok();
    create(&rt, &b, &root).assert_ok();
    rt.start(&a.id).assert_ok();
    rt.start(&b.id).assert_ok();
    assert!(wait_stopped(&rt, &a.id, 120));
    assert!(
        out_a.stdout_now().contains("\"received\":300"),
        "{:?}",
        out_a.stdout_now()
    );
    rt.delete(&a.id).assert_ok();
    rt.delete_force(&b.id).assert_ok();
    assert!(root.channels().is_empty());
}

#[test]
fn a_peer_killed_mid_message_is_reported_as_peer_died() {
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    // The receiver sleeps at once (no spinning): the kernel's robust-futex wake must reach it.
    let a = bundle(
        &json!([{"name": "k", "role": "listen", "size": "4MiB"}]),
        &["listen", "k", "recv", "--count", "1", "--spin-us", "0"],
    );
    let b = bundle(
        &json!([{"name": "k", "role": "connect", "size": "4MiB"}]),
        &["connect", "k", "stall"],
    );
    let _ga = rt.guard(&a.id);
    let _gb = rt.guard(&b.id);
    let out_a = create(&rt, &a, &root);
    out_a.assert_ok();
    let out_b = create(&rt, &b, &root);
    out_b.assert_ok();
    rt.start(&a.id).assert_ok();
    rt.start(&b.id).assert_ok();
    assert!(
        wait_until(Duration::from_secs(20), || out_b
            .stdout_now()
            .contains("stalled")),
        "the sender never reserved its frame: {:?}",
        out_b.stdout_now()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rt.status(&a.id).as_deref(), Some("running"));
    rt.kill(&b.id, "KILL").assert_ok();
    assert!(
        wait_stopped(&rt, &a.id, 5),
        "the receiver did not notice its peer's death"
    );
    let err = std::fs::read_to_string(&out_a.stderr_path).unwrap_or_default();
    assert!(err.contains("peer died"), "receiver stderr: {err:?}");
    rt.delete(&a.id).assert_ok();
    rt.delete(&b.id).assert_ok();
    assert!(root.channels().is_empty());
}

#[test]
fn delete_force_without_state_json_releases_the_channel() {
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let a = bundle(
        &json!([{"name": "r", "role": "listen"}]),
        &["listen", "r", "echo"],
    );
    let _ga = rt.guard(&a.id);
    create(&rt, &a, &root).assert_ok();
    let pid = rt.pid(&a.id);
    assert_eq!(users(&root, "r"), vec![a.id.clone()]);
    // What a create killed after joining leaves: no state.json, the record still there.
    std::fs::remove_file(rt.state_dir(&a.id).join("state.json")).unwrap();
    assert!(rt.state_dir(&a.id).join("shm-channels.json").exists());
    rt.delete_force(&a.id).assert_ok();
    assert!(root.channels().is_empty(), "left: {:?}", root.channels());
    assert_no_leftovers(&rt, &a, &a.id, Some(pid));
}

#[test]
fn malformed_or_conflicting_channels_fail_create_and_leave_nothing() {
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!([{"name": "c", "role": "listen", "size": "64XB"}]),
            &[ANN, "[0].size", "64XB", "is not a size"],
        ),
        (
            json!([{"name": "c", "role": "talk"}]),
            &["[0].role", "talk"],
        ),
        (
            json!([{"name": "c/../x", "role": "listen"}]),
            &["[0].name", "c/../x"],
        ),
        (
            json!([{"name": "c", "role": "listen", "colour": "red"}]),
            &["[0]", "unknown field", "colour"],
        ),
        (
            json!([{"name": "c", "role": "listen", "numaNode": 4000}]),
            &["[0].numaNode", "4000"],
        ),
        (
            json!([{"name": "c", "role": "listen", "numaNode": 77}]),
            &["[0].numaNode", "77: no such NUMA node"],
        ),
        (
            json!([{"name": "c", "role": "listen", "size": "4KiB"}, {"name": "d", "role": "listen", "size": "12KiB"}]),
            &["[1].size", "12288"],
        ),
        (json!({"name": "c"}), &[ANN, "list"]),
    ];
    for (value, needles) in cases {
        let b = bundle(&value, &["true"]);
        let _g = rt.guard(&b.id);
        let out = create(&rt, &b, &root);
        out.assert_fail().assert_one_line_error(needles);
        assert!(!rt.state_dir(&b.id).exists(), "state dir left for {value}");
        assert!(
            root.channels().is_empty(),
            "{value}: left {:?}",
            root.channels()
        );
    }
    // (Needles avoid quotes: the error line is logfmt with escaped quotes.)
    // Raw text that is not JSON.
    let mut b = bundle(&json!([]), &["true"]);
    b.annotation(ANN, "[{\"name\":");
    let _g = rt.guard(&b.id);
    create(&rt, &b, &root)
        .assert_fail()
        .assert_one_line_error(&[ANN, "not valid JSON"]);

    // A second listener on a channel: refused, the first keeps it alone.
    let first = bundle(&json!([{"name": "one", "role": "listen"}]), &["true"]);
    let second = bundle(&json!([{"name": "one", "role": "listen"}]), &["true"]);
    let _g1 = rt.guard(&first.id);
    let _g2 = rt.guard(&second.id);
    create(&rt, &first, &root).assert_ok();
    create(&rt, &second, &root)
        .assert_fail()
        .assert_one_line_error(&["one", "already has the listen role"]);
    assert!(!rt.state_dir(&second.id).exists());
    assert_eq!(users(&root, "one"), vec![first.id.clone()]);
    // A joiner that disagrees on the size.
    let third = bundle(
        &json!([{"name": "one", "role": "connect", "size": "2MiB"}]),
        &["true"],
    );
    let _g3 = rt.guard(&third.id);
    create(&rt, &third, &root)
        .assert_fail()
        .assert_one_line_error(&["one", "size 2097152"]);
    assert_eq!(users(&root, "one"), vec![first.id.clone()]);
    rt.delete(&first.id).assert_ok();
    assert!(root.channels().is_empty());
}

/// Guest-only (two NUMA nodes): `guest/run --profile numa` (docs/shm.md has the command).
#[test]
fn numa_placement_binds_the_region_and_pins_the_container() {
    let node1 = Path::new("/sys/devices/system/node/node1");
    if !node1.exists() {
        eprintln!(
            "SKIP numa_placement_binds_the_region_and_pins_the_container: this host has one NUMA \
             node; it runs in the two-node guest (guest/run --profile numa, see docs/shm.md)"
        );
        return;
    }
    let cpus1 = std::fs::read_to_string(node1.join("cpulist"))
        .unwrap()
        .trim()
        .to_string();
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let chan = json!([{"name": "n", "role": "listen", "size": "4MiB", "numaNode": 1, "pin": true}]);
    let a = bundle(
        &chan,
        &["listen", "n", "recv", "--count", "1", "--spin-us", "0"],
    );
    let _ga = rt.guard(&a.id);
    create(&rt, &a, &root).assert_ok();
    rt.start(&a.id).assert_ok();
    let pid = rt.pid(&a.id);
    // The listener maps the region before it waits for a connector.
    let region_line = || {
        std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("/dev/rcrun-shm/n"))
            .map(String::from)
    };
    assert!(
        wait_until(Duration::from_secs(20), || region_line().is_some()),
        "region never mapped"
    );
    let line = region_line().unwrap_or_default();
    eprintln!("numa_maps: {line}");
    assert!(line.contains("bind:1"), "region policy: {line}");
    assert!(line.contains(" N1="), "no pages on node 1: {line}");
    assert!(!line.contains(" N0="), "pages on node 0: {line}");
    // Every page of the region (rcrun allocated them all at create) is on node 1: map the
    // host file here, touch each page, and read our own numa_maps.
    let region = root.channel("n").join("region");
    let f = std::fs::File::open(&region).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let mut sum = 0u64;
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        sum += unsafe { std::ptr::read_volatile((p as *const u8).add(off)) } as u64;
    }
    let own = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, len) };
    let line = own
        .lines()
        .find(|l| l.contains(&region.display().to_string()))
        .unwrap_or("")
        .to_string();
    eprintln!("whole region ({} pages, sum {sum}): {line}", len / 4096);
    assert!(
        line.contains(&format!(" N1={}", len / 4096)) && !line.contains(" N0="),
        "region pages not all on node 1: {line}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!(
        "{}",
        util::grep(&status, "Cpus_allowed_list").join(" ")
            + " "
            + &util::grep(&status, "Mems_allowed_list").join(" ")
    );
    assert_eq!(
        util::status_field(&status, "Cpus_allowed_list").as_deref(),
        Some(cpus1.as_str())
    );
    assert_eq!(
        util::status_field(&status, "Mems_allowed_list").as_deref(),
        Some("1")
    );
    // The process' own memory policy (linux.memoryPolicy, set before exec): its heap too.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
    let heap = maps.lines().find(|l| l.contains("heap")).unwrap_or("");
    assert!(heap.contains("bind:1"), "heap policy: {heap}");
    rt.kill(&a.id, "KILL").assert_ok();
    assert!(wait_stopped(&rt, &a.id, 10));
    rt.delete(&a.id).assert_ok();
    assert!(root.channels().is_empty());
}

/// A hugetlbfs mount with `pages` huge pages reserved, undone on drop.
struct HugePages {
    mnt: PathBuf,
    nr_file: PathBuf,
    before: String,
}

impl HugePages {
    fn new(node: u32, pages: u64) -> Result<HugePages, String> {
        let nr_file = PathBuf::from(format!(
            "/sys/devices/system/node/node{node}/hugepages/hugepages-2048kB/nr_hugepages"
        ));
        let before =
            std::fs::read_to_string(&nr_file).map_err(|e| format!("{}: {e}", nr_file.display()))?;
        let want = before.trim().parse::<u64>().unwrap_or(0) + pages;
        std::fs::write(&nr_file, want.to_string()).map_err(|e| e.to_string())?;
        let mnt = Path::new("/dev/shm").join(unique_id("rcrun-hugetlbfs"));
        std::fs::create_dir_all(&mnt).unwrap();
        let h = HugePages {
            mnt,
            nr_file,
            before,
        };
        let (rc, _, err) = util::host(
            "mount",
            &[
                "-t",
                "hugetlbfs",
                "-o",
                "pagesize=2M",
                "none",
                &h.mnt.display().to_string(),
            ],
        );
        if rc != 0 {
            return Err(format!("mount hugetlbfs: {err}"));
        }
        let have = std::fs::read_to_string(&h.nr_file).unwrap_or_default();
        if have.trim().parse::<u64>().unwrap_or(0) < want {
            return Err(format!("only {} huge pages on node {node}", have.trim()));
        }
        Ok(h)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = util::host("umount", &[&self.mnt.display().to_string()]);
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::write(&self.nr_file, self.before.trim());
    }
}

/// Huge pages from the node's pool: on node 1 in the two-node guest, node 0 on the host.
#[test]
fn hugepages_region_comes_from_the_nodes_hugetlbfs_pool() {
    let node: u32 = if Path::new("/sys/devices/system/node/node1").exists() {
        1
    } else {
        0
    };
    let hp = match HugePages::new(node, 3) {
        Ok(h) => h,
        Err(e) => panic!("cannot reserve 3 huge pages of 2 MiB on node {node}: {e}"),
    };
    let rt = Runtime::rcrun();
    let root = ShmRoot::new();
    let chan = json!([{"name": "h", "role": "listen", "size": "2MiB", "numaNode": node, "hugepages": true}]);
    let a = bundle(
        &chan,
        &["listen", "h", "recv", "--count", "1", "--spin-us", "0"],
    );
    let _ga = rt.guard(&a.id);
    a.write();
    rt.remember(&a.id, &a);
    let bp = a.path().to_string_lossy().into_owned();
    let out = rt.exec_opts(
        &["create", "--bundle", &bp, &a.id],
        Opts {
            env: vec![
                ("RCRUN_SHM_ROOT".into(), root.0.display().to_string()),
                (
                    "RCRUN_SHM_HUGETLB_ROOT".into(),
                    hp.mnt.display().to_string(),
                ),
            ],
            ..Opts::default()
        },
    );
    out.assert_ok();
    let region = hp.mnt.join("h");
    assert!(region.exists(), "no region on hugetlbfs");
    let free = std::fs::read_to_string(hp.nr_file.with_file_name("free_hugepages")).unwrap();
    eprintln!("node {node} free huge pages after create: {}", free.trim());
    rt.start(&a.id).assert_ok();
    let pid = rt.pid(&a.id);
    let line = || {
        std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("/dev/rcrun-shm/h"))
            .map(String::from)
    };
    assert!(wait_until(Duration::from_secs(20), || line().is_some()));
    let l = line().unwrap_or_default();
    eprintln!("numa_maps: {l}");
    assert!(
        l.contains("huge") && l.contains("kernelpagesize_kB=2048"),
        "{l}"
    );
    assert!(l.contains(&format!(" N{node}=")), "{l}");
    rt.kill(&a.id, "KILL").assert_ok();
    assert!(wait_stopped(&rt, &a.id, 10));
    rt.delete(&a.id).assert_ok();
    assert!(!region.exists(), "hugetlbfs region left");
    assert!(root.channels().is_empty());
}
