//! The TLS streams against synthetic records, through the real pipeline: a session becomes one
//! connection whose calls are exact and `https`, its other end and its ciphertext on the wire
//! are dropped, records waiting for their socket are bounded.

use std::net::SocketAddr;

use tracer_core::llm::LlmCall;
use tracer_core::pipeline::{Pipeline, PipelineConfig};
use tracer_core::segment::{Direction, FlowKey, Segment, SegmentBatch, Timestamp, TlsLibrary};

use super::records::{End, Io, Plaintext, SessionFlow, SessionId, TlsEvent};
use super::streams::{StreamOut, StreamsConfig, TlsStreams};
use crate::capture::socket::{SocketEvent, SocketEventKind};

const MS: u64 = 1_000_000;

#[derive(Default)]
struct Out {
    batch: SegmentBatch,
    sockets: Vec<SocketEvent>,
}

impl StreamOut for Out {
    fn segment(&mut self, seg: &Segment<'_>) {
        self.batch.push(seg);
    }
    fn socket_event(&mut self, ev: SocketEvent) {
        self.sockets.push(ev);
    }
}

impl Out {
    fn calls(&self) -> Vec<LlmCall> {
        let mut p = Pipeline::new(PipelineConfig::default());
        let mut calls = Vec::new();
        for seg in self.batch.iter() {
            p.push(&seg, &mut |c| calls.push(c));
        }
        p.finish(&mut |c| calls.push(c));
        calls
    }
}

const REQUEST: &[u8] = b"POST /api/chat HTTP/1.1\r\nHost: ollama.com\r\nContent-Type: application/json\r\nContent-Length: 78\r\n\r\n{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}";
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";
const CHUNK1: &[u8] =
    b"{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"done\":false}\n";
const CHUNK2: &[u8] = b"{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":7,\"eval_count\":3}\n";

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// The plaintext of one streamed call as the client end sees it: (what, bytes, ms).
fn client_view() -> Vec<(Io, Vec<u8>, u64)> {
    let mut body = HEAD.to_vec();
    body.extend(chunked(CHUNK1));
    vec![
        (Io::Wrote, REQUEST.to_vec(), 0),
        (Io::Read, body, 50),
        (Io::Read, chunked(CHUNK2), 60),
        (Io::Read, b"0\r\n\r\n".to_vec(), 61),
    ]
}

const CLIENT: &str = "10.0.0.5:41000";
const SERVER: &str = "34.36.133.15:443";

fn session(pid: u32) -> SessionId {
    SessionId { pid, conn: 0xabc0 + u64::from(pid) }
}

fn flow_event(s: SessionId, end: End, ts: u64) -> TlsEvent {
    let (c, srv): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let (local, remote) = match end {
        End::Client => (c, srv),
        End::Server => (srv, c),
    };
    TlsEvent::Flow(SessionFlow {
        session: s,
        ts: Timestamp(ts),
        library: Some(TlsLibrary::Go),
        end,
        local,
        remote,
        cgroup_id: Some(77),
        comm: "client".into(),
    })
}

/// Feeds `view` (the client's, or the server's when `end` is `Server`) as records of `s`.
fn feed(streams: &mut TlsStreams, out: &mut Out, s: SessionId, end: End, view: &[(Io, Vec<u8>, u64)], t0: u64) {
    feed_from(streams, out, s, end, view, t0, &mut [0; 2]);
}

/// [`feed`] from stream positions `pos` (updated).
fn feed_from(
    streams: &mut TlsStreams,
    out: &mut Out,
    s: SessionId,
    end: End,
    view: &[(Io, Vec<u8>, u64)],
    t0: u64,
    pos: &mut [u64; 2],
) {
    for (io, data, ms) in view {
        let io = match end {
            End::Client => *io,
            End::Server => match io {
                Io::Wrote => Io::Read,
                Io::Read => Io::Wrote,
            },
        };
        let p = Plaintext {
            session: s,
            tid: s.pid,
            ts: Timestamp(t0 + ms * MS),
            io,
            pos: pos[io.index()],
            peer_pos: pos[io.index() ^ 1],
            library: Some(TlsLibrary::Go),
            data,
            missing: 0,
        };
        pos[io.index()] += data.len() as u64;
        streams.plaintext(&p, out);
    }
}

fn check_call(calls: &[LlmCall]) {
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let c = &calls[0];
    assert_eq!(c.url_scheme(), "https");
    assert_eq!(c.meta.tls, Some(TlsLibrary::Go));
    assert_eq!(c.flow, FlowKey { client: CLIENT.parse().unwrap(), server: SERVER.parse().unwrap() });
    assert_eq!((c.response.input_tokens, c.response.output_tokens), (Some(7), Some(3)), "{c:#?}");
    assert!(c.incomplete.is_empty(), "{:?}", c.incomplete);
}

