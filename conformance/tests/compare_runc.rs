//! Same bundle under the reference (runc) and the subject: the observable
//! results must agree.  (With RCRUN_BIN=runc these agree trivially.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::util::{parse_mountinfo, status_field};
use rcrun_conformance::*;
use std::collections::BTreeSet;

fn runtimes() -> [Runtime; 2] {
    [Runtime::runc(), Runtime::rcrun()]
}

/// Run `script` in a fresh container from `make()` under both runtimes; returns (runc, subject) outputs.
fn both(make: impl Fn() -> Bundle, script: &str) -> (Output, Output) {
    let [r, s] = runtimes();
    let mut b1 = make();
    let o1 = r.run_capture(&mut b1, &["sh", "-c", script]);
    let mut b2 = make();
    let o2 = s.run_capture(&mut b2, &["sh", "-c", script]);
    (o1, o2)
}

fn both_ok(make: impl Fn() -> Bundle, script: &str) -> (String, String) {
    let (a, b) = both(make, script);
    a.assert_ok();
    b.assert_ok();
    (a.stdout, b.stdout)
}

#[test]
fn default_spec_equals_runc_spec() {
    let rt = Runtime::runc();
    let dir = TempDir::new("spec");
    let d = dir.path().to_string_lossy().into_owned();
    rt.exec(&["spec", "--bundle", &d]).assert_ok();
    let theirs: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        theirs,
        bundle::default_spec(),
        "bundle::default_spec() drifted from `runc spec`"
    );
}

#[test]
fn spec_command_agrees_with_runc() {
    let mut specs = Vec::new();
    for rt in runtimes() {
        let dir = TempDir::new("spec");
        let d = dir.path().to_string_lossy().into_owned();
        rt.exec(&["spec", "--bundle", &d]).assert_ok();
        let text =
            std::fs::read_to_string(dir.join("config.json")).expect("spec wrote config.json");
        let mut v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("spec output is not JSON ({e}): {text}"));
        // the version and the default hostname name the runtime itself; everything else must match
        for k in ["ociVersion", "hostname"] {
            assert!(v[k].is_string(), "spec lacks {k}: {text}");
            v[k] = json!("normalised");
        }
        specs.push(v);
        // refuses to overwrite an existing config.json (runc: `File config.json exists. Remove it first`)
        rt.exec(&["spec", "--bundle", &d]).assert_fail();
    }
    assert_eq!(
        specs[0], specs[1],
        "runc spec (left) vs subject spec (right)"
    );
}

#[test]
fn state_keys_and_statuses_agree() {
    let mut seen = Vec::new();
    for rt in runtimes() {
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"]).annotation("k", "v");
        let _g = rt.guard(&b.id);
        let mut statuses = Vec::new();
        let mut keys = BTreeSet::new();
        rt.create(&b).assert_ok();
        let st = rt.state_json(&b.id);
        keys.extend(st.as_object().unwrap().keys().cloned());
        statuses.push(st["status"].as_str().unwrap_or("").to_string());
        rt.start(&b.id).assert_ok();
        statuses.push(rt.status(&b.id).unwrap_or_default());
        rt.kill(&b.id, "KILL").assert_ok();
        assert!(rt.wait_status(&b.id, "stopped"));
        let st = rt.state_json(&b.id);
        keys.extend(st.as_object().unwrap().keys().cloned());
        statuses.push(st["status"].as_str().unwrap_or("").to_string());
        let list = rt.list_json();
        let entry_keys: BTreeSet<String> = list[0].as_object().unwrap().keys().cloned().collect();
        rt.delete(&b.id).assert_ok();
        seen.push((keys, statuses, entry_keys));
    }
    assert_eq!(seen[0], seen[1], "runc (left) vs subject (right)");
}

#[test]
fn exit_codes_agree() {
    for script in [
        "exit 0",
        "exit 3",
        "exit 255",
        "kill -TERM $$",
        "kill -9 $$",
        "false",
    ] {
        let (a, b) = both(
            || {
                let mut b = Bundle::new();
                b.remove_namespace("pid");
                b
            },
            script,
        );
        assert_eq!(a.code, b.code, "{script}: runc {a}\nsubject {b}");
    }
}

#[test]
fn capability_lines_agree() {
    let caps = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs"))
            .map(String::from)
            .collect()
    };
    let variants: Vec<Box<dyn Fn() -> Bundle>> = vec![
        Box::new(Bundle::new),
        Box::new(|| {
            let mut b = Bundle::new();
            b.caps(&["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_RAW"], true);
            b
        }),
        Box::new(|| {
            let mut b = Bundle::new();
            b.user(1000, 1000, &[])
                .caps(&["CAP_KILL", "CAP_NET_BIND_SERVICE"], true)
                .no_new_privileges(false);
            b
        }),
    ];
    for make in variants {
        let (a, b) = both_ok(make, "cat /proc/self/status");
        assert_eq!(caps(&a), caps(&b));
        assert!(!caps(&a).is_empty());
    }
}

