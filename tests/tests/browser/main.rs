//! The demo page in a real browser: Debian's headless Chromium, driven through
//! chromedriver, against the real all-in-one `crier` process.
//!
//! Skipped with a message when Chromium or chromedriver is missing, unless
//! `CRIER_REQUIRE_EXTERNAL=1` (as in CI), which makes them required.

mod crier;
mod page;
// The process helpers are shared with the end-to-end tests, which use all of them.
#[allow(dead_code)]
#[path = "../e2e/process.rs"]
mod process;
mod revisions;
mod signals;
mod tabs;
mod webdriver;

use std::path::Path;
use std::time::Duration;

use protocol::ChannelId;

use crate::crier::Crier;
use crate::page::{ChatPage, Shown};
use crate::webdriver::Driver;

/// The longest any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

fn new_channel() -> ChannelId {
    ChannelId::from_uuid(uuid::Uuid::new_v4())
}

fn shown(id: u64, author: &str, text: &str) -> Shown {
    Shown {
        id,
        author: author.into(),
        text: text.into(),
    }
}

#[test]
fn a_message_typed_in_one_page_shows_in_the_other_within_a_second_and_a_posted_one_in_both() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let ann = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    let bob = ChatPage::open(&driver, &crier.page_url(Some(channel)));

    ann.send("ann", "hello from ann");
    let took = bob.wait_for_text("hello from ann");
    assert!(
        took < Duration::from_secs(1),
        "the other page shows it within a second (took {took:?})"
    );
    ann.wait_for_text("hello from ann");

    crier.post(channel, "curl", "hello from curl");
    let expected = vec![
        shown(1, "ann", "hello from ann"),
        shown(2, "curl", "hello from curl"),
    ];
    for page in [&ann, &bob] {
        page.wait_for_text("hello from curl");
        assert_eq!(page.messages(), expected, "both pages show both, once");
    }
}

/// Each page joins the room under its nickname and lists who is there, as
/// others join (ChaTT's nick list).
#[test]
fn pages_list_who_is_in_the_room() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let ann = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    let bob = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    ann.send("ann", "hi");
    bob.send("bob", "hello");
    for page in [&ann, &bob] {
        page.wait_until("both names are listed", || page.names() == ["ann", "bob"]);
    }
}

#[test]
fn html_in_a_message_is_shown_as_text_and_never_run() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    let page = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    let typed = "<img src=x onerror=alert(1)> <b>typed</b>";
    let posted = "<script>alert(2)</script><img src=y onerror=alert(3)>";

    page.send("mallory", typed);
    crier.post(channel, "<i>mallory</i>", posted);
    page.wait_for_text(typed);
    page.wait_for_text(posted);

    let authors: Vec<String> = page.messages().into_iter().map(|m| m.author).collect();
    assert_eq!(
        authors,
        ["mallory", "<i>mallory</i>"],
        "authors are text too"
    );
    for tag in ["img", "b", "i", "script"] {
        assert_eq!(
            page.count(&format!("#messages {tag}")),
            0,
            "no <{tag}> element"
        );
    }
    let fetched = page.script(
        "return performance.getEntriesByType('resource')
             .filter((e) => /\\/(x|y)$/.test(e.name)).length;",
    );
    assert_eq!(fetched, 0, "no image was ever requested");
    assert_eq!(page.browser.open_dialog(), None, "no dialog opened");
}

#[test]
fn a_page_shows_reconnecting_then_live_across_a_restart_and_each_message_once() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let mut crier = Crier::start();
    let channel = new_channel();
    let page = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    crier.post(channel, "curl", "before the restart");
    page.wait_for_text("before the restart");
    page.record_status_changes();

    crier.kill();
    page.wait_for_status("reconnecting");
    page.send("ann", "typed while the server was down");
    page.wait_until("the typed message waits to be sent", || {
        page.outbox_states() == ["waiting"]
    });
    crier.start_again();
    crier.post(channel, "curl", "posted after the restart");
    crier.post(channel, "curl", "posted after the restart, again");

    page.wait_for_status("live");
    page.wait_until("the page shows all four messages", || {
        page.messages().len() >= 4 && page.outbox_states().is_empty()
    });
    let ids: Vec<u64> = page.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 2, 3, 4], "each message once, in id order");
    let mut texts = page.texts();
    texts.sort();
    assert_eq!(
        texts,
        [
            "before the restart",
            "posted after the restart",
            "posted after the restart, again",
            "typed while the server was down",
        ]
    );
    let seen = page.recorded_statuses();
    let lost = seen.iter().position(|s| s == "reconnecting");
    let lost = lost.unwrap_or_else(|| panic!("the page showed reconnecting: {seen:?}"));
    assert!(
        seen[lost..].iter().any(|s| s == "live"),
        "then live again: {seen:?}"
    );
}

