use super::*;

/// Records everything as lines like `.a[0].b = 1`, `.s = "text"`, `begin .x {`, `end .x } 2`.
#[derive(Default)]
struct Rec {
    lines: Vec<String>,
    cur: Vec<u8>,
    skip_paths: Vec<&'static str>,
    capture_paths: Vec<&'static str>,
}

impl JsonVisitor for Rec {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        let p = format!("{path:?}");
        self.lines.push(format!("begin {p} {kind:?}"));
        if self.skip_paths.contains(&p.as_str()) {
            Descend::Skip
        } else if self.capture_paths.contains(&p.as_str()) {
            Descend::Capture(10)
        } else {
            Descend::Enter
        }
    }
    fn end(&mut self, path: &Path<'_>, kind: Kind, len: u32) {
        self.lines.push(format!("end {path:?} {kind:?} {len}"));
    }
    fn scalar(&mut self, path: &Path<'_>, value: Scalar<'_>) {
        let v = match value {
            Scalar::Null => "null".to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Number(raw) => String::from_utf8_lossy(raw).into_owned(),
        };
        self.lines.push(format!("{path:?} = {v}"));
    }
    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        self.cur.extend_from_slice(part);
        if last {
            self.lines.push(format!("{path:?} = {:?}", String::from_utf8_lossy(&self.cur)));
            self.cur.clear();
        }
    }
    fn skipped(&mut self, path: &Path<'_>, kind: Kind, stats: SkipStats) {
        self.lines
            .push(format!("skipped {path:?} {kind:?} {} {} {}", stats.elements, stats.strings, stats.string_bytes));
    }
    fn captured(&mut self, path: &Path<'_>, kind: Kind, raw: &[u8], truncated: bool, stats: SkipStats) {
        self.lines.push(format!(
            "captured {path:?} {kind:?} {:?} {truncated} {}",
            String::from_utf8_lossy(raw),
            stats.elements
        ));
    }
}

fn scan_with(input: &[u8], rec: &mut Rec, opts: ScanOptions) -> Result<Progress, JsonError> {
    let mut s = JsonScanner::new(opts);
    let p = s.feed(input, rec)?;
    if p == Progress::NeedMore {
        s.finish(rec)?;
    }
    Ok(p)
}

fn lines(input: &str) -> Vec<String> {
    let mut rec = Rec::default();
    scan_with(input.as_bytes(), &mut rec, ScanOptions::default()).unwrap();
    rec.lines
}

/// Every split into two pieces, and byte-by-byte, gives the same events as one piece.
fn assert_split_invariant(input: &str, rec_proto: fn() -> Rec) {
    let whole = {
        let mut r = rec_proto();
        scan_with(input.as_bytes(), &mut r, ScanOptions::default()).unwrap();
        r.lines
    };
    let bytes = input.as_bytes();
    for cut in 0..=bytes.len() {
        let mut r = rec_proto();
        let mut s = JsonScanner::default();
        let mut done = false;
        for piece in [&bytes[..cut], &bytes[cut..]] {
            if !done && let Progress::Complete { .. } = s.feed(piece, &mut r).unwrap() {
                done = true;
            }
        }
        if !done {
            s.finish(&mut r).unwrap();
        }
        assert_eq!(r.lines, whole, "split at {cut}");
    }
    let mut r = rec_proto();
    let mut s = JsonScanner::default();
    for b in bytes {
        if s.is_complete() {
            break;
        }
        s.feed(std::slice::from_ref(b), &mut r).unwrap();
    }
    if !s.is_complete() {
        s.finish(&mut r).unwrap();
    }
    assert_eq!(r.lines, whole, "byte by byte");
}

#[test]
fn scalars_paths_and_lengths() {
    let got = lines(
        r#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":true,"n":-1.5e3,"x":null,"a":[1,[],{}]}"#,
    );
    assert_eq!(
        got,
        vec![
            "begin  Object",
            ".model = \"llama3.2\"",
            "begin .message Object",
            ".message.role = \"assistant\"",
            ".message.content = \"Hi\"",
            "end .message Object 2",
            ".done = true",
            ".n = -1.5e3",
            ".x = null",
            "begin .a Array",
            ".a[0] = 1",
            "begin .a[1] Array",
            "end .a[1] Array 0",
            "begin .a[2] Object",
            "end .a[2] Object 0",
            "end .a Array 3",
            "end  Object 6",
        ]
    );
}

