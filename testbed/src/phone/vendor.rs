//! The six phone families the simulator can impersonate: how each one names its file, which
//! User-Agent it sends, and which OUI its MAC addresses come from.
//!
//! sipdm recognises a phone by the file name it asks for and by its User-Agent (config/vendors.toml
//! on the server side), so these strings are the ones real firmware sends, not inventions.

use std::fmt;
use std::str::FromStr;

/// A phone family. The file format the simulator parses follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Polycom,
    Yealink,
    Cisco,
    Grandstream,
    Snom,
    AudioCodes,
}

impl Vendor {
    /// All families, in the order `--vendor mix` cycles through them.
    pub const ALL: [Vendor; 6] = [
        Vendor::Polycom,
        Vendor::Yealink,
        Vendor::Cisco,
        Vendor::Grandstream,
        Vendor::Snom,
        Vendor::AudioCodes,
    ];

    /// Lowercase id, the same as sipdm's vendor table and template directory names.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Polycom => "polycom",
            Vendor::Yealink => "yealink",
            Vendor::Cisco => "cisco",
            Vendor::Grandstream => "grandstream",
            Vendor::Snom => "snom",
            Vendor::AudioCodes => "audiocodes",
        }
    }

    /// First three octets of MACs the vendor really ships, so that generated fleets look like
    /// real ones (AudioCodes' MAC is even matched by OUI in sipdm's User-Agent rules).
    pub fn oui(self) -> [u8; 3] {
        match self {
            Vendor::Polycom => [0x00, 0x04, 0xf2],
            Vendor::Yealink => [0x80, 0x5e, 0xc0],
            Vendor::Cisco => [0x00, 0x0e, 0x08],
            Vendor::Grandstream => [0x00, 0x0b, 0x82],
            Vendor::Snom => [0x00, 0x04, 0x13],
            Vendor::AudioCodes => [0x00, 0x90, 0x8f],
        }
    }

    /// The phone's own file (the last of its chain, see [`super::chain`]). `mac` is 12
    /// lowercase hex digits.
    pub fn file_name(self, mac: &Mac) -> String {
        let m = mac.plain();
        match self {
            Vendor::Polycom | Vendor::Yealink | Vendor::AudioCodes => format!("{m}.cfg"),
            Vendor::Cisco => format!("spa{m}.xml"),
            Vendor::Grandstream => format!("cfg{m}.xml"),
            Vendor::Snom => format!("{m}.xml"),
        }
    }

    /// The model the simulator impersonates (the one its User-Agents name).
    pub fn model(self) -> &'static str {
        match self {
            Vendor::Polycom => "VVX_450",
            Vendor::Yealink => "T46S",
            Vendor::Cisco => "SPA504G",
            Vendor::Grandstream => "GXP2170",
            Vendor::Snom => "snomD785",
            Vendor::AudioCodes => "445HD",
        }
    }

    /// Cisco's `$PSN` (product series number) of the simulated model: `504G`, the name of the
    /// factory profile `spa504G.cfg`. Empty for the other families.
    pub fn cisco_psn(self) -> &'static str {
        match self {
            Vendor::Cisco => "504G",
            _ => "",
        }
    }

    /// Yealink's hardware code of the simulated model (T46S: 66), the `XX` of its common file
    /// `y0000000000XX.cfg`. Empty for the other families.
    pub fn yealink_hw_code(self) -> &'static str {
        match self {
            Vendor::Yealink => "66",
            _ => "",
        }
    }

    /// User-Agent of the HTTP request for the configuration file, as the firmware sends it.
    pub fn http_user_agent(self, mac: &Mac) -> String {
        match self {
            Vendor::Polycom => format!(
                "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 (SN:{}) Type/Application",
                mac.plain()
            ),
            Vendor::Yealink => format!("Yealink SIP-T46S 66.86.0.15 {}", mac.colons()),
            Vendor::Cisco => format!("Cisco/SPA504G-7.6.2c ({})", mac.plain_upper()),
            Vendor::Grandstream => format!(
                "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId {}",
                mac.plain()
            ),
            Vendor::Snom => {
                "Mozilla/4.0 (compatible; snomD785-SIP 10.1.46.16 1.1.5-IFX-05.01.12)".to_string()
            }
            Vendor::AudioCodes => {
                format!("AUDC-IPPhone/3.4.6.604 (445HD-Rev1; {})", mac.plain_upper())
            }
        }
    }

    /// User-Agent header of the SIP requests the phone sends.
    pub fn sip_user_agent(self, mac: &Mac) -> String {
        match self {
            Vendor::Polycom => "PolycomVVX-VVX_450-UA/6.3.0.14929".to_string(),
            Vendor::Yealink => format!("Yealink SIP-T46S 66.86.0.15 {}", mac.colons()),
            Vendor::Cisco => format!("Cisco/SPA504G-7.6.2c ({})", mac.plain_upper()),
            Vendor::Grandstream => "Grandstream GXP2170 1.0.11.3".to_string(),
            Vendor::Snom => "snomD785/10.1.46.16".to_string(),
            Vendor::AudioCodes => {
                format!("AUDC-IPPhone/3.4.6.604 (445HD-Rev1; {})", mac.plain_upper())
            }
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A vendor name that is none of the six.
#[derive(Debug, thiserror::Error)]
#[error("unknown vendor {0:?} (polycom, yealink, cisco, grandstream, snom, audiocodes)")]
pub struct UnknownVendor(pub String);

impl FromStr for Vendor {
    type Err = UnknownVendor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        Vendor::ALL
            .into_iter()
            .find(|v| v.name() == l || (l == "spa" && *v == Vendor::Cisco))
            .ok_or_else(|| UnknownVendor(s.to_string()))
    }
}

/// A MAC address, kept as six octets and printed in the spellings phones use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

/// Text that is not a MAC address.
#[derive(Debug, thiserror::Error)]
#[error("not a MAC address: {0:?}")]
pub struct BadMac(pub String);

impl Mac {
    /// `vendor`'s OUI followed by `index` in the low 24 bits: deterministic fleets.
    pub fn generated(vendor: Vendor, index: u32) -> Mac {
        let o = vendor.oui();
        let i = index.to_be_bytes();
        Mac([o[0], o[1], o[2], i[1], i[2], i[3]])
    }

    /// `0004f2aabbcc`: how file names carry it.
    pub fn plain(&self) -> String {
        hex::encode(self.0)
    }

    /// `0004F2AABBCC`.
    pub fn plain_upper(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// `00:04:f2:aa:bb:cc`: how Yealink's User-Agent carries it.
    pub fn colons(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl FromStr for Mac {
    type Err = BadMac;
    /// Accepts any separators (`:`, `-`, `.`) and either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if digits.len() != 12 {
            return Err(BadMac(s.to_string()));
        }
        let bytes = hex::decode(&digits).map_err(|_| BadMac(s.to_string()))?;
        let mut out = [0u8; 6];
        out.copy_from_slice(&bytes);
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plain())
    }
}
