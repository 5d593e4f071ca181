use std::net::SocketAddr;

use super::*;
use crate::segment::Timestamp;

const C: Direction = Direction::ToServer;
const S: Direction = Direction::ToClient;

enum Step<'a> {
    Data(Direction, &'a [u8]),
    /// Data whose sender had received `peer` bytes of the other stream.
    DataAck(Direction, &'a [u8], u64),
    Gap(Direction, u64),
    End(Direction),
    Close(CloseReason),
}

/// Runs steps on one connection (timestamps 1, 2, 3, … per step) and renders events as text.
fn run(handshake: bool, steps: &[Step<'_>]) -> (Vec<String>, HttpStats) {
    let (lines, stats, _) = run_ends(handshake, steps);
    (lines, stats)
}

/// [`run`], plus each exchange's body sizes as sent (request, response) from its end.
fn run_sized(handshake: bool, steps: &[Step<'_>]) -> (Vec<String>, HttpStats, Vec<(u64, u64)>) {
    let (lines, stats, ends) = run_ends(handshake, steps);
    (lines, stats, ends.iter().map(|e| (e.request_body_bytes, e.response_body_bytes)).collect())
}

/// [`run`], plus how each exchange ended.
fn run_ends(handshake: bool, steps: &[Step<'_>]) -> (Vec<String>, HttpStats, Vec<ExchangeEnd>) {
    let mut t = HttpTracker::new(HttpConfig::default());
    let mut ends = Vec::new();
    let mut lines = Vec::new();
    let mut bodies: FxHashMap<ExchangeId, Vec<u8>> = FxHashMap::default();
    let flow = FlowKey {
        client: "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
        server: "127.0.0.1:11434".parse::<SocketAddr>().unwrap(),
    };
    let mut pos = [0u64; 2];
    {
        let mut sink = |ev: HttpEvent<'_>| match ev {
            HttpEvent::Request { id, ts, head, .. } => {
                lines.push(format!("req {id} {} {} @{}", head.method, head.path, ts.0))
            }
            HttpEvent::RequestBody { id, data, .. } => bodies.entry(id).or_default().extend_from_slice(data),
            HttpEvent::RequestEnd { id, ts } => {
                let b = bodies.remove(&id).unwrap_or_default();
                lines.push(format!("reqend {id} {:?} @{}", String::from_utf8_lossy(&b), ts.0))
            }
            HttpEvent::Interim { id, status, .. } => lines.push(format!("interim {id} {status}")),
            HttpEvent::Response { id, ts, head, .. } => lines.push(format!("resp {id} {} @{}", head.status, ts.0)),
            HttpEvent::ResponseBody { id, data, .. } => {
                bodies.entry(id + 1_000_000).or_default().extend_from_slice(data)
            }
            HttpEvent::BodyGap { id, dir, len } => lines.push(format!("bodygap {id} {dir:?} {len}")),
            HttpEvent::BodyRejoined { id, dir, ts } => lines.push(format!("rejoined {id} {dir:?} @{}", ts.0)),
            HttpEvent::Undecodable { id, dir } => lines.push(format!("undecodable {id} {dir:?}")),
            HttpEvent::End { id, ts, end } => {
                ends.push(end);
                let b = bodies.remove(&(id + 1_000_000)).unwrap_or_default();
                lines.push(format!(
                    "end {id} {:?} {:?} @{} gap={}",
                    end.outcome,
                    String::from_utf8_lossy(&b),
                    ts.0,
                    end.response_gap_bytes
                ))
            }
        };
        t.push(StreamEvent::Open { conn: 1, flow, ts: Timestamp(0), handshake }, &mut sink);
        for (i, step) in steps.iter().enumerate() {
            let ts = Timestamp(i as u64 + 1);
            let ev = match *step {
                Step::Data(dir, data) | Step::DataAck(dir, data, _) => {
                    let peer_pos = match *step {
                        Step::DataAck(_, _, p) => Some(p),
                        _ => None,
                    };
                    let p = pos[dir.index()];
                    pos[dir.index()] += data.len() as u64;
                    StreamEvent::Data { conn: 1, dir, ts, pos: p, peer_pos, data, meta: CaptureMeta::default() }
                }
                Step::Gap(dir, len) => {
                    let p = pos[dir.index()];
                    pos[dir.index()] += len;
                    StreamEvent::Gap { conn: 1, dir, ts, pos: p, len }
                }
                Step::End(dir) => StreamEvent::End { conn: 1, dir, ts },
                Step::Close(reason) => StreamEvent::Close { conn: 1, ts, reason },
            };
            t.push(ev, &mut sink);
        }
    }
    (lines, t.stats().clone(), ends)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn content_codings_are_undone_here_and_bodies_sized_as_sent() {
    let body = gzip(br#"{"model":"m","messages":[]}"#);
    let reply = gzip(b"{\"done\":true}\n");
    let mut req =
        format!("POST /api/chat HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    req.extend_from_slice(&body);
    let head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (first, rest) = reply.split_at(7);
    let chunk = |d: &[u8]| [format!("{:x}\r\n", d.len()).into_bytes(), d.to_vec(), b"\r\n".to_vec()].concat();
    let (c1, c2) = (chunk(first), [chunk(rest), b"0\r\n\r\n".to_vec()].concat());
    let (lines, _, sizes) = run_sized(
        true,
        &[
            Step::Data(C, &req),
            Step::Data(S, head),
            Step::Data(S, &c1),
            Step::Data(S, &c2),
            // An unknown coding: said once, its bytes not handed on, its size still counted.
            Step::Data(
                C,
                b"POST /api/embed HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\n\x0b\x01\x80x",
            ),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
        ],
    );
    assert_eq!(
        lines,
        vec![
            "req 1 POST /api/chat @1",
            "reqend 1 \"{\\\"model\\\":\\\"m\\\",\\\"messages\\\":[]}\" @1",
            "resp 1 200 @2",
            "end 1 Complete \"{\\\"done\\\":true}\\n\" @4 gap=0",
            "req 2 POST /api/embed @5",
            "undecodable 2 ToServer",
            "reqend 2 \"\" @5",
            "resp 2 200 @6",
            "end 2 Complete \"{}\" @6 gap=0",
        ]
    );
    assert_eq!(sizes, vec![(body.len() as u64, reply.len() as u64), (4, 2)]);
}

#[test]
fn a_corrupt_coded_body_is_said_once_and_sized_as_sent() {
    let bad = b"\x1f\x8b\x08\x00garbage-not-deflate";
    let mut resp =
        format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", bad.len()).into_bytes();
    resp.extend_from_slice(bad);
    let (lines, _, sizes) = run_sized(true, &[Step::Data(C, b"GET /api/tags HTTP/1.1\r\n\r\n"), Step::Data(S, &resp)]);
    assert_eq!(
        lines,
        vec![
            "req 1 GET /api/tags @1",
            "reqend 1 \"\" @1",
            "resp 1 200 @2",
            "undecodable 1 ToClient",
            "end 1 Complete \"\" @2 gap=0"
        ]
    );
    assert_eq!(sizes, vec![(0, bad.len() as u64)]);
}

#[test]
fn keep_alive_content_length_and_chunked() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel"),
            Step::Data(C, b"lo"),
            Step::Data(
                S,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            Step::Data(S, b"6\r\n{\"a\":1\r\n"),
            Step::Data(S, b"2\r\n}\n\r\n0\r\n\r\n"),
            Step::Data(C, b"GET /api/tags HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
            Step::Close(CloseReason::Fin),
        ],
    );
    assert_eq!(
        lines,
        vec![
            "req 1 POST /api/chat @1",
            "reqend 1 \"hello\" @2",
            "resp 1 200 @3",
            "end 1 Complete \"{\\\"a\\\":1}\\n\" @5 gap=0",
            "req 2 GET /api/tags @6",
            "reqend 2 \"\" @6",
            "resp 2 200 @7",
            "end 2 Complete \"{}\" @7 gap=0",
        ]
    );
    assert_eq!((stats.requests, stats.complete, stats.parse_errors), (2, 2, 0));
}

#[test]
fn pipelined_requests_pair_in_order() {
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n"),
            Step::Data(
                S,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nB",
            ),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        ],
    );
    assert_eq!(
        lines,
        vec![
            "req 1 GET /a @1",
            "reqend 1 \"\" @1",
            "req 2 GET /b @1",
            "reqend 2 \"\" @1",
            "req 3 HEAD /c @1",
            "reqend 3 \"\" @1",
            "resp 1 200 @2",
            "end 1 Complete \"A\" @2 gap=0",
            "resp 2 404 @2",
            "end 2 Complete \"B\" @2 gap=0",
            "resp 3 200 @3",
            "end 3 Complete \"\" @3 gap=0",
        ]
    );
}

#[test]
fn expect_continue_interim_response() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"POST /api/blobs/sha256:1 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 100 Continue\r\n\r\n"),
            Step::Data(C, b"abc"),
            Step::Data(S, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ],
    );
    assert_eq!(
        lines,
        vec![
            "req 1 POST /api/blobs/sha256:1 @1",
            "interim 1 100",
            "reqend 1 \"abc\" @3",
            "resp 1 201 @4",
            "end 1 Complete \"\" @4 gap=0"
        ]
    );
    assert_eq!(stats.interim, 1);
}

