//! The overlay2 layer store through the CLI: `rcrun image import|ls|rm|prune`, `rcrun bundle
//! create|rm|mount`, and real containers run from those bundles (their rootfs an overlay of the
//! image's layers). Every test has its own store under the suite's temp base; images are built
//! in the test (OCI layout, oci-archive, docker-archive) from the busybox layer plus small
//! layers with whiteouts and opaque directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::images::ImageBuilder;
use rcrun_conformance::runtime::Opts;
use rcrun_conformance::util::{find_mount, mounts_under, parse_mountinfo, wait_until};
use rcrun_conformance::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Generous: the suite may run a debug build, which hashes and unpacks slowly.
const SLOW: Duration = Duration::from_secs(300);

/// A runtime with a private store, scratch space and bundle directories. Dropping it detaches
/// whatever a failed test left mounted below its directory, so the temp dir can go.
struct Env {
    rt: Runtime,
    tmp: TempDir,
    store: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        for m in mounts_under(self.tmp.path()).iter().rev() {
            // SAFETY: umount2 of a mount point below our own temp dir.
            let c = std::ffi::CString::new(m.as_str()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Env {
    /// None when the subject is runc (no image store to test).
    fn new() -> Option<Env> {
        if Runtime::skip_for_reference("runc has no image store") {
            return None;
        }
        let tmp = TempDir::new("storage");
        let store = tmp.join("store");
        Some(Env {
            rt: Runtime::rcrun(),
            tmp,
            store,
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.join(p)
    }

    fn slow(&self, args: &[&str]) -> Output {
        self.rt.exec_opts(
            args,
            Opts {
                timeout: Some(SLOW),
                ..Opts::default()
            },
        )
    }

    /// `rcrun image --store STORE ARGS...`
    fn image(&self, args: &[&str]) -> Output {
        let s = self.store.to_string_lossy().into_owned();
        let mut a = vec!["image", "--store", &s];
        a.extend_from_slice(args);
        self.slow(&a)
    }

    /// `rcrun bundle --store STORE ARGS...`
    fn bundle(&self, args: &[&str]) -> Output {
        let s = self.store.to_string_lossy().into_owned();
        let mut a = vec!["bundle", "--store", &s];
        a.extend_from_slice(args);
        self.slow(&a)
    }

    /// Import and return the image id printed on stdout.
    fn import(&self, src: &Path, name: &str) -> String {
        let o = self.image(&["import", "--name", name, &src.to_string_lossy()]);
        o.assert_ok();
        let id = o.stdout.trim().to_string();
        assert!(
            id.starts_with("sha256:") && id.len() == 71,
            "import must print the image id:\n{o}"
        );
        id
    }

    /// `bundle create --image IMAGE --name NAME DIR [-- ARGS]`; returns DIR.
    fn bundle_create(&self, image: &str, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.path(&format!("bundle-{name}"));
        let d = dir.to_string_lossy().into_owned();
        let mut a = vec!["create", "--image", image, "--name", name, &d];
        if !args.is_empty() {
            a.push("--");
            a.extend_from_slice(args);
        }
        let o = self.bundle(&a);
        o.assert_ok();
        assert_eq!(o.stdout.trim(), name, "bundle create prints the store id");
        dir
    }

    /// `run [extra] -b DIR ID` in the foreground.
    fn run(&self, dir: &Path, id: &str, extra: &[&str]) -> Output {
        let d = dir.to_string_lossy().into_owned();
        let mut a = vec!["run"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["-b", &d, id]);
        self.slow(&a)
    }

    fn containers_dir(&self) -> PathBuf {
        self.store.join("containers")
    }

    fn store_container_exists(&self, id: &str) -> bool {
        self.containers_dir().join(id).exists()
    }

    /// Layer directories (64 hex digits) in the store, committed or not.
    fn layer_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.store)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn images_json(&self) -> Value {
        let o = self.image(&["ls", "--format", "json"]);
        o.assert_ok();
        o.json()
    }
}

fn overlay_at(rootfs: &Path) -> Option<rcrun_conformance::util::MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ms = parse_mountinfo(&info);
    let m = find_mount(&ms, &rootfs.to_string_lossy())?;
    (m.fstype == "overlay").then(|| m.clone())
}

/// The lower dirs of an overlay mount's super options (`lowerdir=a:b` or `lowerdir+=a` each).
fn lowers(m: &rcrun_conformance::util::MountEntry) -> Vec<String> {
    let mut out = Vec::new();
    for o in &m.super_opts {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            out.extend(v.split(':').map(String::from));
        } else if let Some(v) = o.strip_prefix("lowerdir+=") {
            out.push(v.to_string());
        }
    }
    out
}

fn upper(m: &rcrun_conformance::util::MountEntry) -> String {
    m.super_opts
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_default()
        .to_string()
}

/// The busybox image with a process config: Env, WorkingDir (missing in the image, so
/// `bundle create` must make it, as docker does), User by name.
fn app_image(work: &Path) -> ImageBuilder {
    let mut b = ImageBuilder::new(work);
    b.busybox_layer(false)
        .config(
            "Env",
            json!(["PATH=/bin:/usr/bin", "GREETING=hello from the image", "EMPTY="]),
        )
        .config("WorkingDir", json!("/srv/app"))
        .config("User", json!("user"))
        .config(
            "Cmd",
            json!([
                "sh",
                "-c",
                "echo \"$GREETING\"; pwd; id -u; id -g; echo \"home=$HOME host=$HOSTNAME\"; hostname"
            ]),
        );
    b
}

#[test]
fn import_ls_bundle_run_delete_releases_the_rootfs() {
    let Some(env) = Env::new() else { return };
    let layout =
        app_image(&env.path("work")).oci_layout(&env.path("app-layout"), "rcrun-test/app:1");
    let id = env.import(&layout, "rcrun-test/app:1");

    // image ls, both formats
    let ls = env.image(&["ls"]);
    ls.assert_ok();
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ID") && lines[0].contains("SIZE"),
        "{ls}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("rcrun-test/app:1"))
        .unwrap_or_else(|| panic!("image ls lacks the image:\n{ls}"));
    assert!(row.contains(&id[7..19]), "short id in the row:\n{ls}");
    let j = env.images_json();
    assert_eq!(j[0]["id"], id.as_str(), "{j}");
    assert_eq!(j[0]["layers"], 1, "{j}");
    assert!(
        j[0]["size"].as_u64().unwrap() > 500_000,
        "busybox size: {j}"
    );

    // bundle create: config.json from the image, overlay mounted at rootfs
    let dir = env.bundle_create("rcrun-test/app:1", "app1", &[]);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["terminal"], false, "{cfg}");
    assert_eq!(cfg["process"]["cwd"], "/srv/app", "{cfg}");
    assert_eq!(cfg["process"]["user"]["uid"], 1000, "{cfg}");
    assert_eq!(cfg["process"]["user"]["gid"], 1000, "{cfg}");
    assert_eq!(cfg["hostname"], "app1", "{cfg}");
    assert_eq!(cfg["annotations"]["org.rcrun.storage.container"], "app1");
    assert_eq!(
        cfg["annotations"]["org.rcrun.storage.root"],
        env.store.canonicalize().unwrap().to_string_lossy().as_ref()
    );
    let rootfs = dir.join("rootfs");
    assert!(
        overlay_at(&rootfs).is_some(),
        "no overlay at {}",
        rootfs.display()
    );
    assert!(env.store_container_exists("app1"));

    // run --keep: the image's Env, WorkingDir and User inside the container
    let cid = unique_id("st");
    let _g = env.rt.guard(&cid);
    let o = env.run(&dir, &cid, &["--keep"]);
    o.assert_ok();
    assert_eq!(
        o.stdout, "hello from the image\n/srv/app\n1000\n1000\nhome=/home/user host=app1\napp1\n",
        "{o}"
    );
    // kept: still mounted, the store container still there
    assert!(overlay_at(&rootfs).is_some());
    assert!(env.store_container_exists("app1"));

    // delete releases the mount and the upper
    env.rt.delete(&cid).assert_ok();
    assert!(
        overlay_at(&rootfs).is_none(),
        "rootfs still mounted after delete"
    );
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(
        !env.store_container_exists("app1"),
        "store container (upper) not removed"
    );
    // the bundle cannot be run again: a clear error, not an exec failure in an empty dir
    let o = env.run(&dir, &unique_id("st"), &[]);
    o.assert_fail()
        .assert_one_line_error(&["rootfs", "not mounted", "bundle create"]);

    // a plain `run` deletes the container on exit, and releases the rootfs with it
    let dir2 = env.bundle_create(&id[7..19], "app2", &["echo", "argv override"]);
    let o = env.run(&dir2, &unique_id("st"), &[]);
    o.assert_ok();
    assert_eq!(o.stdout, "argv override\n", "{o}");
    assert!(overlay_at(&dir2.join("rootfs")).is_none());
    assert!(!env.store_container_exists("app2"));
}

#[test]
fn two_bundles_share_lowers_with_separate_uppers() {
    let Some(env) = Env::new() else { return };
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(true);
    let layout = b.oci_layout(&env.path("layout"), "shared:latest");
    env.import(&layout, "shared");
    let d1 = env.bundle_create(
        "shared",
        "one",
        &["sh", "-c", "echo one > /written; cat /written"],
    );
    let d2 = env.bundle_create(
        "shared",
        "two",
        &["sh", "-c", "ls /written 2>&1; echo done"],
    );
    let (m1, m2) = (
        overlay_at(&d1.join("rootfs")).unwrap(),
        overlay_at(&d2.join("rootfs")).unwrap(),
    );
    assert_eq!(lowers(&m1), lowers(&m2), "same image, same lower dirs");
    assert_eq!(lowers(&m1).len(), 1);
    assert_ne!(upper(&m1), upper(&m2), "each bundle has its own upper");

    // The lower files are the store's: same inode through both mounts as in the layer's diff.
    let diff = env
        .layer_dirs()
        .into_iter()
        .map(|l| l.join("diff/bin/busybox"))
        .find(|p| p.exists())
        .expect("busybox in a layer diff");
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&d1.join("rootfs/bin/busybox")), ino(&diff));
    assert_eq!(ino(&d2.join("rootfs/bin/busybox")), ino(&diff));

    let (c1, c2) = (unique_id("st"), unique_id("st"));
    let (_g1, _g2) = (env.rt.guard(&c1), env.rt.guard(&c2));
    let o = env.run(&d1, &c1, &["--keep"]);
    assert_eq!(o.assert_ok().stdout, "one\n");
    assert!(env.containers_dir().join("one/upper/written").exists());
    assert!(
        !d2.join("rootfs/written").exists(),
        "a write in one bundle shows in the other"
    );
    let o = env.run(&d2, &c2, &["--keep"]);
    assert!(
        o.assert_ok().stdout.contains("No such file") && o.stdout.ends_with("done\n"),
        "{o}"
    );
    assert!(!env.containers_dir().join("two/upper/written").exists());
    let diff_root = diff.parent().and_then(Path::parent).unwrap();
    assert!(
        !diff_root.join("written").exists(),
        "the lower was written to"
    );

    env.rt.delete(&c1).assert_ok();
    // deleting one leaves the other mounted, and the shared layer in place
    assert!(overlay_at(&d1.join("rootfs")).is_none());
    assert!(overlay_at(&d2.join("rootfs")).is_some());
    assert!(diff.exists());
    env.rt.delete(&c2).assert_ok();
    assert!(overlay_at(&d2.join("rootfs")).is_none());
    assert!(!env.store_container_exists("one") && !env.store_container_exists("two"));
}

