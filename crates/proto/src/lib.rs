//! The contract between `backupd` and `backupctl`: the JSON-lines wire protocol, its framing,
//! the closed set of error codes, and the parsing rules both sides must agree on (schedule
//! specs, home and socket resolution). Depends on nothing else of ours.

pub mod codec;
pub mod error;
pub mod event;
pub mod job;
pub mod one_line;
pub mod passphrase;
pub mod paths;
pub mod request;
pub mod response;
pub mod schedule;
pub mod schedule_spec;
pub mod size;
pub mod unique_keys;

pub use codec::{Frame, LineCodec, MAX_LINE_BYTES};
pub use error::ErrorCode;
pub use event::{Event, EventLine, Incoming};
pub use job::{Codec, Compression, JobOptions, NotifyOn, Retention};
pub use one_line::escape_controls;
pub use passphrase::Passphrase;
pub use request::{Command, Request};
pub use response::{ErrorBody, Reply, Response, VerifyStatus};
pub use schedule_spec::ScheduleSpec;

/// `chrono` format of the timestamp that starts every log line: the original backup script's
/// `[dd/mm/yyyy hh:mm]`.
pub const LOG_TIME_FORMAT: &str = "%d/%m/%Y %H:%M";

/// `chrono` format of the timestamp in archive and manifest file names, `YYYYMMDD_HHMMSS`.
pub const ARCHIVE_TIME_FORMAT: &str = "%Y%m%d_%H%M%S";

/// Version of the wire protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
