//! Content codings of message bodies (`Content-Encoding`), undone as the bytes arrive: gzip and
//! deflate (flate2), zstd (ruzstd). Ollama never compresses responses itself, but its cloud
//! passthrough forwards a compressed upstream reply untouched, and the OpenAI/Anthropic-compatible
//! routes accept zstd request bodies (Codex CLI sends them).
//!
//! Output is bounded: a body that inflates beyond [`MAX_DECODED`] is cut there (a zip bomb costs
//! CPU, never memory).

use std::io::Write;

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use ruzstd::decoding::FrameDecoder;

/// Decoded bytes one body may produce.
pub const MAX_DECODED: u64 = 1 << 30;
/// Compressed bytes a zstd block may need before it can be decoded (128 KiB block + headers).
const ZSTD_INPUT: usize = 128 * 1024 + 64;
/// Largest zstd window accepted (the decoder keeps this much history).
const ZSTD_WINDOW: u64 = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("content coding {0:?} is not supported")]
    Unsupported(String),
    #[error("{coding} body is corrupt: {detail}")]
    Corrupt { coding: &'static str, detail: String },
    #[error("decoded body exceeds {MAX_DECODED} bytes")]
    TooLarge,
}

enum Codec {
    Gzip(GzDecoder<Vec<u8>>),
    /// HTTP "deflate" is zlib-wrapped; some senders use raw deflate: decided on the first byte.
    Deflate(Option<DeflateKind>),
    Zstd(Box<Zstd>),
}

enum DeflateKind {
    Zlib(ZlibDecoder<Vec<u8>>),
    Raw(DeflateDecoder<Vec<u8>>),
}

struct Zstd {
    frame: FrameDecoder,
    /// A frame has been started (its header read).
    in_frame: bool,
    input: Vec<u8>,
    out: Vec<u8>,
}

/// Undoes one body's content coding.
pub struct ContentDecoder {
    codec: Codec,
    name: &'static str,
    produced: u64,
    failed: bool,
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentDecoder").field("coding", &self.name).field("produced", &self.produced).finish()
    }
}

impl ContentDecoder {
    /// A decoder for a `Content-Encoding` value; `Ok(None)` for identity (no decoding needed).
    pub fn for_header(value: &str) -> Result<Option<ContentDecoder>, DecodeError> {
        // Several codings apply in order; the one observed in practice is a single coding.
        let coding = value.trim().to_ascii_lowercase();
        let (codec, name) = match coding.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => (Codec::Gzip(GzDecoder::new(Vec::new())), "gzip"),
            "deflate" => (Codec::Deflate(None), "deflate"),
            "zstd" => {
                let mut frame = FrameDecoder::new();
                frame.set_max_window_size(ZSTD_WINDOW);
                (
                    Codec::Zstd(Box::new(Zstd { frame, in_frame: false, input: Vec::new(), out: vec![0; 64 * 1024] })),
                    "zstd",
                )
            }
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
        Ok(Some(ContentDecoder { codec, name, produced: 0, failed: false }))
    }

    pub fn coding(&self) -> &'static str {
        self.name
    }

    /// Feeds compressed bytes; decoded bytes go to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), DecodeError> {
        self.run(data, false, out)
    }

    /// End of body: flushes what the decoder still holds.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), DecodeError> {
        self.run(&[], true, out)
    }

    fn run(&mut self, data: &[u8], at_end: bool, out: &mut impl FnMut(&[u8])) -> Result<(), DecodeError> {
        if self.failed {
            return Ok(());
        }
        let ContentDecoder { codec, name, produced, failed } = self;
        let name = *name;
        let corrupt = |e: &dyn std::fmt::Display| DecodeError::Corrupt { coding: name, detail: e.to_string() };
        let mut sink = |decoded: &[u8]| emit(produced, decoded, out);
        let result = match codec {
            Codec::Gzip(d) => inflate(d, data, at_end, &corrupt, &mut sink),
            Codec::Deflate(kind) => {
                if kind.is_none() && !data.is_empty() {
                    // A zlib header's first byte is 0x?8 with CMF*256+FLG a multiple of 31.
                    *kind = Some(if data[0] & 0x0f == 8 {
                        DeflateKind::Zlib(ZlibDecoder::new(Vec::new()))
                    } else {
                        DeflateKind::Raw(DeflateDecoder::new(Vec::new()))
                    });
                }
                match kind {
                    Some(DeflateKind::Zlib(d)) => inflate(d, data, at_end, &corrupt, &mut sink),
                    Some(DeflateKind::Raw(d)) => inflate(d, data, at_end, &corrupt, &mut sink),
                    None => Ok(()),
                }
            }
            Codec::Zstd(z) => z.feed(data, at_end, &mut sink).map_err(|e| match e {
                ZstdError::Frame(e) => corrupt(&e),
                ZstdError::Truncated => corrupt(&"the body ends inside a frame checksum"),
                ZstdError::Emit(e) => e,
            }),
        };
        if result.is_err() {
            *failed = true;
        }
        result
    }
}