#[test]
fn no_body_statuses_and_close_delimited() {
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.0\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
            Step::Data(S, b"HTTP/1.0 200 OK\r\n\r\nstream"),
            Step::Data(S, b"ing"),
            Step::End(S),
        ],
    );
    assert_eq!(
        &lines[6..],
        [
            "resp 1 204 @2",
            "end 1 Complete \"\" @2 gap=0",
            "resp 2 304 @2",
            "end 2 Complete \"\" @2 gap=0",
            "resp 3 200 @3",
            "end 3 Complete \"streaming\" @4 gap=0"
        ]
    );
}

#[test]
fn reset_mid_response_truncates() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"POST /api/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"),
            Step::Close(CloseReason::Reset { by: S }),
        ],
    );
    assert_eq!(lines.last().unwrap(), "end 1 Truncated \"ab\" @3 gap=0");
    assert_eq!(stats.truncated, 1);
}

#[test]
fn gap_inside_known_length_stays_in_step() {
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, b"GET / HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n01"),
            Step::Gap(S, 5),
            Step::Data(S, b"789\r\n0\r\n\r\n"),
        ],
    );
    assert_eq!(lines.last().unwrap(), "end 1 Complete \"01789\" @4 gap=5");
}

#[test]
fn a_gap_that_takes_the_end_of_a_body_ends_it_where_it_was_last_seen() {
    let req1 = b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, req1),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
            Step::Gap(S, 40), // lost the rest of the response, including its terminator
            Step::Data(C, b"GET /api/ps HTTP/1.1\r\n\r\n"),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", (req1.len() + 24) as u64),
        ],
    );
    // The next response's status line says the first body ended in the gap: complete, ending
    // at its last byte seen (@2), not when that was found out.
    assert_eq!(
        &lines[2..],
        [
            "resp 1 200 @2",
            "bodygap 1 ToClient 40",
            "req 2 GET /api/ps @4",
            "reqend 2 \"\" @4",
            "end 1 Complete \"abc\" @2 gap=40",
            "resp 2 200 @5",
            "end 2 Complete \"{}\" @5 gap=0",
        ]
    );
    assert_eq!((stats.parse_errors, stats.rejoins), (0, 1));
}

