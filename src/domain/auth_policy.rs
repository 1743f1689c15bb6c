//! `authenticate-requests`: which requests a DN is challenged for (digest authentication).
//!
//! The text is what the deployment guide writes on a DN (`register,invite`, `register`,
//! `invite`, or empty for none). It is accepted in any case and order with spaces around the
//! methods, and printed in one canonical form: that form is what the store keeps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which requests of a DN are challenged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuthPolicy {
    pub register: bool,
    pub invite: bool,
}

/// Why a text is not an `authenticate-requests` value; names the value and the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authenticate-requests `{0}`: want `register,invite`, `register`, `invite` or empty")]
pub struct AuthPolicyError(pub String);

impl AuthPolicy {
    /// `register,invite`: the deployment guide's setting, and the default.
    pub const BOTH: AuthPolicy = AuthPolicy {
        register: true,
        invite: true,
    };
    /// Empty: nothing challenged.
    pub const NONE: AuthPolicy = AuthPolicy {
        register: false,
        invite: false,
    };

    /// The canonical text, as stored.
    pub const fn as_str(self) -> &'static str {
        match (self.register, self.invite) {
            (true, true) => "register,invite",
            (true, false) => "register",
            (false, true) => "invite",
            (false, false) => "",
        }
    }
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy::BOTH
    }
}

impl FromStr for AuthPolicy {
    type Err = AuthPolicyError;

    /// Refuses an unknown method, a method named twice and an empty item (`register,`).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = || AuthPolicyError(value.to_owned());
        let mut policy = AuthPolicy::NONE;
        if value.trim().is_empty() {
            return Ok(policy);
        }
        for m in value.split(',').map(str::trim) {
            let seen = match m.to_ascii_lowercase().as_str() {
                "register" => &mut policy.register,
                "invite" => &mut policy.invite,
                _ => return Err(bad()),
            };
            if *seen {
                return Err(bad());
            }
            *seen = true;
        }
        Ok(policy)
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for AuthPolicy {
    type Error = AuthPolicyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<AuthPolicy> for String {
    fn from(p: AuthPolicy) -> String {
        p.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_spelling_into_one_form() {
        for (given, want) in [
            ("register,invite", "register,invite"),
            ("invite,register", "register,invite"),
            ("Invite , REGISTER", "register,invite"),
            ("register", "register"),
            (" Register ", "register"),
            ("invite", "invite"),
            ("", ""),
            ("  ", ""),
        ] {
            let p: AuthPolicy = given.parse().unwrap();
            assert_eq!(p.to_string(), want, "{given:?}");
        }
        assert_eq!(
            "register".parse(),
            Ok(AuthPolicy {
                register: true,
                invite: false
            })
        );
        assert_eq!(
            "invite".parse(),
            Ok(AuthPolicy {
                register: false,
                invite: true
            })
        );
        assert_eq!(AuthPolicy::default(), AuthPolicy::BOTH);
    }

    #[test]
    fn refuses_bad_values_naming_them_and_the_valid_ones() {
        for bad in [
            "options",
            "register;invite",
            "invite,invite",
            "register,register",
            "register,",
            ",invite",
            "register,,invite",
            "subscribe",
        ] {
            let err = bad.parse::<AuthPolicy>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("register,invite"),
                "{err}"
            );
        }
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let p: AuthPolicy = serde_json::from_str("\"INVITE,register\"").unwrap();
        assert_eq!(p, AuthPolicy::BOTH);
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"register,invite\"");
        let err = serde_json::from_str::<AuthPolicy>("\"bye\"").unwrap_err();
        assert!(err.to_string().contains("bye"), "{err}");
    }

    proptest! {
        #[test]
        fn display_parses_back(register: bool, invite: bool) {
            let p = AuthPolicy { register, invite };
            prop_assert_eq!(p.to_string().parse::<AuthPolicy>(), Ok(p));
        }

        #[test]
        fn any_accepted_text_prints_canonically(s in "[ ,a-zA-Z]{0,24}") {
            if let Ok(p) = s.parse::<AuthPolicy>() {
                let canonical = p.to_string();
                prop_assert_eq!(canonical.parse::<AuthPolicy>(), Ok(p));
            }
        }
    }
}