/// Compressed bytes inflated at a time: deflate expands at most ~1032:1, so what is held at
/// once stays around a megabyte however large the piece (a bomb costs CPU, not memory).
const INFLATE_SLICE: usize = 1024;

/// The flate2 writers, alike.
trait Inflate {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn try_finish(&mut self) -> std::io::Result<()>;
    fn output(&mut self) -> &mut Vec<u8>;
}

macro_rules! impl_inflate {
    ($($t:ty),*) => {$(
        impl Inflate for $t {
            fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
                Write::write_all(self, data)
            }
            fn try_finish(&mut self) -> std::io::Result<()> {
                <$t>::try_finish(self)
            }
            fn output(&mut self) -> &mut Vec<u8> {
                self.get_mut()
            }
        }
    )*};
}
impl_inflate!(GzDecoder<Vec<u8>>, ZlibDecoder<Vec<u8>>, DeflateDecoder<Vec<u8>>);

fn inflate(
    d: &mut impl Inflate,
    data: &[u8],
    at_end: bool,
    corrupt: &dyn Fn(&dyn std::fmt::Display) -> DecodeError,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    for slice in data.chunks(INFLATE_SLICE) {
        d.write_all(slice).map_err(|e| corrupt(&e))?;
        sink(&std::mem::take(d.output()))?;
    }
    if at_end {
        d.try_finish().map_err(|e| corrupt(&e))?;
        sink(&std::mem::take(d.output()))?;
    }
    Ok(())
}

/// Hands decoded bytes on, up to [`MAX_DECODED`] for the body.
fn emit(produced: &mut u64, decoded: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), DecodeError> {
    let room = MAX_DECODED - *produced;
    if decoded.len() as u64 > room {
        out(&decoded[..room as usize]);
        *produced = MAX_DECODED;
        return Err(DecodeError::TooLarge);
    }
    *produced += decoded.len() as u64;
    if !decoded.is_empty() {
        out(decoded);
    }
    Ok(())
}

enum ZstdError {
    Frame(ruzstd::decoding::errors::FrameDecoderError),
    /// The body ends inside a frame's checksum.
    Truncated,
    Emit(DecodeError),
}

