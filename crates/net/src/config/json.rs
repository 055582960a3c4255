//! Checks of a network definition's typed JSON fields before serde sees them, so that a bad
//! address or enum value is reported with the network, the field and the value.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::ConfigError;

fn invalid(
    network: &str,
    field: &'static str,
    value: &Value,
    reason: impl Into<String>,
) -> ConfigError {
    let value = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    ConfigError::Invalid {
        network: network.to_string(),
        field,
        value,
        reason: reason.into(),
    }
}

fn check_str(
    network: &str,
    field: &'static str,
    v: Option<&Value>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            check(s).map_err(|r| invalid(network, field, &Value::String(s.clone()), r))
        }
        Some(other) => Err(invalid(network, field, other, "must be a string")),
    }
}

fn cidr(s: &str) -> Result<(), String> {
    if let Some((addr, len)) = s.split_once('/') {
        let a: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if a.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .map_err(|_| format!("prefix length {len:?} is not a number"))?;
        if len > max {
            return Err(format!("prefix length {len} is out of range (0 to {max})"));
        }
    }
    s.parse::<IpNet>()
        .map(|_| ())
        .map_err(|_| "not a CIDR subnet (e.g. 10.88.0.0/16 or fd00:88::/64)".to_string())
}

fn addr(s: &str) -> Result<(), String> {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| "not an IP address".to_string())
}

fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<(), String> {
    move |s| {
        if allowed.contains(&s) {
            Ok(())
        } else {
            Err(format!("must be one of {}", allowed.join(", ")))
        }
    }
}

fn check_int(
    network: &str,
    field: &'static str,
    v: Option<&Value>,
    lo: u64,
    hi: u64,
) -> Result<(), ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|x| (lo..=hi).contains(&x)) => Ok(()),
        Some(other) => Err(invalid(
            network,
            field,
            other,
            format!("must be an integer from {lo} to {hi}"),
        )),
    }
}

pub(super) fn precheck(network: &str, v: &Value) -> Result<(), ConfigError> {
    if !v.is_object() {
        return Err(invalid(
            network,
            "(document)",
            v,
            "a network definition is a JSON object",
        ));
    }
    match v.get("subnet") {
        None | Some(Value::Null) => {
            return Err(invalid(network, "subnet", &Value::Null, "is required"))
        }
        s => check_str(network, "subnet", s, cidr)?,
    }
    check_str(network, "gateway", v.get("gateway"), addr)?;
    if let Some(r) = v.get("range") {
        check_str(network, "range.start", r.get("start"), addr)?;
        check_str(network, "range.end", r.get("end"), addr)?;
    }
    check_str(
        network,
        "mode",
        v.get("mode"),
        one_of(&["bridge", "macvlan", "ipvlan", "device"]),
    )?;
    check_str(
        network,
        "macvlanMode",
        v.get("macvlanMode"),
        one_of(&["bridge", "private", "vepa", "passthru"]),
    )?;
    check_str(
        network,
        "ipvlanMode",
        v.get("ipvlanMode"),
        one_of(&["l2", "l3"]),
    )?;
    check_int(network, "vlan", v.get("vlan"), 1, 4094)?;
    check_int(network, "mtu", v.get("mtu"), 68, 65535)?;
    Ok(())
}
