//! Refusals by the limits, counted per limit for `natter_rejections_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The limits that refuse calls (and connections), as counted in `natter_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    SignIn,
    Register,
    Join,
    CreateRoom,
    OpenDirect,
    Send,
    Typing,
    StreamsPerUser,
    Streams,
    RoomsPerUser,
    Connections,
    PasswordHashing,
    SendTimeout,
    HistoryReads,
}

impl Limit {
    pub(super) const ALL: [Limit; 14] = [
        Limit::SignIn,
        Limit::Register,
        Limit::Join,
        Limit::CreateRoom,
        Limit::OpenDirect,
        Limit::Send,
        Limit::Typing,
        Limit::StreamsPerUser,
        Limit::Streams,
        Limit::RoomsPerUser,
        Limit::Connections,
        Limit::PasswordHashing,
        Limit::SendTimeout,
        Limit::HistoryReads,
    ];

    /// The `limit` label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Limit::SignIn => "sign_in",
            Limit::Register => "register",
            Limit::Join => "join",
            Limit::CreateRoom => "create_room",
            Limit::OpenDirect => "open_direct",
            Limit::Send => "send",
            Limit::Typing => "typing",
            Limit::StreamsPerUser => "streams_per_user",
            Limit::Streams => "streams",
            Limit::RoomsPerUser => "rooms_per_user",
            Limit::Connections => "connections",
            Limit::PasswordHashing => "password_hashing",
            Limit::SendTimeout => "send_timeout",
            Limit::HistoryReads => "history_reads",
        }
    }
}

/// Refusals per limit; shared with the parts that refuse (rate limits, the listener, the
/// password hashing queue).
#[derive(Debug, Default)]
pub(crate) struct Rejections([AtomicU64; Limit::ALL.len()]);

impl Rejections {
    /// Counts one refusal.
    pub(crate) fn count(&self, limit: Limit) {
        self.0[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals by `limit` so far.
    pub(crate) fn of(&self, limit: Limit) -> u64 {
        self.0[limit as usize].load(Ordering::Relaxed)
    }
}
