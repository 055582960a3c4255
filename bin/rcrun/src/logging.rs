//! runc's log output: logrus-style text (`time="…" level=error msg="…"`) or JSON lines
//! (`{"level":"error","msg":"…","time":"…"}`, which containerd reads back), to `--log` or stderr.
//!
//! A tiny `tracing::Subscriber` of our own rather than tracing-subscriber: container start-up is
//! measured in milliseconds and this needs no registry, no span storage and no formatting layers.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::cli::LogFormat;

pub struct Logger {
    max: Level,
    json: bool,
    out: Mutex<Box<dyn Write + Send>>,
    next: AtomicU64,
}

impl Logger {
    pub fn new(log: Option<&Path>, format: LogFormat, debug: bool) -> std::io::Result<Logger> {
        let out: Box<dyn Write + Send> = match log {
            Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
            None => Box::new(std::io::stderr()),
        };
        Ok(Logger {
            max: if debug { Level::DEBUG } else { Level::WARN },
            json: format == LogFormat::Json,
            out: Mutex::new(out),
            next: AtomicU64::new(1),
        })
    }

    /// Write one record (also used directly for the final error of a command). `fields` are
    /// extra key/value pairs: top-level keys in JSON (as logrus writes them), `k="v"` in text.
    pub fn write(&self, level: Level, msg: &str, fields: &[(String, String)]) {
        let time = rcrun_runtime::time::now_rfc3339();
        let level = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let line = if self.json {
            let mut v = serde_json::json!({"level": level, "msg": msg, "time": time});
            for (k, val) in fields {
                if !matches!(k.as_str(), "level" | "msg" | "time") {
                    v[k.as_str()] = serde_json::Value::String(val.clone());
                }
            }
            v.to_string()
        } else {
            let mut l = format!("time={time:?} level={level} msg={msg:?}");
            for (k, val) in fields {
                l.push_str(&format!(" {k}={val:?}"));
            }
            l
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl Logger {
    /// Below our own level for foreign targets: everything with --debug, errors only otherwise.
    fn debug_floor(&self) -> Level {
        if self.max == Level::DEBUG {
            Level::DEBUG
        } else {
            Level::ERROR
        }
    }
}

impl Subscriber for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // Libraries' own warnings (libcgroups notes controllers it does not manage, such as
        // rdma or misc on a v2 host) are detail for --debug, not lines in a client's log.
        let ours = m.target().starts_with("rcrun");
        *m.level() <= if ours { self.max } else { self.debug_floor() }
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        self.write(*event.metadata().level(), &f.message, &f.rest);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
