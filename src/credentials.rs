//! Per-device credentials for unassigned phones.
//!
//! Every unassigned phone registers as the one user `gcti_provisioning`, so the user part cannot
//! tell phones apart. Each phone's default file therefore carries credentials of its own: an auth
//! user derived from its MAC and a password that is an HMAC of the server secret and the MAC.
//! The digest identity then names the device, and a phone cannot claim another's extension
//! without the secret. Nothing needs storing: any instance with the secret recomputes them.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The shared AOR user of every unassigned phone (the deployment guide's name).
pub const PROVISIONING_USER: &str = "gcti_provisioning";

/// Auth-user prefix; `dm-` followed by the 12 lowercase hex digits of the MAC.
const AUTH_PREFIX: &str = "dm-";

#[derive(Clone)]
pub struct DeviceCredentials {
    secret: Vec<u8>,
}

impl DeviceCredentials {
    pub fn new(secret: &[u8]) -> Self {
        DeviceCredentials {
            secret: secret.to_vec(),
        }
    }

    /// `mac` is the normalised 12-hex-digit form.
    pub fn auth_user(&self, mac: &str) -> String {
        format!("{AUTH_PREFIX}{mac}")
    }

    /// 24 hex digits (96 bits) of HMAC-SHA256(secret, "device-password:" + mac).
    pub fn password(&self, mac: &str) -> String {
        let mut h =
            <Hmac<Sha256>>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        h.update(b"device-password:");
        h.update(mac.as_bytes());
        let tag = h.finalize().into_bytes();
        hex::encode(&tag[..12])
    }

    /// The HTTP basic password of a phone's own provisioning files (`[prov-security] http-auth
    /// = "basic"`): 20 hex digits of HMAC-SHA256(secret, "http-password:" + mac).
    pub fn http_password(&self, mac: &str) -> String {
        let mut h =
            <Hmac<Sha256>>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        h.update(b"http-password:");
        h.update(mac.as_bytes());
        hex::encode(&h.finalize().into_bytes()[..10])
    }

    /// A key for another purpose (the SIP nonce secret, say), derived so that no two uses
    /// share one key.
    pub fn derive_key(&self, purpose: &str) -> Vec<u8> {
        let mut h =
            <Hmac<Sha256>>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        h.update(b"derive:");
        h.update(purpose.as_bytes());
        h.finalize().into_bytes().to_vec()
    }

    /// The MAC an auth user names, if it is one of ours.
    pub fn mac_of_auth_user(auth_user: &str) -> Option<&str> {
        let mac = auth_user.strip_prefix(AUTH_PREFIX)?;
        (mac.len() == 12
            && mac
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then_some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_per_device_and_per_secret() {
        let a = DeviceCredentials::new(b"one");
        let b = DeviceCredentials::new(b"two");
        assert_eq!(a.password("0004f2000001"), a.password("0004f2000001"));
        assert_ne!(a.password("0004f2000001"), a.password("0004f2000002"));
        assert_ne!(a.password("0004f2000001"), b.password("0004f2000001"));
        assert_eq!(a.password("0004f2000001").len(), 24);
        assert_eq!(
            DeviceCredentials::mac_of_auth_user(&a.auth_user("0004f2000001")),
            Some("0004f2000001")
        );
        assert_eq!(DeviceCredentials::mac_of_auth_user("dm-xyz"), None);
        assert_eq!(DeviceCredentials::mac_of_auth_user("1000"), None);
    }
}
