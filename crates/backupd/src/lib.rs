//! backupd library
