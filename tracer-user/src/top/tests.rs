//! `top` driven headlessly: known calls folded into the state, frames drawn into ratatui's
//! test backend, and the cells read back.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use super::render::{self, GENERATION, LOAD, PROMPT};
use super::screen::{Action, App, ModelSort, Screen};
use super::state::{MAX_CLIENTS, MAX_MODELS, RECENT, TopConfig, TopState};
use crate::report::Report;
use tracer_core::identity::{CallIdentity, Endpoint, ProcessInfo};
use tracer_core::llm::call::{CallError, ErrorKind, OllamaMetrics};
use tracer_core::llm::content::{ContentConfig, OutputContent};
use tracer_core::llm::{InFlightCall, LlmCall, Route};
use tracer_core::pipeline::InFlightSnapshot;
use tracer_core::segment::{FlowKey, Timestamp};

/// Capture time 0 of the tests: a whole second.
const T0: u64 = 1_767_225_600 * 1_000_000_000;
const MS: u64 = 1_000_000;

fn config() -> TopConfig {
    TopConfig { source: "test".into(), cold_start_ns: 500 * MS, content: None }
}

fn flow(port: u16) -> FlowKey {
    FlowKey { client: format!("127.0.0.1:{port}").parse().unwrap(), server: "127.0.0.1:11434".parse().unwrap() }
}

/// A streamed `/api/chat` call of `model` from client port `port`: starts at `start_ms`, first
/// output after `ttft_ms`, ends after `dur_ms`, with `tokens` out (10 in).
fn call(model: &str, port: u16, start_ms: u64, ttft_ms: u64, dur_ms: u64, tokens: u64) -> LlmCall {
    let mut c = LlmCall::for_test(Route::Chat);
    c.flow = flow(port);
    c.request.model = Some(model.into());
    c.request.stream = Some(true);
    let start = Timestamp(T0 + start_ms * MS);
    c.times.request_start = start;
    c.times.first_output = Some(Timestamp(start.0 + ttft_ms * MS));
    c.times.end = Timestamp(start.0 + dur_ms * MS);
    c.response.streamed = true;
    c.response.input_tokens = Some(10);
    c.response.output_tokens = Some(tokens);
    c.response.output_chunks = tokens;
    c.response.finish_reasons = vec!["stop".into()];
    c
}

fn with_phases(mut c: LlmCall, load_ms: u64, prompt_ms: u64, eval_ms: u64) -> LlmCall {
    c.response.ollama = OllamaMetrics {
        total_duration: Some((load_ms + prompt_ms + eval_ms) * MS),
        load_duration: (load_ms > 0).then_some(load_ms * MS),
        prompt_eval_count: Some(10),
        prompt_eval_duration: Some(prompt_ms * MS),
        eval_count: c.response.output_tokens,
        eval_duration: Some(eval_ms * MS),
        prompt_eval_cached_count: None,
    };
    c
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn draw(terminal: &mut Terminal<TestBackend>, app: &App) {
    terminal.draw(|f| render::draw(f, &app.screen, &app.view)).unwrap();
}

fn terminal(w: u16, h: u16) -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(w, h)).unwrap()
}

/// Each row of the buffer as text.
fn rows(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height).map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>()).collect()
}

