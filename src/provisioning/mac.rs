//! A device's Ethernet MAC address, the key every provisioning lookup starts from.
//!
//! Phones spell their MAC in many ways: `0004F2ABCDEF` in Polycom file names, `00:15:65:aa:bb:cc`
//! in a Yealink User-Agent, `0004.f2ab.cdef` in Cisco tooling, `00-04-f2-ab-cd-ef` in
//! spreadsheets an operator imports. [`Mac`] accepts all of them and prints exactly one form
//! (lowercase, no separators), so a device is stored and looked up under a single key whatever
//! the phone or the operator typed.
//!
//! Parsing also refuses names that look like a MAC but cannot be a device: the all-zero
//! `000000000000` is Polycom's *master* file name, and a group (multicast / broadcast) address is
//! never a phone's own. Refusing them here means a request for `000000000000.cfg` can never
//! create a device record.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A unicast, non-zero 48-bit MAC address of a device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a device MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not 12 hex digits in one of the accepted groupings.
    #[error("not a MAC address: expected 12 hex digits, optionally grouped by ':', '-' or '.'")]
    Format,
    /// `000000000000`: a vendor's common-file name (Polycom master), never a device.
    #[error("the all-zero MAC is a common-file name, not a device")]
    Zero,
    /// The group bit is set (multicast, or the broadcast `ffffffffffff`): no phone has one.
    #[error("a multicast or broadcast address is not a device MAC")]
    Group,
}

impl Mac {
    /// Parses any of the spellings phones and operators use, in any letter case:
    /// `0004f2abcdef`, `00:04:f2:ab:cd:ef`, `00-04-f2-ab-cd-ef`, `00.04.f2.ab.cd.ef`,
    /// `0004.f2ab.cdef` (a separator, when present, must be the same throughout and sit at
    /// group boundaries, so that `00:04f2abcdef` or `0:0:4…` are refused as typos).
    pub fn parse(s: &str) -> Result<Mac, MacError> {
        let b = s.as_bytes();
        let digits: [u8; 12] = match b.len() {
            12 => collect_hex(b.iter().copied())?,
            // xx?xx?xx?xx?xx?xx
            17 => {
                let sep = b[2];
                if !is_sep(sep) {
                    return Err(MacError::Format);
                }
                for i in (2..17).step_by(3) {
                    if b[i] != sep {
                        return Err(MacError::Format);
                    }
                }
                collect_hex(
                    b.iter()
                        .enumerate()
                        .filter(|(i, _)| i % 3 != 2)
                        .map(|(_, c)| *c),
                )?
            }
            // xxxx?xxxx?xxxx
            14 => {
                let sep = b[4];
                if !is_sep(sep) || b[9] != sep {
                    return Err(MacError::Format);
                }
                collect_hex(
                    b.iter()
                        .enumerate()
                        .filter(|(i, _)| i % 5 != 4)
                        .map(|(_, c)| *c),
                )?
            }
            _ => return Err(MacError::Format),
        };
        let mut octets = [0u8; 6];
        for (i, o) in octets.iter_mut().enumerate() {
            *o = (digits[2 * i] << 4) | digits[2 * i + 1];
        }
        if octets == [0; 6] {
            return Err(MacError::Zero);
        }
        if octets[0] & 0x01 != 0 {
            return Err(MacError::Group);
        }
        Ok(Mac(octets))
    }

    /// The six octets, for callers deriving per-device secrets from the MAC.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// `00:04:f2:ab:cd:ef` — the form Yealink and SIP tools print, and what humans read best.
    pub fn colon(&self) -> String {
        let o = self.0;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }

    /// `0004f2abcdef` — the canonical key (same as `Display`).
    pub fn as_hex(&self) -> String {
        self.to_string()
    }

    /// `0004F2ABCDEF` — the form Cisco's `$MA` and several vendors' file names use.
    pub fn as_upper_hex(&self) -> String {
        self.as_hex().to_ascii_uppercase()
    }
}

fn is_sep(c: u8) -> bool {
    matches!(c, b':' | b'-' | b'.')
}

