//! Byte searches of the scanner's hot loops, 16 bytes at a time with SSE2 (part of every x86-64
//! CPU) and byte by byte elsewhere. Streamed JSON is mostly short strings (a token, a key) and,
//! in embeddings, long runs of numbers: a general `memchr` pays its set-up on every short
//! string, and a byte loop is slow on the long runs.

/// Position of the first `"` or `\` in `s`.
#[inline]
pub fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut i = 0;
        while i + 16 <= s.len() {
            // SAFETY: SSE2 is part of x86-64; the load reads s[i..i + 16], in bounds.
            let mask = unsafe { sse2::eq2(s.as_ptr().add(i), b'"', b'\\') };
            if mask != 0 {
                return Some(i + mask.trailing_zeros() as usize);
            }
            i += 16;
        }
        s[i..].iter().position(|&c| c == b'"' || c == b'\\').map(|k| i + k)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        s.iter().position(|&c| c == b'"' || c == b'\\')
    }
}

/// Outside strings in a skipped container: the length of the leading run of `s` with no
/// structural byte (`"`, `[`, `]`, `{`, `}`), and the commas in that run.
#[inline]
pub fn plain_run(s: &[u8]) -> (usize, u64) {
    let mut commas = 0u64;
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= s.len() {
        // SAFETY: as above.
        let (structural, comma) = unsafe { sse2::structural_and_commas(s.as_ptr().add(i)) };
        if structural != 0 {
            let k = structural.trailing_zeros();
            commas += u64::from((comma & ((1u32 << k) - 1)).count_ones());
            return (i + k as usize, commas);
        }
        commas += u64::from(comma.count_ones());
        i += 16;
    }
    for (k, &c) in s[i..].iter().enumerate() {
        match c {
            b'"' | b'[' | b']' | b'{' | b'}' => return (i + k, commas),
            b',' => commas += 1,
            _ => {}
        }
    }
    (s.len(), commas)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};

    /// Bit i set where byte i of the 16 at `p` is `a` or `b`.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline]
    pub unsafe fn eq2(p: *const u8, a: u8, b: u8) -> u32 {
        // SAFETY: the caller guarantees 16 readable bytes; loadu has no alignment requirement.
        unsafe {
            let v = _mm_loadu_si128(p as *const __m128i);
            let m = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(a as i8)), _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)));
            _mm_movemask_epi8(m) as u32
        }
    }

    /// Masks of the structural bytes and of the commas among the 16 at `p`.
    ///
    /// # Safety
    /// `p..p + 16` must be readable.
    #[inline]
    pub unsafe fn structural_and_commas(p: *const u8) -> (u32, u32) {
        // SAFETY: as above.
        unsafe {
            let v = _mm_loadu_si128(p as *const __m128i);
            let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
            // `[`/`]` and `{`/`}` differ from each other by 2: one compare each after
            // clearing that bit would also match `Y`/`y`; explicit compares are as cheap.
            let s = _mm_or_si128(
                _mm_or_si128(eq(b'"'), _mm_or_si128(eq(b'['), eq(b']'))),
                _mm_or_si128(eq(b'{'), eq(b'}')),
            );
            (_mm_movemask_epi8(s) as u32, _mm_movemask_epi8(eq(b',')) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_quote(s: &[u8]) -> Option<usize> {
        s.iter().position(|&c| c == b'"' || c == b'\\')
    }

    fn naive_run(s: &[u8]) -> (usize, u64) {
        let end = s.iter().position(|c| b"\"[]{}".contains(c)).unwrap_or(s.len());
        (end, s[..end].iter().filter(|&&c| c == b',').count() as u64)
    }

    #[test]
    fn agree_with_the_byte_loops_at_every_length_and_position() {
        let base: Vec<u8> = b"0.0123,-0.5,1e-07,".iter().cycle().take(70).copied().collect();
        for len in 0..base.len() {
            let s = &base[..len];
            assert_eq!(plain_run(s), naive_run(s), "len {len}");
            assert_eq!(quote_or_backslash(s), naive_quote(s));
            for pos in 0..len {
                for c in [b'"', b'\\', b'[', b']', b'{', b'}'] {
                    let mut t = s.to_vec();
                    t[pos] = c;
                    assert_eq!(plain_run(&t), naive_run(&t), "len {len} pos {pos} {}", c as char);
                    assert_eq!(quote_or_backslash(&t), naive_quote(&t), "len {len} pos {pos}");
                }
            }
        }
        // High bytes (UTF-8) are not mistaken for anything.
        let utf8 = "é€😀 text 日本語 more text here".as_bytes();
        assert_eq!(quote_or_backslash(utf8), None);
        assert_eq!(plain_run(utf8), (utf8.len(), 0));
    }
}