fn row_with<'a>(rows: &'a [String], needle: &str) -> (usize, &'a String) {
    rows.iter()
        .enumerate()
        .find(|(_, r)| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in\n{}", rows.join("\n")))
}

fn count(row: &str, c: char) -> usize {
    row.chars().filter(|x| *x == c).count()
}

/// Twenty calls of `a` (TTFT 10, 20 … 200 ms), four ending in each of five seconds, two of
/// them errors; the state's clock then at the start of the sixth second.
fn twenty() -> TopState {
    let mut s = TopState::new(config());
    for i in 0..20u64 {
        // Ends 100 ms into second 1 + i/4.
        let start = (i / 4 + 1) * 1000 + 100 - 300;
        let mut c = call("a", 40_000, start, 10 * (i + 1), 300, 5);
        if i % 10 == 3 {
            c.status = Some(500);
            c.error = Some(CallError { kind: ErrorKind::Http(500), message: Some("boom".into()) });
        }
        s.record(&c);
    }
    s.set_in_flight(&InFlightSnapshot { now: Timestamp(T0 + 6000 * MS), ..Default::default() });
    s
}

#[test]
fn exact_quantiles_and_rates_from_known_calls() {
    let s = twenty();
    let a = s.model("a").unwrap();
    assert_eq!(a.calls, 20);
    assert_eq!(a.errors, 2);
    // Nearest rank of 20 values: p50 the 10th (100 ms), p95 the 19th (190 ms).
    assert_eq!(a.ttft.quantile(0.5), Some(0.1));
    assert_eq!(a.ttft.quantile(0.95), Some(0.19));
    // Seconds 1–5 (the five whole seconds before the current, 6th) hold all 20 calls.
    let r = s.rates();
    assert_eq!((r.calls, r.errors, r.tokens_in, r.tokens_out), (4.0, 0.4, 40.0, 20.0));
    let t = s.totals();
    assert_eq!((t.calls, t.errors, t.tokens_in, t.tokens_out), (20, 2, 200, 100));

    // A call in the current second is not in the rates yet; one second later the oldest
    // second has left the window.
    let mut s = s;
    s.record(&call("a", 40_000, 6100, 10, 100, 5));
    assert_eq!(s.rates().calls, 4.0);
    s.set_in_flight(&InFlightSnapshot { now: Timestamp(T0 + 7000 * MS), ..Default::default() });
    assert_eq!(s.rates().calls, (16.0 + 1.0) / 5.0);
}

#[test]
fn bounded_whatever_the_traffic() {
    let mut s = TopState::new(config());
    for i in 0..(MAX_MODELS as u64 + 10) {
        s.record(&call(&format!("m{i}"), 40_000, i, 5, 10, 1));
    }
    assert_eq!(s.models().count(), MAX_MODELS);
    assert_eq!(s.totals().untracked_model_calls, 10);
    assert_eq!(s.totals().calls, MAX_MODELS as u64 + 10);
    for i in 0..(MAX_CLIENTS as u64 + 5) {
        let mut c = call("m0", 40_000, 100 + i, 5, 10, 1);
        c.flow.client = format!("10.0.{}.{}:5000", i / 250, i % 250).parse().unwrap();
        s.record(&c);
    }
    assert_eq!(s.clients().count(), MAX_CLIENTS);
    assert!(s.totals().untracked_clients >= 5);
    for i in 0..(RECENT as u64 * 2) {
        s.record(&call("m0", 40_000, 1000 + i, 5, 10, 1));
    }
    assert_eq!(s.recent().len(), RECENT);
    assert_eq!(s.recent().last().unwrap().start, Timestamp(T0 + (1000 + RECENT as u64 * 2 - 1) * MS));
}

#[test]
fn header_and_model_rows_at_80x24() {
    let mut s = twenty();
    s.set_health(&Report {
        capture: tracer_core::capture::CaptureStats { kernel_drops: 7, ..Default::default() },
        ..Default::default()
    });
    let app = App::new(&s);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let rows = rows(t.backend().buffer());
    assert!(rows[0].starts_with("ollama-tracer top · test · 20 calls · 0 in flight"), "{}", rows[0]);
    assert!(rows[1].starts_with("calls/s 4.0  tokens/s in 40.0 out 20.0  errors/s 0.4  kernel drops 7"), "{}", rows[1]);
    // Drops and errors are red.
    let buf = t.backend().buffer();
    let drops_x = rows[1].find("drops 7").unwrap() + "drops ".len();
    assert_eq!(buf[(drops_x as u16, 1)].fg, Color::Red);
    let (_, header) = row_with(&rows, "p50 ttft");
    assert!(
        header.starts_with("model                calls   p50 ttft p95 ttft tok/s  cached errors cold starts"),
        "{header}"
    );
    let (y, a) = row_with(&rows, "a                    20");
    assert_eq!(y, 4, "the first model row under its header");
    let cols: Vec<&str> = a.split_whitespace().collect();
    assert_eq!(cols, ["a", "20", "100ms", "190ms", "-", "-", "2", "0"]);
    assert!(rows[23].starts_with(" q quit"), "the key line is the last: {}", rows[23]);
}

/// Cache hits: the share of input a model's prompt cache served (over the calls of a server
/// that reports hits: one that reported none counts as 0 once the model has shown it reports),
/// unknown (`-`) for a server that never said; the detail view names the count.
#[test]
fn cached_input_is_shown_per_model_and_per_call() {
    let mut s = TopState::new(config());
    let mut first = call("c", 40_001, 0, 10, 100, 5);
    first.response.input_tokens = Some(100);
    first.response.cache_read_input_tokens = Some(60);
    s.record(&first);
    let mut second = call("c", 40_002, 200, 10, 100, 5);
    second.response.input_tokens = Some(100);
    s.record(&second);
    s.record(&call("old", 40_003, 400, 10, 100, 5));
    assert_eq!(s.model("c").unwrap().cache_ratio(), Some(0.3));
    assert_eq!(s.model("old").unwrap().cache_ratio(), None, "unknown is not 0");
    let mut app = App::new(&s);
    let mut t = terminal(100, 30);
    draw(&mut t, &app);
    let rows = rows(t.backend().buffer());
    let (_, c) = row_with(&rows, "c                    2");
    assert_eq!(c.split_whitespace().nth(5), Some("30%"), "{c}");
    let (_, old) = row_with(&rows, "old                  1");
    assert_eq!(old.split_whitespace().nth(5), Some("-"), "{old}");
    // The first call's detail (the newest are listed first).
    app.key(code(KeyCode::Down));
    app.key(code(KeyCode::Down));
    app.key(code(KeyCode::Enter));
    draw(&mut t, &app);
    let rows = rows_of(&t);
    assert!(row_with(&rows, "tokens      in 100 (60 cached)  out 5").0 > 0);
}

#[test]
fn phase_bars_show_a_cold_start() {
    let mut s = TopState::new(config());
    // Warm: 0.1 s prompt, 0.9 s generation. Cold: 2 s load, 0.5 s prompt, 1.5 s generation.
    s.record(&with_phases(call("warm", 40_001, 0, 100, 1000, 20), 0, 100, 900));
    s.record(&with_phases(call("cold", 40_002, 2000, 2500, 4000, 20), 2000, 500, 1500));
    let app = App::new(&s);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let rows = rows(t.backend().buffer());
    let buf = t.backend().buffer();
    let (cy, cold) = row_with(&rows, "127.0.0.1:40002");
    let (_, warm) = row_with(&rows, "127.0.0.1:40001");
    // The bar column: 80 − (16+14+3+7+7+6) − 6 separators − 2 (highlight) = 19 cells; the cold
    // call (4 s) is the longest: its bar fills them, half of it the load.
    assert_eq!((count(cold, LOAD), count(cold, PROMPT), count(cold, GENERATION)), (10, 2, 7), "{cold}");
    // The warm call is a quarter as long: 5 cells, no load.
    assert_eq!((count(warm, LOAD), count(warm, PROMPT), count(warm, GENERATION)), (0, 1, 4), "{warm}");
    let x = cold.chars().position(|c| c == LOAD).unwrap() as u16;
    assert_eq!(buf[(x, cy as u16)].fg, Color::Red);
    assert_eq!(buf[(x + 10, cy as u16)].fg, Color::Yellow);
    assert_eq!(buf[(x + 12, cy as u16)].fg, Color::Green);
    // The models table counts the cold start.
    let (_, m) = row_with(&rows, "cold        ");
    assert!(m.trim_end().ends_with(" 1"), "{m}");
    assert_eq!(render::phase_cells([0.0, 0.001, 10.0], 10.0, 10), [0, 1, 9], "a short phase still shows");
}

fn in_flight(now_ms: u64, tokens: u64) -> InFlightSnapshot {
    InFlightSnapshot {
        now: Timestamp(T0 + now_ms * MS),
        total: 1,
        calls: vec![InFlightCall {
            exchange: 9,
            flow: flow(41_000),
            route: Route::Chat,
            model: Some("llama3.2".into()),
            started: Timestamp(T0 + 10_000 * MS),
            responding: true,
            chunks: tokens,
            output_chunks: tokens,
        }],
    }
}

#[test]
fn an_in_flight_bar_grows() {
    let mut s = TopState::new(config());
    // Earlier calls of the model: 100 tokens out on average.
    s.record(&call("llama3.2", 40_000, 0, 10, 1000, 50));
    s.record(&call("llama3.2", 40_000, 1000, 10, 1000, 150));
    let mut t = terminal(80, 24);
    let mut bars = Vec::new();
    for (now, tokens) in [(10_500, 10), (11_500, 50), (13_000, 100), (14_000, 130)] {
        s.set_in_flight(&in_flight(now, tokens));
        let app = App::new(&s);
        draw(&mut t, &app);
        let rows = rows(t.backend().buffer());
        let (_, row) = row_with(&rows, "127.0.0.1:41000");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "llama3.2");
        assert_eq!(cols[3], tokens.to_string());
        bars.push((cols[2].to_string(), count(row, render::DONE), count(row, render::TODO)));
    }
    // The bar: 80 − (21+16+7+6) − 4 separators = 26 cells, done in proportion to 100 tokens.
    assert_eq!(
        bars,
        [
            ("500ms".to_string(), 3, 23),
            ("1.50s".to_string(), 13, 13),
            ("3.00s".to_string(), 26, 0),
            ("4.00s".to_string(), 26, 0)
        ]
    );
    assert!(row_with(&rows(t.backend().buffer()), " in flight: 1 ").0 > 0);
    // Once complete it leaves the list at once, before the next snapshot.
    let mut done = call("llama3.2", 41_000, 10_000, 10, 5000, 140);
    done.exchange = 9;
    s.record(&done);
    assert_eq!((s.in_flight().total, s.in_flight().calls.len()), (0, 0));

    // A model without history: measured against 512 tokens, so a lone stream still grows.
    let mut s = TopState::new(config());
    let mut done = Vec::new();
    for tokens in [64, 256, 600] {
        s.set_in_flight(&in_flight(11_000, tokens));
        done.push((App::new(&s).screen.in_flight[0].progress * 512.0).round() as u64);
    }
    assert_eq!(done, [64, 256, 512]);
}

