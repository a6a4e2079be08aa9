use std::collections::{BTreeMap, HashMap};

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};

use super::{
    ChatState, TYPING_SHOWN_MS, merge_read_markers,
    room::tests::{message, room},
};

fn ready(rooms: Vec<pb::Room>) -> Ev {
    Ev::Ready(pb::Ready {
        rooms,
        heartbeat_interval_ms: 15_000,
    })
}

fn signed_in(rooms: Vec<pb::Room>) -> ChatState {
    let mut state = ChatState::new("me", BTreeMap::new());
    state.apply(ready(rooms), 0.0);
    state
}

fn seqs(state: &ChatState, room: &str) -> Vec<u64> {
    state.rooms[room].messages.keys().copied().collect()
}

#[test]
fn history_and_live_events_merge_by_seq_without_duplicates() {
    let mut state = signed_in(vec![room("r", 5)]);
    state.open("r");
    state.apply(Ev::Message(message("r", 6, "bob", "")), 0.0);
    // The newest page overlaps the live message; older pages come later.
    let newest = pb::GetHistoryResponse {
        messages: (4..=6).map(|s| message("r", s, "bob", "")).collect(),
        has_more: true,
    };
    state.merge_history("r", newest);
    state.apply(Ev::Message(message("r", 6, "bob", "")), 0.0);
    let older = pb::GetHistoryResponse {
        messages: (1..=3).map(|s| message("r", s, "bob", "")).collect(),
        has_more: false,
    };
    state.merge_history("r", older);
    assert_eq!(seqs(&state, "r"), [1, 2, 3, 4, 5, 6]);
    assert!(!state.rooms["r"].has_more);
    assert_eq!(state.rooms["r"].oldest_loaded(), 1);
}

#[test]
fn unread_counts_follow_what_was_on_screen() {
    let mut state = signed_in(vec![room("a", 3), room("b", 0)]);
    assert_eq!(
        state.rooms["a"].unread(),
        0,
        "what existed before the first visit is not unread"
    );
    state.open("a");
    state.apply(Ev::Message(message("b", 1, "bob", "")), 0.0);
    state.apply(Ev::Message(message("b", 2, "bob", "")), 0.0);
    state.apply(Ev::Message(message("a", 4, "bob", "")), 0.0);
    assert_eq!(
        (state.rooms["a"].unread(), state.rooms["b"].unread()),
        (0, 2)
    );
    state.apply(Ev::Message(message("b", 3, "me", "")), 0.0);
    assert_eq!(
        state.rooms["b"].unread(),
        0,
        "answering marks the room read"
    );
    state.apply(Ev::Message(message("b", 4, "bob", "")), 0.0);
    state.open("b");
    assert_eq!(state.rooms["b"].unread(), 0);
}

#[test]
fn read_markers_survive_a_reload() {
    let mut state = signed_in(vec![room("a", 3), room("b", 9), room("gone", 2)]);
    state.apply(Ev::Message(message("a", 4, "bob", "")), 0.0);
    let remembered = state.read_markers();
    assert_eq!(
        remembered,
        BTreeMap::from([("a".into(), 3), ("b".into(), 9), ("gone".into(), 2)])
    );
    // The next visit: until Ready, the markers stay as remembered; then two more in "a"
    // meanwhile, a new room "c", and "gone" was left (its marker goes too).
    let mut again = ChatState::new("me", remembered.clone());
    assert_eq!(again.read_markers(), remembered);
    again.apply(ready(vec![room("a", 6), room("b", 9), room("c", 4)]), 0.0);
    assert_eq!(
        again.read_markers(),
        BTreeMap::from([("a".into(), 3), ("b".into(), 9), ("c".into(), 4)])
    );
    let unread: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|r| again.rooms[*r].unread())
        .collect();
    assert_eq!(unread, [3, 0, 0]);
}

#[test]
fn tabs_never_move_a_read_marker_back() {
    let stored = BTreeMap::from([("a".into(), 20), ("b".into(), 3)]);
    let ours = BTreeMap::from([("a".into(), 5), ("b".into(), 9), ("c".into(), 1)]);
    assert_eq!(
        merge_read_markers(stored, ours),
        BTreeMap::from([("a".into(), 20), ("b".into(), 9), ("c".into(), 1)])
    );
}

#[test]
fn own_messages_are_read_and_the_open_room_stays_read_across_reconnects() {
    let mut state = signed_in(vec![room("a", 2), room("b", 5)]);
    state.acknowledge(message("a", 3, "me", "c1"));
    assert_eq!(state.rooms["a"].unread(), 0, "acknowledged while elsewhere");
    state.open("b");
    // Reconnected: "b" grew while the stream was down; it is on screen, so it is read.
    state.apply(ready(vec![room("a", 3), room("b", 8)]), 0.0);
    assert_eq!(state.rooms["b"].unread(), 0);
}

