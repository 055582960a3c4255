//! `rcrun features`: the runtime-spec features.json of this runtime.

pub fn run() -> anyhow::Result<()> {
    let v = rcrun_runtime::features::features();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
