//! backupd library

pub mod engine;
