//! `rcrun image import|ls|rm|prune`: the layer store's images (rcrun_storage_overlay2 does the
//! work; here are arguments and output, shaped like docker's).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use rcrun_storage_overlay2::import::{self, ImportOptions};
use rcrun_storage_overlay2::store::{ImageRecord, Store, DEFAULT_ROOT};

use super::progress::Printer;
use crate::cli::{ImageArgs, ImageCommand, ListFormat, StoreArg};

/// `--store`, else $RCRUN_STORE, else the default.
pub fn store_dir(a: &StoreArg) -> PathBuf {
    a.store
        .clone()
        .or_else(|| {
            std::env::var_os("RCRUN_STORE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

pub fn open_store(a: &StoreArg) -> Result<Store> {
    let dir = store_dir(a);
    Store::open(&dir).map_err(|e| anyhow!("store {}: {e}", dir.display()))
}

pub fn run(a: &ImageArgs) -> Result<()> {
    let store = open_store(&a.store)?;
    match &a.command {
        ImageCommand::Import { name, source } => import(&store, source, name.clone()),
        ImageCommand::Ls { format } => ls(&store, *format),
        ImageCommand::Rm { force, refs } => rm(&store, refs, *force),
        ImageCommand::Prune => prune(&store),
    }
}

fn import(store: &Store, source: &Path, name: Option<String>) -> Result<()> {
    let _span = tracing::info_span!("image_import", source = %source.display()).entered();
    let opts = ImportOptions {
        name,
        ..ImportOptions::default()
    };
    let mut printer = Printer::new();
    let report = match import::import(store, source, &opts, &mut |p| printer.update(&p)) {
        Ok(r) => r,
        Err(e) => {
            printer.abort();
            return Err(anyhow!("import {}: {e}", source.display()));
        }
    };
    printer.finish(
        report.image.layers.len(),
        report.applied.len(),
        report.bytes_read,
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.image.id)?;
    Ok(())
}

/// Sum of the layers' file bytes (docker's SIZE is the uncompressed size too).
fn image_size(store: &Store, img: &ImageRecord) -> u64 {
    img.layers
        .iter()
        .filter_map(|c| store.layer(c).ok())
        .map(|l| l.meta.bytes)
        .sum()
}

fn ls(store: &Store, format: ListFormat) -> Result<()> {
    let mut images = store.images()?;
    // Newest first, as docker lists them.
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let mut out = std::io::stdout().lock();
    if format == ListFormat::Json {
        let v: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i.id.to_string(),
                    "names": i.names,
                    "size": image_size(store, i),
                    "layers": i.layers.len(),
                    "created": i.created,
                    "os": i.os,
                    "architecture": i.architecture,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut rows = vec![["NAME", "ID", "SIZE", "LAYERS", "CREATED"].map(String::from)];
    for i in &images {
        let size = human_size(image_size(store, i));
        let created = i
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| format!("{} ago", human_duration(now - t)))
            .unwrap_or_else(|| "N/A".into());
        let names = if i.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            i.names.clone()
        };
        for n in names {
            rows.push([
                n,
                i.id.short().to_string(),
                size.clone(),
                i.layers.len().to_string(),
                created.clone(),
            ]);
        }
    }
    write_table(&mut out, &rows)
}

/// Columns padded by 3, the last one not padded (Go's tabwriter as docker sets it up).
fn write_table<const N: usize>(out: &mut impl Write, rows: &[[String; N]]) -> Result<()> {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn rm(store: &Store, refs: &[String], force: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in refs {
        let rep = store
            .remove_image(r, force)
            .map_err(|e| anyhow!("image rm {r}: {e}"))?;
        for n in &rep.untagged {
            writeln!(out, "Untagged: {n}")?;
        }
        if let Some(id) = &rep.removed_image {
            writeln!(out, "Deleted: {id}")?;
        }
        for l in &rep.removed_layers {
            writeln!(out, "Deleted layer: {l}")?;
        }
    }
    Ok(())
}

fn prune(store: &Store) -> Result<()> {
    let rep = store.prune()?;
    let mut out = std::io::stdout().lock();
    for l in &rep.removed_layers {
        writeln!(out, "Deleted layer: {l}")?;
    }
    for l in &rep.incomplete_layers {
        writeln!(out, "Deleted incomplete layer: {l}")?;
    }
    for c in &rep.incomplete_containers {
        writeln!(out, "Deleted incomplete container: {c}")?;
    }
    if rep.dangling_links > 0 {
        writeln!(out, "Deleted dangling links: {}", rep.dangling_links)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(rep.reclaimed_bytes)
    )?;
    Ok(())
}

/// docker's (go-units) HumanSize: decimal units, 3 significant digits, no trailing zeros.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// docker's (go-units) HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as i64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05[.frac](Z|±hh:mm)`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = match tz.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600
                + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Howard Hinnant's days_from_civil (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(4_000_000), "4MB");
        assert_eq!(human_size(1_234_567_890), "1.23GB");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(3 * 7 * 86_400), "3 weeks");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
