//! Tabs of one browser share one stream (`crier.js`): the tab holding the Web
//! Lock streams every room the tabs follow and relays its events to the others
//! over a BroadcastChannel; when it closes, another tab takes over from the
//! last ids seen. All tabs here are in one browser session, so they share an
//! origin, its locks and its broadcast channels.

use std::rc::Rc;

use crate::crier::Crier;
use crate::page::ChatPage;
use crate::webdriver::Driver;
use crate::{new_channel, shown};

const TABS: usize = 10;

fn count(roles: &[String], role: &str) -> usize {
    roles.iter().filter(|r| *r == role).count()
}

#[test]
fn ten_tabs_share_one_stream_that_outlives_its_leader_and_each_shows_every_message_once() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let url = crier.page_url(Some(channel));
    let first = ChatPage::open(&driver, &url);
    let others: Vec<ChatPage> = (1..TABS).map(|_| first.open_tab(&url)).collect();
    let mut tabs = vec![first];
    tabs.extend(others);

    let roles: Vec<String> = tabs.iter().map(ChatPage::role).collect();
    assert_eq!(
        count(&roles, "leader"),
        1,
        "one tab holds the stream: {roles:?}"
    );
    assert_eq!(count(&roles, "follower"), TABS - 1, "{roles:?}");
    for tab in &tabs {
        tab.record_deliveries(&channel.to_string());
    }
    tabs[0].send("ann", "typed in the first tab");
    for tab in &tabs {
        tab.wait_until("the client delivered the message", || {
            !tab.deliveries().is_empty()
        });
    }
    tabs[0].wait_until("the server has one stream open, not ten", || {
        crier.open_streams() == 1
    });
    tabs[0].wait_until("the room counts one subscriber", || {
        crier.subscribers(channel) == 1
    });

    let leader = tabs.iter().position(|tab| tab.role() == "leader");
    let leader = leader.unwrap_or_else(|| panic!("a tab holds the stream"));
    tabs.remove(leader).close();
    crier.post(channel, "curl", "posted as the leader left");
    for tab in &tabs {
        tab.wait_until("the client delivered the second message", || {
            tab.deliveries().len() >= 2
        });
    }
    tabs[0].wait_until("another tab holds the stream", || {
        let roles: Vec<String> = tabs.iter().map(ChatPage::role).collect();
        count(&roles, "leader") == 1 && count(&roles, "follower") == TABS - 2
    });
    tabs[0].wait_until("the server still has one stream open", || {
        crier.open_streams() == 1
    });
    tabs[0].wait_until("the room still counts one subscriber", || {
        crier.subscribers(channel) == 1
    });

    let expected = vec![
        shown(1, "ann", "typed in the first tab"),
        shown(2, "curl", "posted as the leader left"),
    ];
    for (n, tab) in tabs.iter().enumerate() {
        assert_eq!(tab.deliveries(), [1, 2], "tab {n}: each message once");
        assert_eq!(tab.messages(), expected, "tab {n} shows both, once");
        assert_eq!(tab.status(), "live", "tab {n}");
    }
}

/// Counts, in a tab, the event streams its pages have open (`window.streamsOpen`).
const COUNT_STREAMS: &str = "
    const Native = EventSource;
    window.streamsOpen = 0;
    window.EventSource = class extends Native {
        constructor(...args) { super(...args); window.streamsOpen += 1; }
        close() { if (this.readyState !== Native.CLOSED) window.streamsOpen -= 1; super.close(); }
    };";

