//! The chain of files each phone family walks, as its firmware does, without doing any I/O:
//! a [`Walk`] says which URL to fetch next ([`Walk::next`]) and is told what came back
//! ([`Walk::fetched`]); [`super::Phone`] does the HTTP. That keeps the per-vendor logic testable
//! with canned files (testbed/tests/config_formats.rs).
//!
//! | vendor | first boot, from the DHCP URL (a directory) | re-fetch, from what the file said |
//! | --- | --- | --- |
//! | Polycom | `{mac}.cfg`, on 404 `000000000000.cfg`: the master; then each of its `CONFIG_FILES` (`[PHONE_MAC_ADDRESS]` = the MAC) from the same directory | the same, from `device.prov.serverName` |
//! | Yealink | `y0000000000XX.cfg` (XX: the model's hardware code; 404 is fine), then `{mac}.cfg` | the same, from `static.auto_provision.server.url` |
//! | Cisco SPA | `spa$PSN.cfg` (its model), then wherever its `Profile_Rule` points (`$MA` = the MAC in lowercase, `$PSN` = the model), until a file's rule points at itself | the `Profile_Rule` of its last file |
//! | Grandstream | `cfg{mac}.xml` | `cfg{mac}.xml` under `P212`://`P237` |
//! | snom | `{mac}.xml` | `setting_server` |
//! | AudioCodes | `{mac}.cfg` | `{mac}.cfg` under `provisioning/configuration/url` |

use super::config_parse::{self, ConfigError, PhoneConfig};
use super::vendor::{Mac, Vendor};

/// At most this many Cisco `Profile_Rule` hops before the walk gives up (a loop between files).
const MAX_HOPS: usize = 4;

/// What the walk wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// GET this URL. `optional`: a 404 is part of the chain (Polycom's `{mac}.cfg` falling back
    /// to `000000000000.cfg`, Yealink's common file), not an error.
    Fetch { url: String, optional: bool },
    /// The chain is complete: the settings of every file, as the phone applies them.
    Done(PhoneConfig),
}

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{url}: {error}")]
    Config {
        url: String,
        #[source]
        error: ConfigError,
    },
    #[error("{0}: not found, and the chain has nowhere else to go")]
    NotFound(String),
    #[error("Profile_Rule goes round more than {MAX_HOPS} files: {0:?}")]
    Loop(Vec<String>),
}

#[derive(Debug, Clone)]
enum State {
    /// Polycom: the per-phone master, then (after a 404) the common one.
    PolycomMaster {
        dir: String,
        common: bool,
    },
    /// Polycom: the files the master named, fetched in order.
    PolycomFiles {
        dir: String,
        names: Vec<String>,
        bodies: Vec<String>,
    },
    /// Yealink: the common file, then the phone's own.
    YealinkCommon {
        dir: String,
    },
    YealinkOwn {
        dir: String,
        common: Option<String>,
    },
    /// Cisco: following Profile_Rule.
    Cisco {
        url: String,
        seen: Vec<String>,
    },
    /// One file holds everything (Grandstream, snom, AudioCodes).
    Single {
        url: String,
    },
    Finished,
}

/// One walk down a phone's chain of files.
#[derive(Debug, Clone)]
pub struct Walk {
    vendor: Vendor,
    mac: Mac,
    state: State,
    /// Every URL fetched, in order, 404s included.
    fetched: Vec<String>,
}

