//! Rows of the store, shared by the admin API (as JSON) and the CLI. The API's OpenAPI
//! schemas are derived from these types (`ToSchema`), so the document follows the rows.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

use crate::domain::{AuthPolicy, AuthPolicyError, ProfileKind, ProfileKindError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Site {
    pub name: String,
    #[serde(default)]
    pub fs_url: Option<String>,
    /// Comma-separated host[:port] list, preferred first.
    #[serde(default)]
    pub sip_servers: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Switch {
    pub name: String,
    pub site: String,
    pub address: String,
    /// Comma-separated ranges, e.g. `1000-1999`.
    #[serde(default)]
    pub dn_ranges: String,
    #[serde(default)]
    pub peer: Option<String>,
}

/// What a profile is for: the text of every [`ProfileKind`], as stored.
pub const PROFILE_KINDS: &[&str] = &ProfileKind::NAMES;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Profile {
    pub name: String,
    /// `default`, `device-management` or `disaster-recovery`.
    #[schema(schema_with = profile_kind_schema)]
    pub kind: String,
    /// Template kind to render instead of the vendor's `phone` template.
    #[serde(default)]
    pub template: Option<String>,
    /// Disaster recovery: the preferred SIP server (host[:port]).
    #[serde(default)]
    pub preferred_server: Option<String>,
    /// Disaster recovery: the peer SIP server.
    #[serde(default)]
    pub peer_server: Option<String>,
    /// JSON object of free-form template parameters.
    #[serde(default = "empty_object")]
    pub params: String,
    #[serde(default)]
    pub allow_reassign: i64,
    /// Overrides the vendor's check-sync Event.
    #[serde(default)]
    pub check_sync_event: Option<String>,
}

impl Profile {
    /// What the profile is for, parsed from the stored text; a kind the code does not know
    /// is an error, never taken for `default`.
    pub fn kind(&self) -> Result<ProfileKind, ProfileKindError> {
        self.kind.parse()
    }
}

fn empty_object() -> String {
    "{}".into()
}

/// A string that is one of `values`: how the API documents a kind kept as text in the store.
fn one_of(values: &[&str], description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

fn profile_kind_schema() -> Object {
    one_of(PROFILE_KINDS, "What the profile is for")
}

/// The policies a DN's `authenticate_requests` takes, as the API stores them.
const AUTHENTICATE_REQUESTS: &[&str] = &[
    AuthPolicy::BOTH.as_str(),
    AuthPolicy {
        register: true,
        invite: false,
    }
    .as_str(),
    AuthPolicy {
        register: false,
        invite: true,
    }
    .as_str(),
    AuthPolicy::NONE.as_str(),
];

fn authenticate_requests_schema() -> Object {
    one_of(
        AUTHENTICATE_REQUESTS,
        "Requests challenged for this DN; absent: [auth] authenticate-requests",
    )
}

/// A device's `state`.
const DEVICE_STATES: &[&str] = &["unassigned", "assigned"];

fn device_state_schema() -> Object {
    one_of(DEVICE_STATES, "`assigned` once the device has a DN")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Dn {
    pub number: String,
    pub password: String,
    /// Owning switch; derived from the configured DN ranges when not given.
    #[serde(default)]
    pub switch: Option<String>,
    #[serde(default = "default_auth")]
    #[schema(schema_with = authenticate_requests_schema)]
    pub authenticate_requests: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

fn default_auth() -> String {
    AuthPolicy::default().to_string()
}

impl Dn {
    /// Which requests are challenged, parsed from the stored `authenticate_requests`.
    pub fn auth_policy(&self) -> Result<AuthPolicy, AuthPolicyError> {
        self.authenticate_requests.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Device {
    pub mac: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub dn: Option<String>,
    /// `unassigned` or `assigned`.
    #[schema(schema_with = device_state_schema)]
    pub state: String,
    pub first_seen_ip: Option<String>,
    pub last_seen_ip: Option<String>,
    pub first_seen_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub user_agent: Option<String>,
    pub firmware: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub mac: String,
    pub dn: Option<String>,
    pub action: String,
    pub actor: String,
    pub detail: Option<String>,
}

/// A device as the API and the CLI create it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub mac: String,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub dn: Option<String>,
}

/// Fields of a device an administrator may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// What a provisioning fetch saw, written behind the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub mac: String,
    pub ip: String,
    pub at: i64,
    pub user_agent: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// The per-phone file served, when this sighting is a download of one (written to the
    /// device's receipts).
    pub receipt: Option<super::Receipt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: &str) -> Profile {
        Profile {
            name: "p".into(),
            kind: kind.into(),
            template: None,
            preferred_server: None,
            peer_server: None,
            params: empty_object(),
            allow_reassign: 0,
            check_sync_event: None,
        }
    }

    #[test]
    fn a_stored_kind_is_typed_and_an_unknown_one_is_an_error() {
        assert_eq!(
            profile("disaster-recovery").kind(),
            Ok(ProfileKind::DisasterRecovery)
        );
        assert_eq!(profile("default").kind(), Ok(ProfileKind::Default));
        let err = profile("dr").kind().unwrap_err().to_string();
        assert!(err.contains("`dr`"), "{err}");
        assert_eq!(PROFILE_KINDS, ProfileKind::NAMES);
    }

    #[test]
    fn a_stored_policy_is_typed() {
        let mut dn = Dn {
            number: "1000".into(),
            password: "pw".into(),
            switch: None,
            authenticate_requests: default_auth(),
            display_name: None,
        };
        assert_eq!(dn.auth_policy(), Ok(AuthPolicy::BOTH));
        dn.authenticate_requests = "options".into();
        assert!(dn.auth_policy().is_err());
        assert_eq!(
            AUTHENTICATE_REQUESTS,
            ["register,invite", "register", "invite", ""]
        );
    }
}
