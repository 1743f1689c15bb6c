//! File-name patterns of the vendor table (`{mac}.cfg`, `spa{mac}.xml`, `y{hw}.cfg`,
//! `{model}-{mac}.htm`): compiled once when the table is loaded ([`Pattern::parse`]) and matched
//! against a requested name by [`super::filename`]. Pure, no I/O; knows no vendor by name.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::mac::Mac;

/// Width of a `{hw}` code in a file name.
const HW_DIGITS: usize = 12;
/// Longest `{model}` we capture (snomD785, snom870 …).
const MAX_MODEL_LEN: usize = 32;

/// True when the name, or the name percent-decoded once more (double encoding such as
/// `%252e%252e` arrives here as `%2e%2e`), contains a path separator, a `..`, or a NUL.
/// No vendor file name contains any of these, so refusing them costs nothing.
pub(crate) fn is_traversal(name: &str) -> bool {
    let again: Cow<'_, str> = percent_decode_str(name).decode_utf8_lossy();
    [name, again.as_ref()]
        .iter()
        .any(|s| s.contains('/') || s.contains('\\') || s.contains('\0') || s.contains(".."))
}

/// One piece of a file-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matched ASCII-case-insensitively.
    Literal(String),
    Mac,
    Model,
    Hw,
}

/// A compiled file-name pattern such as `spa{mac}.xml` or `y{hw}.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

/// What a pattern captured from a file name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captures {
    pub mac: Option<Mac>,
    pub model: Option<String>,
    pub hw: Option<String>,
}

impl Pattern {
    /// Compiles a pattern. Per-phone patterns (`common == false`) need exactly one `{mac}` and no
    /// `{hw}`; common patterns have no `{mac}`, and at most one `{hw}` and one `{model}`.
    pub fn parse(pattern: &str, common: bool) -> Result<Pattern, String> {
        if is_traversal(pattern) || pattern.is_empty() {
            return Err("must be a plain file name".into());
        }
        let mut segments = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or("unclosed '{'")?;
                    let seg = match &rest[1..end] {
                        "mac" => Segment::Mac,
                        "model" => Segment::Model,
                        "hw" => Segment::Hw,
                        other => return Err(format!("unknown placeholder {{{other}}}")),
                    };
                    if matches!(
                        segments.last(),
                        Some(Segment::Mac | Segment::Model | Segment::Hw)
                    ) {
                        return Err("two placeholders need a literal between them".into());
                    }
                    segments.push(seg);
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let lit = &rest[..end];
                    if lit.contains('}') {
                        return Err("stray '}'".into());
                    }
                    segments.push(Segment::Literal(lit.to_string()));
                    rest = &rest[end..];
                }
            }
        }
        let count = |s: &Segment| segments.iter().filter(|x| *x == s).count();
        let (macs, models, hws) = (
            count(&Segment::Mac),
            count(&Segment::Model),
            count(&Segment::Hw),
        );
        if common {
            if macs > 0 || models > 1 || hws > 1 {
                return Err(
                    "a common file has no {mac}, at most one {model} and at most one {hw}".into(),
                );
            }
        } else if macs != 1 || models > 1 || hws > 0 {
            return Err(
                "a per-phone file has exactly one {mac}, at most one {model}, no {hw}".into(),
            );
        }
        Ok(Pattern { segments })
    }

    /// Matches a whole file name, returning what the placeholders captured.
    pub(crate) fn matches(&self, name: &str) -> Option<Captures> {
        let mut caps = Captures::default();
        match_from(&self.segments, name, &mut caps).then_some(caps)
    }
}

/// Backtracking matcher; patterns have at most a few placeholders, so this is cheap.
fn match_from(segs: &[Segment], s: &str, caps: &mut Captures) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return s.is_empty();
    };
    match first {
        Segment::Literal(lit) => match s.get(..lit.len()) {
            Some(head) if head.eq_ignore_ascii_case(lit) => match_from(rest, &s[lit.len()..], caps),
            _ => false,
        },
        Segment::Mac => {
            // 12 = bare, 14 = xxxx.xxxx.xxxx, 17 = xx:xx:xx:xx:xx:xx
            for len in [12, 14, 17] {
                let Some(head) = s.get(..len) else { continue };
                if let Ok(mac) = Mac::parse(head) {
                    if match_from(rest, &s[len..], caps) {
                        caps.mac = Some(mac);
                        return true;
                    }
                }
            }
            false
        }
        Segment::Model => {
            let max = s
                .bytes()
                .take(MAX_MODEL_LEN)
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            for len in (1..=max).rev() {
                if match_from(rest, &s[len..], caps) {
                    caps.model = Some(s[..len].to_string());
                    return true;
                }
            }
            false
        }
        Segment::Hw => {
            // A 12-digit zero-padded hardware code: two digits for older Yealink models
            // (y000000000066.cfg, T46S), three for newer ones (y000000000124.cfg, T31G), all
            // zeros for the file every model reads. Captured without the padding, at least two
            // digits ("66", "124", "00").
            match s.get(..HW_DIGITS) {
                Some(head)
                    if head.bytes().all(|b| b.is_ascii_digit())
                        && match_from(rest, &s[HW_DIGITS..], caps) =>
                {
                    let trimmed = head.trim_start_matches('0');
                    caps.hw = Some(format!("{trimmed:0>2}"));
                    true
                }
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_and_refuse_nonsense() {
        assert!(Pattern::parse("{mac}.cfg", false).is_ok());
        assert!(Pattern::parse("{model}-{mac}.htm", false).is_ok());
        assert!(Pattern::parse("y{hw}.cfg", true).is_ok());
        assert!(Pattern::parse("spa{model}.cfg", true).is_ok());
        for (p, common) in [
            ("", false),
            ("plain.cfg", false),
            ("{mac}{model}.cfg", false),
            ("{mac}-{mac}.cfg", false),
            ("{mac}.{ext}", false),
            ("{mac.cfg", false),
            ("mac}.cfg{mac}", false),
            ("{hw}{mac}.cfg", false),
            ("{mac}.cfg", true),
            ("{model}-{model}.cfg", true),
            ("../{mac}.cfg", false),
            ("a/{mac}.cfg", false),
        ] {
            assert!(Pattern::parse(p, common).is_err(), "{p}");
        }
    }
}