#[test]
fn whiteouts_and_opaque_dirs_of_later_layers_apply_in_the_container() {
    let Some(env) = Env::new() else { return };
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false)
        .layer_files(
            &[
                ("etc/motd", "welcome\n"),
                ("data/a", "a"),
                ("data/b", "b"),
                ("opq/x", "x"),
                ("opq/sub/y", "y"),
                ("gone/deep/file", "f"),
            ],
            false,
        )
        .layer_files(
            &[
                ("etc/.wh.motd", ""),
                ("data/.wh.a", ""),
                ("opq/.wh..wh..opq", ""),
                ("opq/z", "z"),
                (".wh.gone", ""),
            ],
            true,
        )
        // a whiteout, then the name again in a later layer: back, with the new content
        .layer_files(&[("data/a", "new a")], false);
    // docker-archive this time (layers as <n>/layer.tar, one of them gzip'ed)
    let archive = b.docker_archive(&env.path("wh"), "rcrun-test/wh:latest");
    env.import(&archive, "rcrun-test/wh:latest");
    assert_eq!(env.images_json()[0]["layers"], 4);
    let script =
        "ls /data | tr '\\n' ' '; echo; cat /data/a; echo; ls -a /opq | tr '\\n' ' '; echo; \
                  test -e /etc/motd && echo motd-present || echo motd-gone; \
                  test -e /gone && echo gone-present || echo gone-gone; \
                  ls /etc/passwd";
    let dir = env.bundle_create("rcrun-test/wh", "wh", &["sh", "-c", script]);
    let o = env.run(&dir, &unique_id("st"), &[]);
    o.assert_ok();
    assert_eq!(
        o.stdout, "a b \nnew a\n. .. z \nmotd-gone\ngone-gone\n/etc/passwd\n",
        "{o}"
    );
}

