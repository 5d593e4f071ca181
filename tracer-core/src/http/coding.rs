//! A body's `Content-Encoding`, undone on the way out of the HTTP stage: the stages after it see
//! the body as the application wrote it, and the size it had on the wire.

use super::encoding::ContentDecoder;

/// One body's content coding and its size as sent (after de-chunking, before decoding).
#[derive(Debug, Default)]
pub(super) struct BodyCoding {
    decoder: Option<ContentDecoder>,
    /// The coding is unknown, or its bytes turned out corrupt: nothing more is decoded.
    failed: bool,
    /// Body bytes as sent so far (bytes the capture missed included, where their number is known).
    pub(super) wire: u64,
    /// Bytes were missed in a number not known: `wire` is a lower bound.
    pub(super) partial: bool,
}

/// What feeding or finishing a body did.
#[must_use]
pub(super) enum Decoded {
    Ok,
    /// The body just became undecodable (said once).
    Failed,
}

impl BodyCoding {
    /// For a head's `Content-Encoding` (lower-cased by the head parser); an unknown coding is
    /// undecodable from the start (the caller says so once, after the head).
    pub(super) fn for_header(value: Option<&str>) -> (BodyCoding, Decoded) {
        match value.map(ContentDecoder::for_header) {
            None | Some(Ok(None)) => (BodyCoding::default(), Decoded::Ok),
            Some(Ok(Some(d))) => (BodyCoding { decoder: Some(d), ..Default::default() }, Decoded::Ok),
            Some(Err(_)) => (BodyCoding { failed: true, ..Default::default() }, Decoded::Failed),
        }
    }

    /// Body bytes as sent: counted, decoded, and what they decode to handed to `out` (nothing
    /// once the body is undecodable).
    pub(super) fn feed(&mut self, data: &[u8], out: &mut impl FnMut(&[u8])) -> Decoded {
        self.wire += data.len() as u64;
        if self.failed {
            return Decoded::Ok;
        }
        match self.decoder.as_mut() {
            None => {
                out(data);
                Decoded::Ok
            }
            Some(d) => match d.feed(data, out) {
                Ok(()) => Decoded::Ok,
                Err(_) => {
                    self.failed = true;
                    Decoded::Failed
                }
            },
        }
    }

    /// No content coding: the bytes as sent are the bytes as written, so counting them is
    /// all there is to do.
    pub(super) fn is_identity(&self) -> bool {
        self.decoder.is_none() && !self.failed
    }

    /// `len` body bytes were missed by the capture (`None`: a number not known). They count
    /// towards the size; a content coding cannot be decoded past them.
    pub(super) fn skip(&mut self, len: Option<u64>) -> Decoded {
        match len {
            Some(n) => self.wire += n,
            None => self.partial = true,
        }
        if self.decoder.is_some() && !self.failed {
            self.failed = true;
            return Decoded::Failed;
        }
        Decoded::Ok
    }

    /// The body ended: what the decoder still holds goes to `out`.
    pub(super) fn finish(&mut self, out: &mut impl FnMut(&[u8])) -> Decoded {
        let Some(d) = self.decoder.as_mut().filter(|_| !self.failed) else { return Decoded::Ok };
        let r = d.finish(out);
        self.decoder = None;
        match r {
            Ok(()) => Decoded::Ok,
            Err(_) => {
                self.failed = true;
                Decoded::Failed
            }
        }
    }
}
