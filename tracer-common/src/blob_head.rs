//! The head of a blob upload, read by the kernel programs themselves: `ollama create` sends
//! each model layer as `POST /api/blobs/sha256:…` with a `Content-Length` body of up to
//! gigabytes that nothing decodes. User space names such bodies for skipping once their head
//! has crossed the ring buffer, but at several GB/s the ring fills before it can; so the
//! programs read the head from the packet that starts it and name the rest of the body
//! themselves (`crate::global::SKIP_OVER`).
//!
//! Shared so the host tests can hold it against a real HTTP parser: the scan is written for
//! the verifier (bounded loops over a fixed array, indices masked, no slices of variable
//! length, state carried in memory: see [`ScanCells`]).

/// How a blob upload's request starts.
pub const BLOB_UPLOAD: [u8; 16] = *b"POST /api/blobs/";
/// Bytes of a blob upload's first packet searched for its head's end (a power of two). Real
/// clients' upload heads are 250–350 bytes; the verifier walks every byte of the scan at load
/// (≈ 240 steps each), which is what bounds it.
pub const HEAD_SCAN: usize = 512;

// Header names at a line start: the 16 bytes from the line's LF, as two big-endian words, and
// the bits to set in what was read to lower-case its letters (only bit 5, only where the name
// has a letter: an OR-ed byte equals a lower-case letter only if it was that letter).
const H_CONTENT: u64 = u64::from_be_bytes(*b"\ncontent");
const H_CONTENT_CASE: u64 = 0x0020_2020_2020_2020;
const H_LENGTH: u64 = u64::from_be_bytes(*b"-length:");
const H_LENGTH_CASE: u64 = 0x0020_2020_2020_2000;
const H_ENCODING: u64 = u64::from_be_bytes(*b"-encodin");
const H_ENCODING_CASE: u64 = 0x0020_2020_2020_2020;
const H_TRANSFER: u64 = u64::from_be_bytes(*b"\ntransfe");
const H_TRANSFER_CASE: u64 = 0x0020_2020_2020_2020;
const H_TRANSFER_ENC: u64 = u64::from_be_bytes(*b"r-encodi");
const H_TRANSFER_ENC_CASE: u64 = 0x2000_2020_2020_2020;
/// Most bytes of a `Content-Length` value read (blanks, digits, the CR).
const VALUE_SCAN: u32 = 32;
const M: usize = HEAD_SCAN - 1;

/// What the scan keeps between bytes and between its passes, in memory the verifier does not
/// track (kernel: the scratch map value). Kept in registers, a value compared with a constant
/// becomes that constant on one side of the branch; the next comparison is then decided in
/// advance, which makes the verifier track the value exactly, and the states of one iteration
/// no longer merge: walked that way, 1 KiB of head cost 350 000 verifier steps (the packet
/// programs themselves, 25 000). Read back from memory, each value is unknown again and one
/// state reaches each byte: 250 000 for 1 KiB, ≈ 125 000 for the 512 bytes scanned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanCells {
    /// The last 16 bytes read, lower-cased where they matched (see `H_*`), oldest first.
    hi: u64,
    lo: u64,
    /// `Content-Length` headers seen, and where (the last one's) value starts.
    lengths: u32,
    value_at: u32,
    /// Where the head ends (0: not found).
    end: u32,
    _pad: u32,
}

#[inline(always)]
fn store<T: Copy>(cell: &mut T, v: T) {
    unsafe { core::ptr::write_volatile(cell, v) }
}

#[inline(always)]
fn recall<T: Copy>(cell: &T) -> T {
    unsafe { core::ptr::read_volatile(cell) }
}

/// Reads a request head from `data[..n]`: the head's length (through its blank line) and its
/// `Content-Length`, when the head ends within those bytes, has exactly one `Content-Length`
/// (optional blanks, then digits, then CR) and neither `Transfer-Encoding` nor
/// `Content-Encoding`. Anything else is `None`: the body is then left to user space.
///
/// Two passes: the first keeps the last 16 bytes in two words and compares them with the
/// header names at every byte, up to the blank line; the second reads the value. Everything
/// carried from one byte to the next goes through `cells` (see [`ScanCells`]).
#[inline(always)]
pub fn blob_head(data: &[u8; HEAD_SCAN], n: u32, cells: &mut ScanCells) -> Option<(u32, u64)> {
    *cells = ScanCells::default();
    // 1. Header names, up to the blank line that ends the head.
    let mut i: u32 = 0;
    while i < HEAD_SCAN as u32 {
        if i >= n {
            return None;
        }
        let (hi, lo) = (recall(&cells.hi), recall(&cells.lo));
        let hi = (hi << 8) | (lo >> 56);
        let lo = (lo << 8) | data[(i as usize) & M] as u64;
        store(&mut cells.hi, hi);
        store(&mut cells.lo, lo);
        if lo as u32 == 0x0d0a_0d0a {
            store(&mut cells.end, i + 1);
            break;
        }
        if hi | H_CONTENT_CASE == H_CONTENT {
            if lo | H_LENGTH_CASE == H_LENGTH {
                let seen = recall(&cells.lengths);
                store(&mut cells.lengths, seen + 1);
                store(&mut cells.value_at, i + 1);
            } else if lo | H_ENCODING_CASE == H_ENCODING {
                return None;
            }
        } else if hi | H_TRANSFER_CASE == H_TRANSFER && lo | H_TRANSFER_ENC_CASE == H_TRANSFER_ENC {
            return None;
        }
        i += 1;
    }
    let end = recall(&cells.end);
    // Exactly one Content-Length, in a head that ends here.
    if recall(&cells.lengths) != 1 || end == 0 {
        return None;
    }
    // 2. The value: blanks, digits, CR.
    let at = recall(&cells.value_at) & (HEAD_SCAN as u32 - 1);
    let mut len: u64 = 0;
    let mut digits = false;
    let mut k: u32 = 0;
    while k < VALUE_SCAN {
        let b = data[((at + k) as usize) & M];
        if b.wrapping_sub(b'0') < 10 {
            // Over 2^50 bytes is no body anyone uploads.
            if len >= 1 << 50 {
                return None;
            }
            len = len * 10 + (b - b'0') as u64;
            digits = true;
        } else if b == b'\r' && digits {
            return Some((end, len));
        } else if digits || !(b == b' ' || b == b'\t') {
            return None;
        }
        k += 1;
    }
    None
}

const _: () = assert!(crate::CHUNK_SIZE >= HEAD_SCAN && HEAD_SCAN.is_power_of_two());
