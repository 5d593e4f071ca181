//! Rendered exchanges as the timed TCP packets of one or more connections, with ground truth.
//!
//! The model is a capture on the Ollama host (loopback by default): a packet is seen once, at
//! the instant it is sent; the peer reacts `hop_ns` later. Each side's sequence space is laid out
//! from its ISN in send order; every packet's ACK number is whatever the sender had received
//! before that instant, so ACKs stay right under keep-alive, pipelining and interleaving.
//!
//! Ground truth ([`ConnectionTruth`]) is what happened on the wire, independent of any
//! perturbation applied afterwards with [`perturb`].

pub mod perturb;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::wire::{DEFAULT_EPOCH_SECS, ExchangeWire, WriteContent};

/// Ollama's port.
pub const OLLAMA_PORT: u16 = 11434;

/// Largest TCP payload on Linux loopback (MTU 65536 − IPv4 20 − TCP 20 − timestamps 12).
pub const LOOPBACK_MSS: usize = 65483;

/// Largest payload that fits a 16-bit IPv4 total length with 20-byte IP and TCP headers
/// (data segments carry no TCP options).
pub const MAX_MSS: usize = 65_495;

/// Typical Ethernet MSS (1500 − 40 − timestamps 12).
pub const ETHERNET_MSS: usize = 1448;

/// Default start of a synthetic connection: 2026-01-01T00:00:00Z in ns.
pub const DEFAULT_START_NS: u64 = DEFAULT_EPOCH_SECS * 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SynthError {
    #[error("client {client} and server {server} are not the same IP family")]
    MixedFamilies { client: SocketAddr, server: SocketAddr },
    #[error("MSS must be at least 1 byte")]
    ZeroMss,
    #[error("MSS {0} does not fit an IP packet")]
    MssTooLarge(usize),
    #[error("random segmentation needs 1 <= min <= max (got {min}..={max})")]
    BadSegmentation { min: usize, max: usize },
    #[error("exchange {0} follows a cut exchange on the same connection")]
    ExchangeAfterCut(usize),
}

/// TCP header flags, as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }
    pub fn psh(self) -> bool {
        self.has(Self::PSH)
    }
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }
}

/// Options a SYN / SYN-ACK carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SynOptions {
    pub mss: u16,
    pub window_scale: u8,
}

/// One TCP segment as seen by the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time, ns since the UNIX epoch.
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Raw window field (scaled by the SYN's window scale after the handshake).
    pub window: u16,
    pub syn_options: Option<SynOptions>,
    /// Full payload as sent.
    pub payload: Vec<u8>,
    /// Payload bytes the capture kept (`None`: all of them). See [`perturb::truncate_captured`].
    pub captured_payload: Option<usize>,
}

impl Packet {
    /// Sequence number after this segment (payload, SYN and FIN each count).
    pub fn seq_end(&self) -> u32 {
        let ctl = u32::from(self.flags.syn()) + u32::from(self.flags.fin());
        self.seq.wrapping_add(self.payload.len() as u32).wrapping_add(ctl)
    }

    /// Payload bytes a capture file holds for this packet.
    pub fn captured_len(&self) -> usize {
        self.captured_payload.map_or(self.payload.len(), |n| n.min(self.payload.len()))
    }
}

/// Which end of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn idx(self) -> usize {
        self as usize
    }
    fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// How one write is cut into segments (always capped at the sender's MSS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Segmentation {
    /// Full-MSS segments.
    #[default]
    Mss,
    /// Segments of this size.
    Fixed(usize),
    /// Uniformly random sizes in `min..=max` (seeded).
    Random { min: usize, max: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest payload of a client segment.
    pub client_mss: usize,
    /// Largest payload of a server segment.
    pub server_mss: usize,
    pub request_segmentation: Segmentation,
    pub response_segmentation: Segmentation,
    /// `None`: drawn from the connection's seed.
    pub client_isn: Option<u32>,
    pub server_isn: Option<u32>,
    /// Window field after the handshake; with `window_scale` 7 this is ~8 MiB, like loopback.
    pub window: u16,
    pub window_scale: u8,
    /// The client writes head and body separately (httpx/h11, Ruby Net::HTTP); else in one write.
    pub split_request_head: bool,
    /// The server's head goes out in the same write as the first body write (Go does this:
    /// the head is buffered until the first flush). Off: the head is a write of its own.
    pub coalesce_response_head: bool,
    /// A receiver ACKs every `ack_every`-th segment of a write and its last segment.
    pub ack_every: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            client_mss: LOOPBACK_MSS,
            server_mss: LOOPBACK_MSS,
            request_segmentation: Segmentation::Mss,
            response_segmentation: Segmentation::Mss,
            client_isn: None,
            server_isn: None,
            window: 65535,
            window_scale: 7,
            split_request_head: false,
            coalesce_response_head: true,
            ack_every: 2,
        }
    }
}

