//! An msk-gate of a test's own, in front of the shared local broker (`spillway_tests::fixtures`),
//! started from this crate's binary.

pub(crate) use spillway_tests::fixtures::PrivateGate;

/// The msk-gate binary cargo built for these tests.
pub(crate) const GATE: &str = env!("CARGO_BIN_EXE_msk-gate");
