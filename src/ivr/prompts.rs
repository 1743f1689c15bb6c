//! The IVR's vocabulary: which clips exist, and their audio.
//!
//! Why a closed enum and not file names: the state machine can only ask for clips that exist,
//! so a typo is a compile error, not a silent call. The audio ships inside the binary
//! (`include_bytes!`) as headerless 8 kHz mono G.711 μ-law (`.ul`), the payload format of RTP
//! payload type 0 (RFC 3551 §4.5.14), so the built-in clips go on the wire without decoding.
//! `prompts/make.sh` regenerates them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A decimal digit `0`–`9`, read back to the caller one clip per digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecimalDigit(u8);

impl DecimalDigit {
    /// The digit of an ASCII `'0'`–`'9'`; `None` for anything else.
    pub fn from_char(c: char) -> Option<Self> {
        c.to_digit(10).map(|d| DecimalDigit(d as u8))
    }

    /// Its value, 0–9.
    pub fn value(self) -> u8 {
        self.0
    }
}

/// One clip the IVR can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "Please enter the extension, then press pound."
    EnterExtension,
    /// "Extension"
    Extension,
    /// "zero" … "nine"
    Digit(DecimalDigit),
    /// "assigned."
    Assigned,
    /// "That extension is not available."
    NotAvailable,
    /// "Please try again."
    TryAgain,
    /// "Goodbye."
    Goodbye,
    /// "The service is busy. Please call again later." (no writable database: the entry
    /// cannot be kept, so the caller is not asked to retype it now)
    TryLater,
}

impl Prompt {
    /// Every clip, in a fixed order (used to index [`PromptLibrary`]).
    pub const ALL: [Prompt; CLIPS] = [
        Prompt::EnterExtension,
        Prompt::Extension,
        Prompt::Digit(DecimalDigit(0)),
        Prompt::Digit(DecimalDigit(1)),
        Prompt::Digit(DecimalDigit(2)),
        Prompt::Digit(DecimalDigit(3)),
        Prompt::Digit(DecimalDigit(4)),
        Prompt::Digit(DecimalDigit(5)),
        Prompt::Digit(DecimalDigit(6)),
        Prompt::Digit(DecimalDigit(7)),
        Prompt::Digit(DecimalDigit(8)),
        Prompt::Digit(DecimalDigit(9)),
        Prompt::Assigned,
        Prompt::NotAvailable,
        Prompt::TryAgain,
        Prompt::Goodbye,
        Prompt::TryLater,
    ];

    fn index(self) -> usize {
        match self {
            Prompt::EnterExtension => 0,
            Prompt::Extension => 1,
            Prompt::Digit(d) => 2 + usize::from(d.0.min(9)),
            Prompt::Assigned => 12,
            Prompt::NotAvailable => 13,
            Prompt::TryAgain => 14,
            Prompt::Goodbye => 15,
            Prompt::TryLater => 16,
        }
    }

    /// A stable file-like name (`enter_extension`, `digit_7`, …), used for the VoiceXML audio
    /// URLs and in logs.
    pub fn name(self) -> &'static str {
        const DIGITS: [&str; 10] = [
            "digit_0", "digit_1", "digit_2", "digit_3", "digit_4", "digit_5", "digit_6", "digit_7",
            "digit_8", "digit_9",
        ];
        match self {
            Prompt::EnterExtension => "enter_extension",
            Prompt::Extension => "extension",
            Prompt::Digit(d) => DIGITS[usize::from(d.0.min(9))],
            Prompt::Assigned => "assigned",
            Prompt::NotAvailable => "not_available",
            Prompt::TryAgain => "try_again",
            Prompt::Goodbye => "goodbye",
            Prompt::TryLater => "try_later",
        }
    }

    /// The clip with that [`name`](Prompt::name).
    pub fn from_name(name: &str) -> Option<Prompt> {
        Prompt::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What the clip says, for TTS fallbacks (VoiceXML `<audio>` content) and logs.
    pub fn text(self) -> &'static str {
        const DIGITS: [&str; 10] = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        ];
        match self {
            Prompt::EnterExtension => "Please enter the extension, then press pound.",
            Prompt::Extension => "Extension",
            Prompt::Digit(d) => DIGITS[usize::from(d.0.min(9))],
            Prompt::Assigned => "assigned.",
            Prompt::NotAvailable => "That extension is not available.",
            Prompt::TryAgain => "Please try again.",
            Prompt::Goodbye => "Goodbye.",
            Prompt::TryLater => "The service is busy. Please call again later.",
        }
    }

    /// "Extension d d d d assigned." for a DN (non-digits in the DN are skipped: they have no
    /// clip, and a DN is digits in every deployment we serve).
    pub fn read_back(dn: &str) -> Vec<Prompt> {
        let mut v = vec![Prompt::Extension];
        v.extend(
            dn.chars()
                .filter_map(DecimalDigit::from_char)
                .map(Prompt::Digit),
        );
        v.push(Prompt::Assigned);
        v
    }
}

/// How many clips there are.
const CLIPS: usize = 17;

static BUILTIN: [&[u8]; CLIPS] = [
    include_bytes!("prompts/enter_extension.ul"),
    include_bytes!("prompts/extension.ul"),
    include_bytes!("prompts/digit_0.ul"),
    include_bytes!("prompts/digit_1.ul"),
    include_bytes!("prompts/digit_2.ul"),
    include_bytes!("prompts/digit_3.ul"),
    include_bytes!("prompts/digit_4.ul"),
    include_bytes!("prompts/digit_5.ul"),
    include_bytes!("prompts/digit_6.ul"),
    include_bytes!("prompts/digit_7.ul"),
    include_bytes!("prompts/digit_8.ul"),
    include_bytes!("prompts/digit_9.ul"),
    include_bytes!("prompts/assigned.ul"),
    include_bytes!("prompts/not_available.ul"),
    include_bytes!("prompts/try_again.ul"),
    include_bytes!("prompts/goodbye.ul"),
    include_bytes!("prompts/try_later.ul"),
];

