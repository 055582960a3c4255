//! Kubernetes' path: the CRI plugin of a private containerd 1.6 with a runtime handler `rcrun`
//! (`runtime_type = "io.containerd.runc.v2"` + `BinaryName` = the runtime under test), driven
//! over gRPC with the calls kubelet makes (`conformance/cri/cri_client.py`): pods on a CNI bridge
//! network (namespaces joined by path), containers in them, exec, update, stats, stop with a
//! grace period, and teardown leaving nothing behind. `RuntimeClass { handler: rcrun }` selects
//! exactly this handler. `RCRUN_CLIENT_STEPS=exec,pod` selects steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcrun_conformance::clients::containerd::{Containerd, CRI_HANDLER, IMAGE};
use rcrun_conformance::clients::cri::Cri;
use rcrun_conformance::clients::{
    assert_only_stdio, eventually, remove_cgroup_tree, subject, Scenarios, FD_LIST_SH,
};
use rcrun_conformance::env::require_root;
use rcrun_conformance::util::{ns_id, pid_alive, wait_until};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

const BRIDGE: &str = "rccri0";
const SUBNET: &str = "10.233.77.0/24";

fn cgroup_parent() -> String {
    format!("/rcrun-cri-{}", std::process::id())
}

struct Pod {
    id: String,
    config: Value,
}

fn pod_config(name: &str, host_network: bool, log_dir: &Path) -> Value {
    let mut linux = json!({ "cgroup_parent": cgroup_parent() });
    let mut cfg = json!({
        "metadata": {"name": name, "uid": format!("uid-{name}-{}", std::process::id()), "namespace": "default"},
        "log_directory": log_dir.display().to_string(),
    });
    if host_network {
        // kubelet gives no hostname for a hostNetwork pod (the UTS namespace is the host's)
        linux["security_context"] = json!({"namespace_options": {"network": "NODE"}});
    } else {
        cfg["hostname"] = json!(name);
    }
    cfg["linux"] = linux;
    cfg
}

/// `rcrun --root <the handler's Root>/k8s.io state ID`, as JSON (None if it fails).
fn runtime_state(c: &Containerd, id: &str) -> Option<Value> {
    let o = std::process::Command::new(subject())
        .arg("--root")
        .arg(c.cri_root())
        .args(["state", id])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// A container of the busybox image; its log is `<pod log dir>/<name>.log`.
fn container_config(name: &str, command: &[&str]) -> Value {
    json!({
        "metadata": {"name": name},
        "image": {"image": IMAGE},
        "command": command,
        "log_path": format!("{name}.log"),
        "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}},
    })
}

/// The host path of `pid`'s cgroup for `controller` (v1) or the unified one.
fn cgroup_dir_of(pid: i64, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
        }
    }
    let unified = text.lines().find(|l| l.starts_with("0::")).unwrap();
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    Path::new(base).join(unified[3..].trim_start_matches('/'))
}