/// Delays, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From a segment to the peer's reaction to it (handshake steps, pure ACKs, FIN replies).
    pub hop_ns: u64,
    /// Between consecutive segments of one write.
    pub segment_gap_ns: u64,
    /// Between the client's head write and body write (`split_request_head`).
    pub request_write_gap_ns: u64,
    /// Request's last byte → response's first byte (model load + prompt eval ≈ TTFT).
    pub ttfb_ns: u64,
    /// Between streamed writes (one token or event each).
    pub inter_write_ns: u64,
    /// Uniform ± jitter on each inter-write gap (seeded).
    pub jitter_ns: u64,
    /// Last streamed write → chunked terminator (the handler returning).
    pub terminator_gap_ns: u64,
    /// Response's last byte → the next request on a kept-alive connection.
    pub think_ns: u64,
    /// Request's last byte → next pipelined request.
    pub pipeline_gap_ns: u64,
    /// Last data → close (FIN/RST); also after a cut exchange.
    pub close_gap_ns: u64,
}

// Loopback-like; hop and segment gaps are not whole microseconds so that nanosecond and
// microsecond captures of the same packets differ.
impl Default for Timing {
    fn default() -> Self {
        Timing {
            hop_ns: 27_310,
            segment_gap_ns: 1_730,
            request_write_gap_ns: 20_000,
            ttfb_ns: 120_000_000,
            inter_write_ns: 15_000_000,
            jitter_ns: 0,
            terminator_gap_ns: 200_000,
            think_ns: 2_000_000,
            pipeline_gap_ns: 50_000,
            close_gap_ns: 1_000_000,
        }
    }
}

/// How the connection ends after its last exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Close {
    /// Still open when the capture ends.
    Open,
    /// This side sends FIN, the peer answers FIN, the first side ACKs.
    #[default]
    ClientFin,
    ServerFin,
    /// This side sends RST.
    ClientRst,
    ServerRst,
}

/// One exchange on a connection.
#[derive(Clone, Debug)]
pub struct ExchangeSpec {
    pub wire: ExchangeWire,
    /// Overrides the connection's timing for this exchange.
    pub timing: Option<Timing>,
    /// Sent right after the previous request instead of after its response.
    pub pipelined: bool,
    /// Deliver only the first `n` response writes (the head rides with the first; 0 = no
    /// response at all), then close the connection as [`ConnectionSpec::close`] says. Models a
    /// client that gives up mid-stream (§3.6).
    pub cut_after_writes: Option<usize>,
}

impl From<ExchangeWire> for ExchangeSpec {
    fn from(wire: ExchangeWire) -> Self {
        ExchangeSpec { wire, timing: None, pipelined: false, cut_after_writes: None }
    }
}

/// One TCP connection to synthesize.
#[derive(Clone, Debug)]
pub struct ConnectionSpec {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Time of the SYN (or of the first request when `handshake` is off).
    pub start_ns: u64,
    pub handshake: bool,
    pub close: Close,
    pub tcp: TcpConfig,
    pub timing: Timing,
    /// Seeds ISNs, random segmentation and jitter.
    pub seed: u64,
    /// Rewrite each response's `Date` header to the second it is sent.
    pub restamp_date: bool,
    pub exchanges: Vec<ExchangeSpec>,
}

impl ConnectionSpec {
    pub fn new(client: SocketAddr, server: SocketAddr) -> Self {
        ConnectionSpec {
            client,
            server,
            start_ns: DEFAULT_START_NS,
            handshake: true,
            close: Close::ClientFin,
            tcp: TcpConfig::default(),
            timing: Timing::default(),
            seed: 0,
            restamp_date: true,
            exchanges: Vec::new(),
        }
    }

    /// `127.0.0.1:client_port` → `127.0.0.1:11434`.
    pub fn loopback_v4(client_port: u16) -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self::new(SocketAddr::new(lo, client_port), SocketAddr::new(lo, OLLAMA_PORT))
    }

    /// `[::1]:client_port` → `[::1]:11434`.
    pub fn loopback_v6(client_port: u16) -> Self {
        let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
        Self::new(SocketAddr::new(lo, client_port), SocketAddr::new(lo, OLLAMA_PORT))
    }

    pub fn start_at(mut self, ns: u64) -> Self {
        self.start_ns = ns;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn close(mut self, close: Close) -> Self {
        self.close = close;
        self
    }
    pub fn handshake(mut self, on: bool) -> Self {
        self.handshake = on;
        self
    }
    pub fn tcp(mut self, tcp: TcpConfig) -> Self {
        self.tcp = tcp;
        self
    }
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }
    pub fn exchange(mut self, exchange: impl Into<ExchangeSpec>) -> Self {
        self.exchanges.push(exchange.into());
        self
    }
}

