//! Signals on the demo page: who is typing, and who has read what, shown in
//! the other pages of the room and in every tab of a browser.

use std::time::Duration;

use crate::crier::Crier;
use crate::new_channel;
use crate::page::ChatPage;
use crate::webdriver::Driver;

/// Typing in one page shows "… is typing…" in the other pages of the room,
/// the other tabs of their browser included, and it goes about 4 s after the
/// last keystroke.
#[test]
fn typing_in_one_page_shows_in_the_others_until_its_timeout() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let url = crier.page_url(Some(channel));
    let ann = ChatPage::open(&driver, &url);
    let bob = ChatPage::open(&driver, &url);
    let bobs_other_tab = bob.open_tab(&url);

    ann.type_draft("ann", "hel");
    for page in [&bob, &bobs_other_tab] {
        page.wait_until("ann is typing", || page.typing_line() == "ann is typing…");
    }
    assert_eq!(ann.typing_line(), "", "a page does not tell its own typing");
    let gone = bob.wait_until("the typing line goes", || bob.typing_line().is_empty());
    assert!(
        gone > Duration::from_secs(2),
        "it stays for its timeout after the last keystroke (gone after {gone:?})"
    );
}

/// A page that shows a message says it was read: the other page shows
/// "read by …" under it.
#[test]
fn a_message_seen_in_one_page_shows_as_read_in_the_other() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let url = crier.page_url(Some(channel));
    let ann = ChatPage::open(&driver, &url);
    let bob = ChatPage::open(&driver, &url);
    bob.type_draft("bob", "");
    ann.send("ann", "did you see this?");
    bob.wait_for_text("did you see this?");
    ann.wait_until("bob read it", || {
        ann.read_lines() == [(1, "read by bob".to_string())]
    });
}