/// The leader streams the union of the rooms its tabs follow; when it closes,
/// the tab on the other room streams that room alone and misses nothing.
#[test]
fn tabs_on_two_rooms_share_one_stream_over_both_and_the_last_tab_resumes_its_room() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let (room_a, room_b) = (new_channel(), new_channel());
    let browser = Rc::new(driver.open_browser());
    let counted = Some(COUNT_STREAMS);
    let a = ChatPage::open_tab_with(&browser, &crier.page_url(Some(room_a)), counted);
    let b = ChatPage::open_tab_with(&browser, &crier.page_url(Some(room_b)), counted);
    assert_eq!(
        (a.role().as_str(), b.role().as_str()),
        ("leader", "follower")
    );

    crier.post(room_a, "curl", "to room a");
    crier.post(room_b, "curl", "to room b");
    a.wait_for_text("to room a");
    b.wait_for_text("to room b");
    // The server counts a stream once in each of its channels, so the browser
    // counts its streams.
    a.wait_until("the browser has one stream open", || {
        a.streams_open() + b.streams_open() == 1
    });
    a.wait_until("each room counts the one stream", || {
        crier.subscribers(room_a) == 1 && crier.subscribers(room_b) == 1
    });
    assert_eq!(a.messages(), [shown(1, "curl", "to room a")], "room a only");
    assert_eq!(b.messages(), [shown(1, "curl", "to room b")], "room b only");

    a.close();
    crier.post(room_b, "curl", "to room b as its leader left");
    b.wait_for_text("to room b as its leader left");
    b.wait_until("the last tab holds the stream", || b.role() == "leader");
    b.wait_until("one stream, over room b only", || {
        b.streams_open() == 1 && crier.open_streams() == 1 && crier.subscribers(room_a) == 0
    });
    assert_eq!(
        b.messages(),
        [
            shown(1, "curl", "to room b"),
            shown(2, "curl", "to room b as its leader left")
        ],
        "nothing missed, nothing twice"
    );
}

/// A tab that joins a room with older messages than the shared stream passed
/// gets them (the leader reopens the stream from further back), and the tabs
/// that had them already do not see them again.
#[test]
fn a_tab_asking_for_older_messages_gets_them_and_the_others_see_nothing_twice() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let (room, other_room) = (new_channel(), new_channel());
    let leader = ChatPage::open(&driver, &crier.page_url(Some(room)));
    let late = leader.open_tab(&crier.page_url(Some(other_room)));
    leader.record_deliveries(&room.to_string());
    for n in 1..=3 {
        crier.post(room, "curl", &format!("message {n}"));
    }
    leader.wait_until("the leader delivered three", || {
        leader.deliveries().len() == 3
    });

    late.script(&format!(
        "window.older = [];
         window.crier.subscribe('{room}', (message) => window.older.push(message.id), {{ after: 1 }});"
    ));
    late.wait_until("the late tab got the two after 1", || {
        late.script("return window.older.length;") == 2
    });
    crier.post(room, "curl", "message 4");
    late.wait_until("and the next one", || {
        late.script("return window.older.length;") == 3
    });
    leader.wait_until("the leader delivered the fourth", || {
        leader.deliveries().len() >= 4
    });
    assert_eq!(
        late.script("return window.older;"),
        serde_json::json!([2, 3, 4])
    );
    assert_eq!(leader.deliveries(), [1, 2, 3, 4], "nothing twice");
}

/// Without Web Locks the tabs cannot elect a leader: each streams on its own,
/// as pages did before they shared.
#[test]
fn tabs_without_web_locks_each_stream_on_their_own() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let url = crier.page_url(Some(channel));
    let browser = Rc::new(driver.open_browser());
    let no_locks = Some("delete Navigator.prototype.locks;");
    let ann = ChatPage::open_tab_with(&browser, &url, no_locks);
    let bob = ChatPage::open_tab_with(&browser, &url, no_locks);
    assert_eq!(
        (ann.role().as_str(), bob.role().as_str()),
        ("alone", "alone")
    );

    ann.send("ann", "each tab on its own stream");
    bob.wait_for_text("each tab on its own stream");
    ann.wait_until("two streams open", || crier.open_streams() == 2);
    assert_eq!(
        bob.messages(),
        [shown(1, "ann", "each tab on its own stream")]
    );
}