/// What happened to one exchange, in capture time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExchangeTruth {
    pub index: usize,
    pub request_first_byte_ns: u64,
    pub request_last_byte_ns: u64,
    /// TCP sequence number of the request's first byte, and its length on the wire.
    pub request_seq: u32,
    pub request_len: usize,
    /// `None` when the exchange was cut before any response byte.
    pub response_first_byte_ns: Option<u64>,
    pub response_last_byte_ns: Option<u64>,
    pub response_seq: u32,
    /// Response bytes actually sent (head included).
    pub response_len: usize,
    pub head_len: usize,
    /// Body writes actually sent, in order (the terminator too, when sent).
    pub writes: Vec<WriteTruth>,
    /// Every write of the rendered response was sent.
    pub complete: bool,
}

/// When one response write crossed the capture point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteTruth {
    pub content: WriteContent,
    /// Range of the de-chunked body it carries.
    pub body: Range<usize>,
    /// Length on the wire (chunk framing included, head excluded).
    pub wire_len: usize,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionTruth {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_isn: u32,
    pub server_isn: u32,
    pub syn_ns: Option<u64>,
    pub close: Close,
    /// Time of the first FIN or RST.
    pub close_ns: Option<u64>,
    pub exchanges: Vec<ExchangeTruth>,
}

/// Packets of all connections in capture order, with the ground truth of each connection.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub packets: Vec<Packet>,
    pub connections: Vec<ConnectionTruth>,
}

/// Synthesize several connections and interleave their packets by time (stable: ties keep
/// connection order).
pub fn synthesize(specs: &[ConnectionSpec]) -> Result<Capture, SynthError> {
    let mut capture = Capture::default();
    for spec in specs {
        let (packets, truth) = synthesize_connection(spec)?;
        capture.packets.extend(packets);
        capture.connections.push(truth);
    }
    capture.packets.sort_by_key(|p| p.ts_ns);
    Ok(capture)
}

/// A packet before sequence and ACK numbers are known.
struct Draft {
    ts: u64,
    from: Side,
    flags: u8,
    payload: Vec<u8>,
    syn: bool,
    /// A pure ACK generated to acknowledge data; dropped if it would acknowledge nothing new.
    auto_ack: bool,
    seq: u32,
}

struct Builder {
    drafts: Vec<Draft>,
    next_seq: [u32; 2],
    isn: [u32; 2],
    mss: [usize; 2],
    segmentation: [Segmentation; 2],
    ack_every: usize,
    rng: StdRng,
}

impl Builder {
    /// Queue one write as segments from `ts`; returns (first, last) segment times.
    fn write(&mut self, from: Side, ts: u64, data: &[u8], gap: u64, hop: u64) -> (u64, u64) {
        let sizes = segment_sizes(data.len(), self.segmentation[from.idx()], self.mss[from.idx()], &mut self.rng);
        let mut off = 0;
        let mut t = ts;
        let n = sizes.len();
        for (i, size) in sizes.into_iter().enumerate() {
            let last = i + 1 == n;
            let flags = TcpFlags::ACK | if last { TcpFlags::PSH } else { 0 };
            self.push(t, from, flags, data[off..off + size].to_vec());
            if last || (i + 1) % self.ack_every == 0 {
                self.drafts.push(Draft {
                    ts: t + hop,
                    from: from.peer(),
                    flags: TcpFlags::ACK,
                    payload: Vec::new(),
                    syn: false,
                    auto_ack: true,
                    seq: 0,
                });
            }
            off += size;
            if !last {
                t += gap;
            }
        }
        (ts, t)
    }

    /// A segment that occupies sequence space (data, SYN, FIN) or a control packet (RST, ACK).
    fn push(&mut self, ts: u64, from: Side, flags: u8, payload: Vec<u8>) {
        let syn = flags & TcpFlags::SYN != 0;
        let seq = if syn { self.isn[from.idx()] } else { self.next_seq[from.idx()] };
        let len = payload.len() as u32 + u32::from(syn) + u32::from(flags & TcpFlags::FIN != 0);
        self.next_seq[from.idx()] = seq.wrapping_add(len);
        self.drafts.push(Draft { ts, from, flags, payload, syn, auto_ack: false, seq });
    }
}

