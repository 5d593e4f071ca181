//! Per-request scenarios: what the stand-in should do with one call.
//!
//! Chosen by the `X-Standin-Scenario` request header, or (so any real client can pick one) by a
//! model-name prefix `@<scenario>/<model>` (or a bare `@<scenario>`). The header wins. The model
//! name is echoed verbatim, prefix included, as Ollama echoes whatever string it was sent.
//!
//! Syntax: `name` or `name:key=value,key=value`; `fixture=<name>` is short for
//! `fixture:name=<name>`.
//!
//! | scenario | what the stand-in does |
//! | --- | --- |
//! | `default` | replay a fitting recorded fixture, else synthesise per docs/ollama-wire.md |
//! | `fixture=<name>` | replay that fixture (its bytes and framing; `model` echoes the request) |
//! | `error-midstream[:after=N]` | N output chunks (default 3), then the route's mid-stream error: native `{"error":...}` line with status 200; `/v1/chat/completions` and `/v1/completions` an empty-model chunk and no `[DONE]`; `/v1/messages` and `/v1/responses` just stop. Non-streamed: a 500 error reply |
//! | `http-<code>[:msg=TEXT]` | fail before any output with `<code>` in the route's error shape (404 `model 'x' not found`, 500 runner crash, 429, 503, …) |
//! | `rst-midstream[:after=N]` | N output chunks, then the server resets the connection (RST) |
//! | `close-midstream[:after=N]` | N output chunks, then the server closes (FIN) without a terminator |
//! | `slow[:ttft=MS]` | a long time to first chunk (default `--slow-ttft-ms`) |
//! | `synth:tokens=N[,rate=R][,ttft=MS][,think=T][,prompt=P]` | synthetic stream of N content tokens at R tokens/s, built lazily (cheap: for load tests) |
//! | `load` | the model-load answer (`done_reason:"load"`, empty embeddings, …) |
//! | `thinking` | an answer with thinking / reasoning |
//! | `tools` | an answer with a tool call (the first tool offered, else `get_weather`) |
//! | `text` | a plain text answer even when tools are offered |

use std::fmt;
use std::time::Duration;

/// Request header that selects a scenario.
pub const SCENARIO_HEADER: &str = "x-standin-scenario";

/// One-line-per-scenario help, shared by `--help` and the module docs.
pub const SCENARIO_HELP: &str = "\
Scenarios (header `X-Standin-Scenario: <s>` or model `@<s>/<model>`, e.g. `@slow/llama3.2`):
  default                    replay a fitting recorded fixture, else synthesise per docs/ollama-wire.md
  fixture=<name>             replay that fixture (its framing and bytes; `model` echoes the request)
  error-midstream[:after=N]  N content chunks (default 3), then the route's mid-stream error: native
                             NDJSON {\"error\":..} line, status 200; /v1 chat/completions an empty-model
                             chunk and no [DONE]; /v1/messages, /v1/responses just stop (no terminator).
                             Non-streamed: the error as the whole reply (500)
  http-<code>[:msg=TEXT]     fail before any output with <code> (404: model 'x' not found; 500: runner
                             crash; 429, 503, 400 ...), in the route's error shape
  rst-midstream[:after=N]    N chunks, then the server resets the connection (RST)
  close-midstream[:after=N]  N chunks, then the server closes (FIN) without a terminator
  slow[:ttft=MS]             long time to first chunk (default --slow-ttft-ms)
  synth:tokens=N[,rate=R][,ttft=MS][,think=T][,prompt=P]
                             synthetic stream: N content tokens at R tokens/s (T thinking tokens first,
                             P prompt tokens); cheap, for load tests
  load                       model load answer (done_reason load, empty embeddings, ...)
  thinking                   a reply with thinking/reasoning (fixture if one fits, else synthetic)
  tools                      a reply with a tool call (fixture if one fits, else synthetic, naming the
                             first tool offered or get_weather)
  text                       a plain text answer even if tools are offered or the model thinks
";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScenarioError {
    #[error("unknown scenario {0:?}")]
    Unknown(String),
    #[error("scenario {scenario}: bad parameter {param:?}")]
    BadParam { scenario: String, param: String },
}