/// The longest recording accepted from an operator's directory: 60 s of 8 kHz μ-law.
pub const MAX_CLIP: usize = 60 * 8000;

/// Why an operator's prompt directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {len} bytes; a prompt is 1 to {MAX_CLIP} bytes of 8 kHz μ-law", path.display())]
    Size { path: PathBuf, len: usize },
    #[error("{}: no prompt has this name (see the files in src/ivr/prompts/)", .0.display())]
    UnknownPrompt(PathBuf),
}

/// The μ-law audio of every [`Prompt`]. Cheap to clone.
///
/// Why not just the statics: tests (and an operator who wants another language later) swap the
/// clips; a test with 40 ms clips runs a whole call in a fraction of a second over real RTP.
#[derive(Clone)]
pub struct PromptLibrary {
    clips: Arc<[Arc<[u8]>; CLIPS]>,
}

impl std::fmt::Debug for PromptLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lens: Vec<usize> = self.clips.iter().map(|c| c.len()).collect();
        f.debug_struct("PromptLibrary")
            .field("clip_lengths", &lens)
            .finish()
    }
}

impl Default for PromptLibrary {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PromptLibrary {
    /// The clips committed in `src/ivr/prompts/`.
    pub fn builtin() -> Self {
        PromptLibrary {
            clips: Arc::new(BUILTIN.map(Arc::from)),
        }
    }

    /// The shipped clips, each replaced by `<dir>/<name>.ul` where that file exists (an
    /// operator's own recordings). A file that cannot be read, is empty, or is longer than
    /// [`MAX_CLIP`] stops the start with its name; so does a directory that cannot be listed,
    /// or a `.ul` file that is no prompt's (a misspelt name would otherwise be silently
    /// ignored).
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let listing = std::fs::read_dir(dir).map_err(|source| PromptError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in listing.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("ul") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if Prompt::from_name(stem).is_none() {
                return Err(PromptError::UnknownPrompt(path));
            }
        }
        let mut clips: [Arc<[u8]>; CLIPS] = BUILTIN.map(Arc::from);
        for p in Prompt::ALL {
            let path = dir.join(format!("{}.ul", p.name()));
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PromptError::Read { path, source }),
            };
            if bytes.is_empty() || bytes.len() > MAX_CLIP {
                return Err(PromptError::Size {
                    path,
                    len: bytes.len(),
                });
            }
            tracing::info!(prompt = p.name(), file = %path.display(), "IVR prompt from the operator's directory");
            clips[p.index()] = Arc::from(bytes);
        }
        Ok(PromptLibrary {
            clips: Arc::new(clips),
        })
    }

    /// Every clip replaced by `samples` μ-law samples of a quiet tone whose first byte tells
    /// the clip apart (for tests: the receiver can see which clip it is hearing).
    pub fn uniform(samples: usize) -> Self {
        let clips = Prompt::ALL.map(|p| {
            let mut v = vec![0xFFu8; samples];
            if let Some(first) = v.first_mut() {
                *first = p.index() as u8;
            }
            Arc::from(v)
        });
        PromptLibrary {
            clips: Arc::new(clips),
        }
    }

    /// The μ-law samples of one clip.
    pub fn clip(&self, p: Prompt) -> &[u8] {
        &self.clips[p.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_clips_are_present_and_small() {
        let lib = PromptLibrary::builtin();
        let mut total = 0;
        for p in Prompt::ALL {
            let n = lib.clip(p).len();
            assert!(n > 800, "{} is {n} samples: less than 100 ms", p.name());
            total += n;
        }
        assert!(total < 300 * 1024);
    }

    #[test]
    fn a_directory_replaces_the_clips_it_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("goodbye.ul"), [0x7Fu8; 1600]).unwrap();
        std::fs::write(dir.path().join("README.txt"), "not a clip").unwrap();
        let lib = PromptLibrary::from_dir(dir.path()).unwrap();
        assert_eq!(lib.clip(Prompt::Goodbye), &[0x7Fu8; 1600][..]);
        let shipped = PromptLibrary::builtin();
        assert_eq!(lib.clip(Prompt::Assigned), shipped.clip(Prompt::Assigned));
    }

    #[test]
    fn a_directory_with_a_bad_clip_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("goodby.ul"), [0x7Fu8; 1600]).unwrap();
        let err = PromptLibrary::from_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("goodby.ul"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("goodbye.ul"), []).unwrap();
        let err = PromptLibrary::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PromptError::Size { len: 0, .. }), "{err}");

        let missing = dir.path().join("nowhere");
        assert!(matches!(
            PromptLibrary::from_dir(&missing),
            Err(PromptError::Read { .. })
        ));
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for p in Prompt::ALL {
            assert_eq!(Prompt::from_name(p.name()), Some(p));
        }
        assert_eq!(Prompt::from_name("../etc/passwd"), None);
    }

    #[test]
    fn read_back_skips_non_digits() {
        let v = Prompt::read_back("10a1");
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], Prompt::Extension);
        assert_eq!(v[2], Prompt::Digit(DecimalDigit::from_char('0').unwrap()));
        assert_eq!(v[4], Prompt::Assigned);
    }
}
