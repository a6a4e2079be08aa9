use natter_proto::v1 as pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn messages_get_consecutive_seqs_and_history_pages() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;

    for i in 1..=7u64 {
        let sender = if i % 2 == 0 { &mut bob } else { &mut alice };
        let message = sender.send(&room.id, &format!("  message {i}  ")).await;
        assert_eq!(message.seq, i);
        assert_eq!(message.text, format!("message {i}"), "text is trimmed");
        assert_eq!(message.room_id, room.id);
    }
    let last = bob.send(&room.id, "from bob").await;
    assert_eq!(last.sender_id, bob.user.id);
    assert_eq!(last.sender_name, "bob display");

    let page = |before_seq: u64| pb::GetHistoryRequest {
        room_id: room.id.clone(),
        before_seq,
        limit: 3,
    };
    let newest = alice.chat.get_history(page(0)).await.unwrap().into_inner();
    assert_eq!(
        newest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [6, 7, 8]
    );
    assert!(newest.has_more);
    let older = alice.chat.get_history(page(6)).await.unwrap().into_inner();
    assert_eq!(
        older.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let oldest = alice.chat.get_history(page(3)).await.unwrap().into_inner();
    assert_eq!(
        oldest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(!oldest.has_more);

    let rooms = alice.rooms().await;
    assert_eq!(
        rooms[0].last_seq, 8,
        "last_seq lets clients count unread messages"
    );
}

#[tokio::test]
async fn invalid_messages_name_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let room = alice.create_room("General").await;
    let send = |text: String, client_id: &str| pb::SendMessageRequest {
        room_id: room.id.clone(),
        text,
        client_id: client_id.into(),
    };
    for text in [
        "".to_string(),
        "   \n\t ".into(),
        "x".repeat(4001),
        "null\u{0}byte".into(),
        "esc\u{1b}[31m".into(),
    ] {
        assert_status(
            alice.chat.send_message(send(text, "")).await,
            Code::InvalidArgument,
            "text",
        );
    }
    assert_status(
        alice
            .chat
            .send_message(send("ok".into(), "has space"))
            .await,
        Code::InvalidArgument,
        "client_id",
    );
    assert_status(
        alice
            .chat
            .send_message(pb::SendMessageRequest {
                room_id: String::new(),
                text: "hi".into(),
                client_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "room_id",
    );
    assert_status(
        alice
            .chat
            .send_message(pb::SendMessageRequest {
                room_id: "0".repeat(32),
                text: "hi".into(),
                client_id: String::new(),
            })
            .await,
        Code::NotFound,
        "room",
    );
    // 4000 characters (not bytes), with newlines and tabs, are fine.
    let long = format!("{}\n\t{}", "é".repeat(1998), "ü".repeat(2000));
    assert_eq!(
        alice
            .chat
            .send_message(send(long, ""))
            .await
            .unwrap()
            .into_inner()
            .seq,
        1
    );
    assert_eq!(alice.history(&room.id).await.len(), 1);
}

#[tokio::test]
async fn retrying_with_a_client_id_stores_nothing_new() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;
    let send = |text: &str, client_id: &str| pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: text.into(),
        client_id: client_id.into(),
    };

    let first = alice
        .chat
        .send_message(send("hello", "c-1"))
        .await
        .unwrap()
        .into_inner();
    let retry = alice
        .chat
        .send_message(send("hello", "c-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    assert_eq!(app.metric("natter_send_retries_total").await, 1);
    assert_eq!(app.metric("natter_messages_stored_total").await, 1);
    // Keys are per sender: bob's "c-1" is a different message.
    let bobs = bob
        .chat
        .send_message(send("hi", "c-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.seq, 2);
    assert_eq!(
        alice
            .history(&room.id)
            .await
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn concurrent_senders_get_one_order_without_holes() {
    // Appends from many senders at once share commits (group commit); every message still
    // gets its own seq, with no hole and no duplicate, and concurrent retries store once.
    const SENDERS: usize = 8;
    const EACH: usize = 25;
    let app = spawn_app().await;
    let mut owner = app.register("owner").await;
    let room = owner.create_room("Busy").await;
    let mut events = owner.subscribe(vec![]).await;
    crate::helpers::expect_ready(&mut events).await;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let mut sender = app.register(&format!("sender{s}")).await;
        sender.join(&room.code).await;
        let room_id = room.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                // Every message is sent twice at once with the same client_id.
                let request = pb::SendMessageRequest {
                    room_id: room_id.clone(),
                    text: format!("{s}/{i}"),
                    client_id: format!("k{i}"),
                };
                let (mut one, mut two) = (sender.chat.clone(), sender.chat.clone());
                let (first, second) =
                    tokio::join!(one.send_message(request.clone()), two.send_message(request));
                let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
                assert_eq!(first, second, "a concurrent retry returns the same message");
                seqs.push(first.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let mut seen = Vec::new();
    while seen.len() < total as usize {
        seen.push(crate::helpers::next_message(&mut events).await.seq);
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "published in seq order"
    );
}