/// Synthetic stream parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    pub tokens: usize,
    pub rate: Option<f64>,
    pub ttft: Option<Duration>,
    pub think: usize,
    pub prompt: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum Scenario {
    #[default]
    Default,
    Fixture(String),
    ErrorMidstream {
        after: usize,
    },
    HttpError {
        status: u16,
        message: Option<String>,
    },
    RstMidstream {
        after: usize,
    },
    CloseMidstream {
        after: usize,
    },
    Slow {
        ttft: Option<Duration>,
    },
    Synth(SynthSpec),
    Load,
    Thinking,
    Tools,
    Text,
}

impl Scenario {
    pub fn parse(spec: &str) -> Result<Scenario, ScenarioError> {
        let spec = spec.trim();
        if let Some(name) = spec.strip_prefix("fixture=") {
            return Ok(Scenario::Fixture(name.trim_end_matches(".json").to_owned()));
        }
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let params: Vec<(&str, &str)> =
            params.split(',').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        let bad = |param: &str| ScenarioError::BadParam { scenario: name.to_owned(), param: param.to_owned() };
        let num = |key: &str, default: u64| -> Result<u64, ScenarioError> {
            match params.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => v.parse().map_err(|_| bad(key)),
                None => Ok(default),
            }
        };
        let known = |keys: &[&str]| -> Result<(), ScenarioError> {
            match params.iter().find(|(k, _)| !keys.contains(k)) {
                Some((k, _)) => Err(bad(k)),
                None => Ok(()),
            }
        };
        let ms = |key: &str| -> Result<Option<Duration>, ScenarioError> {
            match params.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => Ok(Some(Duration::from_millis(v.parse().map_err(|_| bad(key))?))),
                None => Ok(None),
            }
        };
        let scenario = match name {
            "" | "default" => Scenario::Default,
            "fixture" => {
                known(&["name"])?;
                let name = params.iter().find(|(k, _)| *k == "name").ok_or_else(|| bad("name"))?;
                Scenario::Fixture(name.1.trim_end_matches(".json").to_owned())
            }
            "error-midstream" => {
                known(&["after"])?;
                Scenario::ErrorMidstream { after: num("after", 3)? as usize }
            }
            "rst-midstream" => {
                known(&["after"])?;
                Scenario::RstMidstream { after: num("after", 3)? as usize }
            }
            "close-midstream" => {
                known(&["after"])?;
                Scenario::CloseMidstream { after: num("after", 3)? as usize }
            }
            "slow" => {
                known(&["ttft"])?;
                Scenario::Slow { ttft: ms("ttft")? }
            }
            "synth" => {
                known(&["tokens", "rate", "ttft", "think", "prompt"])?;
                let rate = match params.iter().find(|(k, _)| *k == "rate") {
                    Some((_, v)) => Some(v.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| bad("rate"))?),
                    None => None,
                };
                Scenario::Synth(SynthSpec {
                    tokens: num("tokens", 20)? as usize,
                    rate,
                    ttft: ms("ttft")?,
                    think: num("think", 0)? as usize,
                    prompt: params.iter().any(|(k, _)| *k == "prompt").then(|| num("prompt", 0)).transpose()?,
                })
            }
            "load" => Scenario::Load,
            "thinking" => Scenario::Thinking,
            "tools" => Scenario::Tools,
            "text" => Scenario::Text,
            other => {
                let code = other
                    .strip_prefix("http-")
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (400..600).contains(c))
                    .ok_or_else(|| ScenarioError::Unknown(spec.to_owned()))?;
                known(&["msg"])?;
                Scenario::HttpError {
                    status: code,
                    message: params.iter().find(|(k, _)| *k == "msg").map(|(_, v)| v.to_string()),
                }
            }
        };
        Ok(scenario)
    }

    /// The scenario named in a model string (`@<scenario>/<model>` or `@<scenario>`).
    pub fn from_model(model: &str) -> Option<Result<Scenario, ScenarioError>> {
        let rest = model.strip_prefix('@')?;
        // Scenario parameters never contain '/', so the first one ends the scenario.
        let spec = rest.split_once('/').map_or(rest, |(s, _)| s);
        Some(Scenario::parse(spec))
    }

    /// Stop the stream after this many units (chunks / events), if the scenario cuts it.
    pub fn cut_after(&self) -> Option<usize> {
        match self {
            Scenario::ErrorMidstream { after }
            | Scenario::RstMidstream { after }
            | Scenario::CloseMidstream { after } => Some(*after),
            _ => None,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::Default => f.write_str("default"),
            Scenario::Fixture(name) => write!(f, "fixture={name}"),
            Scenario::ErrorMidstream { after } => write!(f, "error-midstream:after={after}"),
            Scenario::HttpError { status, .. } => write!(f, "http-{status}"),
            Scenario::RstMidstream { after } => write!(f, "rst-midstream:after={after}"),
            Scenario::CloseMidstream { after } => write!(f, "close-midstream:after={after}"),
            Scenario::Slow { ttft: Some(t) } => write!(f, "slow:ttft={}", t.as_millis()),
            Scenario::Slow { ttft: None } => f.write_str("slow"),
            Scenario::Synth(s) => {
                write!(f, "synth:tokens={}", s.tokens)?;
                if let Some(r) = s.rate {
                    write!(f, ",rate={r}")?;
                }
                if let Some(t) = s.ttft {
                    write!(f, ",ttft={}", t.as_millis())?;
                }
                if s.think > 0 {
                    write!(f, ",think={}", s.think)?;
                }
                if let Some(p) = s.prompt {
                    write!(f, ",prompt={p}")?;
                }
                Ok(())
            }
            Scenario::Load => f.write_str("load"),
            Scenario::Thinking => f.write_str("thinking"),
            Scenario::Tools => f.write_str("tools"),
            Scenario::Text => f.write_str("text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Scenario::parse("").unwrap(), Scenario::Default);
        assert_eq!(Scenario::parse("fixture=a__b__0.json").unwrap(), Scenario::Fixture("a__b__0".into()));
        assert_eq!(Scenario::parse("error-midstream").unwrap(), Scenario::ErrorMidstream { after: 3 });
        assert_eq!(Scenario::parse("rst-midstream:after=5").unwrap(), Scenario::RstMidstream { after: 5 });
        assert_eq!(Scenario::parse("http-404").unwrap(), Scenario::HttpError { status: 404, message: None });
        let Scenario::Synth(s) = Scenario::parse("synth:tokens=100,rate=50,ttft=5").unwrap() else { panic!() };
        assert_eq!((s.tokens, s.rate, s.ttft), (100, Some(50.0), Some(Duration::from_millis(5))));
        assert!(Scenario::parse("synth:tokens=x").is_err());
        assert!(Scenario::parse("synth:nope=1").is_err());
        assert!(Scenario::parse("http-200").is_err());
        assert!(Scenario::parse("bogus").is_err());
        for s in ["slow:ttft=10", "synth:tokens=3,rate=2.5,think=2", "load", "http-503"] {
            assert_eq!(Scenario::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn model_prefix() {
        assert_eq!(Scenario::from_model("llama3.2"), None);
        assert_eq!(Scenario::from_model("@slow/llama3.2").unwrap().unwrap(), Scenario::Slow { ttft: None });
        assert_eq!(
            Scenario::from_model("@synth:tokens=2,rate=10/hf.co/x/y:Q4").unwrap().unwrap(),
            Scenario::Synth(SynthSpec { tokens: 2, rate: Some(10.0), ttft: None, think: 0, prompt: None })
        );
        assert_eq!(Scenario::from_model("@tools").unwrap().unwrap(), Scenario::Tools);
    }
}
