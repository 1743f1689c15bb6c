//! Provisioning: MACs, vendor file names, the vendor table, template rendering.
//!
//! - [`mac`]: the `Mac` newtype every lookup is keyed by.
//! - [`vendor`]: the vendor table (data from `config/vendors.toml`) and User-Agent / model lookups.
//! - [`file_pattern`]: the vendor table's file-name patterns (`{mac}.cfg`, `y{hw}.cfg`), compiled.
//! - [`filename`]: requested file name → typed request (or 400 traversal / 404 unknown).
//! - [`render`]: minijinja rendering of the per-vendor templates in `config/templates/`.

pub mod file_pattern;
pub mod filename;
pub mod mac;
pub mod render;
pub mod vendor;
