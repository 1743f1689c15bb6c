//! G.711 μ-law and A-law companding (ITU-T G.711), for answering a PCMA-only phone with clips
//! stored as μ-law.
//!
//! Why hand-written: it is a 256-entry table computed at compile time from the reference
//! algorithm (the one in the ITU/Sun `g711.c`); no maintained crate offers less than this.
//! μ-law → A-law goes through 14/13-bit linear, which for G.711 is exact up to the one
//! quantisation step the two laws do not share.

/// Decodes one μ-law sample to 16-bit linear PCM.
pub const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let t = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -t as i16
    } else {
        t as i16
    }
}

/// Decodes one A-law sample to 16-bit linear PCM.
pub const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];

const fn segment(v: i32, table: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if v <= table[i] {
            return i;
        }
        i += 1;
    }
    8
}

/// Encodes 16-bit linear PCM as A-law.
pub const fn linear_to_alaw(pcm: i16) -> u8 {
    let mut v = (pcm as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as u8) << 4;
    if seg < 2 {
        a |= ((v >> 1) & 0x0F) as u8;
    } else {
        a |= ((v >> seg) & 0x0F) as u8;
    }
    a ^ mask
}

/// Encodes 16-bit linear PCM as μ-law.
pub const fn linear_to_ulaw(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 8159;
    let mut v = (pcm as i32) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    if v > CLIP {
        v = CLIP;
    }
    v += BIAS >> 2;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as u8) << 4) | ((v >> (seg + 1)) & 0x0F) as u8;
    u ^ mask
}

const fn build_ulaw_to_alaw() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_alaw(ulaw_to_linear(i as u8));
        i += 1;
    }
    t
}

static ULAW_TO_ALAW: [u8; 256] = build_ulaw_to_alaw();

/// Converts μ-law samples to A-law in place of a copy.
pub fn ulaw_to_alaw(samples: &[u8]) -> Vec<u8> {
    samples
        .iter()
        .map(|&u| ULAW_TO_ALAW[usize::from(u)])
        .collect()
}

/// μ-law silence (positive zero).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law silence (positive zero).
pub const ALAW_SILENCE: u8 = 0xD5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trips_through_linear() {
        for u in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(u));
            // 0x7F is negative zero; it encodes back as positive zero.
            if u == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, u, "ulaw {u:#x}");
            }
        }
    }

    #[test]
    fn alaw_round_trips_through_linear() {
        for a in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(a)), a, "alaw {a:#x}");
        }
    }

    #[test]
    fn reference_points() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(ulaw_to_alaw(&[ULAW_SILENCE]), vec![ALAW_SILENCE]);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn conversion_keeps_sign_and_is_close() {
        for u in 0..=255u8 {
            let l = i32::from(ulaw_to_linear(u));
            let a = i32::from(alaw_to_linear(ulaw_to_alaw(&[u])[0]));
            assert!(l.signum() * a.signum() >= 0, "{u:#x}");
            // Within one A-law quantisation step (at most 1/16 of the value, or 16 near zero).
            assert!(
                (l - a).abs() <= (l.abs() / 16).max(16),
                "{u:#x}: {l} vs {a}"
            );
        }
    }
}
