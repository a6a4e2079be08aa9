//! The embedded default: one redb database on disk holds the directory and every room's log
//! (appends go through one writer thread that commits in groups, and one task publishes them
//! in seq order),
//! an in-process fan-out, and in-memory presence. No external service.

mod appender;
mod directory;
mod fanout;
mod log;
mod presence;
mod store;
mod tables;

pub use presence::LocalPresence;
pub use store::EmbeddedStore;
