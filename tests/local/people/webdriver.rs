//! Just enough of the W3C WebDriver protocol to drive chromedriver: a
//! session, navigation, elements, keys, scripts, window size, screenshots.
//! It is JSON over HTTP, and reqwest (blocking) is already built for the
//! tests. A client crate (fantoccini) was tried first: its own crates cost
//! little, but its features for shared crates (syn, time) made `cargo test`
//! rebuild the whole tree apart from `cargo build`.

use base64::Engine;
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Session {
    http: Client,
    /// `{driver}/session/{id}`.
    url: String,
}

pub struct Element(String);

impl Session {
    /// A new browser session with these capabilities.
    pub fn start(driver: &str, capabilities: Value) -> Session {
        let http = Client::new();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = call(
            &http,
            Method::POST,
            &format!("{driver}/session"),
            Some(body),
        );
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"));
        Session {
            http,
            url: format!("{driver}/session/{id}"),
        }
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.url), body)
    }

    pub fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url })));
    }

    pub fn find(&self, css: &str) -> Element {
        let value = self.call(
            Method::POST,
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        Element(
            value[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element for {css}: {value}"))
                .to_owned(),
        )
    }

    /// Types into an element; for a file input, the text is the file's
    /// path (several, one per line, when it takes several).
    pub fn send_keys(&self, element: &Element, text: &str) {
        self.call(
            Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    /// The element's text as rendered (what a person sees).
    pub fn text(&self, element: &Element) -> String {
        let value = self.call(Method::GET, &format!("/element/{}/text", element.0), None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Runs a script in the page; what it returns.
    pub fn execute(&self, script: &str) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// The viewport as PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let value = self.call(Method::GET, "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closes the browser; chromedriver itself is stopped by its owner.
        let _ = self.http.delete(&self.url).send();
    }
}

/// One command; its `value`, or a panic with WebDriver's error.
fn call(http: &Client, method: Method, url: &str, body: Option<Value>) -> Value {
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = response.status();
    let mut answer: Value = response
        .json()
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {status}, not JSON: {e}"));
    let value = answer["value"].take();
    if !status.is_success() {
        panic!(
            "WebDriver {method} {url}: {status} {}: {}",
            value["error"], value["message"]
        );
    }
    value
}