/// Collects exactly 12 hex digits as nibble values.
fn collect_hex(it: impl Iterator<Item = u8>) -> Result<[u8; 12], MacError> {
    let mut out = [0u8; 12];
    let mut n = 0;
    for c in it {
        if n == 12 {
            return Err(MacError::Format);
        }
        out[n] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(MacError::Format),
        };
        n += 1;
    }
    if n != 12 {
        return Err(MacError::Format);
    }
    Ok(out)
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in self.0 {
            write!(f, "{o:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl TryFrom<[u8; 6]> for Mac {
    type Error = MacError;
    /// Applies the same device rules as parsing (no zero, no group address).
    fn try_from(o: [u8; 6]) -> Result<Self, Self::Error> {
        Mac::parse(&Mac(o).to_string())
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    /// Accepts every spelling `parse` accepts, so JSON and CSV input may use colons.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Mac::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: Mac = Mac([0x00, 0x04, 0xf2, 0xab, 0xcd, 0xef]);

    #[test]
    fn parses_every_spelling() {
        for s in [
            "0004f2abcdef",
            "0004F2ABCDEF",
            "0004f2ABcdEF",
            "00:04:f2:ab:cd:ef",
            "00:04:F2:AB:CD:EF",
            "00-04-f2-ab-cd-ef",
            "00.04.f2.ab.cd.ef",
            "0004.f2ab.cdef",
            "0004-F2AB-CDEF",
        ] {
            assert_eq!(Mac::parse(s), Ok(M), "{s}");
            assert_eq!(s.parse::<Mac>(), Ok(M), "{s}");
        }
    }

    #[test]
    fn prints_canonical_forms() {
        assert_eq!(M.to_string(), "0004f2abcdef");
        assert_eq!(M.as_hex(), "0004f2abcdef");
        assert_eq!(M.colon(), "00:04:f2:ab:cd:ef");
        assert_eq!(M.as_upper_hex(), "0004F2ABCDEF");
        assert_eq!(format!("{M:?}"), "Mac(0004f2abcdef)");
    }

    #[test]
    fn rejects_non_devices_and_garbage() {
        assert_eq!(Mac::parse("000000000000"), Err(MacError::Zero));
        assert_eq!(Mac::parse("00:00:00:00:00:00"), Err(MacError::Zero));
        assert_eq!(Mac::parse("ffffffffffff"), Err(MacError::Group));
        assert_eq!(Mac::parse("01:00:5e:00:00:01"), Err(MacError::Group));
        for s in [
            "",
            "0004f2abcde",
            "0004f2abcdeff",
            "0004f2abcdeg",
            "00:04:f2:ab:cd-ef",
            "00:04f2:ab:cd:ef",
            "0004.f2ab-cdef",
            "00_04_f2_ab_cd_ef",
            " 0004f2abcdef",
            "0004f2abcdef\0",
            "y000000000028",
            "0004f2abcdéf",
            "ｆｆ",
        ] {
            assert_eq!(Mac::parse(s), Err(MacError::Format), "{s:?}");
        }
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let json = serde_json::to_string(&M).unwrap();
        assert_eq!(json, "\"0004f2abcdef\"");
        let back: Mac = serde_json::from_str("\"00:04:F2:AB:CD:EF\"").unwrap();
        assert_eq!(back, M);
        assert!(serde_json::from_str::<Mac>("\"000000000000\"").is_err());
    }

    fn device_mac() -> impl Strategy<Value = Mac> {
        any::<[u8; 6]>()
            .prop_map(|mut o| {
                o[0] &= 0xfe;
                o
            })
            .prop_filter("non-zero", |o| *o != [0; 6])
            .prop_map(Mac)
    }

    proptest! {
        #[test]
        fn parse_display_roundtrip(m in device_mac()) {
            prop_assert_eq!(Mac::parse(&m.to_string()), Ok(m));
            prop_assert_eq!(Mac::parse(&m.colon()), Ok(m));
            prop_assert_eq!(Mac::parse(&m.as_upper_hex()), Ok(m));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = Mac::parse(&s);
        }
    }
}
