//! What a default file's credentials are good for: registering as `gcti_provisioning` and
//! calling the IVR, nothing else.
//!
//! An unassigned phone's file gives it credentials of its own (auth user `dm-<mac>`, see
//! `crate::credentials`) so that it can get a DN through the IVR. Anyone who reads such a file
//! (a scan, a phone left on a desk) holds them, so they must not be a way to place calls:
//!
//! * REGISTER: the authenticator accepts them only for the AOR `gcti_provisioning`
//!   ([`super::authenticator`]); for a DN's AOR they are no credentials at all.
//! * INVITE: a call by a device, whether its own digest named it or a trusted switch asserted
//!   it ([`super::identity`]), goes only to the IVR's route: the trunks of the longest prefix
//!   that `[ivr] number` matches (and, through their trunk group, the fail-over that follows).
//!   To any other number it is refused with 403, counted every time
//!   (`sipdm_sip_device_calls_refused_total`) and logged once per device.
//! * The switch applies the same rule to what it authenticates from `switch_subscriber`
//!   (`config/switch/kamailio/kamailio.cfg`, route AUTH).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use super::trunks::TrunkTable;
use crate::provisioning::mac::Mac;

/// Devices remembered for "logged once"; past this the memo is cleared.
const LOGGED_LIMIT: usize = 1024;

pub struct DeviceScope {
    trunks: Arc<TrunkTable>,
    /// The route of the IVR number; `None` when no trunk carries it (then a device may call
    /// nothing).
    ivr_route: Option<String>,
    /// Devices already logged for a refused call.
    logged: Mutex<HashSet<Mac>>,
}

impl DeviceScope {
    pub fn new(trunks: Arc<TrunkTable>, ivr_number: &str) -> DeviceScope {
        let ivr_route = trunks.route_prefix(ivr_number).map(str::to_owned);
        if ivr_route.is_none() {
            tracing::warn!(
                ivr_number,
                "no trunk carries the IVR number: unassigned phones can call nothing"
            );
        }
        DeviceScope {
            trunks,
            ivr_route,
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the device `mac` may call `target_user` (the Request-URI user); when not, the
    /// refusal is counted, and logged the first time for this device.
    pub fn allows(&self, mac: Mac, target_user: &str, source: IpAddr) -> bool {
        let route = self.trunks.route_prefix(target_user);
        if route.is_some() && route == self.ivr_route.as_deref() {
            return true;
        }
        metrics::counter!("sipdm_sip_device_calls_refused_total").increment(1);
        let first = {
            let mut logged = self.logged.lock();
            if logged.len() >= LOGGED_LIMIT {
                logged.clear();
            }
            logged.insert(mac)
        };
        if first {
            tracing::warn!(%mac, to = %target_user, %source, ivr_route = ?self.ivr_route,
                "INVITE with an unassigned phone's credentials to a number that is not the IVR's: 403 (logged once per device)");
        } else {
            tracing::debug!(%mac, to = %target_user, %source, "INVITE by a device outside the IVR: 403");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrunkConfig;
    use crate::dns::SipResolver;

    fn table(trunks: &[(&str, &str, &str, Option<&str>)]) -> Arc<TrunkTable> {
        let configs: Vec<TrunkConfig> = trunks
            .iter()
            .map(|(name, prefix, contact, group)| TrunkConfig {
                name: (*name).into(),
                prefix: (*prefix).into(),
                contact: (*contact).into(),
                oos_options_max_forwards: 70,
                oosp_transfer_enabled: false,
                group: group.map(str::to_owned),
            })
            .collect();
        let resolver = Arc::new(SipResolver::new(&["127.0.0.1:9".parse().unwrap()]));
        Arc::new(TrunkTable::new(&configs, resolver, std::time::Duration::from_secs(1)).unwrap())
    }

    fn mac() -> Mac {
        Mac::parse("0004f2000abc").unwrap()
    }

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn only_the_ivr_route() {
        let scope = DeviceScope::new(
            table(&[
                ("ivr", "88", "builtin:ivr", None),
                ("sbc", "9", "sip:10.0.0.9", None),
                ("ms", "8899", "sip:10.0.0.8", None),
            ]),
            "8800",
        );
        assert!(scope.allows(mac(), "8800", SRC));
        assert!(scope.allows(mac(), "8801", SRC), "the IVR trunk's prefix");
        assert!(!scope.allows(mac(), "90015551234", SRC), "another trunk");
        assert!(
            !scope.allows(mac(), "8899", SRC),
            "a longer prefix is another route"
        );
        assert!(!scope.allows(mac(), "1001", SRC), "no trunk at all");
        assert!(!scope.allows(mac(), "", SRC));
    }

    #[test]
    fn a_group_is_the_ivr_number_route_only() {
        let scope = DeviceScope::new(
            table(&[
                ("ms", "8800", "sip:10.0.0.1", Some("gcti_provisioning")),
                ("ivr", "88", "builtin:ivr", Some("gcti_provisioning")),
            ]),
            "8800",
        );
        assert!(scope.allows(mac(), "8800", SRC));
        assert!(
            !scope.allows(mac(), "8850", SRC),
            "not the IVR number's route"
        );
    }

    #[test]
    fn refusals_are_logged_once_per_device() {
        let scope = DeviceScope::new(table(&[("ivr", "88", "builtin:ivr", None)]), "8800");
        for _ in 0..3 {
            assert!(!scope.allows(mac(), "9000", SRC));
        }
        let other = Mac::parse("0004f2000abd").unwrap();
        assert!(!scope.allows(other, "9000", SRC));
        assert_eq!(scope.logged.lock().len(), 2);
    }

    #[test]
    fn no_ivr_trunk_no_calls() {
        let scope = DeviceScope::new(table(&[("sbc", "9", "sip:10.0.0.9", None)]), "8800");
        assert!(!scope.allows(mac(), "8800", SRC));
        assert!(!scope.allows(mac(), "9000", SRC));
    }
}