/// One HTTP chunk carrying `payload`.
fn chunk(payload: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", payload.len()).into_bytes(), payload.to_vec(), b"\r\n".to_vec()].concat()
}

const NDJSON_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn a_gap_that_takes_whole_chunks_is_rejoined_at_the_next_one() {
    let (c1, c2, c3) = (chunk(b"{\"a\":1}\n"), chunk(b"{\"b\":2}\n"), chunk(b"{\"done\":true}\n"));
    let (lines, stats, ends) = run_ends(
        true,
        &[
            Step::Data(C, b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            Step::Data(S, &[NDJSON_HEAD, &c1].concat()),
            Step::Gap(S, c2.len() as u64),
            Step::Data(S, &c3),
            Step::Data(S, b"0\r\n\r\n"),
        ],
    );
    let gap = c2.len();
    assert_eq!(
        &lines[2..],
        [
            "resp 1 200 @2".to_string(),
            format!("bodygap 1 ToClient {gap}"),
            "rejoined 1 ToClient @4".to_string(),
            format!("end 1 Complete \"{{\\\"a\\\":1}}\\n{{\\\"done\\\":true}}\\n\" @5 gap={gap}"),
        ]
    );
    assert_eq!((stats.rejoins, stats.resync_skipped_bytes, stats.complete), (1, 0, 1));
    // How many chunks the gap took and how many body bytes: the framing does not tell.
    assert_eq!((ends[0].response_gap_chunks, ends[0].response_body_partial), (None, true));
}

#[test]
fn a_rejoin_passes_over_the_rest_of_a_cut_chunk_and_what_does_not_verify() {
    let (c1, c2, c3) = (chunk(b"{\"a\":1}\n"), chunk(b"{\"b\":22}\n"), chunk(b"{\"done\":true}\n"));
    // The gap ends inside c2's size line: "a\r\n{..." is no chunk of 10 bytes here.
    let rest = &c2[1..];
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            Step::Data(S, &[NDJSON_HEAD, &c1, &c1[..3]].concat()),
            Step::Gap(S, (c1.len() - 3 + 1) as u64),
            Step::Data(S, &[rest, &c3[..4]].concat()),
            Step::Data(S, &[&c3[4..], b"0\r\n\r\n".as_slice()].concat()),
        ],
    );
    assert_eq!(lines[lines.len() - 2], "rejoined 1 ToClient @4");
    assert!(lines.last().unwrap().starts_with("end 1 Complete \"{\\\"a\\\":1}\\n{\\\"d"), "{lines:?}");
    let gap = c1.len() - 3 + 1;
    assert!(lines.last().unwrap().ends_with(&format!("@5 gap={gap}")), "{lines:?}");
    assert_eq!((stats.rejoins, stats.resync_skipped_bytes), (1, rest.len() as u64));
}

