//! Where a service's failure meets the wire. Every service error names its [`Fault`], the kind
//! of failure; one table per protocol turns a fault into a status, as Kamailio's registrar
//! turns its `R_*` codes into replies in `reply.c`. A new error variant picks a fault, never a
//! status, so the admin API, the provisioning route and the SIP side cannot disagree about
//! what "the database is down" answers.

use serde::{Deserialize, Serialize};

/// The kind of a failure, whatever the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// What the request names does not exist.
    NotFound,
    /// It exists, but the request collides with what is there (a DN already taken).
    Conflict,
    /// The request is well formed but its content is refused (a bogus MAC, an unknown vendor).
    Invalid,
    /// The request itself is malformed (a path that climbs out of the file tree).
    Malformed,
    /// The phone is not registered anywhere sipdm can reach.
    NotRegistered,
    /// A peer (a phone, a switch, another instance) refused or failed what it was asked.
    PeerRefused,
    /// A peer did not answer in time.
    PeerTimeout,
    /// A dependency is down for now (the database): try again, or another server.
    Unavailable,
    /// Our fault: stored data we cannot read, a template that does not render.
    Internal,
}

/// Implemented by every service error.
pub trait HasFault {
    fn fault(&self) -> Fault;
}

/// The HTTP status of a fault: the admin API, the provisioning route, the VoiceXML pages.
pub fn http_status(fault: Fault) -> u16 {
    match fault {
        Fault::NotFound => 404,
        Fault::Conflict => 409,
        Fault::Invalid => 422,
        Fault::Malformed => 400,
        // The request was fine; the phone is not where it can be told.
        Fault::NotRegistered => 409,
        Fault::PeerRefused => 502,
        Fault::PeerTimeout => 504,
        Fault::Unavailable => 503,
        Fault::Internal => 500,
    }
}

/// The SIP status of a fault: what a REGISTER or an INVITE is answered when a service fails
/// under it. 503 makes a phone try its next server (RFC 3263 §4.3); 500 does not.
pub fn sip_status(fault: Fault) -> u16 {
    match fault {
        Fault::NotFound => 404,
        Fault::Conflict => 486,
        Fault::Invalid | Fault::Malformed => 400,
        Fault::NotRegistered => 480,
        Fault::PeerRefused => 502,
        Fault::PeerTimeout => 504,
        Fault::Unavailable => 503,
        Fault::Internal => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Fault; 9] = [
        Fault::NotFound,
        Fault::Conflict,
        Fault::Invalid,
        Fault::Malformed,
        Fault::NotRegistered,
        Fault::PeerRefused,
        Fault::PeerTimeout,
        Fault::Unavailable,
        Fault::Internal,
    ];

    #[test]
    fn every_fault_has_an_error_status_on_both_wires() {
        for f in ALL {
            assert!((400..600).contains(&http_status(f)), "{f:?}");
            assert!((400..700).contains(&sip_status(f)), "{f:?}");
        }
    }

    #[test]
    fn only_our_own_faults_and_outages_are_server_errors() {
        for f in ALL {
            let server_side = matches!(
                f,
                Fault::Internal | Fault::Unavailable | Fault::PeerRefused | Fault::PeerTimeout
            );
            assert_eq!(http_status(f) >= 500, server_side, "{f:?}");
        }
        assert_eq!(sip_status(Fault::Unavailable), 503);
        assert_eq!(http_status(Fault::Unavailable), 503);
    }

    #[test]
    fn faults_travel_between_instances_by_name() {
        let json = serde_json::to_string(&Fault::PeerTimeout).unwrap();
        assert_eq!(json, "\"peer-timeout\"");
        assert_eq!(
            serde_json::from_str::<Fault>(&json).unwrap(),
            Fault::PeerTimeout
        );
    }
}
