//! Signal names and numbers as `kill` and hooks take them, per target: numbers come from libc,
//! so MIPS' different numbering (SIGEMT, SIGRTMAX 127) is right without a table of our own.

use std::str::FromStr;

use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error)]
#[error("unknown signal {0:?}")]
pub struct SignalError(pub String);

/// Parse `KILL`, `SIGKILL`, `kill`, `9`, `RTMIN+2` or `SIGRTMAX-1` into a signal number.
pub fn parse(s: &str) -> Result<i32, SignalError> {
    let err = || SignalError(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return if n > 0 && n <= libc::SIGRTMAX() {
            Ok(n)
        } else {
            Err(err())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt_offset(libc::SIGRTMIN(), rest, 1).ok_or_else(err);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt_offset(libc::SIGRTMAX(), rest, -1).ok_or_else(err);
    }
    Signal::from_str(&format!("SIG{name}"))
        .map(|sig| sig as i32)
        .map_err(|_| err())
}

fn rt_offset(base: i32, rest: &str, sign: i32) -> Option<i32> {
    let n = if rest.is_empty() {
        base
    } else {
        let off: i32 = rest
            .strip_prefix(if sign > 0 { '+' } else { '-' })?
            .parse()
            .ok()?;
        base + sign * off
    };
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&n)
        .then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("KILL").ok(), Some(libc::SIGKILL));
        assert_eq!(parse("SIGKILL").ok(), Some(libc::SIGKILL));
        assert_eq!(parse("term").ok(), Some(libc::SIGTERM));
        assert_eq!(parse("15").ok(), Some(15));
        assert_eq!(parse("RTMIN+1").ok(), Some(libc::SIGRTMIN() + 1));
        assert_eq!(parse("SIGRTMAX").ok(), Some(libc::SIGRTMAX()));
        assert!(parse("FOO").is_err());
        assert!(parse("0").is_err());
        assert!(parse("1000").is_err());
    }
}
