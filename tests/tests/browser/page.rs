//! The demo page as a test sees it, through its DOM contract: `form#send` with
//! `input[name=author]` and `input[name=text]`, messages in `#messages`, the
//! connection state in `#status`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::WAIT;
use crate::webdriver::{Browser, Driver, ENTER};

const POLL: Duration = Duration::from_millis(50);

/// One message as the page shows it.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Shown {
    pub id: u64,
    pub author: String,
    pub text: String,
}

pub struct ChatPage {
    pub browser: Browser,
}

impl ChatPage {
    /// A new browser on `url`, once its stream is live.
    pub fn open(driver: &Driver, url: &str) -> ChatPage {
        let page = ChatPage {
            browser: driver.open_browser(),
        };
        page.browser.goto(url);
        page.wait_for_status("live");
        page
    }

    /// Types the nickname and the text, then presses Enter in the text field.
    pub fn send(&self, author: &str, text: &str) {
        self.browser.clear("form#send input[name=author]");
        self.browser
            .type_into("form#send input[name=author]", author);
        self.browser
            .type_into("form#send input[name=text]", &format!("{text}{ENTER}"));
    }

    pub fn messages(&self) -> Vec<Shown> {
        let shown = self.browser.execute(
            "return [...document.querySelectorAll('#messages li[data-id]')].map((li) => ({
                 id: Number(li.dataset.id),
                 author: li.querySelector('.author').textContent,
                 text: li.querySelector('.text').textContent,
             }));",
            json!([]),
        );
        serde_json::from_value(shown).expect("messages as the page shows them")
    }

    /// The names the page lists as in the room.
    pub fn names(&self) -> Vec<String> {
        let names = self.browser.execute(
            "return [...document.querySelectorAll('#names li')].map((li) => li.textContent);",
            json!([]),
        );
        serde_json::from_value(names).expect("names as the page lists them")
    }

    pub fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| m.text).collect()
    }

    pub fn status(&self) -> String {
        let state = self.browser.execute(
            "return document.getElementById('status').textContent;",
            json!([]),
        );
        state.as_str().unwrap_or_default().to_string()
    }

    /// The line the page shows for the last error.
    pub fn error_line(&self) -> String {
        let line = self.browser.execute(
            "return document.getElementById('error').textContent;",
            json!([]),
        );
        line.as_str().unwrap_or_default().to_string()
    }

    /// The states of messages not sent yet (`sending`, `waiting`, `failed`).
    pub fn outbox_states(&self) -> Vec<String> {
        let states = self.browser.execute(
            "return [...document.querySelectorAll('#outbox li')].map((li) => li.dataset.state);",
            json!([]),
        );
        serde_json::from_value(states).expect("outbox states")
    }

    /// From now on, every `#status` the page shows is recorded in order.
    pub fn record_status_changes(&self) {
        self.browser.execute(
            "const status = document.getElementById('status');
             window.statusSeen = [status.textContent];
             new MutationObserver(() => window.statusSeen.push(status.textContent))
                 .observe(status, { childList: true, characterData: true, subtree: true });",
            json!([]),
        );
    }

    pub fn recorded_statuses(&self) -> Vec<String> {
        let seen = self.browser.execute("return window.statusSeen;", json!([]));
        serde_json::from_value(seen).expect("recorded states")
    }

    pub fn wait_for_status(&self, state: &str) {
        self.wait_until(&format!("#status is {state}"), || self.status() == state);
    }

    /// Waits until the page shows `text` in a message; returns how long that took.
    pub fn wait_for_text(&self, text: &str) -> Duration {
        let what = format!("the page shows {text:?}");
        self.wait_until(&what, || self.texts().iter().any(|t| t == text))
    }

    /// Polls `condition` every 50 ms; panics after [`WAIT`] with what the page shows.
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            if condition() {
                return started.elapsed();
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "{what}: not within {WAIT:?}; status {:?}, messages {:?}, outbox {:?}, error {:?}",
            self.status(),
            self.messages(),
            self.outbox_states(),
            self.error_line()
        );
    }

    pub fn count(&self, css: &str) -> u64 {
        let count = self.browser.execute(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        );
        count.as_u64().expect("a count")
    }

    pub fn script(&self, body: &str) -> Value {
        self.browser.execute(body, json!([]))
    }
}
