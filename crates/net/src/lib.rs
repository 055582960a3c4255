//! Container networking.

// Kernel-facing half: namespaces, rtnetlink, links and the per-mode setup/teardown.
pub mod bond;
pub mod bridge;
pub mod device;
pub mod iface;
pub mod ipvlan;
pub mod link;
pub mod macvlan;
pub mod netlink;
pub mod netns;
pub mod qos;
pub mod vlan;
// Store-facing half: network definitions, address and device pools, nftables NAT.
pub mod config;
pub mod ipam;
pub mod nat;
pub mod pool;
// Orchestration: one container on one network, recorded step by step.
pub mod attach;
