//! Rows of the store, shared by the admin API (as JSON) and the CLI. The API's OpenAPI
//! schemas are derived from these types (`ToSchema`), so the document follows the rows.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

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

/// What a profile is for: the kinds of the deployment guide.
pub const PROFILE_KINDS: &[&str] = &["default", "device-management", "disaster-recovery"];

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
const AUTHENTICATE_REQUESTS: &[&str] = &["register,invite", "register", "invite", ""];

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
    "register,invite".into()
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
}