#[test]
fn resizes_from_80x24_to_120x40() {
    let mut s = TopState::new(config());
    for i in 0..40 {
        s.record(&call("a", 40_000 + i as u16, i * 100, 10, 50, 3));
    }
    let app = App::new(&s);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let small = rows(t.backend().buffer());
    let listed = |rows: &[String]| rows.iter().filter(|r| r.contains("127.0.0.1:400")).count();
    let before = listed(&small);
    assert!(small.iter().all(|r| r.chars().count() == 80));
    t.backend_mut().resize(120, 40);
    draw(&mut t, &app);
    let big = rows(t.backend().buffer());
    assert_eq!(big.len(), 40);
    assert!(big[39].starts_with(" q quit"), "{}", big[39]);
    assert_eq!(listed(&big), before + 16, "every added line shows one more recent call");
    // The newest first, and the bar column widened with the terminal.
    assert!(big[row_with(&big, " st  ttft").0 + 1].contains("127.0.0.1:40039"));
}

#[test]
fn detail_view_shows_options_finish_tokens_and_error() {
    let mut s = TopState::new(config());
    let mut c = with_phases(call("llama3.2", 40_000, 0, 600, 2000, 42), 700, 100, 1200);
    c.request.params.temperature = Some(0.7);
    c.request.params.seed = Some(42);
    c.request.params.num_ctx = Some(4096);
    c.response.finish_reasons = vec!["length".into()];
    c.status = Some(200);
    c.error = Some(CallError { kind: ErrorKind::InStream, message: Some("out of memory".into()) });
    c.response.content = Some(OutputContent { text: "hidden unless asked".into(), ..Default::default() });
    s.record(&c);
    s.record(&call("other", 40_001, 5000, 10, 100, 1));
    let mut app = App::new(&s);
    // The newest first: down to the llama3.2 call, then open it.
    assert_eq!(app.key(code(KeyCode::Down)), Action::Redraw);
    assert_eq!(app.key(code(KeyCode::Enter)), Action::Redraw);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let rows = rows(t.backend().buffer());
    assert!(row_with(&rows, "call #1 ").1.contains("Esc to close"));
    assert!(row_with(&rows, "model       llama3.2").0 > 0);
    assert!(row_with(&rows, "finish      length").0 > 0);
    assert!(row_with(&rows, "tokens      in 10  out 42").0 > 0);
    assert!(row_with(&rows, "temperature=0.7").1.contains("seed=42 num_ctx=4096"));
    assert!(row_with(&rows, "error       stream_error: out of memory").0 > 0);
    assert!(row_with(&rows, "load 700ms  prompt eval 100ms  generation 1.20s").0 > 0);
    assert!(row_with(&rows, "(cold start)").0 > 0);
    // No content capture asked for: the output is not shown even though the call has it.
    assert!(!rows.iter().any(|r| r.contains("hidden unless asked")));
    // Esc closes it.
    assert_eq!(app.key(code(KeyCode::Esc)), Action::Redraw);
    draw(&mut t, &app);
    assert!(!rows_of(&t).iter().any(|r| r.contains("call #1")));
}