/// The server comes back without the history the page showed: the stream says
/// `event: reset`, and the page notes it and shows the room again as the
/// server has it, new ids included.
#[test]
fn a_page_notes_a_reset_history_and_shows_the_room_again() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let mut crier = Crier::start();
    let channel = new_channel();
    let page = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    crier.post(channel, "curl", "first, before the reset");
    crier.post(channel, "curl", "second, before the reset");
    page.wait_for_text("second, before the reset");

    crier.kill();
    crier.lose_data();
    crier.start_again();
    page.wait_until("the page notes the reset", || {
        page.count("#messages .note") == 1
    });
    crier.post(channel, "curl", "first after the reset");
    page.wait_for_text("first after the reset");
    assert_eq!(
        page.messages(),
        [shown(1, "curl", "first after the reset")],
        "only what the server has now"
    );
    let note = page.script("return document.querySelector('#messages .note').textContent;");
    assert_eq!(
        note,
        "The server's history of this room was reset; showing it again."
    );
}

#[test]
fn a_page_opened_without_a_room_puts_a_new_uuid_in_its_address_and_the_room_works() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let first = ChatPage::open(&driver, &crier.page_url(None));
    let address = first.browser.current_url();
    let channel = address
        .split_once("?c=")
        .and_then(|(_, id)| ChannelId::parse(id).ok())
        .unwrap_or_else(|| panic!("the address names a room: {address}"));
    let link = first.script("return document.getElementById('link').value;");
    assert_eq!(link, address.as_str(), "the link to copy is the address");

    first.send("ann", "first words in a new room");
    let second = ChatPage::open(&driver, &address);
    second.wait_for_text("first words in a new room");
    crier.post(channel, "curl", "posted to the new room");
    for page in [&first, &second] {
        page.wait_for_text("posted to the new room");
    }
}

#[test]
fn a_rejected_message_shows_the_servers_reason_and_stays_marked_failed() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let page = ChatPage::open(&driver, &crier.page_url(Some(new_channel())));

    page.send("   ", "from nobody");
    page.wait_until("the message is marked failed", || {
        page.outbox_states() == ["failed"]
    });
    assert_eq!(
        page.error_line(),
        "Not sent: author must not be empty",
        "the server's message, readable"
    );
    assert!(page.messages().is_empty(), "nothing was stored or shown");
}

#[test]
fn a_screenshot_of_a_short_conversation_is_written_under_target() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let crier = Crier::start();
    let channel = new_channel();
    crier.post(channel, "ann", "Is this the room for Saturday's release?");
    crier.post(
        channel,
        "bob",
        "Yes. Open this page in two windows on the same link and watch every message \
         arrive in both at once; a long line like this one wraps instead of scrolling.",
    );
    crier.post(
        channel,
        "deploy-bot",
        "Build 1432 passed: artifacts are on the mirror.",
    );
    let page = ChatPage::open(&driver, &crier.page_url(Some(channel)));
    page.send("ann", "Thanks! And <b>HTML</b> stays plain text.");
    page.wait_until("the page shows four messages", || {
        page.messages().len() == 4
    });

    let png = page.browser.screenshot_png();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-page.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The page served by one `crier` talks to another on a different origin (another
/// port), which allows it with `--cors-origin` and checks tokens: the token from
/// `?token=` authorizes history, stream and posts, and names the author.
#[test]
fn a_page_on_another_origin_chats_through_cors_with_its_token() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let page_host = Crier::start();
    let secret = "a secret shared with the application";
    let api = Crier::start_with(&["--cors-origin", &page_host.url, "--jwt-secret", secret]);
    let channel = new_channel();
    let claims = serde_json::json!({
        "name": "ann",
        "channels": [channel.to_string()],
        "subscribe": [channel.to_string()],
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .expect("sign a token");
    let url = format!(
        "{}/?c={channel}&api={}&token={token}",
        page_host.url, api.url
    );
    let page = ChatPage::open(&driver, &url);
    page.wait_for_status("live");
    page.send("someone else", "across origins");
    page.wait_for_text("across origins");
    assert_eq!(
        page.messages(),
        vec![shown(1, "ann", "across origins")],
        "stored on the other origin, authored by the token's name"
    );
}
