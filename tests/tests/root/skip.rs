//! Bodies the pipeline only counts are not copied into the ring buffer (issue 17): a blob
//! upload and a large answer no decoder reads, traced with the skip on, give spans exact in
//! size, times and status, and the kernel's counters say their bytes were reported by length,
//! not copied.

use std::time::Duration;

use super::check::{self, attr_u64, check_exact};
use super::harness::{Standin, Tracer, serial};
use super::live::{args, ebpf_missing, port_args};

const UPLOAD: u64 = 256 << 20;
const ANSWER: u64 = 64 << 20;
/// Longer than one skip range (`tracer_common::MAX_SKIP_BYTES`, 1.5 GiB): the kernel moves on
/// to the next range itself.
const LONG_UPLOAD: u64 = (3 << 29) + (128 << 20);

#[test]
fn ebpf_skipped_bodies_keep_spans_exact() {
    require_ebpf!("ebpf_skipped_bodies_keep_spans_exact");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let addr = standin.addrs[0];
    // The answer comes from bench-traffic's own server on a second traced port.
    let bulk_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The first bytes of each body reach the ring before the daemon has read its head and
    // named it (at ~3 GB/s, several MB a millisecond on a busy machine): a ring that holds
    // that start keeps this test about exactness, not about how fast this machine's cores
    // come free (docs/benchmarks.md, cost).
    let mut a = args(&["--capture", "ebpf", "--ring-buffer-mb", "128", "--port", &bulk_port.to_string()]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("skip", &a);

    let up = testkit::traffic::upload(addr, UPLOAD).expect("upload");
    assert_eq!(up.status, "HTTP/1.1 201 Created");
    // The body's records woke nobody (tracer-ebpf's `quiet_flags`); the answer's record must
    // still be read now, with the tracer running, not when it stops.
    let early = tracer.wait_spans(1, Duration::from_secs(3));
    assert!(
        early.iter().any(|sp| check::client_port(sp) == u64::from(up.client_port)),
        "no span of the upload 3 s after its answer, while the tracer ran"
    );
    let long = testkit::traffic::upload(addr, LONG_UPLOAD).expect("long upload");
    assert_eq!(long.status, "HTTP/1.1 201 Created");
    let got = testkit::traffic::bulk(bulk_port, ANSWER).expect("bulk answer");
    assert_eq!(got.bytes, ANSWER);
    let truth = standin.truth(2);
    tracer.wait_spans(3, Duration::from_secs(10));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "exit status {}", fin.status);
    let s = &fin.summary;

    let blob = fin.spans.iter().find(|sp| check::client_port(sp) == u64::from(up.client_port)).expect("blob span");
    let t = check::truth_of(&truth, blob).expect("the stand-in's record of the upload");
    check_exact(blob, t, "blob upload, skipped");
    assert_eq!(attr_u64(blob, "http.request.body.size"), Some(UPLOAD), "{}", check::brief(blob));
    let long_blob =
        fin.spans.iter().find(|sp| check::client_port(sp) == u64::from(long.client_port)).expect("long blob span");
    let t = check::truth_of(&truth, long_blob).expect("the stand-in's record of the long upload");
    check_exact(long_blob, t, "long blob upload, skipped");
    assert_eq!(attr_u64(long_blob, "http.request.body.size"), Some(LONG_UPLOAD), "{}", check::brief(long_blob));
    let answer = fin.spans.iter().find(|sp| attr_u64(sp, "http.response.body.size") == Some(ANSWER));
    let answer = answer.unwrap_or_else(|| panic!("no span of the {ANSWER}-byte answer:\n{:#?}", fin.spans));
    assert_eq!(attr_u64(answer, "http.response.status_code"), Some(200));
    assert!(!check::incomplete(answer), "{}", check::brief(answer));

    // Every body byte was either copied or reported by length, and most went by length. The
    // uploads' bodies were named by the kernel from their heads, so all of them but the first
    // packet's share went by length (the long one's past its first range too); the answer's start was copied until the daemon named it (how much
    // depends on how soon a core is free: 10 MB on an idle machine, up to the whole 64 MiB
    // answer at load 10).
    let skipped = s.skipped_bytes.expect("kernel line in the summary");
    let submitted = s.bytes_submitted.expect("kernel line in the summary");
    assert_eq!(s.blob_skips_named, Some(2), "the kernel names the blob uploads:\n{}", s.text);
    assert!(skipped >= UPLOAD + LONG_UPLOAD - (2 << 20), "{skipped} bytes skipped:\n{}", s.text);
    assert!(skipped + submitted >= UPLOAD + LONG_UPLOAD + ANSWER, "bytes neither copied nor skipped:\n{}", s.text);
    assert_eq!((s.kernel_drops, s.gaps, s.incomplete), (0, 0, 0), "{}", s.text);
    println!(
        "skip: {skipped} body bytes in {} packets reported by length, {submitted} bytes copied; upload {:.0} MB/s",
        s.skipped_packets.unwrap_or(0),
        up.mb_per_s
    );
}