fn rows_of(t: &Terminal<TestBackend>) -> Vec<String> {
    rows(t.backend().buffer())
}

#[test]
fn output_is_shown_only_with_content_capture_and_redacted() {
    let content = ContentConfig::capturing(1024, true, &[]).unwrap();
    let mut s = TopState::new(TopConfig { content: Some(content), ..config() });
    let mut c = call("llama3.2", 40_000, 0, 10, 100, 3);
    c.response.content =
        Some(OutputContent { text: "the key is sk-abcdefghijklmnopqrstuvwx ok".into(), ..Default::default() });
    s.record(&c);
    let mut app = App::new(&s);
    app.key(code(KeyCode::Enter));
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let rows = rows_of(&t);
    assert!(row_with(&rows, "output      the key is [REDACTED] ok").0 > 0);
    assert!(!rows.iter().any(|r| r.contains("sk-abc")));
}

#[test]
fn filters_by_model_and_client() {
    let mut s = TopState::new(config());
    s.record(&call("alpha", 40_000, 0, 10, 100, 1));
    s.record(&call("beta", 40_001, 100, 10, 100, 1));
    let mut named = call("beta", 40_002, 200, 10, 100, 1);
    named.identity = Some(Arc::new(CallIdentity {
        client: Endpoint {
            process: Some(Arc::new(ProcessInfo {
                pid: 7,
                start_ticks: None,
                executable_name: Some("agent".into()),
                executable_path: None,
                command: None,
                args: None,
            })),
            ..Default::default()
        },
        server: Endpoint::default(),
        workload_service_name: false,
    }));
    s.record(&named);
    // A call in flight from the named client's address: named after it.
    let mut snap = in_flight(1000, 3);
    snap.calls[0].flow = flow(40_002);
    snap.calls[0].model = Some("beta".into());
    s.set_in_flight(&snap);
    let mut app = App::new(&s);
    let recent_models = |app: &App| app.screen.recent.iter().map(|c| c.model.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(recent_models(&app), ["beta", "beta", "alpha"]);
    assert_eq!(app.screen.in_flight[0].client, "agent");

    // `m` cycles through the models (sorted), then back to none.
    assert_eq!(app.key(key('m')), Action::Refresh);
    app.rebuild(&s);
    assert_eq!(recent_models(&app), ["alpha"]);
    assert_eq!(app.screen.models.len(), 1);
    assert!(app.screen.in_flight.is_empty());
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    assert!(rows_of(&t)[0].contains("filter model=alpha"), "{}", rows_of(&t)[0]);
    app.key(key('m'));
    app.rebuild(&s);
    assert_eq!(recent_models(&app), ["beta", "beta"]);
    app.key(key('m'));
    app.rebuild(&s);
    assert_eq!(recent_models(&app).len(), 3);

    // `c` by client: the process name when known, else the address.
    assert_eq!(app.screen.all_clients, ["127.0.0.1", "agent"]);
    app.key(key('c'));
    app.rebuild(&s);
    assert_eq!(recent_models(&app), ["beta", "alpha"]);
    app.key(key('c'));
    app.rebuild(&s);
    assert_eq!(recent_models(&app), ["beta"]);
    assert_eq!(app.screen.in_flight.len(), 1);
    draw(&mut t, &app);
    assert!(rows_of(&t)[0].contains("filter client=agent"));
    // `x` clears every filter.
    app.key(key('x'));
    app.rebuild(&s);
    assert_eq!(recent_models(&app).len(), 3);
}

#[test]
fn sort_keys_order_models_and_recent_calls() {
    let mut s = TopState::new(config());
    for i in 0..3 {
        s.record(&with_phases(call("many", 40_000, i * 10, 20, 30, 5), 0, 10, 10));
    }
    s.record(&with_phases(call("slow", 40_000, 100, 900, 1000, 50), 0, 800, 100));
    let mut fast = with_phases(call("fast", 40_000, 200, 50, 60, 9), 0, 40, 10);
    fast.error = Some(CallError { kind: ErrorKind::Http(500), message: None });
    fast.error = Some(CallError { kind: ErrorKind::Http(500), message: None });
    s.record(&fast);
    let mut app = App::new(&s);
    let order = |app: &App| app.screen.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>().join(",");
    assert_eq!(order(&app), "many,fast,slow", "by calls, then name");
    let mut seen = Vec::new();
    for _ in 0..5 {
        app.key(key('s'));
        app.rebuild(&s);
        seen.push((app.view.model_sort, order(&app)));
    }
    assert_eq!(
        seen,
        [
            (ModelSort::P95Ttft, "slow,fast,many".to_string()),
            // 50 tokens / 0.1 s, 9 / 0.01 s, 15 / 0.03 s.
            (ModelSort::TokensPerS, "fast,many,slow".to_string()),
            (ModelSort::Errors, "fast,many,slow".to_string()),
            (ModelSort::Name, "fast,many,slow".to_string()),
            (ModelSort::Calls, "many,fast,slow".to_string()),
        ]
    );
    app.key(key('s'));
    app.rebuild(&s);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    assert!(row_with(&rows_of(&t), " models · sort: p95 ttft (s) ").0 > 0);
    // `o`: recent calls by duration, then by TTFT, then by tokens.
    let recent = |app: &App| app.screen.recent.iter().map(|c| c.model.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(recent(&app)[0], "fast", "newest first");
    app.key(key('o'));
    app.rebuild(&s);
    assert_eq!(&recent(&app)[..2], ["slow", "fast"]);
    app.key(key('o'));
    app.rebuild(&s);
    assert_eq!(&recent(&app)[..2], ["slow", "fast"]);
    app.key(key('o'));
    app.rebuild(&s);
    assert_eq!(&recent(&app)[..2], ["slow", "fast"]);
    assert_eq!(recent(&app)[2], "many");
}

#[test]
fn pause_freezes_the_frame() {
    let mut s = TopState::new(config());
    s.record(&call("a", 40_000, 0, 10, 100, 1));
    let mut app = App::new(&s);
    assert_eq!(app.key(key('p')), Action::Refresh);
    app.rebuild(&s);
    s.record(&call("a", 40_000, 500, 10, 100, 1));
    app.rebuild(&s);
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    let rows = rows_of(&t);
    assert!(rows[0].contains("1 calls") && rows[0].contains("PAUSED"), "{}", rows[0]);
    // Keys still work on the frozen frame: the detail opens.
    app.key(code(KeyCode::Enter));
    assert!(app.view.detail.is_some());
    app.key(code(KeyCode::Esc));
    app.key(key(' '));
    app.rebuild(&s);
    draw(&mut t, &app);
    let rows = rows_of(&t);
    assert!(rows[0].contains("2 calls") && !rows[0].contains("PAUSED"), "{}", rows[0]);
    // And `q` (or Ctrl-C) quits.
    assert_eq!(app.key(key('q')), Action::Quit);
    assert_eq!(app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
}

#[test]
fn the_screen_of_an_empty_state_draws() {
    let s = TopState::new(config());
    let app = App { screen: Screen::build(&s, &Default::default()), view: Default::default() };
    let mut t = terminal(80, 24);
    draw(&mut t, &app);
    assert!(rows_of(&t)[1].starts_with("calls/s 0.0  tokens/s in 0.0 out 0.0  errors/s 0.0  kernel drops 0"));
}