#[test]
fn cursors_track_the_stream_for_resuming() {
    let mut state = signed_in(vec![room("a", 3), room("b", 7)]);
    state.apply(Ev::Message(message("a", 4, "bob", "")), 0.0);
    // History does not move the cursor: only the stream does.
    state.merge_history(
        "b",
        pb::GetHistoryResponse {
            messages: vec![message("b", 2, "x", "")],
            has_more: true,
        },
    );
    let cursors: HashMap<String, u64> = state
        .cursors()
        .into_iter()
        .map(|c| (c.room_id, c.after_seq))
        .collect();
    assert_eq!(cursors, HashMap::from([("a".into(), 4), ("b".into(), 7)]));
    // After a reconnect, Ready drops rooms left meanwhile and keeps cursors of the others.
    state.apply(ready(vec![room("a", 6)]), 0.0);
    assert_eq!(
        state.cursors(),
        vec![pb::RoomCursor {
            room_id: "a".into(),
            after_seq: 4
        }]
    );
    state.apply(
        Ev::HistoryTrimmed(pb::HistoryTrimmed {
            room_id: "a".into(),
            after_seq: 4,
            first_available_seq: 9,
        }),
        0.0,
    );
    assert_eq!(state.cursors()[0].after_seq, 8);
}

#[test]
fn pending_sends_settle_on_acknowledgement_or_stream() {
    let mut state = signed_in(vec![room("r", 0)]);
    state.add_pending("r", "c1", "hello");
    state.add_pending("r", "c2", "again");
    state.set_failed("r", "c2", true);
    assert!(state.rooms["r"].pending[1].failed);
    state.add_pending("r", "c3", "never mind");
    state.discard("r", "c3");
    assert_eq!(state.rooms["r"].pending.len(), 2);
    assert_eq!(
        state.failed_sends(),
        [("r".to_owned(), "c2".to_owned(), "again".to_owned())],
        "only the failed one is tried again on reconnect"
    );
    state.acknowledge(message("r", 1, "me", "c1"));
    // The same message arriving on the stream changes nothing.
    state.apply(Ev::Message(message("r", 1, "me", "c1")), 0.0);
    state.apply(Ev::Message(message("r", 2, "me", "c2")), 0.0);
    assert!(state.rooms["r"].pending.is_empty());
    assert_eq!(seqs(&state, "r"), [1, 2]);
}

#[test]
fn typing_ignores_self_and_ends_with_a_message() {
    let mut state = signed_in(vec![room("r", 0)]);
    let typing = |id: &str, on: bool| {
        Ev::Typing(pb::Typing {
            room_id: "r".into(),
            user: Some(pb::User {
                id: id.into(),
                display_name: id.to_uppercase(),
                ..Default::default()
            }),
            typing: on,
        })
    };
    assert!(state.apply(typing("bob", true), 1000.0));
    assert!(
        !state.apply(typing("me", true), 1000.0),
        "own typing changes nothing"
    );
    assert_eq!(state.rooms["r"].typing_names(2000.0), ["BOB"]);
    assert!(
        state.rooms["r"]
            .typing_names(1000.0 + TYPING_SHOWN_MS + 1.0)
            .is_empty()
    );
    state.apply(typing("bob", false), 1500.0);
    assert!(state.rooms["r"].typing_names(2000.0).is_empty());
    state.apply(typing("bob", true), 3000.0);
    state.apply(Ev::Message(message("r", 1, "bob", "")), 3100.0);
    assert!(
        state.rooms["r"].typing_names(3200.0).is_empty(),
        "a message ends typing"
    );
    let before = state.clone();
    assert!(!state.apply(Ev::Heartbeat(pb::Heartbeat::default()), 4000.0));
    assert_eq!(state, before);
}

#[test]
fn presence_membership_and_the_sidebar_order() {
    let peer = |name: &str| pb::User {
        id: name.to_lowercase(),
        display_name: name.into(),
        ..Default::default()
    };
    let direct = |id: &str, peer: pb::User| pb::Room {
        id: id.into(),
        name: id.into(),
        kind: pb::RoomKind::Direct as i32,
        peer: Some(peer),
        ..Default::default()
    };
    // Direct rooms sort by the peer's name, which is what the sidebar shows.
    let mut state = signed_in(vec![direct("d1", peer("Zoe")), direct("d2", peer("Bob"))]);
    state.apply(
        Ev::Presence(pb::PresenceChanged {
            room_id: "d2".into(),
            user: Some(peer("Bob")),
            online: true,
        }),
        0.0,
    );
    assert!(state.rooms["d2"].room.peer.as_ref().unwrap().online);
    let change = |kind: RoomChange, room: pb::Room| {
        Ev::RoomChanged(pb::RoomChanged {
            room: Some(room),
            change: kind as i32,
            user: None,
        })
    };
    state.apply(change(RoomChange::Joined, room("g", 2)), 0.0);
    state.open("g");
    let order: Vec<&str> = state.sidebar().iter().map(|r| r.room.id.as_str()).collect();
    assert_eq!(order, ["g", "d2", "d1"]);
    state.apply(change(RoomChange::Deleted, room("g", 2)), 0.0);
    assert!(state.active.is_none() && !state.rooms.contains_key("g"));
}
