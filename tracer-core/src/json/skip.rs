//! Containers a visitor does not want: walked for their nesting, strings and top-level commas
//! only (counted, or captured raw up to a limit), never parsed.

use super::visit::{Kind, Path, SkipStats};
use super::{JsonScanner, JsonVisitor, scan};

#[derive(Debug, Default)]
pub(super) struct SkipState {
    pub(super) depth: u32,
    pub(super) kind: Option<Kind>,
    pub(super) in_str: bool,
    pub(super) esc: bool,
    pub(super) commas: u64,
    pub(super) nonempty: bool,
    pub(super) stats: SkipStats,
    pub(super) capture: Option<Vec<u8>>,
    pub(super) limit: usize,
    pub(super) truncated: bool,
}

impl JsonScanner {
    /// Walks a skipped container: only nesting, strings and top-level commas matter.
    pub(super) fn skip_bytes<V: JsonVisitor>(&mut self, input: &[u8], start: usize, v: &mut V) -> usize {
        let mut i = start;
        let n = input.len();
        let sk = &mut self.skip;
        while i < n {
            if sk.in_str {
                if sk.esc {
                    sk.esc = false;
                    sk.stats.string_bytes += 1;
                    i += 1;
                    continue;
                }
                match scan::quote_or_backslash(&input[i..]) {
                    None => {
                        sk.stats.string_bytes += (n - i) as u64;
                        i = n;
                    }
                    Some(k) => {
                        sk.stats.string_bytes += k as u64;
                        if input[i + k] == b'\\' {
                            sk.esc = true;
                            sk.stats.string_bytes += 1;
                        } else {
                            sk.in_str = false;
                        }
                        i += k + 1;
                    }
                }
                continue;
            }
            // Numbers, literals, commas and whitespace: jump to the next structural byte.
            let (run, commas) = scan::plain_run(&input[i..]);
            if run > 0 {
                if sk.depth == 1 {
                    sk.commas += commas;
                    if !sk.nonempty && (commas > 0 || input[i..i + run].iter().any(|c| !c.is_ascii_whitespace())) {
                        sk.nonempty = true;
                    }
                }
                i += run;
                if i == n {
                    break;
                }
            }
            let c = input[i];
            i += 1;
            match c {
                b'"' => {
                    sk.in_str = true;
                    if sk.depth == 1 {
                        sk.nonempty = true;
                        if sk.kind == Some(Kind::Array) {
                            sk.stats.strings += 1;
                        }
                    }
                }
                b'[' | b'{' => {
                    if sk.depth == 1 {
                        sk.nonempty = true;
                    }
                    sk.depth += 1;
                }
                // `]` or `}`: plain_run stops only at structural bytes.
                _ => {
                    sk.depth -= 1;
                    if sk.depth == 0 {
                        break;
                    }
                }
            }
        }
        if let Some(buf) = sk.capture.as_mut() {
            let piece = &input[start..i];
            let room = sk.limit.saturating_sub(buf.len());
            if piece.len() > room {
                buf.extend_from_slice(&piece[..room]);
                sk.truncated = true;
            } else {
                buf.extend_from_slice(piece);
            }
        }
        if sk.depth == 0 {
            let kind = sk.kind.expect("skip has a kind");
            let mut stats = sk.stats;
            stats.elements = if sk.nonempty { sk.commas + 1 } else { 0 };
            let path = Path { frames: &self.stack };
            match self.skip.capture.take() {
                Some(raw) => v.captured(&path, kind, &raw, self.skip.truncated, stats),
                None => v.skipped(&path, kind, stats),
            }
            self.after_value();
        }
        i
    }
}