#[test]
fn a_gap_inside_one_chunk_counts_that_chunk() {
    let payload = b"{\"a\":\"0123456789\"}\n";
    let c1 = chunk(payload);
    let (lines, _, ends) = run_ends(
        true,
        &[
            Step::Data(C, b"GET /api/ps HTTP/1.1\r\n\r\n"),
            Step::Data(S, &[NDJSON_HEAD, &c1[..10]].concat()),
            Step::Gap(S, 2),
            Step::Data(S, &c1[12..15]),
            Step::Gap(S, 3),
            Step::Data(S, &[&c1[18..], b"0\r\n\r\n".as_slice()].concat()),
        ],
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("bodygap")).count(), 2);
    assert!(!lines.iter().any(|l| l.starts_with("rejoined")), "in step all along");
    let end = &ends[0];
    assert_eq!((end.outcome, end.response_gap_bytes, end.response_gap_chunks), (Outcome::Complete, 5, Some(1)));
    // The bytes missed count towards the body's size: exactly as sent.
    assert_eq!((end.response_body_bytes, end.response_body_partial), (payload.len() as u64, false));
}

#[test]
fn a_gap_past_the_end_of_a_sized_body_ends_it_and_the_rest_belongs_to_the_next() {
    let req = b"POST /api/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    let second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    let (lines, _, ends) = run_ends(
        true,
        &[
            Step::Data(C, req),
            Step::Data(C, b"GET /api/ps HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"),
            // The last 6 bytes of the first body and the second response's head.
            Step::Gap(S, 6 + second.len() as u64),
            Step::Data(S, b"{}"),
            Step::Close(CloseReason::Fin),
        ],
    );
    assert_eq!(
        lines[4..],
        [
            "resp 1 200 @3",
            "bodygap 1 ToClient 6",
            "end 1 Complete \"0123\" @3 gap=6",
            "end 2 NoResponse \"\" @6 gap=38"
        ]
    );
    assert_eq!((ends[0].response_body_bytes, ends[0].response_body_partial), (10, false));
    // The second exchange lost its whole head: no response, its gap counted.
    assert_eq!((ends[1].outcome, ends[1].response_gap_bytes), (Outcome::NoResponse, second.len() as u64));
}

#[test]
fn a_gap_in_a_chunked_request_body_leaves_the_response_whole() {
    let head = b"POST /api/chat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (b1, b2) = (chunk(b"{\"model\":\"m\","), chunk(b"\"messages\":[]}"));
    let (lines, stats, ends) = run_ends(
        true,
        &[
            Step::Data(C, &[head.as_slice(), &b1].concat()),
            Step::Gap(C, b2.len() as u64 - 3),
            Step::Data(C, &[&b2[b2.len() - 3..], b"0\r\n\r\n".as_slice()].concat()),
            Step::Data(S, &[NDJSON_HEAD, &chunk(b"{\"done\":true}\n"), b"0\r\n\r\n"].concat()),
        ],
    );
    assert_eq!(
        lines,
        [
            "req 1 POST /api/chat @1",
            "bodygap 1 ToServer 16",
            "rejoined 1 ToServer @3",
            "reqend 1 \"{\\\"model\\\":\\\"m\\\",\" @3",
            "resp 1 200 @4",
            "end 1 Complete \"{\\\"done\\\":true}\\n\" @4 gap=0",
        ]
    );
    assert_eq!((stats.rejoins, ends[0].request_gap_bytes, ends[0].request_body_partial), (1, 16, true));
}