/// mount point + fs type + per-mount options + superblock options
fn normalise_mountinfo(text: &str) -> Vec<String> {
    let mut v: Vec<String> = parse_mountinfo(text)
        .into_iter()
        .map(|m| {
            let mut o = m.opts.clone();
            o.sort();
            let mut so = m.super_opts.clone();
            so.sort();
            format!(
                "{} {} {} {}",
                m.mount_point,
                m.fstype,
                o.join(","),
                so.join(",")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mountinfo_agrees() {
    let host_dir = TempDir::new("cmpbind");
    let hd = host_dir.path().to_path_buf();
    let (a, b) = both_ok(
        || {
            let mut b = Bundle::new();
            b.bind(&hd, "/data", &["ro", "nosuid"])
                .mount(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["noexec", "size=2m"]}));
            b
        },
        "cat /proc/self/mountinfo",
    );
    assert_eq!(normalise_mountinfo(&a), normalise_mountinfo(&b));
}

#[test]
fn limits_agree() {
    let (a, b) = both_ok(
        || {
            let mut b = Bundle::new();
            b.rlimit("RLIMIT_NPROC", 100, 200)
                .rlimit("RLIMIT_CORE", 0, 0);
            b
        },
        "cat /proc/self/limits",
    );
    assert_eq!(a, b);
}

#[test]
fn id_and_env_agree() {
    let (a, b) = both_ok(
        || {
            let mut b = Bundle::new();
            b.user(1000, 1000, &[2000]).env("X=y");
            b
        },
        "id; umask; env | sort; cat /proc/self/oom_score_adj",
    );
    assert_eq!(a, b);
    let (a, b) = both_ok(Bundle::new, "id; umask; env | sort; hostname; echo $$");
    assert_eq!(a, b);
}

#[test]
fn dev_agrees() {
    let (a, b) = both_ok(
        Bundle::new,
        "cd /dev && stat -c '%n %F %a %u %g %t %T %N' * pts/* | sort",
    );
    assert_eq!(a, b);
}

#[test]
fn cgroup_files_agree() {
    let mut seen = Vec::new();
    for rt in runtimes() {
        let mut b = Bundle::new();
        b.args(&["sleep", "1000"])
            .resources("memory", json!({"limit": 96 * 1024 * 1024}))
            .resources("pids", json!({"limit": 77}))
            .resources(
                "cpu",
                json!({"shares": 256, "quota": 20000, "period": 50000}),
            );
        let cg = b.cgroups_path().unwrap();
        let _g = rt.guard(&b.id);
        let pid = rt.start_detached(&b);
        let inside = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .replace(&b.id, "ID");
        seen.push((
            cgroups::memory_limit(&cg),
            cgroups::pids_max(&cg),
            cgroups::cpu_quota_period(&cg),
            cgroups::cpu_shares_or_weight(&cg),
            inside,
        ));
    }
    assert_eq!(seen[0], seen[1], "runc (left) vs subject (right)");
}

#[test]
fn error_exit_codes_agree() {
    type Mutator = Box<dyn Fn(&mut Bundle)>;
    let cases: Vec<Mutator> = vec![
        Box::new(|b| {
            b.args(&[]);
        }),
        Box::new(|b| {
            b.set("/root/path", json!("missing"));
        }),
        Box::new(|b| {
            b.namespace("bogus", None);
        }),
        Box::new(|b| {
            b.args(&["no-such-exe"]);
        }),
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut codes = Vec::new();
        for rt in runtimes() {
            let mut b = Bundle::new();
            f(&mut b);
            let _g = rt.guard(&b.id);
            let out = rt.run(&b, &[]);
            codes.push(out.code);
            assert_no_leftovers(&rt, &b, &b.id, None);
        }
        assert_eq!(codes[0], codes[1], "case {i}: runc vs subject exit codes");
        assert_ne!(codes[0], Some(0));
    }
}

#[test]
fn status_of_proc_self_agrees() {
    let pick = |s: &str| -> Vec<String> {
        ["Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "CapBnd"]
            .iter()
            .map(|k| format!("{k}={}", status_field(s, k).unwrap_or_default()))
            .collect()
    };
    let (a, b) = both_ok(Bundle::new, "cat /proc/self/status");
    assert_eq!(pick(&a), pick(&b));
}
