//! Throughput of `apply_layer` against GNU tar on the same layer (ignored by default: it
//! writes ~200 MB). Run with:
//!   cargo test --release -p rcrun-storage-overlay2 --test apply_bench -- --ignored --nocapture
//! `APPLY_BENCH_FILES` / `APPLY_BENCH_MB` size the generated layer (default 20000 files, 100 MB);
//! `APPLY_BENCH_DIR` picks where it is written (default: the system temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcrun_storage_overlay2::apply::{apply_layer, ApplyOptions};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tree of `files` files totalling about `mb` MB: 100 files per directory, two levels deep,
/// sizes spread between 0 and twice the mean, plus some symlinks and hardlinks.
fn generate(root: &Path, files: u64, mb: u64) {
    let mean = mb * 1_000_000 / files;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut buf = Vec::new();
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i / 1000, (i / 100) % 10));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let size = (next() % (2 * mean + 1)) as usize;
        // Pseudo-random bytes with zero runs, different in every file: gzip gets about 2x,
        // like typical layers.
        buf.clear();
        while buf.len() < size {
            buf.extend_from_slice(&next().to_le_bytes());
            buf.extend_from_slice(&[0u8; 8]);
        }
        buf.truncate(size);
        std::fs::write(dir.join(format!("f{i}")), &buf).unwrap();
        if i % 500 == 1 {
            std::os::unix::fs::symlink(format!("f{}", i - 1), dir.join(format!("s{i}"))).unwrap();
            std::fs::hard_link(dir.join(format!("f{i}")), dir.join(format!("h{i}"))).unwrap();
        }
    }
}

fn run(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn time(f: impl FnOnce()) -> Duration {
    // Flush earlier runs' dirty pages so each run starts from the same state.
    run("sync");
    let t = Instant::now();
    f();
    t.elapsed()
}

fn report(what: &str, runs: &mut [Duration], bytes: u64, files: u64) {
    runs.sort();
    let s = runs[runs.len() / 2].as_secs_f64();
    let best = runs[0].as_secs_f64();
    println!(
        "{what:<30} median {s:>6.3} s {:>7.1} MB/s {:>7.0} files/s   (best {best:.3} s, {:>7.1} MB/s)",
        bytes as f64 / 1e6 / s,
        files as f64 / s,
        bytes as f64 / 1e6 / best,
    );
}

#[test]
#[ignore = "benchmark: writes a few hundred MB; run with --ignored --nocapture"]
fn apply_vs_gnu_tar() {
    let files = env_num("APPLY_BENCH_FILES", 20_000);
    let mb = env_num("APPLY_BENCH_MB", 100);
    let rounds = env_num("APPLY_BENCH_ROUNDS", 5);
    let base = std::env::var("APPLY_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().to_string_lossy().into_owned());
    let tmp = tempfile::tempdir_in(base).unwrap();
    let src = tmp.path().join("src");
    generate(&src, files, mb);
    let tarball = tmp.path().join("layer.tar");
    run(&format!(
        "tar -cf {0} -C {1} . && gzip -k {0}",
        tarball.display(),
        src.display()
    ));
    let gz = tmp.path().join("layer.tar.gz");
    let opts = ApplyOptions::default();
    let mut stats = None;
    let mut t = [vec![], vec![], vec![], vec![]];
    for round in 0..rounds {
        let out = |what: &str| {
            let d = tmp.path().join(format!("{what}{round}"));
            std::fs::create_dir(&d).unwrap();
            d
        };
        let o = out("tar");
        t[0].push(time(|| {
            run(&format!("tar -xf {} -C {}", tarball.display(), o.display()))
        }));
        let o = out("apply");
        t[1].push(time(|| {
            let f = std::fs::File::open(&tarball).unwrap();
            stats = Some(apply_layer(f, &o, &opts).unwrap());
        }));
        let o = out("targz");
        t[2].push(time(|| {
            run(&format!("tar -xzf {} -C {}", gz.display(), o.display()))
        }));
        let o = out("applygz");
        t[3].push(time(|| {
            let f = std::fs::File::open(&gz).unwrap();
            let dec = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
            apply_layer(dec, &o, &opts).unwrap();
        }));
        if round == 0 {
            // Same tree as GNU tar's, contents and all.
            run(&format!(
                "diff -r --no-dereference {} {}",
                tmp.path().join("tar0").display(),
                tmp.path().join("apply0").display()
            ));
        }
        for d in ["tar", "apply", "targz", "applygz"] {
            std::fs::remove_dir_all(tmp.path().join(format!("{d}{round}"))).unwrap();
        }
    }
    let st = stats.unwrap();
    let tar_len = std::fs::metadata(&tarball).unwrap().len();
    let gz_len = std::fs::metadata(&gz).unwrap().len();
    println!(
        "layer: {} entries, {:.1} MB of file data, tar {:.1} MB, gzip {:.1} MB; {rounds} rounds",
        st.entries,
        st.bytes as f64 / 1e6,
        tar_len as f64 / 1e6,
        gz_len as f64 / 1e6
    );
    let [a, b, c, d] = &mut t;
    report("GNU tar -xf", a, st.bytes, st.entries);
    report("apply_layer (tar)", b, st.bytes, st.entries);
    report("GNU tar -xzf", c, st.bytes, st.entries);
    report("apply_layer (gzip, 1 thread)", d, st.bytes, st.entries);
}
