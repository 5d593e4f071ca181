//! Drawing a [`Screen`] with ratatui: header, models, calls in flight, recent calls with their
//! phase bars, the key line, and a call's detail over them. Pure: the same screen and view
//! draw the same cells, whatever the backend.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use super::screen::{Screen, View};
use super::state::CallRow;

/// Phase bar symbols: model load, prompt evaluation, generation.
pub const LOAD: char = '▓';
pub const PROMPT: char = '░';
pub const GENERATION: char = '█';
/// The in-flight bar.
pub const DONE: char = '█';
pub const TODO: char = '·';

const HIGHLIGHT: &str = "> ";

/// A count or a rate, short: `0.5`, `12.0`, `950`, `1.2k`, `3.4M`.
pub fn short_number(v: f64) -> String {
    match v {
        v if v < 100.0 => format!("{v:.1}"),
        v if v < 10_000.0 => format!("{v:.0}"),
        v if v < 10_000_000.0 => format!("{:.1}k", v / 1e3),
        v => format!("{:.1}M", v / 1e6),
    }
}

/// A duration, short: `850µs`, `123ms`, `1.23s`, `12.3s`, `2m05s`.
pub fn short_duration(secs: f64) -> String {
    match secs {
        s if s < 0.001 => format!("{:.0}µs", s * 1e6),
        s if s < 1.0 => format!("{:.0}ms", s * 1e3),
        s if s < 10.0 => format!("{s:.2}s"),
        s if s < 60.0 => format!("{s:.1}s"),
        s => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
    }
}

fn opt_duration(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), short_duration)
}

/// `n` cells of a bar: `part` of it done.
pub fn progress_bar(part: f64, width: usize) -> String {
    let done = ((part.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    let mut s = String::with_capacity(width * 3);
    s.extend(std::iter::repeat_n(DONE, done));
    s.extend(std::iter::repeat_n(TODO, width - done));
    s
}

/// The phase bar of a call: load, prompt evaluation and generation in proportion, the whole
/// bar `total / scale` of `width` (so longer calls draw longer bars); a phase that took any
/// time gets at least one cell.
pub fn phase_cells(phases: [f64; 3], scale: f64, width: usize) -> [usize; 3] {
    let total: f64 = phases.iter().sum();
    if total <= 0.0 || scale <= 0.0 || width == 0 {
        return [0; 3];
    }
    let cells = ((total / scale).min(1.0) * width as f64).round().max(1.0) as usize;
    let mut n = phases.map(|p| if p > 0.0 { ((p / total * cells as f64).round() as usize).max(1) } else { 0 });
    // Rounding (and the one-cell minimum) may overshoot: take it from the largest phase.
    while n.iter().sum::<usize>() > cells.max(n.iter().filter(|c| **c > 0).count()) {
        let i = (0..3).max_by_key(|i| n[*i]).unwrap_or(2);
        n[i] -= 1;
    }
    n
}

fn phase_spans(row: &CallRow, scale: f64, width: usize) -> Line<'static> {
    let Some(p) = row.phases() else { return Line::from("") };
    let n = phase_cells(p, scale, width);
    let styles = [Color::Red, Color::Yellow, Color::Green];
    let symbols = [LOAD, PROMPT, GENERATION];
    Line::from(
        (0..3)
            .filter(|i| n[*i] > 0)
            .map(|i| Span::styled(symbols[i].to_string().repeat(n[i]), Style::default().fg(styles[i])))
            .collect::<Vec<_>>(),
    )
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn header_lines(screen: &Screen, view: &View) -> Vec<Line<'static>> {
    let h = &screen.header;
    let mut first = vec![
        Span::styled("ollama-tracer top", bold()),
        Span::raw(format!(" · {} · {} calls · {} in flight", h.source, h.totals.calls, h.in_flight)),
    ];
    if h.finished {
        first.push(Span::styled(" · ended", Style::default().fg(Color::Cyan)));
    }
    if view.paused {
        first.push(Span::styled(" PAUSED", Style::default().fg(Color::Black).bg(Color::Yellow)));
    }
    let r = &h.rates;
    let drops_style = if h.kernel_drops > 0 { Style::default().fg(Color::Red) } else { Style::default() };
    let errors_style = if r.errors > 0.0 { Style::default().fg(Color::Red) } else { Style::default() };
    let second = vec![
        Span::styled("calls/s ", bold()),
        Span::raw(short_number(r.calls)),
        Span::styled("  tokens/s in ", bold()),
        Span::raw(short_number(r.tokens_in)),
        Span::styled(" out ", bold()),
        Span::raw(short_number(r.tokens_out)),
        Span::styled("  errors/s ", bold()),
        Span::styled(short_number(r.errors), errors_style),
        Span::styled("  kernel drops ", bold()),
        Span::styled(h.kernel_drops.to_string(), drops_style),
    ];
    let mut filters = Vec::new();
    if let Some(m) = &view.model_filter {
        filters.push(format!("model={m}"));
    }
    if let Some(c) = &view.client_filter {
        filters.push(format!("client={c}"));
    }
    let mut lines = vec![Line::from(first), Line::from(second)];
    if !filters.is_empty() {
        lines[0].spans.push(Span::styled(format!(" · filter {}", filters.join(" ")), Style::default().fg(Color::Cyan)));
    }
    lines
}

fn section(title: String) -> Block<'static> {
    Block::default().borders(Borders::TOP).title(Span::styled(title, bold()))
}

