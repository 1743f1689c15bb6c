//! Phone simulator and fleet load generator used by sipdm's end-to-end tests and benchmarks.
