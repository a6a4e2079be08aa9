//! The Store contract: the same checks against both implementations.

use std::sync::Arc;

use natter_server::{
    bus::local::LocalBus,
    redis::{RedisStore, connection_manager, schema::Schema},
    store::{
        MessageRecord, NewMessage, RoomKind, RoomRecord, Store, StoreError, UserRecord,
        embedded::EmbeddedStore,
    },
};

use crate::redis_server::RedisServer;

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), LocalBus::new()).unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let store = RedisStore::new(
        connection_manager(&redis.url()).unwrap(),
        Schema::new("contract"),
        0,
    );
    contract(Arc::new(store)).await;
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        id: format!("id{name}"),
        username: name.into(),
        display_name: format!("{name} shown"),
        password_hash: "hash".into(),
        created_at: 1,
    }
}

fn room(id: &str, code: Option<&str>, owner: &str) -> RoomRecord {
    RoomRecord {
        id: id.into(),
        name: format!("room {id}"),
        code: code.map(Into::into),
        owner_id: owner.into(),
        password_hash: None,
        kind: if code.is_some() {
            RoomKind::Group
        } else {
            RoomKind::Direct
        },
        created_at: 2,
        last_seq: 0,
        first_seq: 1,
        direct_pair: None,
    }
}

fn message(room_id: &str, sender: &str, text: &str, client_id: &str) -> NewMessage {
    NewMessage {
        message: MessageRecord {
            id: format!("m-{text}"),
            room_id: room_id.into(),
            seq: 0,
            sender_id: sender.into(),
            sender_name: sender.into(),
            text: text.into(),
            sent_at: 3,
            client_id: client_id.into(),
        },
    }
}