fn head(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().map(|c| Cell::from(*c))).style(Style::default().add_modifier(Modifier::UNDERLINED))
}

/// Width left for the last column of a table in `area` with these other columns.
fn rest(area: Rect, fixed: &[u16], highlight: bool) -> u16 {
    let used: u16 = fixed.iter().sum::<u16>() + fixed.len() as u16 + if highlight { HIGHLIGHT.len() as u16 } else { 0 };
    area.width.saturating_sub(used).max(1)
}

fn draw_models(frame: &mut Frame, area: Rect, screen: &Screen, view: &View) {
    let t = &screen.header.totals;
    let mut title = format!(" models · sort: {} (s) ", view.model_sort.label());
    if t.untracked_model_calls > 0 {
        title.push_str(&format!("· {} calls of untracked models ", t.untracked_model_calls));
    }
    let widths = [20, 7, 8, 8, 6, 6, 6];
    let last = rest(area, &widths, false);
    let rows = screen.models.iter().map(|m| {
        let errors = Cell::from(m.errors.to_string()).style(if m.errors > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        });
        let cold =
            if m.loads > 0 { format!("{} ({} loads)", m.cold_starts, m.loads) } else { m.cold_starts.to_string() };
        Row::new(vec![
            Cell::from(m.model.clone()),
            Cell::from(m.calls.to_string()),
            Cell::from(opt_duration(m.p50_ttft)),
            Cell::from(opt_duration(m.p95_ttft)),
            Cell::from(m.tokens_per_s.map_or_else(|| "-".into(), short_number)),
            Cell::from(m.cache_ratio.map_or_else(|| "-".into(), |r| format!("{:.0}%", r * 100.0))),
            errors,
            Cell::from(cold),
        ])
    });
    let mut constraints: Vec<Constraint> = widths.iter().map(|w| Constraint::Length(*w)).collect();
    constraints.push(Constraint::Length(last));
    let table = Table::new(rows, constraints)
        .header(head(&["model", "calls", "p50 ttft", "p95 ttft", "tok/s", "cached", "errors", "cold starts"]))
        .block(section(title));
    frame.render_widget(table, area);
}

fn draw_in_flight(frame: &mut Frame, area: Rect, screen: &Screen) {
    let shown = screen.in_flight.len().min(area.height.saturating_sub(2) as usize);
    let title = if shown < screen.header.in_flight {
        format!(" in flight: {} (oldest {shown} shown) ", screen.header.in_flight)
    } else {
        format!(" in flight: {} ", screen.header.in_flight)
    };
    let widths = [21, 16, 7, 6];
    let bar = rest(area, &widths, false) as usize;
    let rows = screen.in_flight.iter().map(|r| {
        Row::new(vec![
            Cell::from(r.client.clone()),
            Cell::from(r.model.clone()),
            Cell::from(short_duration(r.elapsed_s)),
            Cell::from(r.tokens.to_string()),
            Cell::from(Span::styled(progress_bar(r.progress, bar), Style::default().fg(Color::Green))),
        ])
    });
    let mut constraints: Vec<Constraint> = widths.iter().map(|w| Constraint::Length(*w)).collect();
    constraints.push(Constraint::Length(bar as u16));
    let table = Table::new(rows, constraints)
        .header(head(&["client", "model", "elapsed", "tokens", "stream"]))
        .block(section(title));
    frame.render_widget(table, area);
}