#[test]
fn records_before_the_socket_wait_then_make_one_exact_https_call() {
    let t0 = 1_800_000_000_000_000_000;
    let mut streams = TlsStreams::new(StreamsConfig::default());
    let mut out = Out::default();
    let s = session(1);
    // A memory BIO: the request is written before its socket is known.
    let mut pos = [0; 2];
    feed_from(&mut streams, &mut out, s, End::Client, &client_view()[..1], t0, &mut pos);
    assert!(out.batch.is_empty(), "held until the socket is known");
    assert!(streams.event(flow_event(s, End::Client, t0 + MS), &mut out).is_none());
    feed_from(&mut streams, &mut out, s, End::Client, &client_view()[1..], t0, &mut pos);
    streams.event(TlsEvent::Closed { session: s, ts: Timestamp(t0 + 70 * MS), local_first: Some(true) }, &mut out);
    let segs: Vec<Segment<'_>> = out.batch.iter().collect();
    assert!(segs[0].flags.syn() && segs[0].dir == Direction::ToServer && segs[0].ts == Timestamp(t0));
    assert!(segs.last().unwrap().flags.fin(), "ends with FINs");
    assert_eq!(out.sockets.len(), 1);
    let ev = &out.sockets[0];
    assert_eq!((ev.kind, ev.pid, ev.cgroup_id), (SocketEventKind::Connect, 1, Some(77)));
    let calls = out.calls();
    check_call(&calls);
    assert_eq!(calls[0].times.request_start, Timestamp(t0), "the request's write time");
    let st = streams.stats();
    assert_eq!((st.connections, st.duplicate_bytes, st.unresolved_bytes), (1, 0, 0));
}

#[test]
fn both_ends_probed_make_one_call_and_the_wire_is_dropped() {
    let t0 = 1_800_000_000_000_000_000;
    let mut streams = TlsStreams::new(StreamsConfig::default());
    let mut out = Out::default();
    let (client, server) = (session(1), session(2));
    streams.event(flow_event(client, End::Client, t0), &mut out);
    streams.event(flow_event(server, End::Server, t0), &mut out);
    feed(&mut streams, &mut out, client, End::Client, &client_view(), t0);
    feed(&mut streams, &mut out, server, End::Server, &client_view(), t0);
    check_call(&out.calls());
    let flow = FlowKey { client: CLIENT.parse().unwrap(), server: SERVER.parse().unwrap() };
    assert!(streams.owns(&flow), "the ciphertext of the connection is not decoded");
    assert!(!streams.owns(&FlowKey { client: "10.0.0.5:41001".parse().unwrap(), server: flow.server }));
    let st = streams.stats();
    assert_eq!((st.duplicate_sessions, st.wire_segments_dropped), (1, 1));
    assert_eq!(st.duplicate_bytes, client_view().iter().map(|(_, d, _)| d.len() as u64).sum::<u64>());
}

#[test]
fn the_server_end_alone_orients_the_connection_too() {
    let t0 = 1_800_000_000_000_000_000;
    let mut streams = TlsStreams::new(StreamsConfig::default());
    let mut out = Out::default();
    let s = session(3);
    streams.event(flow_event(s, End::Server, t0), &mut out);
    feed(&mut streams, &mut out, s, End::Server, &client_view(), t0);
    check_call(&out.calls());
    assert!(out.sockets.is_empty(), "a server's process comes from its listening socket");
}

#[test]
fn records_that_never_get_a_socket_are_bounded_and_counted() {
    let t0 = 1_800_000_000_000_000_000;
    let config = StreamsConfig { max_held_per_session: 200, ..StreamsConfig::default() };
    let mut streams = TlsStreams::new(config);
    let mut out = Out::default();
    let s = session(4);
    let view = client_view();
    feed(&mut streams, &mut out, s, End::Client, &view, t0);
    // Beyond the per-session bound: the response's two large records are dropped, the request
    // and the last five bytes wait.
    let over = (view[1].1.len() + view[2].1.len()) as u64;
    assert_eq!(streams.stats().unresolved_bytes, over);
    streams.expire(Timestamp(t0 + 3_000 * MS));
    assert_eq!(streams.stats().unresolved_bytes, over + REQUEST.len() as u64 + 5, "they waited too long");
    assert!(out.batch.is_empty());
    // Its socket comes after all: a connection with a gap where the bytes were.
    streams.event(flow_event(s, End::Client, t0 + 3_001 * MS), &mut out);
    assert_eq!(streams.stats().connections, 1);
}

#[test]
fn an_idle_session_is_forgotten_and_the_table_is_bounded() {
    let t0 = 1_800_000_000_000_000_000;
    let config = StreamsConfig { max_sessions: 2, ..StreamsConfig::default() };
    let mut streams = TlsStreams::new(config);
    let mut out = Out::default();
    for pid in 1..=3 {
        feed(&mut streams, &mut out, session(pid), End::Client, &client_view()[..1], t0 + u64::from(pid) * MS);
    }
    assert_eq!(streams.sessions(), 2);
    assert_eq!(streams.stats().evicted_sessions, 1);
    assert_eq!(streams.stats().unresolved_bytes, REQUEST.len() as u64);
}

/// An SDK stops reading once the stream says it is done (`"done":true`, `[DONE]`) and closes:
/// the chunked body's last bytes stay unread in the library. From the client's side the call
/// is complete — not cancelled, not cut.
#[test]
fn a_client_that_stops_at_the_streams_own_end_made_a_complete_call() {
    let t0 = 1_800_000_000_000_000_000;
    let mut streams = TlsStreams::new(StreamsConfig::default());
    let mut out = Out::default();
    let s = session(5);
    streams.event(flow_event(s, End::Client, t0), &mut out);
    let view = client_view();
    feed(&mut streams, &mut out, s, End::Client, &view[..3], t0);
    streams.event(TlsEvent::Closed { session: s, ts: Timestamp(t0 + 90 * MS), local_first: Some(true) }, &mut out);
    let calls = out.calls();
    check_call(&calls);
    assert!(calls[0].error.is_none(), "{:?}", calls[0].error);
    assert_eq!(calls[0].times.end, Timestamp(t0 + 60 * MS), "ends with its last byte read, not at the close");
}
