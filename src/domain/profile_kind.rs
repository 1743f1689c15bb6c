//! What a profile is for: the kinds of the deployment guide.
//!
//! The store keeps the kind as text (`default`, `device-management`, `disaster-recovery`);
//! code matches on [`ProfileKind`], so a new kind is a compile error wherever it matters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// What an unassigned phone gets: register as `gcti_provisioning`, hotline to the IVR.
    Default,
    /// What an assigned phone gets unless its device names another profile.
    DeviceManagement,
    /// Business continuity: every line registers to a preferred and a peer SIP server.
    DisasterRecovery,
}

/// Why a text is not a profile kind; names the text and the valid kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("profile kind `{0}` is not one of default, device-management, disaster-recovery")]
pub struct ProfileKindError(pub String);

impl ProfileKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [ProfileKind; 3] = [
        ProfileKind::Default,
        ProfileKind::DeviceManagement,
        ProfileKind::DisasterRecovery,
    ];

    /// The text of every kind, as stored and as the API documents it.
    pub const NAMES: [&'static str; 3] = [
        ProfileKind::ALL[0].as_str(),
        ProfileKind::ALL[1].as_str(),
        ProfileKind::ALL[2].as_str(),
    ];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Default => "default",
            ProfileKind::DeviceManagement => "device-management",
            ProfileKind::DisasterRecovery => "disaster-recovery",
        }
    }
}

impl FromStr for ProfileKind {
    type Err = ProfileKindError;

    /// Exactly the stored text: a kind is a key, not prose, so no case folding.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProfileKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ProfileKindError(s.to_owned()))
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_text_and_serde() {
        for k in ProfileKind::ALL {
            assert_eq!(k.to_string().parse::<ProfileKind>(), Ok(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<ProfileKind>(&json).unwrap(), k);
        }
        assert_eq!(
            ProfileKind::NAMES,
            ["default", "device-management", "disaster-recovery"]
        );
    }

    #[test]
    fn refuses_unknown_kinds_naming_them_and_the_valid_ones() {
        for bad in [
            "",
            "dr",
            "Default",
            "disaster_recovery",
            "disaster-recovery ",
        ] {
            let err = bad.parse::<ProfileKind>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("disaster-recovery"),
                "{err}"
            );
        }
    }
}