fn segment_sizes(len: usize, seg: Segmentation, mss: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = len;
    while left > 0 {
        let want = match seg {
            Segmentation::Mss => mss,
            Segmentation::Fixed(n) => n,
            Segmentation::Random { min, max } => rng.random_range(min..=max),
        };
        let n = want.clamp(1, mss).min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

fn validate(spec: &ConnectionSpec) -> Result<(), SynthError> {
    if spec.client.is_ipv4() != spec.server.is_ipv4() {
        return Err(SynthError::MixedFamilies { client: spec.client, server: spec.server });
    }
    for mss in [spec.tcp.client_mss, spec.tcp.server_mss] {
        if mss == 0 {
            return Err(SynthError::ZeroMss);
        }
        if mss > MAX_MSS {
            return Err(SynthError::MssTooLarge(mss));
        }
    }
    for seg in [spec.tcp.request_segmentation, spec.tcp.response_segmentation] {
        if let Segmentation::Random { min, max } = seg
            && (min == 0 || min > max)
        {
            return Err(SynthError::BadSegmentation { min, max });
        }
    }
    if let Some(i) = spec.exchanges.iter().position(|e| e.cut_after_writes.is_some())
        && i + 1 < spec.exchanges.len()
    {
        return Err(SynthError::ExchangeAfterCut(i + 1));
    }
    Ok(())
}

/// Synthesize one connection: its packets in time order and its ground truth.
pub fn synthesize_connection(spec: &ConnectionSpec) -> Result<(Vec<Packet>, ConnectionTruth), SynthError> {
    validate(spec)?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let client_isn = spec.tcp.client_isn.unwrap_or_else(|| rng.random());
    let server_isn = spec.tcp.server_isn.unwrap_or_else(|| rng.random());
    let mut b = Builder {
        drafts: Vec::new(),
        // Without a handshake the capture starts on an established connection.
        next_seq: [client_isn.wrapping_add(1), server_isn.wrapping_add(1)],
        isn: [client_isn, server_isn],
        mss: [spec.tcp.client_mss, spec.tcp.server_mss],
        segmentation: [spec.tcp.request_segmentation, spec.tcp.response_segmentation],
        ack_every: spec.tcp.ack_every.max(1),
        rng,
    };
    let t0 = spec.timing;
    let mut t = spec.start_ns;
    let mut syn_ns = None;
    if spec.handshake {
        syn_ns = Some(t);
        b.push(t, Side::Client, TcpFlags::SYN, Vec::new());
        b.push(t + t0.hop_ns, Side::Server, TcpFlags::SYN | TcpFlags::ACK, Vec::new());
        b.push(t + 2 * t0.hop_ns, Side::Client, TcpFlags::ACK, Vec::new());
        t += 2 * t0.hop_ns + t0.segment_gap_ns;
    }

    let mut truths = Vec::new();
    let mut prev_request_end: Option<u64> = None;
    let mut prev_response_end: Option<u64> = None;
    let mut last_activity = t;
    for (index, exchange) in spec.exchanges.iter().enumerate() {
        let tm = exchange.timing.unwrap_or(spec.timing);
        let req_start = match (prev_request_end, prev_response_end) {
            (None, _) => t,
            (Some(req_end), _) if exchange.pipelined => req_end + tm.pipeline_gap_ns,
            (Some(req_end), resp_end) => resp_end.unwrap_or(req_end) + tm.think_ns,
        };

        // Request: one write, or head then body.
        let req = &exchange.wire.request;
        let request_seq = b.next_seq[Side::Client.idx()];
        let parts: Vec<&[u8]> = if spec.tcp.split_request_head && req.head_len < req.bytes.len() {
            vec![req.head(), req.framed_body()]
        } else {
            vec![&req.bytes[..]]
        };
        let mut req_first = None;
        let mut req_last = req_start;
        let mut wt = req_start;
        for part in parts {
            let (first, last) = b.write(Side::Client, wt, part, tm.segment_gap_ns, tm.hop_ns);
            req_first.get_or_insert(first);
            req_last = last;
            wt = last + tm.request_write_gap_ns;
        }
        let req_first = req_first.unwrap_or(req_start);
        prev_request_end = Some(req_last);

        // Response: served after this request arrived and the previous response finished.
        let resp_start = req_last.max(prev_response_end.unwrap_or(0)) + tm.ttfb_ns;
        let mut resp = exchange.wire.response.clone();
        if spec.restamp_date {
            resp.set_date(resp_start / 1_000_000_000);
        }
        let response_seq = b.next_seq[Side::Server.idx()];
        let n_writes = exchange.cut_after_writes.map_or(resp.writes.len(), |n| n.min(resp.writes.len()));
        let mut writes = Vec::new();
        let mut resp_first = None;
        let mut resp_last = None;
        let mut response_len = 0;
        let mut wt = resp_start;
        let mut head_pending = n_writes > 0 || exchange.cut_after_writes.is_none();
        if head_pending && !(spec.tcp.coalesce_response_head && n_writes > 0) {
            let (first, last) = b.write(Side::Server, wt, &resp.head, tm.segment_gap_ns, tm.hop_ns);
            resp_first = Some(first);
            resp_last = Some(last);
            response_len += resp.head.len();
            head_pending = false;
            wt = last + tm.segment_gap_ns;
        }
        for (k, w) in resp.writes[..n_writes].iter().enumerate() {
            if k > 0 {
                let prev_last = resp_last.unwrap_or(wt);
                wt = prev_last
                    + if w.content == WriteContent::Terminator && resp.streamed {
                        tm.terminator_gap_ns
                    } else if resp.streamed {
                        jittered(tm.inter_write_ns, tm.jitter_ns, tm.segment_gap_ns, &mut b.rng)
                    } else {
                        tm.segment_gap_ns
                    };
            }
            let mut data = Vec::with_capacity(w.bytes.len() + resp.head.len());
            let head_len = if head_pending { resp.head.len() } else { 0 };
            if head_pending {
                data.extend_from_slice(&resp.head);
                head_pending = false;
            }
            data.extend_from_slice(&w.bytes);
            let first_seg = b.drafts.len();
            let (first, last) = b.write(Side::Server, wt, &data, tm.segment_gap_ns, tm.hop_ns);
            resp_first.get_or_insert(first);
            resp_last = Some(last);
            response_len += data.len();
            writes.push(WriteTruth {
                content: w.content.clone(),
                body: w.body.clone(),
                wire_len: w.bytes.len(),
                first_byte_ns: time_of_offset(&b.drafts[first_seg..], Side::Server, head_len),
                last_byte_ns: last,
            });
        }
        let complete = n_writes == resp.writes.len();
        prev_response_end = resp_last.or(Some(req_last));
        last_activity = prev_response_end.unwrap_or(req_last);
        truths.push(ExchangeTruth {
            index,
            request_first_byte_ns: req_first,
            request_last_byte_ns: req_last,
            request_seq,
            request_len: req.bytes.len(),
            response_first_byte_ns: resp_first,
            response_last_byte_ns: resp_last,
            response_seq,
            response_len,
            head_len: resp.head.len(),
            writes,
            complete,
        });
        if exchange.cut_after_writes.is_some() {
            break; // validate() made sure it is the last exchange
        }
    }

    // Close.
    let tc = last_activity + spec.timing.close_gap_ns;
    let hop = spec.timing.hop_ns;
    let close_ns = match spec.close {
        Close::Open => None,
        Close::ClientFin | Close::ServerFin => {
            let first = if spec.close == Close::ClientFin { Side::Client } else { Side::Server };
            b.push(tc, first, TcpFlags::FIN | TcpFlags::ACK, Vec::new());
            b.push(tc + hop, first.peer(), TcpFlags::FIN | TcpFlags::ACK, Vec::new());
            b.push(tc + 2 * hop, first, TcpFlags::ACK, Vec::new());
            Some(tc)
        }
        Close::ClientRst | Close::ServerRst => {
            let side = if spec.close == Close::ClientRst { Side::Client } else { Side::Server };
            b.push(tc, side, TcpFlags::RST | TcpFlags::ACK, Vec::new());
            Some(tc)
        }
    };

    let packets = finalize(spec, b);
    let truth = ConnectionTruth {
        client: spec.client,
        server: spec.server,
        client_isn,
        server_isn,
        syn_ns,
        close: spec.close,
        close_ns,
        exchanges: truths,
    };
    Ok((packets, truth))
}

/// Capture time of the segment holding byte `offset` of the write whose segments start the slice.
fn time_of_offset(drafts: &[Draft], from: Side, offset: usize) -> u64 {
    let mut seen = 0;
    let mut last = 0;
    for d in drafts.iter().filter(|d| d.from == from && !d.payload.is_empty()) {
        last = d.ts;
        if offset < seen + d.payload.len() {
            return d.ts;
        }
        seen += d.payload.len();
    }
    last
}

fn jittered(base: u64, jitter: u64, floor: u64, rng: &mut StdRng) -> u64 {
    if jitter == 0 {
        return base.max(floor);
    }
    let delta = rng.random_range(0..=2 * jitter) as i128 - jitter as i128;
    ((base as i128 + delta).max(floor as i128)) as u64
}

/// Order drafts by time, fill in ACK numbers (everything the sender had received before that
/// instant) and sequence numbers of pure ACKs, and drop ACKs that acknowledge nothing new.
fn finalize(spec: &ConnectionSpec, b: Builder) -> Vec<Packet> {
    let mut drafts = b.drafts;
    drafts.sort_by_key(|d| d.ts); // stable: ties keep creation order
    let addr = |s: Side| {
        if s == Side::Client { spec.client } else { spec.server }
    };
    let mut snd_nxt = [b.isn[0].wrapping_add(1), b.isn[1].wrapping_add(1)];
    let mut seen_syn = [false; 2];
    let mut last_ack_sent: [Option<u32>; 2] = [None, None];
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        let me = d.from.idx();
        let peer = d.from.peer().idx();
        let occupies = d.syn || !d.payload.is_empty() || d.flags & TcpFlags::FIN != 0;
        let seq = if occupies { d.seq } else { snd_nxt[me] };
        // Before the peer's SYN is seen (handshake on), there is nothing to acknowledge.
        let ack_valid = d.flags & TcpFlags::ACK != 0 && (!spec.handshake || seen_syn[peer]);
        let ack = if ack_valid { snd_nxt[peer] } else { 0 };
        if d.auto_ack && last_ack_sent[me] == Some(ack) {
            continue;
        }
        if occupies {
            snd_nxt[me] =
                d.seq.wrapping_add(d.payload.len() as u32 + u32::from(d.syn) + u32::from(d.flags & TcpFlags::FIN != 0));
        }
        if d.syn {
            seen_syn[me] = true;
        }
        if ack_valid {
            last_ack_sent[me] = Some(ack);
        }
        let (window, syn_options) = if d.syn {
            let mss = if d.from == Side::Client { spec.tcp.server_mss } else { spec.tcp.client_mss };
            (65535, Some(SynOptions { mss: mss.min(65535) as u16, window_scale: spec.tcp.window_scale }))
        } else {
            (spec.tcp.window, None)
        };
        out.push(Packet {
            ts_ns: d.ts,
            src: addr(d.from),
            dst: addr(d.from.peer()),
            seq,
            ack,
            flags: TcpFlags(d.flags),
            window,
            syn_options,
            payload: d.payload,
            captured_payload: None,
        });
    }
    out
}

/// Reassemble one direction of one connection from packets (in sequence order, duplicates and
/// overlaps resolved by first copy): a test oracle for perturbations.
pub fn reassemble(packets: &[Packet], src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let dir = |p: &&Packet| p.src == src && p.dst == dst;
    let mut segs: Vec<&Packet> = packets.iter().filter(dir).filter(|p| !p.payload.is_empty()).collect();
    let Some(first) = segs.first().map(|p| p.seq) else {
        return Vec::new();
    };
    // Stream start: after the SYN if captured, else the lowest sequence number seen.
    let base = packets.iter().filter(dir).find(|p| p.flags.syn()).map_or_else(
        || segs.iter().map(|p| p.seq).min_by_key(|s| s.wrapping_sub(first) as i32).unwrap_or(first),
        |p| p.seq.wrapping_add(1),
    );
    segs.sort_by_key(|p| p.seq.wrapping_sub(base));
    let mut out = Vec::new();
    for p in segs {
        let start = p.seq.wrapping_sub(base) as usize;
        let data = &p.payload[..p.captured_len()];
        if start + data.len() <= out.len() {
            continue;
        }
        if start > out.len() {
            break; // gap
        }
        out.extend_from_slice(&data[out.len() - start..]);
    }
    out
}

/// A connection from raw writes `(from_client, bytes, ts_ns)` to 127.0.0.1:11434: handshake at
/// 1–3 ns, one segment per write (any size), ACKs riding on the data. For hand-made exchanges
/// the renderer cannot produce (odd heads, unfinished messages, huge bodies).
pub fn raw_connection(client: SocketAddr, writes: &[(bool, &[u8], u64)]) -> Vec<Packet> {
    let server: SocketAddr = "127.0.0.1:11434".parse().expect("address");
    let mut seq = [1000u32, 5000u32];
    let mut out = Vec::new();
    let pkt = |ts, from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]| Packet {
        ts_ns: ts,
        src: if from_client { client } else { server },
        dst: if from_client { server } else { client },
        seq,
        ack,
        flags: TcpFlags(flags),
        window: 65535,
        syn_options: None,
        payload: payload.to_vec(),
        captured_payload: None,
    };
    out.push(pkt(1, true, seq[0], 0, TcpFlags::SYN, b""));
    out.push(pkt(2, false, seq[1], seq[0] + 1, TcpFlags::SYN | TcpFlags::ACK, b""));
    seq = [seq[0] + 1, seq[1] + 1];
    out.push(pkt(3, true, seq[0], seq[1], TcpFlags::ACK, b""));
    for &(from_client, data, ts) in writes {
        let (s, a) = if from_client { (0, 1) } else { (1, 0) };
        out.push(pkt(ts, from_client, seq[s], seq[a], TcpFlags::ACK | TcpFlags::PSH, data));
        seq[s] = seq[s].wrapping_add(data.len() as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::wire::{RenderOptions, render};

    fn wire(name: &str) -> ExchangeWire {
        render(&fixtures::load(name).unwrap(), &RenderOptions::default())
    }

    const STREAM: &str = "tmc-langchaingo__TestWithStreaming__0";
    const SMALL: &str = "alexrudall-ruby-openai__ollama_llama3_chat__0";
    const IMAGE: &str = "llmrb-llm__llm_file_local_image__0";

    /// Per direction: no gaps, no overlaps, SYN/FIN accounted; every ACK acknowledges only
    /// bytes the peer already sent.
    fn check_seq_consistency(packets: &[Packet], client: SocketAddr, server: SocketAddr) {
        for (src, dst) in [(client, server), (server, client)] {
            let mut next: Option<u32> = None;
            for p in packets.iter().filter(|p| p.src == src && p.dst == dst) {
                if p.flags.syn() {
                    next = Some(p.seq_end());
                    continue;
                }
                if let Some(n) = next {
                    assert_eq!(p.seq, n, "contiguous seq at {}", p.ts_ns);
                }
                next = Some(p.seq_end());
            }
        }
        for (i, p) in packets.iter().enumerate() {
            if !p.flags.ack() {
                continue;
            }
            let peer_sent = packets[..i].iter().rev().find(|q| q.src == p.dst && q.dst == p.src).map(Packet::seq_end);
            // Without a handshake the first packets acknowledge bytes from before the capture.
            if let Some(sent) = peer_sent {
                assert_eq!(p.ack, sent, "packet {i} acks exactly what the peer sent");
            }
        }
        assert!(packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns), "time-ordered");
    }

    #[test]
    fn single_streamed_exchange() {
        let w = wire(STREAM);
        let spec = ConnectionSpec::loopback_v4(40_000).seed(1).exchange(w.clone());
        let (packets, truth) = synthesize_connection(&spec).unwrap();
        check_seq_consistency(&packets, spec.client, spec.server);
        assert!(packets[0].flags.syn() && !packets[0].flags.ack());
        assert_eq!(packets[1].flags, TcpFlags(TcpFlags::SYN | TcpFlags::ACK));

        let c2s = reassemble(&packets, spec.client, spec.server);
        let s2c = reassemble(&packets, spec.server, spec.client);
        assert_eq!(c2s, w.request.bytes);
        let mut resp = w.response.clone();
        resp.set_date(truth.exchanges[0].response_first_byte_ns.unwrap() / 1_000_000_000);
        assert_eq!(s2c, resp.bytes());

        let ex = &truth.exchanges[0];
        assert!(ex.complete);
        assert_eq!(ex.writes.len(), w.response.writes.len());
        let tm = Timing::default();
        assert_eq!(ex.response_first_byte_ns.unwrap(), ex.request_last_byte_ns + tm.ttfb_ns);
        assert_eq!(ex.writes[0].first_byte_ns, ex.response_first_byte_ns.unwrap(), "head rides with line 0");
        for pair in ex.writes.windows(2) {
            assert!(pair[1].first_byte_ns > pair[0].last_byte_ns);
        }
        assert_eq!(ex.response_last_byte_ns, Some(ex.writes.last().unwrap().last_byte_ns));
        assert_eq!(ex.response_len, s2c.len());
        // Each server data packet starts a write: one packet per NDJSON line.
        let data: Vec<_> = packets.iter().filter(|p| p.src == spec.server && !p.payload.is_empty()).collect();
        assert_eq!(data.len(), w.response.writes.len());
        assert!(data.iter().all(|p| p.flags.psh()));
        assert_eq!(truth.close, Close::ClientFin);
        let tail: Vec<_> = packets.iter().rev().take(3).map(|p| p.flags.0).collect();
        assert_eq!(tail, [TcpFlags::ACK, TcpFlags::FIN | TcpFlags::ACK, TcpFlags::FIN | TcpFlags::ACK]);
    }

    #[test]
    fn request_split_into_small_segments() {
        let w = wire(IMAGE);
        for seg in [Segmentation::Mss, Segmentation::Fixed(1448), Segmentation::Random { min: 1, max: 3000 }] {
            let tcp = TcpConfig {
                client_mss: 1448,
                request_segmentation: seg,
                split_request_head: true,
                ..Default::default()
            };
            let spec = ConnectionSpec::loopback_v6(50_000).tcp(tcp).seed(7).exchange(w.clone());
            let (packets, truth) = synthesize_connection(&spec).unwrap();
            check_seq_consistency(&packets, spec.client, spec.server);
            assert_eq!(reassemble(&packets, spec.client, spec.server), w.request.bytes);
            let client_data: Vec<_> =
                packets.iter().filter(|p| p.src == spec.client && !p.payload.is_empty()).collect();
            assert!(client_data.len() > 29, "{seg:?}: 42 KB body in ≤1448-byte segments");
            assert!(client_data.iter().all(|p| p.payload.len() <= 1448));
            assert_eq!(client_data[0].payload, w.request.head(), "head is its own write");
            let ex = &truth.exchanges[0];
            assert_eq!(ex.request_first_byte_ns, client_data[0].ts_ns);
            assert_eq!(ex.request_last_byte_ns, client_data.last().unwrap().ts_ns);
        }
    }

    #[test]
    fn keep_alive_pipelining_and_interleaving_are_deterministic() {
        let a = wire(STREAM);
        let b = wire(SMALL);
        let mut piped = ExchangeSpec::from(b.clone());
        piped.pipelined = true;
        let c1 = ConnectionSpec::loopback_v4(40_001).seed(3).exchange(a.clone()).exchange(b.clone()).exchange(piped);
        let c2 = ConnectionSpec::loopback_v4(40_002)
            .seed(4)
            .start_at(DEFAULT_START_NS + 50_000_000)
            .close(Close::ServerRst)
            .exchange(a.clone());
        let cap = synthesize(&[c1.clone(), c2.clone()]).unwrap();
        let again = synthesize(&[c1.clone(), c2.clone()]).unwrap();
        assert_eq!(cap.packets, again.packets, "same seed, same packets");
        assert!(cap.packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        let conn1: Vec<_> = cap.packets.iter().filter(|p| p.src == c1.client || p.dst == c1.client).cloned().collect();
        check_seq_consistency(&conn1, c1.client, c1.server);
        let t = &cap.connections[0].exchanges;
        assert_eq!(t.len(), 3);
        assert!(t[1].request_first_byte_ns > t[0].response_last_byte_ns.unwrap(), "keep-alive waits");
        assert!(t[2].request_first_byte_ns < t[1].response_first_byte_ns.unwrap(), "pipelined request goes early");
        assert!(t[2].response_first_byte_ns.unwrap() > t[1].response_last_byte_ns.unwrap(), "served in order");
        let mut expected = a.request.bytes.clone();
        expected.extend_from_slice(&b.request.bytes);
        expected.extend_from_slice(&b.request.bytes);
        assert_eq!(reassemble(&cap.packets, c1.client, c1.server), expected);
        let last = cap.packets.iter().rev().find(|p| p.src == c2.client || p.dst == c2.client).unwrap();
        assert!(last.flags.rst() && last.dst == c2.client, "server reset connection 2");
        // Interleaved: connection 2's packets sit between connection 1's.
        let first2 = cap.packets.iter().position(|p| p.src == c2.client).unwrap();
        let last1 = cap.packets.iter().rposition(|p| p.src == c1.client).unwrap();
        assert!(first2 < last1);
    }

    #[test]
    fn cut_stream_and_no_handshake() {
        let w = wire(STREAM);
        let mut ex = ExchangeSpec::from(w.clone());
        ex.cut_after_writes = Some(3);
        let spec = ConnectionSpec::loopback_v4(40_003).handshake(false).close(Close::ClientRst).exchange(ex);
        let (packets, truth) = synthesize_connection(&spec).unwrap();
        check_seq_consistency(&packets, spec.client, spec.server);
        assert!(!packets.iter().any(|p| p.flags.syn()));
        let ex = &truth.exchanges[0];
        assert!(!ex.complete);
        assert_eq!(ex.writes.len(), 3);
        assert_eq!(
            ex.response_len,
            w.response.head.len() + w.response.writes[..3].iter().map(|w| w.bytes.len()).sum::<usize>()
        );
        assert!(packets.last().unwrap().flags.rst());
        assert_eq!(truth.syn_ns, None);

        let mut nothing = ExchangeSpec::from(w.clone());
        nothing.cut_after_writes = Some(0);
        let spec = ConnectionSpec::loopback_v4(40_004).exchange(nothing);
        let (_, truth) = synthesize_connection(&spec).unwrap();
        assert_eq!(truth.exchanges[0].response_first_byte_ns, None);
        assert_eq!(truth.exchanges[0].response_len, 0);
    }

    #[test]
    fn separate_head_and_small_mss_response() {
        let w = wire(STREAM);
        let tcp = TcpConfig {
            coalesce_response_head: false,
            server_mss: 100,
            response_segmentation: Segmentation::Random { min: 10, max: 100 },
            ..Default::default()
        };
        let spec = ConnectionSpec::loopback_v4(40_005).tcp(tcp).seed(9).exchange(w.clone());
        let (packets, truth) = synthesize_connection(&spec).unwrap();
        check_seq_consistency(&packets, spec.client, spec.server);
        let ex = &truth.exchanges[0];
        assert!(ex.writes[0].first_byte_ns > ex.response_first_byte_ns.unwrap());
        assert!(packets.iter().all(|p| p.payload.len() <= 100 || p.src == spec.client));
        let s2c = reassemble(&packets, spec.server, spec.client);
        assert_eq!(&s2c[w.response.head.len()..], &w.response.bytes()[w.response.head.len()..]);
    }

    #[test]
    fn rejects_bad_specs() {
        let v4 = ConnectionSpec::loopback_v4(1);
        let mixed = ConnectionSpec::new(v4.client, ConnectionSpec::loopback_v6(1).server);
        assert!(matches!(synthesize_connection(&mixed), Err(SynthError::MixedFamilies { .. })));
        let bad = v4
            .clone()
            .tcp(TcpConfig { request_segmentation: Segmentation::Random { min: 5, max: 1 }, ..Default::default() });
        assert!(matches!(synthesize_connection(&bad), Err(SynthError::BadSegmentation { .. })));
        let mut cut = ExchangeSpec::from(wire(SMALL));
        cut.cut_after_writes = Some(1);
        let after = v4.exchange(cut).exchange(wire(SMALL));
        assert_eq!(synthesize_connection(&after).unwrap_err(), SynthError::ExchangeAfterCut(1));
    }

    #[test]
    fn jitter_is_seeded() {
        let w = wire(STREAM);
        let timing = Timing { jitter_ns: 5_000_000, ..Default::default() };
        let mk = |seed| ConnectionSpec::loopback_v4(40_006).timing(timing).seed(seed).exchange(w.clone());
        let a = synthesize_connection(&mk(1)).unwrap().1;
        let b = synthesize_connection(&mk(1)).unwrap().1;
        let c = synthesize_connection(&mk(2)).unwrap().1;
        assert_eq!(a, b);
        assert_ne!(a.exchanges[0].writes, c.exchanges[0].writes);
    }
}
