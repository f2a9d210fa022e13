//! The demo page as a test sees it, through its DOM contract: `form#send` with
//! `input[name=author]` and `input[name=text]`, messages in `#messages`, the
//! connection state in `#status` (and in its `data-role` which tab holds the
//! stream).

use std::rc::Rc;
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

/// The page in one tab of a browser.
pub struct ChatPage {
    pub browser: Rc<Browser>,
    window: String,
}

impl ChatPage {
    /// A new browser on `url`, once its stream is live.
    pub fn open(driver: &Driver, url: &str) -> ChatPage {
        let browser = Rc::new(driver.open_browser());
        let page = ChatPage {
            window: browser.window(),
            browser,
        };
        page.tab().goto(url);
        page.wait_for_status("live");
        page
    }

    /// The page on `url` in a new tab of this page's browser, once it is live.
    pub fn open_tab(&self, url: &str) -> ChatPage {
        ChatPage::open_tab_with(&self.browser, url, None)
    }

    /// The page on `url` in a new tab of `browser`, once it is live; `setup`
    /// runs in the tab before the page's scripts.
    pub fn open_tab_with(browser: &Rc<Browser>, url: &str, setup: Option<&str>) -> ChatPage {
        let page = ChatPage {
            window: browser.new_tab(),
            browser: browser.clone(),
        };
        if let Some(setup) = setup {
            page.tab().run_before_page_scripts(setup);
        }
        page.tab().goto(url);
        page.wait_for_status("live");
        page
    }

    /// Closes this page's tab.
    pub fn close(self) {
        self.browser.close_tab(&self.window);
    }

    /// The browser, with commands going to this page's tab.
    fn tab(&self) -> &Browser {
        self.browser.switch_to(&self.window);
        &self.browser
    }

    /// Types the nickname and the text, then presses Enter in the text field.
    pub fn send(&self, author: &str, text: &str) {
        self.tab().clear("form#send input[name=author]");
        self.tab().type_into("form#send input[name=author]", author);
        self.tab()
            .type_into("form#send input[name=text]", &format!("{text}{ENTER}"));
    }

    /// Types the nickname and some text without sending it: a message being
    /// written.
    pub fn type_draft(&self, author: &str, text: &str) {
        self.tab().clear("form#send input[name=author]");
        self.tab().type_into("form#send input[name=author]", author);
        self.tab().type_into("form#send input[name=text]", text);
    }

    /// What the page says about who is typing (empty when nobody is).
    pub fn typing_line(&self) -> String {
        let line = self.script("return document.getElementById('typing').textContent;");
        line.as_str().unwrap_or_default().to_string()
    }

    /// The "read by …" lines, each with the id of the message it is under.
    pub fn read_lines(&self) -> Vec<(u64, String)> {
        let lines = self.script(
            "return [...document.querySelectorAll('#messages li[data-id] .read-by')]
                 .map((line) => [Number(line.closest('li').dataset.id), line.textContent]);",
        );
        serde_json::from_value(lines).expect("read lines")
    }

    /// Which tab of the browser holds the stream: `leader` (this one),
    /// `follower` or `alone` (no sharing).
    pub fn role(&self) -> String {
        let role = self.script("return document.getElementById('status').dataset.role;");
        role.as_str().unwrap_or_default().to_string()
    }

    /// The event streams this tab has open, counted by a script set up before
    /// the page's own (see the tab tests).
    pub fn streams_open(&self) -> u64 {
        let open = self.script("return window.streamsOpen;");
        open.as_u64().expect("a count of open streams")
    }

    /// From now on, records the id of every message the page's client delivers
    /// on `channel` (a second subscriber beside the page's own).
    pub fn record_deliveries(&self, channel: &str) {
        self.tab().execute(
            "window.delivered = [];
             window.crier.subscribe(arguments[0], (message) => window.delivered.push(message.id));",
            json!([channel]),
        );
    }

    /// The ids delivered since [`ChatPage::record_deliveries`], in order.
    pub fn deliveries(&self) -> Vec<u64> {
        let ids = self.script("return window.delivered;");
        serde_json::from_value(ids).expect("delivered ids")
    }

    pub fn messages(&self) -> Vec<Shown> {
        let shown = self.tab().execute(
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
        let names = self.tab().execute(
            "return [...document.querySelectorAll('#names li')].map((li) => li.textContent);",
            json!([]),
        );
        serde_json::from_value(names).expect("names as the page lists them")
    }

    pub fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| m.text).collect()
    }

    pub fn status(&self) -> String {
        let state = self.tab().execute(
            "return document.getElementById('status').textContent;",
            json!([]),
        );
        state.as_str().unwrap_or_default().to_string()
    }

    /// The line the page shows for the last error.
    pub fn error_line(&self) -> String {
        let line = self.tab().execute(
            "return document.getElementById('error').textContent;",
            json!([]),
        );
        line.as_str().unwrap_or_default().to_string()
    }

    /// The states of messages not sent yet (`sending`, `waiting`, `failed`).
    pub fn outbox_states(&self) -> Vec<String> {
        let states = self.tab().execute(
            "return [...document.querySelectorAll('#outbox li')].map((li) => li.dataset.state);",
            json!([]),
        );
        serde_json::from_value(states).expect("outbox states")
    }

    /// From now on, every `#status` the page shows is recorded in order.
    pub fn record_status_changes(&self) {
        self.tab().execute(
            "const status = document.getElementById('status');
             window.statusSeen = [status.textContent];
             new MutationObserver(() => window.statusSeen.push(status.textContent))
                 .observe(status, { childList: true, characterData: true, subtree: true });",
            json!([]),
        );
    }

    pub fn recorded_statuses(&self) -> Vec<String> {
        let seen = self.tab().execute("return window.statusSeen;", json!([]));
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
        let count = self.tab().execute(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        );
        count.as_u64().expect("a count")
    }

    pub fn script(&self, body: &str) -> Value {
        self.tab().execute(body, json!([]))
    }

    /// Runs `body` in the page with `args` (a JSON array) as `arguments`.
    pub fn run(&self, body: &str, args: Value) -> Value {
        self.tab().execute(body, args)
    }
}