/// The network namespaces containerd's CRI made (`/var/run/netns/cni-*`).
fn cni_netns() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cri_pod_scenarios() {
    require_root();
    let netns_before = cni_netns();
    let runtime = subject();
    let c = Containerd::start(&runtime);
    c.prepare_cri(BRIDGE, SUBNET);
    let cri = Cri::new(&c);
    let logs = c.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut s = Scenarios::new("cri");
    {
        let log = c.daemon.log.clone();
        s.context = Box::new(move || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            format!(
                "containerd log tail:\n{}",
                lines[lines.len().saturating_sub(25)..].join("\n")
            )
        });
    }
    let pods: RefCell<Vec<Pod>> = RefCell::new(Vec::new());
    // the sandbox config of pod `i` (kubelet passes it again with each CreateContainer)
    let pod = |i: usize| -> (String, Value) {
        let p = pods.borrow();
        let p = p
            .get(i)
            .unwrap_or_else(|| panic!("pod {i} was not created"));
        (p.id.clone(), p.config.clone())
    };
    let create_start = |i: usize, cfg: Value| -> String {
        let (pod_id, sandbox_config) = pod(i);
        let r = cri.call(
            "CreateContainer",
            json!({"pod_sandbox_id": pod_id, "config": cfg, "sandbox_config": sandbox_config}),
        );
        let id = r["container_id"].as_str().unwrap().to_string();
        cri.call("StartContainer", json!({ "container_id": id }));
        id
    };
    let status =
        |id: &str| cri.call("ContainerStatus", json!({ "container_id": id }))["status"].clone();
    let exec = |id: &str, cmd: &[&str]| -> (i64, String, String) {
        let r = cri.call(
            "ExecSync",
            json!({"container_id": id, "cmd": cmd, "timeout": 30}),
        );
        (
            r["exit_code"].as_i64().unwrap_or(0),
            r["stdout"].as_str().unwrap_or("").to_string(),
            r["stderr"].as_str().unwrap_or("").to_string(),
        )
    };

    s.step(
        "runtime status: RuntimeReady and NetworkReady (CNI bridge)",
        || {
            let r = cri.call("Status", json!({}));
            let conds = r["status"]["conditions"].as_array().unwrap();
            for ty in ["RuntimeReady", "NetworkReady"] {
                assert!(
                    conds.iter().any(|c| c["type"] == ty && c["status"] == true),
                    "{ty} is not true: {r}"
                );
            }
        },
    );

    s.step(
        "RunPodSandbox with the rcrun handler: pod network, hostname",
        || {
            for name in ["pod-a", "pod-b"] {
                let config = pod_config(name, false, &logs);
                let r = cri.call(
                    "RunPodSandbox",
                    json!({"config": config, "runtime_handler": CRI_HANDLER}),
                );
                let id = r["pod_sandbox_id"].as_str().unwrap().to_string();
                pods.borrow_mut().push(Pod {
                    id: id.clone(),
                    config,
                });
                let st = cri.call("PodSandboxStatus", json!({"pod_sandbox_id": id}));
                assert_eq!(st["status"]["runtime_handler"], CRI_HANDLER, "{st}");
                assert!(
                    st["status"]["state"].is_null() || st["status"]["state"] == "SANDBOX_READY"
                );
                let ip = st["status"]["network"]["ip"].as_str().unwrap_or("");
                assert!(ip.starts_with("10.233.77."), "no pod IP from CNI: {st}");
                // the sandbox ("pause") container is run by the runtime under test
                let state = runtime_state(&c, &id)
                    .unwrap_or_else(|| panic!("sandbox {id} is not in the runtime's state dir"));
                assert_eq!(state["status"], "running", "{state}");
            }
        },
    );

    let app: RefCell<Option<String>> = RefCell::new(None);
    s.step(
        "container in the pod: output to the CRI log, env, namespaces of the sandbox",
        || {
            let mut cfg =
                container_config("app", &["sh", "-c", "echo hello-from-cri; exec sleep 1000"]);
            cfg["envs"] = json!([{"key": "FOO", "value": "bar"}]);
            cfg["working_dir"] = json!("/tmp");
            let id = create_start(0, cfg);
            *app.borrow_mut() = Some(id.clone());
            assert_eq!(status(&id)["state"], "CONTAINER_RUNNING");
            eventually("the container's output in its CRI log", 10, || {
                std::fs::read_to_string(logs.join("app.log"))
                    .is_ok_and(|l| l.contains("stdout F hello-from-cri"))
            });
            let st = runtime_state(&c, &id).expect("container not in the runtime's state dir");
            assert_eq!(st["status"], "running");
            let pid = st["pid"].as_i64().unwrap();
            let (sandbox, _) = pod(0);
            let spid = runtime_state(&c, &sandbox).unwrap()["pid"]
                .as_i64()
                .unwrap();
            // joined the sandbox's net, ipc and uts namespaces by path; own pid and mount namespaces
            for ns in ["net", "ipc", "uts"] {
                assert_eq!(
                    ns_id(&format!("/proc/{pid}/ns/{ns}")),
                    ns_id(&format!("/proc/{spid}/ns/{ns}")),
                    "{ns} namespace not shared with the sandbox"
                );
            }
            for ns in ["pid", "mnt"] {
                assert_ne!(
                    ns_id(&format!("/proc/{pid}/ns/{ns}")),
                    ns_id(&format!("/proc/{spid}/ns/{ns}")),
                    "{ns} namespace shared with the sandbox"
                );
            }
            let (code, out, _) = exec(&id, &["sh", "-c", "echo $FOO $(pwd) $(hostname)"]);
            assert_eq!((code, out.trim()), (0, "bar /tmp pod-a"));
        },
    );

    s.step("ExecSync: exit code, stderr, only stdio fds", || {
        let id = app.borrow().clone().expect("no app container");
        let (code, out, err) = exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
        let (code, out, _) = exec(&id, &["sh", "-c", FD_LIST_SH]);
        assert_eq!(code, 0);
        let o = rcrun_conformance::clients::Out {
            cmdline: "ExecSync ls /proc/$$/fd".into(),
            code: Some(0),
            signal: None,
            stdout: out,
            stderr: String::new(),
            timed_out: false,
        };
        assert_only_stdio(&o);
        // a missing command: the CRI error names it, the container keeps running
        let o = cri.call_raw(
            "ExecSync",
            &json!({"container_id": id, "cmd": ["/no/such/cmd"], "timeout": 10}),
        );
        assert!(
            !o.ok() || o.stdout.contains("\"exit_code\""),
            "ExecSync of a missing command: {o}"
        );
        assert_eq!(status(&id)["state"], "CONTAINER_RUNNING");
    });

    s.step("pod-to-pod traffic over the CNI bridge", || {
        let mut cfg = container_config("peer", &["sleep", "1000"]);
        cfg["linux"]["security_context"]["capabilities"] = json!({"add_capabilities": ["NET_RAW"]});
        let peer = create_start(1, cfg);
        let (pod_a, _) = pod(0);
        let ip_a = cri.call("PodSandboxStatus", json!({"pod_sandbox_id": pod_a}))["status"]
            ["network"]["ip"]
            .as_str()
            .unwrap()
            .to_string();
        let (code, out, err) = exec(&peer, &["ping", "-c", "2", "-W", "3", &ip_a]);
        assert_eq!(code, 0, "ping {ip_a} from pod-b failed: {out}{err}");
        assert!(out.contains("2 packets received"), "{out}");
    });

    s.step(
        "shared pid namespace (POD): the sandbox's process is visible",
        || {
            let mut cfg = container_config("shared-pid", &["sleep", "1000"]);
            cfg["linux"]["security_context"]["namespace_options"]["pid"] = json!("POD");
            let id = create_start(0, cfg);
            let (_, out, _) = exec(&id, &["ps", "-o", "pid,args"]);
            assert!(
                out.lines()
                    .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 2147483647")),
                "the pause process is not pid 1 of the pod's pid namespace:\n{out}"
            );
            cri.call("StopContainer", json!({"container_id": id, "timeout": 0}));
            cri.call("RemoveContainer", json!({ "container_id": id }));
        },
    );

    s.step("UpdateContainerResources reaches the cgroup; ContainerStats", || {
        let id = app.borrow().clone().expect("no app container");
        let pid = runtime_state(&c, &id).unwrap()["pid"].as_i64().unwrap();
        cri.call(
            "UpdateContainerResources",
            json!({"container_id": id, "linux": {"memory_limit_in_bytes": 134217728, "cpu_shares": 256}}),
        );
        let mem = cgroup_dir_of(pid, "memory");
        let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(mem.join("memory.max")))
            .unwrap();
        assert_eq!(limit.trim(), "134217728", "memory limit in {}", mem.display());
        let cpu = cgroup_dir_of(pid, "cpu");
        if let Ok(shares) = std::fs::read_to_string(cpu.join("cpu.shares")) {
            assert_eq!(shares.trim(), "256");
        } else {
            // cgroup v2: runc's linear mapping of 256 shares
            let w = std::fs::read_to_string(cpu.join("cpu.weight")).unwrap();
            assert_eq!(w.trim(), "10");
        }
        let st = cri.call("ContainerStats", json!({ "container_id": id }));
        let cpu_ns: u64 = st["stats"]["cpu"]["usage_core_nano_seconds"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let ws: u64 = st["stats"]["memory"]["working_set_bytes"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(cpu_ns > 0 && ws > 0, "empty stats: {st}");
    });

    s.step("exit code of a finished container", || {
        let id = create_start(0, container_config("exit7", &["sh", "-c", "exit 7"]));
        eventually("the container to exit", 10, || {
            status(&id)["state"] == "CONTAINER_EXITED"
        });
        assert_eq!(status(&id)["exit_code"], 7);
        cri.call("RemoveContainer", json!({ "container_id": id }));
        assert!(
            runtime_state(&c, &id).is_none(),
            "state left after RemoveContainer"
        );
    });

    s.step(
        "missing command: StartContainer fails naming it, nothing left",
        || {
            let (pod_id, sandbox_config) = pod(0);
            let r = cri.call(
                "CreateContainer",
                json!({"pod_sandbox_id": pod_id,
                   "config": container_config("missing", &["/no/such/binary"]),
                   "sandbox_config": sandbox_config}),
            );
            let id = r["container_id"].as_str().unwrap().to_string();
            let o = cri.call_raw("StartContainer", &json!({ "container_id": id }));
            assert!(!o.ok(), "StartContainer of a missing binary succeeded: {o}");
            assert!(
                o.stderr.contains("no such file") || o.stderr.contains("not found"),
                "the error should name the missing file: {o}"
            );
            cri.call("RemoveContainer", json!({ "container_id": id }));
            assert!(runtime_state(&c, &id).is_none(), "state left behind");
        },
    );

    s.step("read-only rootfs and a read-only volume", || {
        let vol = c.dir.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("f"), "from-host").unwrap();
        let mut cfg = container_config("ro", &["sleep", "1000"]);
        cfg["linux"]["security_context"]["readonly_rootfs"] = json!(true);
        cfg["mounts"] = json!([{"container_path": "/vol", "host_path": vol.display().to_string(), "readonly": true}]);
        let id = create_start(0, cfg);
        let (code, _, _) = exec(&id, &["touch", "/x"]);
        assert_ne!(code, 0, "wrote to a read-only rootfs");
        let (code, out, _) = exec(&id, &["cat", "/vol/f"]);
        assert_eq!((code, out.as_str()), (0, "from-host"));
        let (code, _, _) = exec(&id, &["sh", "-c", "echo x > /vol/f"]);
        assert_ne!(code, 0, "wrote to a read-only volume");
        cri.call("StopContainer", json!({"container_id": id, "timeout": 0}));
        cri.call("RemoveContainer", json!({ "container_id": id }));
    });

    s.step(
        "StopContainer: SIGTERM, then SIGKILL after the grace period",
        || {
            let id = create_start(0, container_config("ignore-term", &["/bin/ignore-term"]));
            eventually("the container to be ready", 10, || {
                std::fs::read_to_string(logs.join("ignore-term.log"))
                    .is_ok_and(|l| l.contains("ready"))
            });
            let t = Instant::now();
            cri.call("StopContainer", json!({"container_id": id, "timeout": 2}));
            let took = t.elapsed();
            assert!(
                took >= Duration::from_millis(1900),
                "stopped after {took:?}: the grace period was not honoured"
            );
            let st = status(&id);
            assert_eq!(st["state"], "CONTAINER_EXITED");
            assert_eq!(st["exit_code"], 137, "{st}");
            cri.call("RemoveContainer", json!({ "container_id": id }));
        },
    );

    s.step("hostNetwork pod: the host's network namespace", || {
        let config = pod_config("pod-host", true, &logs);
        let r = cri.call(
            "RunPodSandbox",
            json!({"config": config, "runtime_handler": CRI_HANDLER}),
        );
        let id = r["pod_sandbox_id"].as_str().unwrap().to_string();
        pods.borrow_mut().push(Pod {
            id: id.clone(),
            config,
        });
        let i = pods.borrow().len() - 1;
        let ct = create_start(i, container_config("hostnet", &["sleep", "1000"]));
        let pid = runtime_state(&c, &ct).unwrap()["pid"].as_i64().unwrap();
        assert_eq!(
            ns_id(&format!("/proc/{pid}/ns/net")),
            ns_id("/proc/self/ns/net"),
            "a hostNetwork pod's container is not in the host's network namespace"
        );
    });

    s.step(
        "StopPodSandbox + RemovePodSandbox leave nothing behind",
        || {
            let all: Vec<(String, Option<i64>)> = pods
                .borrow()
                .iter()
                .map(|p| {
                    let pid = runtime_state(&c, &p.id).and_then(|s| s["pid"].as_i64());
                    (p.id.clone(), pid)
                })
                .collect();
            for (id, _) in &all {
                cri.call("StopPodSandbox", json!({ "pod_sandbox_id": id }));
                cri.call("RemovePodSandbox", json!({ "pod_sandbox_id": id }));
            }
            pods.borrow_mut().clear();
            for (id, pid) in &all {
                if let Some(pid) = pid {
                    assert!(
                        wait_until(Duration::from_secs(10), || !pid_alive(*pid)),
                        "sandbox {id} process {pid} survived"
                    );
                }
            }
            let left: Vec<String> = std::fs::read_dir(c.cri_root())
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert!(left.is_empty(), "runtime state left: {left:?}");
            let new_netns: Vec<String> = cni_netns()
                .into_iter()
                .filter(|n| !netns_before.contains(n))
                .collect();
            assert!(
                new_netns.is_empty(),
                "pod network namespaces left: {new_netns:?}"
            );
        },
    );

    // whatever failed above: remove what is left
    for p in pods.borrow().iter() {
        let _ = cri.call_raw("StopPodSandbox", &json!({"pod_sandbox_id": p.id}));
        let _ = cri.call_raw("RemovePodSandbox", &json!({"pod_sandbox_id": p.id}));
    }
    drop(cri);
    drop(c);
    remove_cgroup_tree(cgroup_parent().trim_start_matches('/'));
    let _ = rcrun_conformance::util::host("ip", &["link", "del", BRIDGE]);
    s.finish();
}