#[test]
fn a_gap_in_a_compressed_body_stops_its_decoding() {
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, b"GET /api/ps HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n\x1f\x8b"),
            Step::Gap(S, 10),
            Step::Data(S, &[0u8; 28]),
        ],
    );
    assert_eq!(lines[3..], ["undecodable 1 ToClient", "bodygap 1 ToClient 10", "end 1 Complete \"\" @4 gap=10"]);
}

#[test]
fn bytes_held_to_rejoin_a_body_are_bounded_with_unfinished_heads() {
    let mut t = HttpTracker::new(HttpConfig { max_partial_heads: 100, ..HttpConfig::default() });
    let flow = FlowKey {
        client: "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
        server: "127.0.0.1:11434".parse::<SocketAddr>().unwrap(),
    };
    let mut events = Vec::new();
    let mut sink = |ev: HttpEvent<'_>| events.push(format!("{ev:?}"));
    let data = |dir, ts, pos, data| StreamEvent::Data {
        conn: 1,
        dir,
        ts: Timestamp(ts),
        pos,
        peer_pos: None,
        data,
        meta: CaptureMeta::default(),
    };
    t.push(StreamEvent::Open { conn: 1, flow, ts: Timestamp(0), handshake: true }, &mut sink);
    let req = b"GET /api/ps HTTP/1.1\r\n\r\n";
    t.push(data(C, 1, 0, req), &mut sink);
    let first = [NDJSON_HEAD, b"5\r\nab".as_slice()].concat();
    t.push(data(S, 2, 0, &first), &mut sink);
    t.push(StreamEvent::Gap { conn: 1, dir: S, ts: Timestamp(3), pos: 99, len: 10 }, &mut sink);
    // A candidate chunk of 0xff bytes: held until its end arrives.
    let candidate = [b"ff\r\n".as_slice(), &[b'x'; 150]].concat();
    t.push(data(S, 4, 109, &candidate), &mut sink);
    assert_eq!(t.partial_head_bytes(), 154);
    t.expire(Timestamp(5));
    assert_eq!(t.partial_head_bytes(), 0, "over the limit: dropped");
    assert_eq!(t.stats().head_evictions, 1);
}

#[test]
fn a_response_is_not_paired_with_a_request_before_requests_the_capture_lost() {
    // /a is seen; /b's request and /a's response are lost; /b's response must not pass for /a's.
    let a = b"POST /api/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    let b_len = 60u64;
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, a),
            Step::Gap(S, 100),
            Step::Gap(C, b_len),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB", a.len() as u64 + b_len),
        ],
    );
    assert_eq!(
        &lines[2..],
        ["end 1 NoResponse \"\" @1 gap=100", "req 2   @4", "resp 2 200 @4", "end 2 Complete \"B\" @4 gap=0",]
    );
    assert_eq!(stats.orphan_responses, 1);
    // Lost request bytes the server had not yet received when it answered change nothing.
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, a),
            Step::Gap(C, b_len),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA", a.len() as u64),
        ],
    );
    assert_eq!(&lines[2..], ["resp 1 200 @3", "end 1 Complete \"A\" @3 gap=0"]);
}

#[test]
fn lost_response_is_skipped_by_ack_position() {
    // The whole response to /a is missing; the response to /b must not be paired with /a.
    let a = b"GET /a HTTP/1.1\r\n\r\n";
    let (lines, _) = run(
        true,
        &[
            Step::Data(C, a),
            Step::Gap(S, 100),
            Step::Data(C, b"GET /b HTTP/1.1\r\n\r\n"),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB", (a.len() * 2) as u64),
        ],
    );
    // (The 100 lost bytes were /a's response: they count as its response gap.)
    assert_eq!(&lines[4..], ["end 1 NoResponse \"\" @1 gap=100", "resp 2 200 @4", "end 2 Complete \"B\" @4 gap=0"]);
}