#[test]
fn an_image_of_130_layers_runs() {
    let Some(env) = Env::new() else { return };
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false);
    for i in 1..130 {
        let name = format!("layers/{i:03}");
        let content = format!("{i}\n");
        // every 10th layer also overrides the same file: the top-most must win
        if i % 10 == 0 {
            b.layer_files(&[(&name, &content), ("top", &content)], false);
        } else {
            b.layer_files(&[(&name, &content)], false);
        }
    }
    assert_eq!(b.layer_count(), 130);
    let archive = b.oci_archive(&env.path("deep"), "deep:latest", false);
    env.import(&archive, "deep");
    let dir = env.bundle_create(
        "deep",
        "deep",
        &[
            "sh",
            "-c",
            "ls /layers | wc -l; cat /top; cat /layers/001 /layers/129",
        ],
    );
    let m = overlay_at(&dir.join("rootfs")).unwrap();
    assert_eq!(lowers(&m).len(), 130, "{m:?}");
    let o = env.run(&dir, &unique_id("st"), &[]);
    o.assert_ok();
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        ["129", "120", "1", "129"],
        "{o}"
    );
}

#[test]
fn concurrent_imports_of_images_sharing_layers_both_succeed() {
    let Some(env) = Env::new() else { return };
    // A shared base big enough that both imports are unpacking it at the same time.
    let mut base = ImageBuilder::new(&env.path("work-a"));
    let filler = env.path("filler");
    std::fs::create_dir_all(filler.join("blob")).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 40000000 /dev/urandom > {0}/blob/random && cp -a /bin/busybox {0}/blob/",
            filler.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    base.busybox_layer(true).layer_dir(&filler, true);
    let mut other = base.fork(&env.path("work-b"));
    base.layer_files(&[("which", "a\n")], true);
    other.layer_files(&[("which", "b\n")], true);
    // gzip'ed oci-archives: each import decompresses into the store's tmp first
    let a = base.oci_archive(&env.path("a"), "conc/a:latest", true);
    let b = other.oci_archive(&env.path("b"), "conc/b:latest", true);
    let (oa, ob) = std::thread::scope(|s| {
        let ta = s.spawn(|| env.image(&["import", &a.to_string_lossy()]));
        let tb = s.spawn(|| env.image(&["import", &b.to_string_lossy()]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    oa.assert_ok();
    ob.assert_ok();
    // 2 shared layers + 2 tops, each unpacked once
    assert_eq!(env.layer_dirs().len(), 4, "{:?}", env.layer_dirs());
    // the per-layer progress lines ("layer 2/3 sha256:...… applied 40.0 MB" / "... reused")
    let count = |o: &Output, what: &str| {
        o.stderr
            .lines()
            .filter(|l| l.starts_with("layer ") && l.contains(what))
            .count()
    };
    let reused = |o: &Output| count(o, " reused");
    let applied = |o: &Output| count(o, " applied ");
    assert_eq!(applied(&oa) + applied(&ob), 4, "{oa}\n{ob}");
    assert_eq!(reused(&oa) + reused(&ob), 2, "{oa}\n{ob}");
    for l in env.layer_dirs() {
        assert!(
            l.join("committed").exists(),
            "{} not committed",
            l.display()
        );
    }
    let names: Vec<String> = env
        .images_json()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"conc/a:latest".to_string()), "{names:?}");
    assert!(names.contains(&"conc/b:latest".to_string()), "{names:?}");
    for (img, want) in [("conc/a", "a"), ("conc/b", "b")] {
        let dir = env.bundle_create(img, want, &["sh", "-c", "cat /which; wc -c < /blob/random"]);
        let o = env.run(&dir, &unique_id("st"), &[]);
        assert_eq!(
            o.assert_ok().stdout.split_whitespace().collect::<Vec<_>>(),
            [want, "40000000"]
        );
    }
    // nothing left in the store's scratch dir
    let tmp: Vec<_> = std::fs::read_dir(env.store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// Start `image import` and SIGKILL it once the big layer is being written.
fn kill_import_midway(env: &Env, src: &Path) {
    let mut child = Command::new(&env.rt.bin)
        .args(["image", "--store"])
        .arg(&env.store)
        .arg("import")
        .arg(src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let midway = wait_until(Duration::from_secs(120), || {
        env.layer_dirs().iter().any(|l| {
            !l.join("committed").exists()
                && std::fs::metadata(l.join("diff/big/random")).is_ok_and(|m| m.len() > 1 << 20)
        })
    });
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert!(midway, "the import never got to the big layer (exit {st})");
    assert!(
        !st.success(),
        "the import finished before it could be killed"
    );
}

#[test]
fn killed_import_leaves_an_incomplete_layer_that_reimport_and_prune_handle() {
    let Some(env) = Env::new() else { return };
    let big = env.path("big");
    std::fs::create_dir_all(big.join("big")).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 200000000 /dev/urandom > {}/big/random",
            big.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false).layer_dir(&big, false);
    let layout = b.oci_layout(&env.path("layout"), "big:latest");

    kill_import_midway(&env, &layout);
    let incomplete: Vec<PathBuf> = env
        .layer_dirs()
        .into_iter()
        .filter(|l| !l.join("committed").exists())
        .collect();
    assert_eq!(incomplete.len(), 1, "{:?}", env.layer_dirs());
    assert_eq!(
        env.images_json(),
        json!([]),
        "a killed import recorded an image"
    );
    // prune removes the incomplete layer (and the committed base nobody references)
    let o = env.image(&["prune"]);
    o.assert_ok();
    assert!(o.stdout.contains("Deleted incomplete layer"), "{o}");
    let reclaimed = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("{o}"));
    assert!(
        reclaimed.ends_with("MB") || reclaimed.ends_with("GB"),
        "{o}"
    );
    assert!(env.layer_dirs().is_empty(), "{:?}", env.layer_dirs());
    assert!(
        std::fs::read_dir(env.store.join("l"))
            .unwrap()
            .next()
            .is_none(),
        "dangling l/ links"
    );

    // killed again, then a plain re-import: it clears the incomplete layer itself
    kill_import_midway(&env, &layout);
    env.import(&layout, "big");
    for l in env.layer_dirs() {
        assert!(
            l.join("committed").exists(),
            "{} not committed",
            l.display()
        );
    }
    let dir = env.bundle_create("big", "big", &["sh", "-c", "wc -c < /big/random"]);
    let o = env.run(&dir, &unique_id("st"), &[]);
    assert_eq!(o.assert_ok().stdout.trim(), "200000000");
}

#[test]
fn image_rm_is_refused_while_a_bundle_uses_the_image() {
    let Some(env) = Env::new() else { return };
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false)
        .layer_files(&[("marker", "m\n")], false);
    let layout = b.oci_layout(&env.path("layout"), "inuse:latest");
    let id = env.import(&layout, "inuse");
    let dir = env.bundle_create("inuse", "inuse", &["cat", "/marker"]);

    let o = env.image(&["rm", "inuse"]);
    o.assert_fail()
        .assert_one_line_error(&["inuse", "used by", "inuse"]);
    assert_eq!(env.images_json()[0]["id"], id.as_str());

    // bundle rm: unmounted, store container gone, bundle dir gone
    env.bundle(&["rm", &dir.to_string_lossy()]).assert_ok();
    assert!(overlay_at(&dir.join("rootfs")).is_none());
    assert!(!dir.exists(), "bundle rm left {}", dir.display());
    assert!(!env.store_container_exists("inuse"));
    let o = env.image(&["rm", "inuse"]);
    o.assert_ok();
    assert!(o.stdout.contains(&format!("Deleted: {id}")), "{o}");
    assert!(
        env.layer_dirs().is_empty(),
        "layers left: {:?}",
        env.layer_dirs()
    );

    // --force: the image goes, its layers stay for the bundle until it goes too
    env.import(&layout, "inuse");
    let dir = env.bundle_create("inuse", "forced", &["cat", "/marker"]);
    env.image(&["rm", "-f", "inuse"]).assert_ok();
    assert_eq!(env.images_json(), json!([]));
    assert_eq!(env.layer_dirs().len(), 2);
    let o = env.run(&dir, &unique_id("st"), &[]);
    assert_eq!(o.assert_ok().stdout, "m\n");
    let o = env.image(&["prune"]);
    o.assert_ok();
    assert!(
        env.layer_dirs().is_empty(),
        "prune left {:?}\n{o}",
        env.layer_dirs()
    );
}

#[test]
fn errors_are_one_line_and_leave_nothing_behind() {
    let Some(env) = Env::new() else { return };
    // not an archive at all
    let junk = env.path("junk.tar");
    std::fs::write(&junk, vec![b'x'; 10_000]).unwrap();
    let o = env.image(&["import", &junk.to_string_lossy()]);
    o.assert_fail().assert_one_line_error(&["junk.tar"]);
    assert!(env.layer_dirs().is_empty());

    // a layer whose content does not match its digest
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false);
    let layout = b.oci_layout(&env.path("layout"), "corrupt:latest");
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = std::fs::read(&biggest).unwrap();
    std::fs::remove_file(&biggest).unwrap(); // a hard link to the builder's tar: do not touch it
    let n = data.len();
    data[n - 2000] ^= 0xff;
    std::fs::write(&biggest, data).unwrap();
    let o = env.image(&["import", &layout.to_string_lossy()]);
    o.assert_fail().assert_one_line_error(&["digest"]);
    assert!(env.layer_dirs().is_empty(), "{:?}", env.layer_dirs());
    assert_eq!(env.images_json(), json!([]));

    // unknown image: nothing made
    let dir = env.path("never");
    let o = env.bundle(&["create", "--image", "no-such-image", &dir.to_string_lossy()]);
    o.assert_fail().assert_one_line_error(&["no-such-image"]);
    assert!(!dir.exists());

    // a user the image does not have: fails after the mount, which is undone
    let mut b = ImageBuilder::new(&env.path("work2"));
    b.busybox_layer(false).config("User", json!("ghost"));
    env.import(&b.oci_layout(&env.path("layout2"), "ghost:latest"), "ghost");
    let o = env.bundle(&[
        "create",
        "--image",
        "ghost",
        "--name",
        "g",
        &dir.to_string_lossy(),
    ]);
    o.assert_fail()
        .assert_one_line_error(&["ghost", "/etc/passwd"]);
    assert!(!dir.exists(), "half a bundle left at {}", dir.display());
    assert!(!env.store_container_exists("g"));
    assert!(mounts_under(env.tmp.path()).is_empty());

    // the bundle directory must be new or empty
    let full = env.path("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep-me"), "x").unwrap();
    let o = env.bundle(&["create", "--image", "ghost", &full.to_string_lossy()]);
    o.assert_fail().assert_one_line_error(&["not empty"]);
    assert!(full.join("keep-me").exists());

    // a store that cannot be written
    let ro = env.path("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let (code, _, err) = rcrun_conformance::util::host(
        "mount",
        &["-t", "tmpfs", "-o", "ro", "tmpfs", &ro.to_string_lossy()],
    );
    assert_eq!(code, 0, "{err}");
    let ro_store = ro.join("store");
    let o = env.rt.exec(&[
        "image",
        "--store",
        &ro_store.to_string_lossy(),
        "import",
        &layout.to_string_lossy(),
    ]);
    let _ = rcrun_conformance::util::host("umount", &[&ro.to_string_lossy()]);
    o.assert_fail()
        .assert_one_line_error(&[&ro_store.to_string_lossy(), "read-only"]);

    // bundle rm of a directory that is not such a bundle
    let o = env.bundle(&["rm", &full.to_string_lossy()]);
    o.assert_fail().assert_one_line_error(&["config.json"]);
}