fn draw_recent(frame: &mut Frame, area: Rect, screen: &Screen, view: &View) {
    let title = format!(
        " recent calls · order: {} (o) · {LOAD}load {PROMPT}prompt {GENERATION}generation ",
        view.recent_order.label()
    );
    let widths = [16, 14, 3, 7, 7, 6];
    let bar = rest(area, &widths, true) as usize;
    let visible = area.height.saturating_sub(2) as usize;
    // Keep the selection in view: the window of rows shown starts where it must.
    let first = view.selected.saturating_sub(visible.saturating_sub(1));
    let shown = &screen.recent[first.min(screen.recent.len())..];
    let shown = &shown[..shown.len().min(visible)];
    let scale = shown.iter().filter_map(|c| c.phases()).map(|p| p.iter().sum::<f64>()).fold(0.0, f64::max);
    let rows = shown.iter().map(|c| {
        let status = c.status.map_or_else(|| "-".into(), |s| s.to_string());
        let style = if c.is_error() { Style::default().fg(Color::Red) } else { Style::default() };
        Row::new(vec![
            Cell::from(c.client.name.clone().unwrap_or_else(|| c.client.addr.to_string())),
            Cell::from(c.model.clone().unwrap_or_else(|| "-".into())),
            Cell::from(status).style(style),
            Cell::from(opt_duration(c.ttft_s)),
            Cell::from(opt_duration(c.duration_s)),
            Cell::from(c.tokens_out().to_string()),
            Cell::from(phase_spans(c, scale, bar)),
        ])
    });
    let mut constraints: Vec<Constraint> = widths.iter().map(|w| Constraint::Length(*w)).collect();
    constraints.push(Constraint::Length(bar as u16));
    let table = Table::new(rows, constraints)
        .header(head(&["client", "model", "st", "ttft", "time", "out"]))
        .block(section(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let mut state = ratatui::widgets::TableState::default();
    if !shown.is_empty() {
        state.select(Some(view.selected - first));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

const KEYS: &str = " q quit  s sort  o order  m model  c client  x clear  p pause  ↑↓ select  ⏎ detail";

/// The detail of one call: what was asked, what came back, how long each part took.
pub fn detail_lines(c: &CallRow) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut put = |label: &str, value: String| {
        lines.push(Line::from(vec![Span::styled(format!("{label:<12}"), bold()), Span::raw(value)]));
    };
    put("model", c.model.clone().unwrap_or_else(|| "-".into()));
    put(
        "request",
        format!("{} {}  status {}", c.method, c.route, c.status.map_or_else(|| "-".into(), |s| s.to_string())),
    );
    let client = match &c.client.name {
        Some(n) => format!("{n} ({})", c.client.addr),
        None => c.client.addr.to_string(),
    };
    put("client", client);
    put(
        "times",
        format!(
            "started {}  duration {}  time to first token {}",
            clock(c.start.0),
            opt_duration(c.duration_s),
            opt_duration(c.ttft_s)
        ),
    );
    let o = &c.ollama;
    let tokens = format!(
        "in {}{}  out {}  ({} output chunks{})",
        c.input_tokens.map_or_else(|| "-".into(), |n| n.to_string()),
        c.cached_tokens.map_or_else(String::new, |n| format!(" ({n} cached)")),
        c.output_tokens.map_or_else(|| "-".into(), |n| n.to_string()),
        c.output_chunks,
        if c.streamed { ", streamed" } else { "" }
    );
    put("tokens", tokens);
    if !o.is_empty() {
        let ns = |v: Option<u64>| opt_duration(v.map(|n| n as f64 / 1e9));
        put(
            "phases",
            format!(
                "load {}  prompt eval {}  generation {}  total {}{}",
                ns(o.load_duration),
                ns(o.prompt_eval_duration),
                ns(o.eval_duration),
                ns(o.total_duration),
                if c.cold { "  (cold start)" } else { "" }
            ),
        );
    }
    put("finish", if c.finish_reasons.is_empty() { "-".into() } else { c.finish_reasons.join(", ") });
    put("options", options(c));
    if !c.tools.is_empty() {
        put("tools", c.tools.join(", "));
    }
    if !c.tool_calls.is_empty() {
        put("tool calls", c.tool_calls.join(", "));
    }
    if let Some((kind, message)) = &c.error {
        put("error", message.as_ref().map_or_else(|| kind.clone(), |m| format!("{kind}: {m}")));
    }
    if !c.incomplete.is_empty() {
        put("incomplete", c.incomplete.join(", "));
    }
    if let Some(text) = &c.output_text {
        put("output", text.replace(['\n', '\r'], " "));
    }
    lines
}

/// Request options as sent, `name=value`, in a fixed order.
fn options(c: &CallRow) -> String {
    let p = &c.params;
    let mut out: Vec<String> = Vec::new();
    let mut f = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push(format!("{name}={v}"));
        }
    };
    f("stream", c.stream.map(|v| v.to_string()));
    f("temperature", p.temperature.map(|v| v.to_string()));
    f("top_p", p.top_p.map(|v| v.to_string()));
    f("top_k", p.top_k.map(|v| v.to_string()));
    f("max_tokens", p.max_tokens.map(|v| v.to_string()));
    f("seed", p.seed.map(|v| v.to_string()));
    f("num_ctx", p.num_ctx.map(|v| v.to_string()));
    f("repeat_penalty", p.repeat_penalty.map(|v| v.to_string()));
    f("min_p", p.min_p.map(|v| v.to_string()));
    f("frequency_penalty", p.frequency_penalty.map(|v| v.to_string()));
    f("presence_penalty", p.presence_penalty.map(|v| v.to_string()));
    f("n", p.choice_count.map(|v| v.to_string()));
    f("stop", (!p.stop.is_empty()).then(|| format!("{:?}", p.stop)));
    f("format", c.output_type.clone());
    f("think", c.think.clone());
    f("keep_alive", c.keep_alive.clone());
    f("messages", c.messages.map(|v| v.to_string()));
    if out.is_empty() { "-".into() } else { out.join(" ") }
}

/// `HH:MM:SS.mmm` (UTC) of a capture timestamp.
fn clock(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600 % 24, s / 60 % 60, s % 60, ns / 1_000_000 % 1000)
}

