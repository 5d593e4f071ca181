//! What one frame shows, built from the state under its lock and then drawn without it; and
//! the viewer's choices (sort orders, filters, pause, selection, detail) with the keys that
//! change them.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::state::{CallRow, Rates, TopState, Totals, route_name};

/// Order of the models table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelSort {
    #[default]
    Calls,
    P95Ttft,
    TokensPerS,
    Errors,
    Name,
}

impl ModelSort {
    fn next(self) -> Self {
        match self {
            ModelSort::Calls => ModelSort::P95Ttft,
            ModelSort::P95Ttft => ModelSort::TokensPerS,
            ModelSort::TokensPerS => ModelSort::Errors,
            ModelSort::Errors => ModelSort::Name,
            ModelSort::Name => ModelSort::Calls,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ModelSort::Calls => "calls",
            ModelSort::P95Ttft => "p95 ttft",
            ModelSort::TokensPerS => "tok/s",
            ModelSort::Errors => "errors",
            ModelSort::Name => "name",
        }
    }
}

/// Order of the recent calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecentOrder {
    #[default]
    Newest,
    Slowest,
    Ttft,
    Tokens,
}

impl RecentOrder {
    fn next(self) -> Self {
        match self {
            RecentOrder::Newest => RecentOrder::Slowest,
            RecentOrder::Slowest => RecentOrder::Ttft,
            RecentOrder::Ttft => RecentOrder::Tokens,
            RecentOrder::Tokens => RecentOrder::Newest,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RecentOrder::Newest => "newest",
            RecentOrder::Slowest => "slowest",
            RecentOrder::Ttft => "ttft",
            RecentOrder::Tokens => "tokens",
        }
    }
}

/// The viewer's choices.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub model_sort: ModelSort,
    pub recent_order: RecentOrder,
    pub model_filter: Option<String>,
    pub client_filter: Option<String>,
    pub paused: bool,
    /// Index into the recent calls shown.
    pub selected: usize,
    /// The call whose detail is open.
    pub detail: Option<Arc<CallRow>>,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Rebuild the screen (a choice changed what is shown).
    Refresh,
    /// Redraw what is there (selection, detail, pause).
    Redraw,
    Quit,
}

/// The value after `current` in `values` (sorted), wrapping to none after the last.
fn cycle(values: &[String], current: &Option<String>) -> Option<String> {
    match current {
        None => values.first().cloned(),
        Some(c) => values.iter().position(|v| v == c).and_then(|i| values.get(i + 1)).cloned(),
    }
}

