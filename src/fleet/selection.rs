//! Which devices an operator means: the filters of a campaign started by hand.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::model::{Device, Dn, Switch};

/// Devices matching every filter that is set; no filter at all means every device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// The site of the switch the device's DN lives on (devices without a DN: none).
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The firmware its User-Agent last reported.
    #[serde(default)]
    pub firmware: Option<String>,
    /// These devices only (canonical or any common MAC notation).
    #[serde(default)]
    pub macs: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.site.is_none()
            && self.profile.is_none()
            && self.model.is_none()
            && self.firmware.is_none()
            && self.macs.is_empty()
    }

    pub fn matches(&self, device: &Device, sites: &SiteOf) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        eq(&self.site, sites.site_of(device))
            && eq(
                &self.profile,
                Some(device.profile.as_deref().unwrap_or("default")),
            )
            && eq(&self.model, device.model.as_deref())
            && eq(&self.firmware, device.firmware.as_deref())
            && (self.macs.is_empty() || self.macs.iter().any(|m| m == &device.mac))
    }
}

/// The site a device belongs to: its DN's switch's site.
#[derive(Debug, Default)]
pub struct SiteOf {
    dn_switch: HashMap<String, String>,
    switch_site: HashMap<String, String>,
}

impl SiteOf {
    pub fn new(dns: &[Dn], switches: &[Switch]) -> SiteOf {
        SiteOf {
            dn_switch: dns
                .iter()
                .filter_map(|d| Some((d.number.clone(), d.switch.clone()?)))
                .collect(),
            switch_site: switches
                .iter()
                .map(|s| (s.name.clone(), s.site.clone()))
                .collect(),
        }
    }

    pub fn site_of(&self, device: &Device) -> Option<&str> {
        let switch = self.dn_switch.get(device.dn.as_deref()?)?;
        self.switch_site.get(switch).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(mac: &str, dn: Option<&str>, model: &str) -> Device {
        Device {
            mac: mac.into(),
            vendor: Some("yealink".into()),
            model: Some(model.into()),
            profile: None,
            dn: dn.map(Into::into),
            state: "assigned".into(),
            first_seen_ip: None,
            last_seen_ip: None,
            first_seen_at: None,
            last_seen_at: None,
            user_agent: None,
            firmware: Some("66.86.0.15".into()),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn filters_combine_and_sites_come_from_the_dns_switch() {
        let dns = vec![Dn {
            number: "2000".into(),
            password: "pw".into(),
            switch: Some("SIPS2".into()),
            authenticate_requests: "register,invite".into(),
            display_name: None,
        }];
        let switches = vec![Switch {
            name: "SIPS2".into(),
            site: "site2".into(),
            address: "sips2:5060".into(),
            dn_ranges: "2000-2999".into(),
            peer: None,
        }];
        let sites = SiteOf::new(&dns, &switches);
        let a = device("001565000001", Some("2000"), "T46S");
        let b = device("001565000002", None, "T46S");
        assert!(Selection::default().matches(&b, &sites));
        let site2 = Selection {
            site: Some("site2".into()),
            ..Default::default()
        };
        assert!(site2.matches(&a, &sites));
        assert!(!site2.matches(&b, &sites));
        let model = Selection {
            model: Some("t46s".into()),
            profile: Some("default".into()),
            ..Default::default()
        };
        assert!(model.matches(&a, &sites) && model.matches(&b, &sites));
        let one = Selection {
            macs: vec!["001565000002".into()],
            ..Default::default()
        };
        assert!(!one.matches(&a, &sites) && one.matches(&b, &sites));
    }
}
