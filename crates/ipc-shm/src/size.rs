//! Sizes as people write them: "4096", "64KiB", "4MiB", "1GiB" (also "k", "K", "KB", "M"...
//! all binary multiples, as in the kernel's memparse).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("{0:?} is not a size")]
    NotASize(String),
}

pub fn parse(s: &str) -> Result<u64, SizeError> {
    let bad = || SizeError::NotASize(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "k" | "K" | "KB" | "KiB" => 10,
        "m" | "M" | "MB" | "MiB" => 20,
        "g" | "G" | "GB" | "GiB" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("64KiB"), Ok(65536));
        assert_eq!(parse("4MiB"), Ok(4 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert!(parse("64XB").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999999999999G").is_err());
    }
}
