//! The Directory's properties: accounts, rooms, codes, memberships, direct rooms.

use natter_server::{
    ids::RoomId,
    records::{AccountChange, EndedSession},
    seams::{StoreError, search_users},
};

use super::{Seams, group_room, rid, room, room_with_pair, uid, user, users};
use crate::helpers::poll_until;

pub(super) async fn accounts_are_unique_and_found_by_name_and_id(s: &Seams) {
    // Ready once connected: the Redis bus connects its pub/sub link on a task of its own
    // (a cluster's takes longest), so readiness is awaited, within a bound.
    poll_until("the seams become ready", || async {
        s.directory.ready().await && s.log.ready().await
    })
    .await;
    users(s, &["alice", "bob", "carol"]).await;
    assert!(matches!(
        s.directory.create_user(user("alice")).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(
        s.directory.user_by_username("bob").await.unwrap().unwrap(),
        user("bob")
    );
    assert_eq!(
        s.directory.user(&uid("idcarol")).await.unwrap().unwrap(),
        user("carol")
    );
    assert!(s.directory.user(&uid("nobody")).await.unwrap().is_none());
    let asked = [uid("idcarol"), uid("nobody"), uid("idalice")];
    assert_eq!(
        s.directory.users(&asked).await.unwrap(),
        vec![user("carol"), user("alice")],
        "those that exist, in the order asked"
    );
    assert!(s.directory.users(&[]).await.unwrap().is_empty());

    let change = |id: &str, change: AccountChange| {
        let directory = s.directory.clone();
        let id = uid(id);
        async move { directory.change_account(&id, &change).await.unwrap() }
    };
    let granted = change("idbob", AccountChange::Admin(true)).await.unwrap();
    assert!(granted.admin);
    assert_eq!(
        s.directory.user(&uid("idbob")).await.unwrap(),
        Some(granted)
    );
    assert!(
        !s.directory
            .user(&uid("idalice"))
            .await
            .unwrap()
            .unwrap()
            .admin
    );
    let revoked = change("idbob", AccountChange::Admin(false)).await.unwrap();
    assert_eq!(revoked, user("bob"));
    assert!(change("nobody", AccountChange::Admin(true)).await.is_none());

    // Concurrent changes of one account are all kept.
    let far = i64::MAX / 2;
    let changes = (0..8).map(|i| {
        change(
            "idcarol",
            AccountChange::EndSession(EndedSession {
                id: format!("session{i}"),
                until_ms: far,
            }),
        )
    });
    futures::future::join_all(changes).await;
    let carol = s.directory.user(&uid("idcarol")).await.unwrap().unwrap();
    assert_eq!(carol.ended_sessions.len(), 8);
    assert!(carol.session_ended("session3", 1));
    assert!(!carol.session_ended("session9", 1));
}

pub(super) async fn the_directory_pages_and_matches_display_names(s: &Seams) {
    users(s, &["alice", "bob", "carol", "dave", "erin"]).await;
    let names = |page: &natter_server::seams::UserPage| -> Vec<String> {
        page.users.iter().map(|u| u.username.clone()).collect()
    };
    let first = search_users(&*s.directory, "", "", 2).await.unwrap();
    assert_eq!(names(&first), ["alice", "bob"]);
    let next = first.next_after.clone().expect("more pages");
    let rest = search_users(&*s.directory, "", &next, 10).await.unwrap();
    assert_eq!(names(&rest), ["carol", "dave", "erin"]);
    assert!(rest.next_after.is_none());
    let shown = search_users(&*s.directory, "ERIN SH", "", 10)
        .await
        .unwrap();
    assert_eq!(
        names(&shown),
        ["erin"],
        "display names match case-insensitively"
    );
}

pub(super) async fn codes_are_unique_and_membership_is_tracked(s: &Seams) {
    group_room(s).await;
    let d = &s.directory;
    assert!(
        !d.create_room(room("r2", Some("CODE0001"), "idbob"))
            .await
            .unwrap(),
        "codes are unique"
    );
    assert!(d.room(&rid("r2")).await.unwrap().is_none());
    assert_eq!(d.room_by_code("CODE0001").await.unwrap().unwrap().id, "r1");
    assert!(
        d.is_member(&rid("r1"), &uid("idalice")).await.unwrap(),
        "the owner is a member"
    );
    assert!(!d.add_member(&rid("r1"), &uid("idbob")).await.unwrap());
    assert!(matches!(
        d.add_member(&rid("nowhere"), &uid("idbob")).await,
        Err(StoreError::RoomNotFound)
    ));
    let mut members = d.members_of(&rid("r1")).await.unwrap();
    members.sort();
    assert_eq!(members, ["idalice", "idbob"]);
    assert!(d.add_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(d.remove_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(!d.remove_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(d.rooms_of(&uid("idcarol")).await.unwrap().is_empty());

    // A new code finds the room, the old one nothing; a taken code changes nothing.
    let r1 = d.room_by_code("CODE0001").await.unwrap().unwrap();
    assert_eq!(
        s.directory.change_code(&r1.id, "FRESH1").await.unwrap(),
        Some(true)
    );
    assert!(d.room_by_code("CODE0001").await.unwrap().is_none());
    let found = s.directory.room_by_code("FRESH1").await.unwrap().unwrap();
    assert_eq!(
        (found.id.clone(), found.kind.code()),
        (r1.id.clone(), Some("FRESH1"))
    );
    assert!(
        d.create_room(room("r9", Some("TAKEN1"), "idalice"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.directory.change_code(&r1.id, "TAKEN1").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        s.directory
            .room_by_code("FRESH1")
            .await
            .unwrap()
            .unwrap()
            .id,
        r1.id
    );
    assert_eq!(
        s.directory.change_code(&rid("nope"), "X").await.unwrap(),
        None
    );
}

pub(super) async fn direct_rooms_are_one_per_pair(s: &Seams) {
    group_room(s).await;
    let d = &s.directory;
    let (created, fresh) = d.open_direct(room_with_pair("d1")).await.unwrap();
    assert!(fresh);
    assert_eq!(created.id, "d1");
    let (existing, fresh) = d.open_direct(room_with_pair("d2")).await.unwrap();
    assert_eq!((existing.id.as_str(), fresh), ("d1", false));
    assert!(d.is_member(&rid("d1"), &uid("idbob")).await.unwrap());
    let mut bobs: Vec<RoomId> = d
        .rooms_of(&uid("idbob"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    bobs.sort();
    assert_eq!(bobs, ["d1", "r1"]);
    d.delete_room(&rid("d1")).await.unwrap();
    let (recreated, fresh) = d.open_direct(room_with_pair("d3")).await.unwrap();
    assert_eq!(
        (recreated.id.as_str(), fresh),
        ("d3", true),
        "the pair is free again"
    );
}
