//! Rate strings of network definitions: the same parser as the QoS code that applies them
//! (tc's spelling, "100mbit", "1gbit", "500kbps"; a bare number is refused), so a rate that
//! validates is a rate that attaches.

/// Bits per second of a tc-style rate, or why it is not one.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    s.parse::<crate::qos::Rate>()
        .map(|r| r.bits_per_sec())
        .map_err(|e| match e {
            crate::qos::QosError::BadRate { reason, .. } => reason,
            other => other.to_string(),
        })
}
