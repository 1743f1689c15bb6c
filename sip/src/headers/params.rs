//! Generic parameters (`;name[=value]`) and the random tokens sipdm generates.

use rand::Rng;

/// Parameters in their order of appearance; values keep their quotes off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=b;c;d="e f"` (leading `;` optional).
    pub fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        for part in split_top_level(s, b';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.find('=') {
                Some(eq) => {
                    let name = part[..eq].trim().to_string();
                    let val = unquote(part[eq + 1..].trim()).to_string();
                    out.push((name, Some(val)));
                }
                None => out.push((part.to_string(), None)),
            }
        }
        Params(out)
    }

    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of a parameter that has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn set(&mut self, name: &str, value: Option<String>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl Params {
    /// Appends the parameters as they go on the wire (`;a=b;c`). Built with `push_str`, not
    /// `write!`: this runs for the top Via of every request, where the formatting machinery
    /// was a visible share of a registration's CPU.
    pub fn write_into(&self, out: &mut String) {
        for (n, v) in &self.0 {
            out.push(';');
            out.push_str(n);
            match v {
                Some(v) if needs_quotes(v) => {
                    out.push_str("=\"");
                    for c in v.chars() {
                        if c == '\\' || c == '"' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
                Some(v) => {
                    out.push('=');
                    out.push_str(v);
                }
                None => {}
            }
        }
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write_into(&mut s);
        f.write_str(&s)
    }
}

fn needs_quotes(v: &str) -> bool {
    v.is_empty()
        || !v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~:[]".contains(&c))
}

/// Strips one pair of surrounding double quotes and unescapes `\x`.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if inner.contains('\\') => {
            let mut out = String::with_capacity(inner.len());
            let mut esc = false;
            for c in inner.chars() {
                if esc {
                    out.push(c);
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else {
                    out.push(c);
                }
            }
            std::borrow::Cow::Owned(out)
        }
        Some(inner) => std::borrow::Cow::Borrowed(inner),
        None => std::borrow::Cow::Borrowed(s),
    }
}

/// Splits on `sep` (`,` or `;`) outside double quotes and angle brackets.
///
/// It jumps between the bytes that matter with `memchr` rather than stepping through every
/// byte: it runs over every Via, Contact and Authorization value of every request.
pub fn split_top_level(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    debug_assert!(!matches!(sep, b'"' | b'<' | b'>' | b'\\'));
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < bytes.len() {
            let Some(off) = memchr::memchr3(sep, b'"', b'<', &bytes[i..]) else {
                break;
            };
            i += off;
            match bytes[i] {
                b'"' => {
                    // A quoted string, `\x` escapes included, to its closing quote (or the end).
                    i += 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                            Some(off) if bytes[i + off] == b'\\' => i += off + 2,
                            Some(off) => {
                                i += off + 1;
                                break;
                            }
                            None => {
                                i = bytes.len();
                                break;
                            }
                        }
                    }
                }
                b'<' => match memchr::memchr(b'>', &bytes[i..]) {
                    Some(off) => i += off + 1,
                    None => i = bytes.len(),
                },
                _ => {
                    let piece = &s[start..i];
                    i += 1;
                    start = i;
                    return Some(piece);
                }
            }
        }
        done = true;
        Some(&s[start.min(s.len())..])
    })
}

/// Whether a header value (name-addr with params) carries parameter `name` outside `<...>`.
pub fn has_param(value: &str, name: &str) -> bool {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    split_top_level(after, b';').skip(1).any(|p| {
        let n = p.split('=').next().unwrap_or("").trim();
        n.eq_ignore_ascii_case(name)
    })
}

fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// A From/To tag.
pub fn new_tag() -> String {
    random_token(12)
}

/// An RFC 3261 branch (magic cookie + randomness).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte splitter this one replaced, as the reference.
    fn reference_split(s: &str, sep: u8) -> Vec<&str> {
        let bytes = s.as_bytes();
        let (mut start, mut i, mut quoted, mut angle) = (0, 0, false, false);
        let mut out = Vec::new();
        while i < bytes.len() {
            let c = bytes[i];
            if quoted {
                if c == b'\\' {
                    i += 1;
                } else if c == b'"' {
                    quoted = false;
                }
            } else if c == b'"' {
                quoted = true;
            } else if c == b'<' {
                angle = true;
            } else if c == b'>' {
                angle = false;
            } else if c == sep && !angle {
                out.push(&s[start..i]);
                start = i + 1;
            }
            i += 1;
        }
        out.push(&s[start.min(s.len())..]);
        out
    }

    proptest::proptest! {
        // The two agree wherever quotes and angle brackets do not nest (the old splitter
        // honoured quotes inside `<…>`, which no URI contains).
        #[test]
        fn split_matches_the_reference_without_angles(s in "[a;,=\"\\\\ ]{0,40}") {
            for sep in [b';', b','] {
                let got: Vec<&str> = split_top_level(&s, sep).collect();
                proptest::prop_assert_eq!(got, reference_split(&s, sep));
            }
        }

        #[test]
        fn split_matches_the_reference_without_quotes(s in "[a;,=<> ]{0,40}") {
            for sep in [b';', b','] {
                let got: Vec<&str> = split_top_level(&s, sep).collect();
                proptest::prop_assert_eq!(got, reference_split(&s, sep));
            }
        }
    }

    #[test]
    fn split_edge_cases() {
        let v: Vec<&str> = split_top_level(r#"a;"b;c"#, b';').collect();
        assert_eq!(v, ["a", r#""b;c"#], "an unterminated quote runs to the end");
        let v: Vec<&str> = split_top_level(r#"x="a\"#, b';').collect();
        assert_eq!(v, [r#"x="a\"#]);
        let v: Vec<&str> = split_top_level("<sip:a;b>;c, <sip:d,e>", b',').collect();
        assert_eq!(v, ["<sip:a;b>;c", " <sip:d,e>"]);
        let v: Vec<&str> = split_top_level("", b',').collect();
        assert_eq!(v, [""]);
    }

    #[test]
    fn params_with_quotes() {
        let p = Params::parse(";expires=60;+sip.instance=\"<urn:uuid:1;2>\";reg-id=1;lr");
        assert_eq!(p.value("expires"), Some("60"));
        assert_eq!(p.value("+sip.instance"), Some("<urn:uuid:1;2>"));
        assert!(p.contains("lr"));
        assert_eq!(
            p.to_string(),
            ";expires=60;+sip.instance=\"<urn:uuid:1;2>\";reg-id=1;lr"
        );
    }

    #[test]
    fn split_respects_quotes_and_brackets() {
        let v: Vec<_> = split_top_level("\"a,b\" <sip:x;p=1,2>;q=1, <sip:y>", b',').collect();
        assert_eq!(v, ["\"a,b\" <sip:x;p=1,2>;q=1", " <sip:y>"]);
    }

    #[test]
    fn has_param_ignores_uri_params() {
        assert!(!has_param("<sip:a@b;tag=1>", "tag"));
        assert!(has_param("<sip:a@b>;tag=1", "tag"));
        assert!(has_param("sip:a@b;tag=1", "tag"));
    }
}
