//! The backupd daemon as a library: the binary in `main.rs` only parses arguments, sets up the
//! runtime and signals, and calls into these modules.

pub mod admission;
pub mod allocator;
pub mod config;
pub mod destination;
pub mod engine;
pub mod events;
pub mod format;
pub mod fsutil;
pub mod handlers;
pub mod home;
pub mod hooks;
pub mod jobs;
pub mod key_files;
pub mod line_reader;
pub mod log;
pub mod metrics;
pub mod notifications;
pub mod notify;
pub mod offsite;
pub mod offsite_retention;
pub mod outcome;
pub mod peer;
pub mod plan;
pub mod remote;
pub mod retention;
pub mod rotation_locks;
pub mod runner;
pub mod scheduler;
pub mod schedules;
pub mod server;
pub mod socket;
pub mod state;
pub mod store;
pub mod timing;
pub mod verify_ledger;
