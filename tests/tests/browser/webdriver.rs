//! Just enough of the W3C WebDriver protocol, as JSON over HTTP, to drive Debian's
//! headless Chromium through `chromedriver`: open a page, run a script, type, click,
//! take a screenshot, open and close tabs.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Set to `1` in CI: the browser tests must run, never be skipped.
pub const REQUIRE_EXTERNAL: &str = "CRIER_REQUIRE_EXTERNAL";

const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Starting a browser is the slowest command; nothing should take longer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The key W3C WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const ENTER: &str = "\u{E007}";

/// A running `chromedriver` on a free loopback port; killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    http: Client,
}

impl Driver {
    /// Starts chromedriver, or returns `None` (with a message) when Chromium or
    /// chromedriver is not installed and [`REQUIRE_EXTERNAL`] is not `1`.
    pub fn start() -> Option<Driver> {
        let (Some(chromium), Some(chromedriver)) =
            (find_program("chromium"), find_program("chromedriver"))
        else {
            assert!(
                std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
                "chromium and chromedriver are required ({REQUIRE_EXTERNAL}=1) but not installed"
            );
            eprintln!("skipping: chromium or chromedriver is not installed");
            return None;
        };
        let port = free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        server::tls::install_crypto_provider();
        let http = Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .expect("HTTP client");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            http,
        };
        driver.wait_until_ready();
        Some(driver)
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            let status = self.http.get(format!("{}/status", self.url)).send();
            if status.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not answer within {START_TIMEOUT:?}");
    }

    /// A new headless browser with a fresh profile (its own `localStorage`).
    pub fn open_browser(&self) -> Browser {
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=900,640".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.chromium, "args": args},
        }}});
        let created = send(
            self.http.post(format!("{}/session", self.url)),
            &capabilities,
        )
        .unwrap_or_else(|e| panic!("the browser starts: {e}"));
        let id = created["sessionId"]
            .as_str()
            .expect("a new session has an id")
            .to_string();
        Browser {
            http: self.http.clone(),
            session: format!("{}/session/{id}", self.url),
            window: RefCell::new(None),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser (a WebDriver session) and its tabs; closed when dropped.
pub struct Browser {
    http: Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    /// The tab commands go to, once a test switched tabs.
    window: RefCell<Option<String>>,
    _profile: TempDir,
}

impl Browser {
    /// The handle of the tab commands go to.
    pub fn window(&self) -> String {
        let handle = self.get("window");
        handle.as_str().expect("a window handle").to_string()
    }

    /// Opens a new tab of this browser (the same origin storage, Web Locks and
    /// broadcast channels) and returns its handle; commands still go to the
    /// current tab.
    pub fn new_tab(&self) -> String {
        let created = self.post("window/new", json!({ "type": "tab" }));
        created["handle"]
            .as_str()
            .expect("a new tab has a handle")
            .to_string()
    }

    /// Sends the following commands to the tab `handle`.
    pub fn switch_to(&self, handle: &str) {
        if self.window.borrow().as_deref() == Some(handle) {
            return;
        }
        self.post("window", json!({ "handle": handle }));
        *self.window.borrow_mut() = Some(handle.to_string());
    }

    /// Closes the tab `handle`, as a person closing it would.
    pub fn close_tab(&self, handle: &str) {
        self.switch_to(handle);
        let request = self.http.delete(format!("{}/window", self.session));
        send(request, &json!(null)).unwrap_or_else(|e| panic!("DELETE window: {e}"));
        *self.window.borrow_mut() = None;
    }

    /// Runs `source` in every page this tab loads from now on, before the
    /// page's own scripts (Chromium's DevTools command, through chromedriver).
    pub fn run_before_page_scripts(&self, source: &str) {
        self.post(
            "goog/cdp/execute",
            json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": { "source": source },
            }),
        );
    }

    pub fn goto(&self, url: &str) {
        self.post("url", json!({ "url": url }));
    }

    pub fn current_url(&self) -> String {
        let url = self.get("url");
        url.as_str().expect("the address is a string").to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.post("execute/sync", json!({ "script": script, "args": args }))
    }

    /// Types `text` into the element `css` selects (WebDriver key codes allowed,
    /// e.g. [`ENTER`]).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.post(&format!("element/{element}/value"), json!({ "text": text }));
    }

    pub fn clear(&self, css: &str) {
        let element = self.find(css);
        self.post(&format!("element/{element}/clear"), json!({}));
    }

    fn find(&self, css: &str) -> String {
        let found = self.post("element", json!({"using": "css selector", "value": css}));
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// The text of an open `alert`/`confirm`/`prompt` dialog, if one is open.
    pub fn open_dialog(&self) -> Option<String> {
        match send(
            self.http.get(format!("{}/alert/text", self.session)),
            &json!(null),
        ) {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_string()),
            Err(e) if e.contains("no such alert") => None,
            Err(e) => panic!("asking for a dialog failed: {e}"),
        }
    }

    /// The visible page as PNG bytes.
    pub fn screenshot_png(&self) -> Vec<u8> {
        let encoded = self.get("screenshot");
        let encoded = encoded.as_str().expect("the screenshot is base64 text");
        decode_base64(encoded).expect("the screenshot is valid base64")
    }

    fn get(&self, command: &str) -> Value {
        let request = self.http.get(format!("{}/{command}", self.session));
        send(request, &json!(null)).unwrap_or_else(|e| panic!("GET {command}: {e}"))
    }

    fn post(&self, command: &str, body: Value) -> Value {
        let request = self.http.post(format!("{}/{command}", self.session));
        send(request, &body).unwrap_or_else(|e| panic!("POST {command}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
    }
}

/// Sends one command; its `value`, or the WebDriver error as text.
fn send(request: reqwest::blocking::RequestBuilder, body: &Value) -> Result<Value, String> {
    let request = if body.is_null() {
        request
    } else {
        request.json(body)
    };
    let response = request.send().map_err(|e| e.to_string())?;
    let status = response.status();
    let mut answer: Value = response.json().map_err(|e| e.to_string())?;
    let value = answer["value"].take();
    if status.is_success() {
        return Ok(value);
    }
    Err(format!(
        "{status}: {} ({})",
        value["error"].as_str().unwrap_or("unknown error"),
        value["message"].as_str().unwrap_or_default()
    ))
}

/// `name` on `PATH`, or where Debian installs it.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for symbol in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let value = match symbol {
            b'A'..=b'Z' => symbol - b'A',
            b'a'..=b'z' => symbol - b'a' + 26,
            b'0'..=b'9' => symbol - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = ((buffer << 6) | u32::from(value)) & 0xFF_FFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    Some(bytes)
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()), "one pad");
    assert_eq!(decode_base64("aGkh"), Some(b"hi!".to_vec()), "no pad");
    assert_eq!(
        decode_base64("iVBORw0KGgo="),
        Some(b"\x89PNG\r\n\x1a\n".to_vec())
    );
    assert_eq!(decode_base64("a*"), None, "not base64");
}