/// The frame: every section sized to the terminal (80×24 and up).
pub fn draw(frame: &mut Frame, screen: &Screen, view: &View) {
    let area = frame.area();
    let body = area.height.saturating_sub(3);
    // Each section: a title line and a column header, then its rows. Models and calls in
    // flight get what they need up to a quarter of the body each, the recent calls the rest.
    let cap = (body / 4).max(3);
    let models = (screen.models.len() as u16 + 2).clamp(3, cap);
    let in_flight = (screen.in_flight.len() as u16 + 2).clamp(3, cap);
    let [header, models_area, in_flight_area, recent_area, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(models),
        Constraint::Length(in_flight),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_lines(screen, view)), header);
    draw_models(frame, models_area, screen, view);
    draw_in_flight(frame, in_flight_area, screen);
    draw_recent(frame, recent_area, screen, view);
    frame.render_widget(Paragraph::new(Line::styled(KEYS, Style::default().fg(Color::DarkGray))), keys);

    if let Some(call) = &view.detail {
        let lines = detail_lines(call);
        let mut popup = centered(area, 90, 80);
        // As tall as its wrapped lines need (plus the border), within the 80 %.
        let inner = popup.width.saturating_sub(2).max(1) as usize;
        let needed: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum::<usize>() + 2;
        popup.height = popup.height.min(needed as u16);
        frame.render_widget(Clear, popup);
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(format!(" call #{} · Esc to close ", call.seq), bold()));
        frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), popup);
    }
}

fn centered(area: Rect, percent_x: u16, percent_y: u16) -> Rect {
    let w = area.width * percent_x / 100;
    let h = area.height * percent_y / 100;
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}
