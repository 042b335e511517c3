//! The scanner's byte searches, 16 bytes at a time with SSE2 (part of every x86_64
//! CPU) and a word at a time elsewhere. Header lines are short, so what matters is
//! that a search over one costs one or two steps, not a loop per byte: these were
//! half of the scanner's instructions per datagram as plain loops.

/// Position of the first `needle` in `hay[from..]` (as an index into `hay`).
#[inline]
pub(super) fn find_byte(hay: &[u8], from: usize, needle: u8) -> Option<usize> {
    let s = hay.get(from..)?;
    first_match(s, |b| b == needle, |v| simd::eq(v, needle)).map(|p| from + p)
}

/// Position of the first byte in `s` that ends a Request-URI: a control byte, SP,
/// or DEL (bytes from 0x80 on do not).
#[inline]
pub(super) fn find_uri_end(s: &[u8]) -> Option<usize> {
    first_match(s, |b| b <= b' ' || b == 0x7f, simd::le_space_or_del)
}

/// Position of the first `"`, `<` or `;` in `s[from..]` (as an index into `s`): what
/// a Contact value's parser stops at.
#[inline]
pub(super) fn find_contact_mark(s: &[u8], from: usize) -> Option<usize> {
    let t = s.get(from..)?;
    first_match(t, |b| matches!(b, b'"' | b'<' | b';'), simd::contact_marks).map(|p| from + p)
}

/// The first position whose byte `one` accepts: whole 16-byte blocks by `block`
/// (a mask, bit i for byte i), the tail byte by byte.
#[inline(always)]
fn first_match(
    s: &[u8],
    one: impl Fn(u8) -> bool,
    block: impl Fn(&[u8; 16]) -> u32,
) -> Option<usize> {
    let mut blocks = s.chunks_exact(16);
    let mut base = 0;
    for c in &mut blocks {
        let Ok(arr) = <&[u8; 16]>::try_from(c) else {
            break; // unreachable: chunks_exact yields 16-byte chunks
        };
        let m = block(arr);
        if m != 0 {
            return Some(base + m.trailing_zeros() as usize);
        }
        base += 16;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| one(b))
        .map(|p| base + p)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    #[inline(always)]
    fn load(v: &[u8; 16]) -> __m128i {
        // SAFETY: an unaligned load of exactly the 16 bytes `v` refers to; SSE2 is
        // part of the x86_64 baseline.
        unsafe { _mm_loadu_si128(v.as_ptr().cast()) }
    }

    #[inline(always)]
    fn mask(m: __m128i) -> u32 {
        // SAFETY: SSE2 (x86_64 baseline), register operations only.
        unsafe { _mm_movemask_epi8(m) as u32 }
    }

    #[inline(always)]
    fn splat(b: u8) -> __m128i {
        // SAFETY: as above.
        unsafe { _mm_set1_epi8(b as i8) }
    }

    #[inline(always)]
    fn cmpeq(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: as above.
        unsafe { _mm_cmpeq_epi8(a, b) }
    }

    #[inline(always)]
    fn or(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: as above.
        unsafe { _mm_or_si128(a, b) }
    }

    #[inline(always)]
    pub fn eq(v: &[u8; 16], needle: u8) -> u32 {
        mask(cmpeq(load(v), splat(needle)))
    }

    #[inline(always)]
    pub fn le_space_or_del(v: &[u8; 16]) -> u32 {
        let x = load(v);
        // Unsigned x <= 0x20 exactly when min(x, 0x20) == x.
        // SAFETY: as above.
        let low = cmpeq(unsafe { _mm_min_epu8(x, splat(b' ')) }, x);
        mask(or(low, cmpeq(x, splat(0x7f))))
    }

    #[inline(always)]
    pub fn contact_marks(v: &[u8; 16]) -> u32 {
        let x = load(v);
        let m = or(cmpeq(x, splat(b'"')), cmpeq(x, splat(b'<')));
        mask(or(m, cmpeq(x, splat(b';'))))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    #[inline(always)]
    fn each(v: &[u8; 16], f: impl Fn(u8) -> bool) -> u32 {
        v.iter()
            .enumerate()
            .fold(0, |m, (i, &b)| m | (u32::from(f(b)) << i))
    }

    pub fn eq(v: &[u8; 16], needle: u8) -> u32 {
        each(v, |b| b == needle)
    }

    pub fn le_space_or_del(v: &[u8; 16]) -> u32 {
        each(v, |b| b <= b' ' || b == 0x7f)
    }

    pub fn contact_marks(v: &[u8; 16]) -> u32 {
        each(v, |b| matches!(b, b'"' | b'<' | b';'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(s: &[u8], from: usize, f: impl Fn(u8) -> bool) -> Option<usize> {
        s.get(from..)
            .and_then(|t| t.iter().position(|&b| f(b)))
            .map(|p| p + from)
    }

    fn check(hay: &[u8], from: usize) {
        for needle in [0u8, b'\n', b'\r', b':', 0x7f, 0x80, 0xff] {
            assert_eq!(
                find_byte(hay, from, needle),
                naive(hay, from, |b| b == needle)
            );
        }
        let uri_end = |b: u8| b <= b' ' || b == 0x7f;
        assert_eq!(
            find_uri_end(hay.get(from..).unwrap_or_default()),
            naive(hay, from, uri_end).map(|p| p - from)
        );
        let marks = |b: u8| matches!(b, b'"' | b'<' | b';');
        assert_eq!(find_contact_mark(hay, from), naive(hay, from, marks));
    }

    #[test]
    fn every_offset_and_length_around_the_block_size() {
        // Each byte value once, then the same again shifted, at every start: the
        // match falls in a block, at its edges and in the tail.
        let hay: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 512] {
            for from in 0..=len.min(40) + 2 {
                check(&hay[..len], from);
            }
        }
        // Signed-compare traps: bytes from 0x80 on are neither ≤ SP nor DEL.
        let high = [0x80u8; 40];
        assert_eq!(find_uri_end(&high), None);
        assert_eq!(find_uri_end(&[0x80, 0xa0, 0xff, 0x20]), Some(3));
    }

    proptest! {
        #[test]
        fn prop_searches_match_naive(
            hay in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b';'), Just(b' '), Just(0x7f)],
                0..80,
            ),
            from in 0usize..90,
        ) {
            check(&hay, from);
        }
    }
}