#[test]
fn runc_runs_a_bundle_made_by_bundle_create() {
    let Some(env) = Env::new() else { return };
    let layout = app_image(&env.path("work")).oci_layout(&env.path("layout"), "app:latest");
    env.import(&layout, "app");
    let dir = env.bundle_create("app", "forrunc", &[]);
    let runc = Runtime::runc();
    let id = unique_id("st");
    let _g = runc.guard(&id);
    let o = runc.exec_opts(
        &["run", "-b", &dir.to_string_lossy(), &id],
        Opts {
            timeout: Some(SLOW),
            ..Opts::default()
        },
    );
    o.assert_ok();
    assert_eq!(
        o.stdout,
        "hello from the image\n/srv/app\n1000\n1000\nhome=/home/user host=forrunc\nforrunc\n",
        "{o}"
    );
    // runc knows nothing of the store: the rootfs stays until `bundle rm`
    assert!(overlay_at(&dir.join("rootfs")).is_some());
    env.bundle(&["rm", &dir.to_string_lossy()]).assert_ok();
    assert!(mounts_under(env.tmp.path()).is_empty());
    assert!(!env.store_container_exists("forrunc"));
}

#[test]
fn keep_upper_survives_delete_and_mounts_again() {
    let Some(env) = Env::new() else { return };
    let mut b = ImageBuilder::new(&env.path("work"));
    b.busybox_layer(false);
    env.import(&b.oci_layout(&env.path("layout"), "keep:latest"), "keep");
    let dir = env.path("bundle-keep");
    env.bundle(&[
        "create",
        "--image",
        "keep",
        "--name",
        "kept",
        "--keep-upper",
        &dir.to_string_lossy(),
        "--",
        "sh",
        "-c",
        "echo x >> /counter; wc -l < /counter",
    ])
    .assert_ok();
    let o = env.run(&dir, &unique_id("st"), &[]);
    assert_eq!(o.assert_ok().stdout.trim(), "1");
    assert!(
        overlay_at(&dir.join("rootfs")).is_none(),
        "unmounted on delete"
    );
    assert!(
        env.containers_dir().join("kept/upper/counter").exists(),
        "upper kept"
    );
    // not mounted: a clear error naming `bundle mount`
    let o = env.run(&dir, &unique_id("st"), &[]);
    o.assert_fail().assert_one_line_error(&["bundle mount"]);
    env.bundle(&["mount", &dir.to_string_lossy()]).assert_ok();
    let o = env.run(&dir, &unique_id("st"), &[]);
    assert_eq!(
        o.assert_ok().stdout.trim(),
        "2",
        "the upper's changes are back"
    );
    env.bundle(&["rm", &dir.to_string_lossy()]).assert_ok();
    assert!(!env.store_container_exists("kept"));
    assert!(!dir.exists());
}