#[test]
fn escapes_are_decoded() {
    let got = lines(r#"{"t":"\u003cthink\u003e a\"b\\c\/d\n\t😀 \ud83d\ude00 \ud800x"}"#);
    assert_eq!(got[1], ".t = \"<think> a\\\"b\\\\c/d\\n\\t😀 😀 \u{FFFD}x\"");
}

#[test]
fn split_anywhere_gives_the_same_events() {
    let doc = r#" {"model":"qwen3","message":{"role":"assistant","content":"a\u003cb\ud83d\ude00","tool_calls":[{"function":{"name":"f","arguments":{"x":[1,2.5e-3,true,false,null]}}}]},"done":false,"eval_count":12345} "#;
    assert_split_invariant(doc, Rec::default);
    assert_split_invariant("12345", Rec::default);
    assert_split_invariant(r#""top level string \u00e9""#, Rec::default);
    assert_split_invariant(
        r#"{"embeddings":[[0.1,-0.2,3e5],[1,2,3]],"context":[1,2,3,4],"s":["a\"]","b"],"keep":{"x":"}"}}"#,
        || Rec {
            skip_paths: vec![".embeddings[0]", ".embeddings[1]", ".context", ".s"],
            capture_paths: vec![".keep"],
            ..Default::default()
        },
    );
}

#[test]
fn skip_counts_elements_and_capture_keeps_raw_json() {
    let mut rec =
        Rec { skip_paths: vec![".e[0]", ".ctx", ".imgs"], capture_paths: vec![".opts", ".big"], ..Default::default() };
    scan_with(
        br#"{"e":[[1,2,3,4]],"ctx":[],"imgs":["aGk=","aGVsbG8="],"opts":{"a":[1]},"big":{"k":"0123456789"}}"#,
        &mut rec,
        ScanOptions::default(),
    )
    .unwrap();
    assert!(rec.lines.contains(&"skipped .e[0] Array 4 0 0".to_string()), "{:?}", rec.lines);
    assert!(rec.lines.contains(&"skipped .ctx Array 0 0 0".to_string()));
    assert!(rec.lines.contains(&"skipped .imgs Array 2 2 12".to_string()));
    assert!(rec.lines.contains(&"captured .opts Object \"{\\\"a\\\":[1]}\" false 1".to_string()));
    assert!(rec.lines.contains(&"captured .big Object \"{\\\"k\\\":\\\"0123\" true 1".to_string()));
}

#[test]
fn folded_keys_match_lower_case() {
    let mut rec = Rec::default();
    scan_with(
        br#"{"MODEL":"m","Options":{"Temperature":0.5}}"#,
        &mut rec,
        ScanOptions { fold_keys: true, max_depth: 0 },
    )
    .unwrap();
    assert!(rec.lines.contains(&".model = \"m\"".to_string()));
    assert!(rec.lines.contains(&".options.temperature = 0.5".to_string()));
}

#[test]
fn complete_reports_consumed_bytes() {
    let mut rec = Rec::default();
    let mut s = JsonScanner::default();
    assert_eq!(s.feed(b"{\"a\":1}\n{\"b\"", &mut rec).unwrap(), Progress::Complete { consumed: 7 });
    let mut s = JsonScanner::default();
    assert_eq!(s.feed(b"12 ", &mut rec).unwrap(), Progress::Complete { consumed: 2 });
}

#[test]
fn deep_nesting_is_skipped_not_tracked() {
    let doc = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut rec = Rec::default();
    let mut s = JsonScanner::new(ScanOptions { fold_keys: false, max_depth: 8 });
    assert!(matches!(s.feed(doc.as_bytes(), &mut rec).unwrap(), Progress::Complete { .. }));
    assert!(s.stack.capacity() <= 16);
}

#[test]
fn errors_name_the_offset() {
    let mut rec = Rec::default();
    let err = scan_with(br#"{"a":1,}"#, &mut rec, ScanOptions::default()).unwrap_err();
    assert_eq!(err, JsonError { offset: 7, kind: JsonErrorKind::Unexpected(b'}') });
    let err = scan_with(br#"{"a":tru"#, &mut Rec::default(), ScanOptions::default()).unwrap_err();
    assert_eq!(err.kind, JsonErrorKind::Truncated);
    let err = scan_with(br#"{"a":"\q"}"#, &mut Rec::default(), ScanOptions::default()).unwrap_err();
    assert_eq!(err.kind, JsonErrorKind::BadEscape);
    for bad in [&b"{\"a\" 1}"[..], b"[1 2]", b"{1:2}", b"nul!", b"[\"x\"}", b"}"] {
        assert!(scan_with(bad, &mut Rec::default(), ScanOptions::default()).is_err(), "{bad:?}");
    }
}

#[test]
fn str_acc_caps_and_counts() {
    let mut a = StrAcc::with_cap(4);
    a.push(b"ab");
    a.push("cdé".as_bytes());
    assert_eq!(a.bytes(), b"abcd");
    assert_eq!(a.total(), 6);
    assert!(a.truncated());
}

/// Collects string pieces as a visitor that converts each one to text would.
#[derive(Default)]
struct Lossy(String);

impl JsonVisitor for Lossy {
    fn string(&mut self, _path: &Path<'_>, part: &[u8], _last: bool) {
        self.0.push_str(&String::from_utf8_lossy(part));
    }
}

#[test]
fn string_pieces_never_cut_a_character() {
    let doc = "[\"é✓🙂\\u00e9x\", \"\u{10FFFF}\"]".as_bytes();
    for size in 1..=doc.len() {
        let mut s = JsonScanner::default();
        let mut v = Lossy::default();
        for piece in doc.chunks(size) {
            s.feed(piece, &mut v).unwrap();
        }
        assert_eq!(v.0, "é✓🙂éx\u{10FFFF}", "pieces of {size} bytes");
    }
    // Bytes that cannot complete a character are handed on as they are.
    let mut s = JsonScanner::default();
    let mut v = Lossy::default();
    s.feed(b"\"a\xe2\x9c", &mut v).unwrap();
    s.feed(b"b\"", &mut v).unwrap();
    assert_eq!(v.0, "a\u{FFFD}b");
}