impl Walk {
    /// A factory phone's walk from the directory URL DHCP gave it (option 66/160).
    pub fn boot(vendor: Vendor, mac: Mac, dhcp_url: &str) -> Walk {
        let dir = dhcp_url.trim_end_matches('/').to_string();
        let m = mac.plain();
        let state = match vendor {
            Vendor::Polycom => State::PolycomMaster { dir, common: false },
            Vendor::Yealink => State::YealinkCommon { dir },
            Vendor::Cisco => State::Cisco {
                url: join(&dir, &format!("spa{}.cfg", vendor.cisco_psn())),
                seen: Vec::new(),
            },
            Vendor::Grandstream => State::Single {
                url: join(&dir, &format!("cfg{m}.xml")),
            },
            Vendor::Snom => State::Single {
                url: join(&dir, &format!("{m}.xml")),
            },
            Vendor::AudioCodes => State::Single {
                url: join(&dir, &format!("{m}.cfg")),
            },
        };
        Walk {
            vendor,
            mac,
            state,
            fetched: Vec::new(),
        }
    }

    /// The walk of a phone that has its files: from where they told it to fetch
    /// ([`PhoneConfig::prov_url`]), not from DHCP.
    pub fn refetch(vendor: Vendor, mac: Mac, prov_url: &str) -> Walk {
        let m = mac.plain();
        let state = match vendor {
            // These read a directory: the chain starts over there.
            Vendor::Polycom | Vendor::Yealink => return Walk::boot(vendor, mac, prov_url),
            Vendor::Cisco => State::Cisco {
                url: cisco_rule_url(prov_url, &mac, vendor.cisco_psn(), None),
                seen: Vec::new(),
            },
            Vendor::Grandstream => State::Single {
                url: join(prov_url, &format!("cfg{m}.xml")),
            },
            Vendor::Snom => State::Single {
                url: prov_url.replace("{mac}", &m),
            },
            Vendor::AudioCodes => State::Single {
                url: join(prov_url, &format!("{m}.cfg")),
            },
        };
        Walk {
            vendor,
            mac,
            state,
            fetched: Vec::new(),
        }
    }

    /// Every URL asked for so far (404s included), in order.
    pub fn urls(&self) -> &[String] {
        &self.fetched
    }

    /// What to do next.
    pub fn next_step(&mut self) -> Next {
        let fetch = |url: &str, optional| Next::Fetch {
            url: url.to_string(),
            optional,
        };
        match &self.state {
            State::PolycomMaster { dir, common } => {
                let name = if *common {
                    "000000000000.cfg".to_string()
                } else {
                    format!("{}.cfg", self.mac.plain())
                };
                fetch(&join(dir, &name), !*common)
            }
            State::PolycomFiles {
                dir, names, bodies, ..
            } => fetch(&join(dir, &names[bodies.len()]), false),
            State::YealinkCommon { dir } => fetch(
                &join(dir, &format!("y{:0>12}.cfg", self.vendor.yealink_hw_code())),
                true,
            ),
            State::YealinkOwn { dir, .. } => {
                fetch(&join(dir, &format!("{}.cfg", self.mac.plain())), false)
            }
            State::Cisco { url, .. } | State::Single { url } => fetch(url, false),
            State::Finished => unreachable!("next() after the walk finished"),
        }
    }

