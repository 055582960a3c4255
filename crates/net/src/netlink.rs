//! A synchronous rtnetlink connection.
//!
//! A netlink socket speaks for the network namespace it was created in, so a `Handle`
//! opened on a thread inside a container's namespace (see [`crate::netns::NetNs::run`])
//! configures that namespace, whatever thread uses it later.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tracing::trace;

use crate::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open rtnetlink socket: {0}")]
    Open(io::Error),
    #[error("open rtnetlink socket: {0}")]
    Netns(#[from] NetNsError),
    #[error("{op}: send request: {source}")]
    Send { op: String, source: io::Error },
    #[error("{op}: receive reply: {source}")]
    Recv { op: String, source: io::Error },
    #[error("{op}: decode reply: {message}")]
    Decode { op: String, message: String },
    /// The kernel refused: `source` carries the errno, `detail` the extended ack text.
    #[error("{op}: {source}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        op: String,
        source: io::Error,
        detail: Option<String>,
    },
}

impl NetlinkError {
    /// The errno of a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A blocking rtnetlink socket with its own sequence numbers.
#[derive(Debug)]
pub struct Handle {
    socket: Socket,
    seq: u32,
    port: u32,
    netns: NetNs,
}

// Room for one receive; dumps come as several datagrams of at most a few pages.
const RECV_BUF: usize = 64 * 1024;
const NLMSGERR_ATTR_MSG: u16 = 1;

impl Handle {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, NetlinkError> {
        let netns = NetNs::current()?;
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        let addr = socket.bind_auto().map_err(NetlinkError::Open)?;
        // Extended acks give the kernel's own words ("Unknown device type"); errors then
        // echo only the request header.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Self {
            socket,
            seq: 0,
            port: addr.port_number(),
            netns,
        })
    }

    /// The network namespace this handle configures.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Sends a request that expects only an acknowledgement.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<(), NetlinkError> {
        self.exchange(msg, flags | NLM_F_ACK, op).map(|_| ())
    }

    /// Sends a request and returns the messages of the reply (one for a get, many for a
    /// dump), stopping at the acknowledgement or the end of the dump.
    pub fn query(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, flags | NLM_F_ACK, op)
    }

    /// A dump request.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(msg, NLM_F_DUMP, op)
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        trace!(op, seq, "netlink request");
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Send {
                op: op.to_owned(),
                source,
            })?;

        let multipart = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rbuf.clear();
            let n = self
                .socket
                .recv(&mut rbuf, 0)
                .map_err(|source| NetlinkError::Recv {
                    op: op.to_owned(),
                    source,
                })?;
            if n > rbuf.len() {
                // MSG_TRUNC semantics: the kernel never sends more than 32 KiB per
                // datagram, so this means something is badly wrong.
                return Err(NetlinkError::Decode {
                    op: op.to_owned(),
                    message: format!("reply of {n} bytes truncated to {}", rbuf.len()),
                });
            }
            let mut off = 0;
            while off + 16 <= n {
                let bytes = &rbuf[off..n];
                let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if len < 16 || len > bytes.len() {
                    return Err(NetlinkError::Decode {
                        op: op.to_owned(),
                        message: format!("bad message length {len}"),
                    });
                }
                let one = &bytes[..len];
                off += (len + 3) & !3;
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(one).map_err(|e| {
                        NetlinkError::Decode {
                            op: op.to_owned(),
                            message: e.to_string(),
                        }
                    })?;
                if parsed.header.sequence_number != seq
                    || (parsed.header.port_number != 0 && parsed.header.port_number != self.port)
                {
                    // A late reply to an earlier request (or someone else's): not ours.
                    continue;
                }
                let msg_flags = parsed.header.flags;
                match parsed.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => {
                            return Err(NetlinkError::Kernel {
                                op: op.to_owned(),
                                source: e.to_io(),
                                detail: ext_ack_message(&e.header, msg_flags),
                            })
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                    }
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
            if !multipart && !out.is_empty() && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }
}

/// The NLMSGERR_ATTR_MSG text of an extended ack. With NETLINK_CAP_ACK the error
/// echoes only the 16-byte request header; the TLVs follow it (NLM_F_ACK_TLVS).
fn ext_ack_message(payload: &[u8], flags: u16) -> Option<String> {
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLM_F_CAPPED: u16 = 0x100;
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let start = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let mut rest = payload.get(start..)?;
    while rest.len() >= 4 {
        let nla_len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if nla_len < 4 || nla_len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..nla_len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            let s = String::from_utf8_lossy(text).trim().to_string();
            return (!s.is_empty()).then_some(s);
        }
        rest = rest.get((nla_len + 3) & !3..)?;
    }
    None
}
