//! Time `mount::mount` of a stored image's overlay, by method, for bench/storage.py:
//!
//! ```text
//! mount_bench STORE IMAGE ITERATIONS
//! ```
//!
//! Per iteration: `create_container` (untimed), `mount` (timed), `unmount_container` (timed),
//! `remove_container` (untimed); for the new mount API (`lowerdir+`) and for `mount(2)`
//! (where the option string fits in a page). Prints one JSON object on stdout.

use rcrun_storage_overlay2::mount::{self, MountMethod, MountOptions};
use rcrun_storage_overlay2::store::Store;
use std::error::Error;
use std::time::Instant;

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, store, image, n] = args.as_slice() else {
        return Err("usage: mount_bench STORE IMAGE ITERATIONS".into());
    };
    let n: usize = n.parse()?;
    let store = Store::open(store)?;
    let layers = store.image(image)?.layers.len();
    let mut out = serde_json::json!({"image": image, "layers": layers, "iterations": n});
    for (key, method) in [
        ("new_api", MountMethod::NewApi),
        ("legacy", MountMethod::Legacy),
    ] {
        let (mut mounts, mut unmounts) = (Vec::new(), Vec::new());
        let mut error = None;
        for i in 0..n {
            let id = format!("mount-bench-{}-{i}", std::process::id());
            store.create_container(&id, image)?;
            let t = Instant::now();
            let r = mount::mount(
                &store,
                &id,
                &MountOptions {
                    method,
                    target: None,
                },
            );
            let dt = t.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(_) => {
                    mounts.push(dt);
                    let t = Instant::now();
                    mount::unmount_container(&store, &id)?;
                    unmounts.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Err(e) => error = Some(e.to_string()),
            }
            store.remove_container(&id)?;
            if error.is_some() {
                break;
            }
        }
        out[key] = serde_json::json!({
            "mount_ms_median": median(&mut mounts),
            "unmount_ms_median": median(&mut unmounts),
            "mount_ms": mounts,
            "error": error,
        });
    }
    println!("{out}");
    Ok(())
}