#[test]
fn midstream_capture_skips_the_partial_call_and_follows_the_next() {
    let (lines, stats) = run(
        false,
        &[
            Step::Data(S, b"\"done\":false}\n\r\n5a\r\n{\"model\":\"x\"}\n"),
            Step::Data(S, b"\r\n0\r\n\r\n"),
            Step::Data(C, b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", 200),
        ],
    );
    assert_eq!(
        lines,
        ["req 1 POST /api/chat @3", "reqend 1 \"{}\" @3", "resp 1 200 @4", "end 1 Complete \"yes\" @4 gap=0"]
    );
    assert_eq!(stats.orphan_responses, 0);
}

/// A response to a request the capture did not see still ends an exchange (under an unseen
/// request), and the next request pairs with its own response.
#[test]
fn response_before_its_request_is_an_orphan() {
    let (lines, stats) = run(
        false,
        &[
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold"),
            Step::Data(C, b"GET /x HTTP/1.1\r\n\r\n"),
            Step::DataAck(S, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew", 19),
        ],
    );
    assert_eq!(stats.orphan_responses, 1);
    assert_eq!(
        lines,
        [
            "req 1   @1",
            "resp 1 200 @1",
            "end 1 Complete \"old\" @1 gap=0",
            "req 2 GET /x @2",
            "reqend 2 \"\" @2",
            "resp 2 200 @3",
            "end 2 Complete \"new\" @3 gap=0"
        ]
    );
}

#[test]
fn garbage_is_counted_and_skipped() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
            Step::Data(C, b"more noise\nGET /api/version HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
        ],
    );
    assert_eq!(stats.parse_errors, 1);
    assert_eq!(
        lines,
        ["req 1 GET /api/version @2", "reqend 1 \"\" @2", "resp 1 200 @3", "end 1 Complete \"{}\" @3 gap=0"]
    );
}

#[test]
fn unanswered_requests_end_at_close() {
    let (lines, stats) = run(true, &[Step::Data(C, b"GET /a HTTP/1.1\r\n\r\n"), Step::Close(CloseReason::CaptureEnd)]);
    assert_eq!(lines.last().unwrap(), "end 1 NoResponse \"\" @2 gap=0");
    assert_eq!(stats.no_response, 1);
}

#[test]
fn upgrade_makes_a_tunnel() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"),
            Step::Data(C, b"\x81\x85garbage"),
        ],
    );
    assert_eq!(lines.last().unwrap(), "end 1 Complete \"\" @2 gap=0");
    assert_eq!((stats.tunnels, stats.parse_errors), (1, 0));
}

#[test]
fn absurd_lengths_are_parse_errors_not_allocations() {
    let (_, stats) = run(
        true,
        &[
            Step::Data(C, b"POST /x HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n"),
            Step::Data(C, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"),
        ],
    );
    // (The second request begins a segment: found again after the first, and broken too.)
    assert_eq!(stats.parse_errors, 2);
    let long_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; 70_000]].concat();
    let (_, stats) = run(true, &[Step::Data(C, &long_head)]);
    assert_eq!(stats.parse_errors, 1);
}

/// Body bytes before the place chunked framing broke were handed on as the body: the search for
/// the next message starts at the break, not at the start of the piece, or a message quoted in
/// the body would be reported too (found by the `http` fuzz target).
#[test]
fn after_broken_chunked_framing_the_body_is_not_searched_again() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(C, b"GET /api/tags HTTP/1.1\r\n\r\n"),
            Step::Data(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n13\r\nHTTP/1.1 200 OK\r\n\r\nXX"),
            Step::Close(CloseReason::Fin),
        ],
    );
    assert_eq!(
        lines,
        vec![
            "req 1 GET /api/tags @1".to_string(),
            "reqend 1 \"\" @1".to_string(),
            "resp 1 200 @2".to_string(),
            "end 1 Truncated \"HTTP/1.1 200 OK\\r\\n\\r\\n\" @2 gap=0".to_string(),
        ]
    );
    assert_eq!((stats.responses, stats.resyncs, stats.resync_skipped_bytes), (1, 1, 2));
}

#[test]
fn after_broken_chunked_request_framing_the_body_is_not_searched_again() {
    let (lines, stats) = run(
        true,
        &[
            Step::Data(
                C,
                b"POST /api/chat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n12\r\nGET / HTTP/1.1\r\n\r\nXX",
            ),
            Step::Close(CloseReason::Fin),
        ],
    );
    assert_eq!(stats.requests, 1, "{lines:?}");
    assert_eq!(lines[0], "req 1 POST /api/chat @1");
}