impl View {
    pub fn key(&mut self, key: KeyEvent, screen: &Screen) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.detail.is_some() {
            return match key.code {
                KeyCode::Char('c') if ctrl => Action::Quit,
                KeyCode::Char('q') => Action::Quit,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => {
                    self.detail = None;
                    Action::Redraw
                }
                _ => Action::None,
            };
        }
        match key.code {
            KeyCode::Char('c') if ctrl => Action::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('s') => {
                self.model_sort = self.model_sort.next();
                Action::Refresh
            }
            KeyCode::Char('o') => {
                self.recent_order = self.recent_order.next();
                self.selected = 0;
                Action::Refresh
            }
            KeyCode::Char('m') => {
                self.model_filter = cycle(&screen.all_models, &self.model_filter);
                self.selected = 0;
                Action::Refresh
            }
            KeyCode::Char('c') => {
                self.client_filter = cycle(&screen.all_clients, &self.client_filter);
                self.selected = 0;
                Action::Refresh
            }
            KeyCode::Char('x') => {
                self.model_filter = None;
                self.client_filter = None;
                Action::Refresh
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::Refresh
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(screen.recent.len().saturating_sub(1));
                Action::Redraw
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                Action::Redraw
            }
            KeyCode::Enter => {
                self.detail = screen.recent.get(self.selected).cloned();
                Action::Redraw
            }
            _ => Action::None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub source: String,
    pub rates: Rates,
    pub totals: Totals,
    pub kernel_drops: u64,
    pub in_flight: usize,
    pub finished: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelRow {
    pub model: String,
    pub calls: u64,
    pub p50_ttft: Option<f64>,
    pub p95_ttft: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// Share of input served from the prompt cache.
    pub cache_ratio: Option<f64>,
    pub errors: u64,
    pub cold_starts: u64,
    pub loads: u64,
}

/// Tokens a stream of a model without history is measured against, at least.
pub const UNKNOWN_LENGTH: u64 = 512;

#[derive(Clone, Debug, PartialEq)]
pub struct InFlightRow {
    pub client: String,
    pub model: String,
    pub route: &'static str,
    pub elapsed_s: f64,
    pub tokens: u64,
    /// How far along the stream is (0..=1): tokens so far against the model's mean output,
    /// else against the longest stream shown (at least [`UNKNOWN_LENGTH`]).
    pub progress: f64,
}

/// One frame's content.
#[derive(Clone, Debug, Default)]
pub struct Screen {
    pub header: Header,
    pub models: Vec<ModelRow>,
    pub in_flight: Vec<InFlightRow>,
    /// Filtered and ordered.
    pub recent: Vec<Arc<CallRow>>,
    /// Every model and client key known (sorted), for the filters.
    pub all_models: Vec<String>,
    pub all_clients: Vec<String>,
}

fn desc(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    b.unwrap_or(-1.0).total_cmp(&a.unwrap_or(-1.0))
}

impl Screen {
    /// The frame for `view` from `state` (called under the state's lock: bounded work).
    pub fn build(state: &TopState, view: &View) -> Screen {
        let model_ok = |m: Option<&str>| view.model_filter.as_deref().is_none_or(|f| m == Some(f));
        let in_flight = state.in_flight();
        let header = Header {
            source: state.config.source.clone(),
            rates: state.rates(),
            totals: state.totals(),
            kernel_drops: state.kernel_drops(),
            in_flight: in_flight.total,
            finished: state.finished,
        };

        let mut models: Vec<ModelRow> = state
            .models()
            .filter(|(m, _)| model_ok(Some(m)))
            .map(|(m, s)| ModelRow {
                model: m.clone(),
                calls: s.calls,
                p50_ttft: s.ttft.quantile(0.5),
                p95_ttft: s.ttft.quantile(0.95),
                tokens_per_s: s.tokens_per_s(),
                cache_ratio: s.cache_ratio(),
                errors: s.errors,
                cold_starts: s.cold_starts,
                loads: s.loads,
            })
            .collect();
        models.sort_by(|a, b| {
            let primary = match view.model_sort {
                ModelSort::Calls => b.calls.cmp(&a.calls),
                ModelSort::P95Ttft => desc(a.p95_ttft, b.p95_ttft),
                ModelSort::TokensPerS => desc(a.tokens_per_s, b.tokens_per_s),
                ModelSort::Errors => b.errors.cmp(&a.errors),
                ModelSort::Name => std::cmp::Ordering::Equal,
            };
            primary.then_with(|| a.model.cmp(&b.model))
        });

        let mut rows: Vec<InFlightRow> = Vec::new();
        for c in &in_flight.calls {
            let model = c.model.as_deref();
            let client_name = state.name_of(&c.flow.client);
            let key = client_name.map_or_else(|| tracer_core::segment::display_ip(c.flow.client.ip()), str::to_string);
            if !model_ok(model) || view.client_filter.as_ref().is_some_and(|f| *f != key) {
                continue;
            }
            rows.push(InFlightRow {
                client: client_name.map_or_else(|| c.flow.client.to_string(), str::to_string),
                model: model.unwrap_or("?").to_string(),
                route: route_name(c.route),
                elapsed_s: in_flight.now.since(c.started).max(0) as f64 / 1e9,
                tokens: c.output_chunks,
                progress: 0.0,
            });
        }
        // Without history for the model, streams are measured against the longest shown, and
        // at least this many tokens (so that a lone stream still grows).
        let longest = rows.iter().map(|r| r.tokens).max().unwrap_or(0).max(UNKNOWN_LENGTH) as f64;
        for r in &mut rows {
            let expected = state.model(&r.model).and_then(|m| m.mean_output_tokens()).unwrap_or(longest);
            r.progress = (r.tokens as f64 / expected.max(1.0)).min(1.0);
        }

        let mut recent: Vec<Arc<CallRow>> = state
            .recent()
            .rev()
            .filter(|c| model_ok(c.model.as_deref()))
            .filter(|c| view.client_filter.as_ref().is_none_or(|f| *f == c.client.key()))
            .cloned()
            .collect();
        match view.recent_order {
            RecentOrder::Newest => {}
            RecentOrder::Slowest => recent.sort_by(|a, b| desc(a.duration_s, b.duration_s)),
            RecentOrder::Ttft => recent.sort_by(|a, b| desc(a.ttft_s, b.ttft_s)),
            RecentOrder::Tokens => recent.sort_by_key(|c| std::cmp::Reverse(c.tokens_out())),
        }

        let mut all_models: Vec<String> = state.models().map(|(m, _)| m.clone()).collect();
        all_models.sort();
        let mut all_clients: Vec<String> = state.clients().map(|(c, _)| c.clone()).collect();
        all_clients.sort();
        Screen { header, models, in_flight: rows, recent, all_models, all_clients }
    }
}

/// The view's choices and the frame they show: what the UI thread holds between refreshes.
#[derive(Debug, Default)]
pub struct App {
    pub view: View,
    pub screen: Screen,
}

impl App {
    pub fn new(state: &TopState) -> App {
        let view = View::default();
        App { screen: Screen::build(state, &view), view }
    }

    /// A new frame from the state, unless paused (then the frame shown stays as it was).
    pub fn rebuild(&mut self, state: &TopState) {
        if self.view.paused {
            return;
        }
        self.screen = Screen::build(state, &self.view);
        // Keep the selection on the rows there are.
        self.view.selected = self.view.selected.min(self.screen.recent.len().saturating_sub(1));
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        self.view.key(key, &self.screen)
    }
}