impl Zstd {
    /// Buffers input until whole blocks are there and decodes them, handing on each output
    /// buffer as it fills (a frame of RLE blocks inflates ~30000:1: never collect it whole).
    fn feed(
        &mut self,
        data: &[u8],
        at_end: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), ZstdError> {
        let mut data = data;
        loop {
            // Top up the input window (bounded: a block never needs more).
            let take = data.len().min(ZSTD_INPUT.saturating_sub(self.input.len()));
            self.input.extend_from_slice(&data[..take]);
            data = &data[take..];
            loop {
                if !self.in_frame {
                    // A frame header is at most 18 bytes: wait for all of it (or the end).
                    if self.input.is_empty() || (self.input.len() < 18 && !at_end) {
                        break;
                    }
                    let mut src = &self.input[..];
                    self.frame.reset(&mut src).map_err(ZstdError::Frame)?;
                    let used = self.input.len() - src.len();
                    self.input.drain(..used);
                    self.in_frame = true;
                }
                // ruzstd claims 4 bytes for a frame's checksum even when fewer are there: only
                // call it with a block header's worth or more (blocks need 3), or at the end.
                if self.input.len() < 4 && !at_end {
                    break;
                }
                let available = self.input.len();
                let (read, written) =
                    self.frame.decode_from_to(&self.input, &mut self.out).map_err(ZstdError::Frame)?;
                sink(&self.out[..written]).map_err(ZstdError::Emit)?;
                if read > available {
                    // It counted a checksum's 4 bytes that are not there (we call it with fewer
                    // only at the end), and would forever: the frame was cut short.
                    return Err(ZstdError::Truncated);
                }
                self.input.drain(..read.min(self.input.len()));
                if self.frame.is_finished() && self.frame.can_collect() == 0 {
                    // Frames may follow one another.
                    self.in_frame = false;
                    continue;
                }
                if read == 0 && written == 0 {
                    break;
                }
            }
            if data.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn decode_in_pieces(coding: &str, compressed: &[u8], piece: usize) -> Vec<u8> {
        let mut d = ContentDecoder::for_header(coding).unwrap().unwrap();
        let mut out = Vec::new();
        for chunk in compressed.chunks(piece.max(1)) {
            d.feed(chunk, &mut |b| out.extend_from_slice(b)).unwrap();
        }
        d.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        (0..2000)
            .map(|i| format!("{{\"model\":\"llama3.2\",\"response\":\"tok{i}\",\"done\":false}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn gzip_and_deflate_in_any_pieces() {
        let plain = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        for piece in [1, 7, 1000, usize::MAX] {
            assert_eq!(decode_in_pieces("gzip", &gz, piece), plain);
            assert_eq!(decode_in_pieces("deflate", &zl, piece), plain);
            assert_eq!(decode_in_pieces("deflate", &raw, piece), plain);
        }
    }

    #[test]
    fn zstd_in_any_pieces() {
        let plain = sample();
        let compressed = ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
        for piece in [1, 13, 4096, usize::MAX] {
            assert_eq!(decode_in_pieces("zstd", &compressed, piece), plain, "piece {piece}");
        }
    }

    /// ruzstd counts a checksum's 4 bytes as read even when fewer are there, and did so forever
    /// at the end of a body (found by the `content_coding` fuzz target).
    #[test]
    fn a_body_ending_inside_a_frame_checksum_is_corrupt() {
        // Frame header with the checksum flag, one raw last block "abc", then 0-3 checksum bytes.
        let frame = [&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x38, 0x19, 0x00, 0x00][..], b"abc", &[0x8d, 0x9c, 0x5f]].concat();
        for cut in 0..=3 {
            for piece in [1, 4096] {
                let mut d = ContentDecoder::for_header("zstd").unwrap().unwrap();
                let mut out = Vec::new();
                for chunk in frame[..frame.len() - cut].chunks(piece) {
                    d.feed(chunk, &mut |b| out.extend_from_slice(b)).unwrap();
                }
                let end = d.finish(&mut |b| out.extend_from_slice(b));
                assert!(matches!(end, Err(DecodeError::Corrupt { .. })), "cut {cut}, piece {piece}: {end:?}");
                assert_eq!(out, b"abc");
            }
        }
    }

    #[test]
    fn bombs_are_handed_on_in_bounded_pieces() {
        let plain = vec![b'0'; 64 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
        for (coding, body) in [("gzip", gz), ("zstd", zst)] {
            let mut d = ContentDecoder::for_header(coding).unwrap().unwrap();
            let (mut total, mut largest) = (0, 0);
            let mut out = |b: &[u8]| {
                total += b.len();
                largest = largest.max(b.len());
            };
            // The whole compressed body at once: what a decoder holds must not scale with it.
            d.feed(&body, &mut out).unwrap();
            d.finish(&mut out).unwrap();
            assert_eq!(total, plain.len(), "{coding}");
            assert!(largest <= 2 << 20, "{coding}: a piece of {largest} bytes");
        }
    }

    #[test]
    fn identity_unknown_and_corrupt() {
        assert!(ContentDecoder::for_header("identity").unwrap().is_none());
        assert_eq!(ContentDecoder::for_header("br").unwrap_err(), DecodeError::Unsupported("br".into()));
        let mut d = ContentDecoder::for_header("gzip").unwrap().unwrap();
        assert!(d.feed(b"definitely not gzip at all, not even close", &mut |_| {}).is_err());
        // After an error the decoder stays quiet instead of failing again.
        assert!(d.feed(b"more", &mut |_| {}).is_ok());
    }
}
