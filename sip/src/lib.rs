//! sipdm's SIP stack. It knows nothing of HTTP, SQL or devices: storage and credentials sit
//! behind traits that the server crate implements.