    /// The answer to the last [`Next::Fetch`]: the body, or `None` for a 404. Returns what to
    /// do next.
    pub fn fetched(&mut self, url: &str, body: Option<&str>) -> Result<Next, ChainError> {
        self.fetched.push(url.to_string());
        let cfg_err = |error| ChainError::Config {
            url: url.to_string(),
            error,
        };
        let state = std::mem::replace(&mut self.state, State::Finished);
        let Some(body) = body else {
            self.state = match state {
                State::PolycomMaster { dir, common: false } => {
                    State::PolycomMaster { dir, common: true }
                }
                State::YealinkCommon { dir } => State::YealinkOwn { dir, common: None },
                _ => return Err(ChainError::NotFound(url.to_string())),
            };
            return Ok(self.next_step());
        };
        self.state = match state {
            State::PolycomMaster { dir, .. } => {
                let names = config_parse::polycom_master(body)
                    .map_err(cfg_err)?
                    .into_iter()
                    .map(|n| n.replace("[PHONE_MAC_ADDRESS]", &self.mac.plain()))
                    .collect();
                State::PolycomFiles {
                    dir,
                    names,
                    bodies: Vec::new(),
                }
            }
            State::PolycomFiles {
                dir,
                names,
                mut bodies,
            } => {
                bodies.push(body.to_string());
                if bodies.len() == names.len() {
                    let texts: Vec<&str> = bodies.iter().map(String::as_str).collect();
                    let cfg = config_parse::parse_polycom_files(&texts).map_err(cfg_err)?;
                    return Ok(Next::Done(cfg));
                }
                State::PolycomFiles { dir, names, bodies }
            }
            State::YealinkCommon { dir } => State::YealinkOwn {
                dir,
                common: Some(body.to_string()),
            },
            State::YealinkOwn { common, .. } => {
                let cfg =
                    config_parse::parse_yealink_files(common.as_deref(), body).map_err(cfg_err)?;
                return Ok(Next::Done(cfg));
            }
            State::Cisco {
                url: here,
                mut seen,
            } => {
                let rule = config_parse::cisco_profile_rule(body).map_err(cfg_err)?;
                let next = cisco_rule_url(&rule, &self.mac, self.vendor.cisco_psn(), Some(&here));
                seen.push(here.clone());
                if next == here {
                    // The rule names this very file: it is the one the phone keeps reading.
                    let cfg = config_parse::parse(self.vendor, body).map_err(cfg_err)?;
                    return Ok(Next::Done(cfg));
                }
                if seen.len() >= MAX_HOPS || seen.contains(&next) {
                    return Err(ChainError::Loop(seen));
                }
                State::Cisco { url: next, seen }
            }
            State::Single { .. } => {
                let cfg = config_parse::parse(self.vendor, body).map_err(cfg_err)?;
                return Ok(Next::Done(cfg));
            }
            State::Finished => unreachable!("fetched() after the walk finished"),
        };
        Ok(self.next_step())
    }
}

/// `dir/file`, whatever trailing `/` the directory has.
pub fn join(dir: &str, file: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), file)
}

/// A Cisco `Profile_Rule` as a URL: the `[--options]` prefix dropped, `$MA` (MAC, lowercase),
/// `$MAU` (uppercase) and `$PSN` (model) substituted. A rule without a scheme is a path on the
/// server the rule was read from (`here`), as the factory rule `/spa$PSN.cfg` is one on the
/// DHCP-named server.
pub fn cisco_rule_url(rule: &str, mac: &Mac, psn: &str, here: Option<&str>) -> String {
    let mut r = rule.trim();
    if r.starts_with('[') {
        if let Some(end) = r.find(']') {
            r = r[end + 1..].trim();
        }
    }
    let url = r
        .replace("$(MAU)", &mac.plain_upper())
        .replace("$MAU", &mac.plain_upper())
        .replace("$(MA)", &mac.plain())
        .replace("$MA", &mac.plain())
        .replace("$(PSN)", psn)
        .replace("$PSN", psn);
    if url.contains("://") {
        return url;
    }
    match here.and_then(origin) {
        Some(o) => format!("{o}/{}", url.trim_start_matches('/')),
        None => url,
    }
}

/// `scheme://authority` of a URL.
pub fn origin(url: &str) -> Option<&str> {
    let after = url.find("://")? + 3;
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    Some(&url[..end])
}

/// `url` on the other addresses of its server: when its origin is one of `known` (the DHCP
/// URL and its fallbacks: several addresses behind one name), the same path on each of the
/// others, in their order. A phone whose server stops answering moves to the next address of
/// the name its file gave.
pub fn alternates(url: &str, known: &[&str]) -> Vec<String> {
    let Some(o) = origin(url) else {
        return Vec::new();
    };
    let origins: Vec<&str> = known.iter().filter_map(|k| origin(k)).collect();
    if !origins.contains(&o) {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for other in origins {
        let u = format!("{other}{}", &url[o.len()..]);
        if other != o && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}