fn seqs(messages: &[MessageRecord]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

async fn contract(store: Arc<dyn Store>) {
    assert!(store.ready().await);

    // Accounts.
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        store.create_user(user(name)).await.unwrap();
    }
    assert!(matches!(
        store.create_user(user("alice")).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(
        store.user_by_username("bob").await.unwrap().unwrap(),
        user("bob")
    );
    assert_eq!(store.user("idcarol").await.unwrap().unwrap(), user("carol"));
    assert!(store.user("nobody").await.unwrap().is_none());
    let first = store.list_users("", "", 2).await.unwrap();
    assert_eq!(
        first
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let next = first.next_after.expect("more pages");
    let rest = store.list_users("", &next, 10).await.unwrap();
    assert_eq!(
        rest.users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["carol", "dave", "erin"]
    );
    assert!(rest.next_after.is_none());
    let shown = store.list_users("ERIN SH", "", 10).await.unwrap();
    assert_eq!(
        shown.users.len(),
        1,
        "display names match case-insensitively"
    );

    // Rooms and membership.
    assert!(
        store
            .create_room(room("r1", Some("CODE0001"), "idalice"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_room(room("r2", Some("CODE0001"), "idbob"))
            .await
            .unwrap(),
        "codes are unique"
    );
    assert!(store.room("r2").await.unwrap().is_none());
    assert_eq!(
        store.room_by_code("CODE0001").await.unwrap().unwrap().id,
        "r1"
    );
    assert!(
        store.is_member("r1", "idalice").await.unwrap(),
        "the owner is a member"
    );
    assert!(store.add_member("r1", "idbob").await.unwrap());
    assert!(!store.add_member("r1", "idbob").await.unwrap());
    assert!(matches!(
        store.add_member("nowhere", "idbob").await,
        Err(StoreError::RoomNotFound)
    ));
    let mut members = store.members_of("r1").await.unwrap();
    members.sort();
    assert_eq!(members, ["idalice", "idbob"]);
    assert!(store.add_member("r1", "idcarol").await.unwrap());
    assert!(store.remove_member("r1", "idcarol").await.unwrap());
    assert!(!store.remove_member("r1", "idcarol").await.unwrap());
    assert!(store.rooms_of("idcarol").await.unwrap().is_empty());

    // Direct rooms: one per pair.
    let mut direct = room("d1", None, "idalice");
    direct.direct_pair = Some(["idalice".into(), "idbob".into()]);
    let (created, fresh) = store.open_direct(direct.clone()).await.unwrap();
    assert!(fresh);
    assert_eq!(created.id, "d1");
    let mut again = direct.clone();
    again.id = "d2".into();
    let (existing, fresh) = store.open_direct(again).await.unwrap();
    assert_eq!((existing.id.as_str(), fresh), ("d1", false));
    assert!(store.is_member("d1", "idbob").await.unwrap());
    let mut bobs: Vec<String> = store
        .rooms_of("idbob")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    bobs.sort();
    assert_eq!(bobs, ["d1", "r1"]);

    // The log: consecutive seqs, idempotent retries per sender, ranges both ways.
    for (i, text) in ["a", "b", "c"].iter().enumerate() {
        let appended = store
            .append_message(message("r1", "idalice", text, ""))
            .await
            .unwrap();
        assert_eq!(
            (appended.message.seq, appended.created),
            (i as u64 + 1, true)
        );
    }
    let keyed = store
        .append_message(message("r1", "idalice", "d", "k1"))
        .await
        .unwrap();
    assert_eq!(keyed.message.seq, 4);
    let retry = store
        .append_message(message("r1", "idalice", "d", "k1"))
        .await
        .unwrap();
    assert_eq!((retry.message, retry.created), (keyed.message, false));
    let other = store
        .append_message(message("r1", "idbob", "e", "k1"))
        .await
        .unwrap();
    assert_eq!((other.message.seq, other.created), (5, true));
    assert_eq!(
        seqs(&store.messages_after("r1", 0, 10).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seqs(&store.messages_after("r1", 2, 2).await.unwrap()),
        [3, 4]
    );
    assert!(store.messages_after("r1", 5, 10).await.unwrap().is_empty());
    assert_eq!(
        seqs(&store.messages_before("r1", 0, 2).await.unwrap()),
        [4, 5]
    );
    assert_eq!(
        seqs(&store.messages_before("r1", 3, 10).await.unwrap()),
        [1, 2]
    );
    assert!(store.messages_before("r1", 1, 10).await.unwrap().is_empty());
    let stored = &store.messages_after("r1", 3, 1).await.unwrap()[0];
    assert_eq!(
        (
            stored.text.as_str(),
            stored.client_id.as_str(),
            stored.sent_at
        ),
        ("d", "k1", 3)
    );
    let r1 = store.room("r1").await.unwrap().unwrap();
    assert_eq!((r1.last_seq, r1.first_seq), (5, 1));
    assert!(matches!(
        store
            .append_message(message("nowhere", "idalice", "x", ""))
            .await,
        Err(StoreError::RoomNotFound)
    ));
    assert!(
        matches!(
            store
                .append_message(message("r1", "idcarol", "sneaky", ""))
                .await,
            Err(StoreError::NotMember)
        ),
        "carol left r1: her append is refused in the same step"
    );

    // Deleting a room removes it everywhere and returns its members.
    let mut former = store.delete_room("r1").await.unwrap();
    former.sort();
    assert_eq!(former, ["idalice", "idbob"]);
    assert!(store.room("r1").await.unwrap().is_none());
    assert!(store.room_by_code("CODE0001").await.unwrap().is_none());
    assert!(!store.is_member("r1", "idbob").await.unwrap());
    assert_eq!(store.rooms_of("idbob").await.unwrap().len(), 1);
    assert!(store.messages_after("r1", 0, 10).await.unwrap().is_empty());
    assert!(matches!(
        store
            .append_message(message("r1", "idalice", "x", ""))
            .await,
        Err(StoreError::RoomNotFound)
    ));
    assert!(
        store.delete_room("r1").await.unwrap().is_empty(),
        "deleting twice is harmless"
    );
    assert!(
        store
            .create_room(room("r3", Some("CODE0001"), "idbob"))
            .await
            .unwrap(),
        "the code is free again"
    );
    store.delete_room("d1").await.unwrap();
    let (recreated, fresh) = store.open_direct(room_with_pair("d3")).await.unwrap();
    assert_eq!(
        (recreated.id.as_str(), fresh),
        ("d3", true),
        "the pair is free again"
    );
}

fn room_with_pair(id: &str) -> RoomRecord {
    let mut direct = room(id, None, "idalice");
    direct.direct_pair = Some(["idalice".into(), "idbob".into()]);
    direct
}
