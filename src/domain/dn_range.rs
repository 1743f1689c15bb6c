//! `dn-ranges` of a switch: the DNs it owns, `1000-1999` or a single `1000`.
//!
//! Parsed when the configuration is read; code asks [`DnRange::contains`] and
//! [`DnRange::overlaps`] instead of splitting text. The store keeps a switch's ranges as one
//! comma-separated column, written from [`DnRange`]'s [`Display`](fmt::Display).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The DNs `lo` to `hi`, both included (`lo <= hi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnRange {
    lo: u64,
    hi: u64,
}

/// Why a text is not a DN range; names the text and an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad DN range `{0}` (want e.g. 1000-1999)")]
pub struct DnRangeError(pub String);

impl DnRange {
    /// `lo` to `hi`; `None` when `lo > hi`.
    pub fn new(lo: u64, hi: u64) -> Option<DnRange> {
        (lo <= hi).then_some(DnRange { lo, hi })
    }

    pub fn lo(self) -> u64 {
        self.lo
    }

    pub fn hi(self) -> u64 {
        self.hi
    }

    pub fn contains_number(self, n: u64) -> bool {
        self.lo <= n && n <= self.hi
    }

    /// Whether the DN `dn` (its digits) is in the range; a DN that is not a number is in none.
    pub fn contains(self, dn: &str) -> bool {
        dn.parse().is_ok_and(|n| self.contains_number(n))
    }

    /// Whether the two ranges share a DN.
    pub fn overlaps(self, other: DnRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

impl FromStr for DnRange {
    type Err = DnRangeError;

    /// `lo-hi` or a single number, spaces allowed around each; `lo` must not exceed `hi`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DnRangeError(s.to_owned());
        let number = |t: &str| -> Result<u64, DnRangeError> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(s)?;
                (n, n)
            }
        };
        DnRange::new(lo, hi).ok_or_else(bad)
    }
}

impl fmt::Display for DnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl TryFrom<String> for DnRange {
    type Error = DnRangeError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<DnRange> for String {
    fn from(r: DnRange) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ranges_and_single_dns() {
        for (given, lo, hi, printed) in [
            ("1000-1999", 1000, 1999, "1000-1999"),
            (" 1000 - 1999 ", 1000, 1999, "1000-1999"),
            ("1000", 1000, 1000, "1000"),
            ("1000-1000", 1000, 1000, "1000"),
            ("0-9", 0, 9, "0-9"),
        ] {
            let r: DnRange = given.parse().unwrap();
            assert_eq!((r.lo(), r.hi()), (lo, hi), "{given:?}");
            assert_eq!(r.to_string(), printed, "{given:?}");
        }
    }

    #[test]
    fn refuses_bad_ranges_naming_them() {
        for bad in [
            "",
            " ",
            "-",
            "1000-",
            "-1999",
            "abc",
            "1000-abc",
            "1999-1000",
            "10-20-30",
            "+1000",
            "1000..1999",
            "1e3",
            "99999999999999999999",
        ] {
            let err = bad.parse::<DnRange>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("1000-1999"),
                "{err}"
            );
        }
    }

    #[test]
    fn contains_and_overlaps() {
        let r: DnRange = "1000-1999".parse().unwrap();
        assert!(r.contains("1000") && r.contains("1999") && r.contains("1500"));
        assert!(!r.contains("999") && !r.contains("2000"));
        assert!(!r.contains("abc") && !r.contains("") && !r.contains("1000x"));
        assert!(r.contains_number(1234) && !r.contains_number(2000));
        let o = |s: &str| r.overlaps(s.parse().unwrap());
        assert!(o("1500-2500") && o("0-1000") && o("1999") && o("1200-1300") && o("0-5000"));
        assert!(!o("2000-2999") && !o("0-999") && !o("2000"));
    }

    #[test]
    fn serde_uses_the_text() {
        let r: Vec<DnRange> = serde_json::from_str(r#"["1000-1999", "2000"]"#).unwrap();
        assert_eq!(
            r,
            [
                DnRange::new(1000, 1999).unwrap(),
                DnRange::new(2000, 2000).unwrap()
            ]
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"["1000-1999","2000"]"#
        );
        let err = serde_json::from_str::<DnRange>("\"2000-1000\"").unwrap_err();
        assert!(err.to_string().contains("2000-1000"), "{err}");
    }

    proptest! {
        #[test]
        fn display_parses_back(a: u64, b: u64) {
            let r = DnRange::new(a.min(b), a.max(b)).unwrap();
            prop_assert_eq!(r.to_string().parse::<DnRange>(), Ok(r));
        }

        #[test]
        fn overlaps_is_a_shared_number(a in 0u64..50, b in 0u64..50, c in 0u64..50, d in 0u64..50) {
            let x = DnRange::new(a.min(b), a.max(b)).unwrap();
            let y = DnRange::new(c.min(d), c.max(d)).unwrap();
            let shared = (0..50).any(|n| x.contains_number(n) && y.contains_number(n));
            prop_assert_eq!(x.overlaps(y), shared);
            prop_assert_eq!(y.overlaps(x), shared);
        }
    }
}
