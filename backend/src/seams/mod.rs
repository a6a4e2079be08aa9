//! The three seams between the chat's behaviour and where its state lives. Each is a trait
//! with two implementations, embedded (module `embedded`: redb on disk, in-process fan-out
//! and presence) and Redis (module `redis`), chosen once at start-up; nothing else knows
//! which one runs.
//!
//! - [`Directory`]: accounts, rooms, memberships (plain records);
//! - [`Log`]: per-room message logs, appended and published in one step, read by seq range,
//!   and the fan-out of events to streams;
//! - [`Presence`]: who is online.

mod directory;
mod log;
mod presence;

pub use directory::{
    DIRECTORY_SCAN_LIMIT, Directory, StoreError, StoreResult, UserPage, search_users,
};
pub use log::{Appended, BusError, BusMessage, EventKind, Log, NewMessage, SharedEvent, Topic};
pub use presence::Presence;
