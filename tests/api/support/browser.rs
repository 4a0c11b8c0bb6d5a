//! Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`), with
//! the flags this closed network needs. Screenshots go to `test-artifacts/` for people.

use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// A fresh browser. `None` (skipped, with a line on stderr) without Chromium, except under
/// `CI=true`, where that is a failure.
pub async fn start() -> Option<Browser> {
    start_with(None).await
}

/// A fresh browser whose microphone plays `wav` (Chromium's fake capture device).
pub async fn start_with_microphone(wav: &std::path::Path) -> Option<Browser> {
    start_with(Some(wav)).await
}

async fn start_with(microphone: Option<&std::path::Path>) -> Option<Browser> {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Chromium and chromedriver are required under CI=true (apt-get install chromium chromium-driver)");
        }
        eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing; ./scripts/test installs them");
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=480,1000".into(),
        // The demo's browser phone: a fake microphone (a beeping tone, or the WAV given), no
        // permission prompt.
        "--use-fake-device-for-media-stream".into(),
        "--use-fake-ui-for-media-stream".into(),
        "--autoplay-policy=no-user-gesture-required".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    if let Some(wav) = microphone {
        args.push(format!(
            "--use-file-for-fake-audio-capture={}",
            wav.display()
        ));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        // chromedriver is on loopback: plain HTTP, no TLS stack needed.
        let attempt = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match attempt {
            Ok(c) => break c,
            // chromedriver is still starting.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    };
    Some(Browser {
        client,
        _driver: driver,
        _profile: profile,
    })
}

impl Browser {
    /// Waits (up to 30 s) until `css` matches an element.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("`{css}` never appeared: {e}"))
    }

    /// Waits (up to 30 s) until the element's text contains `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never said `{needle}`; it says: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 30 s) until the element's whole text (its `textContent`, lines scrolled
    /// out of a box's view included) contains `needle`; returns the text.
    pub async fn wait_for_content(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self
                .client
                .execute(
                    "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
                    vec![json!(css)],
                )
                .await
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never held `{needle}`; it holds: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 30 s) until `css` has attribute `attr` equal to `value`.
    pub async fn wait_for_attr(&self, css: &str, attr: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.attr(attr).await.ok().flatten(),
                Err(_) => None,
            };
            if now.as_deref() == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never had {attr}={value}; it has {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Saves a screenshot under `test-artifacts/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Screenshots at a desktop (1280×900) and a phone (390×844) size:
    /// `test-artifacts/NAME-desktop.png` and `NAME-phone.png`. Leaves the phone size.
    pub async fn screenshots(&self, name: &str) {
        for (size, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            self.client.set_window_size(w, h).await.unwrap();
            // From the top, as a person arriving sees it.
            let _ = self.client.execute("window.scrollTo(0, 0);", vec![]).await;
            self.screenshot(&format!("{name}-{size}")).await;
        }
    }

    /// Every resource the current page loaded (itself included) that answered 400 or more,
    /// as `status url` (Chromium's Resource Timing gives each response's status).
    pub async fn failed_resources(&self) -> Vec<String> {
        let found = self
            .client
            .execute(
                "return performance.getEntriesByType('navigation')\
                   .concat(performance.getEntriesByType('resource'))\
                   .filter(e => e.responseStatus >= 400)\
                   .map(e => e.responseStatus + ' ' + e.name);",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap_or_default()
    }

    /// axe-core's WCAG 2 A and AA violations and best practices on the current page, as
    /// `rule: nodes`. Empty when axe-core is not there (outside `./scripts/test`), except
    /// under `CI=true`.
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let Some(axe) = axe_source() else {
            return Vec::new();
        };
        self.client.execute(&axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'best-practice'] }).then(r => done(\
                   r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap_or_default()
    }

    /// What does not fit the current window, as lines: the document wider than the viewport
    /// (the page scrolls sideways), text smaller than 11 px (SVG text at its rendered size),
    /// and a line of text that a scrolling (or clipping) box cuts through its letters (each
    /// line's box against the visible part of the box that scrolls it). With `desktop`, a box
    /// that scrolls sideways is one too (a table cut at its card's edge).
    pub async fn layout_faults(&self, desktop: bool) -> Vec<String> {
        let found = self
            .client
            .execute(
                r#"
const faults = [];
const root = document.documentElement;
const vw = root.clientWidth;
if (root.scrollWidth > vw + 1) {
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > vw + 1 && getComputedStyle(e).position !== 'fixed')
    .slice(-3).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined ? '.' + e.className : ''));
  faults.push(`document ${root.scrollWidth} px wide in a ${vw} px window: ${wide.join(', ')}`);
}
const shown = el => {
  for (let e = el; e; e = e.parentElement) {
    const cs = getComputedStyle(e);
    if (cs.display === 'none' || cs.visibility === 'hidden' || e.hidden) return false;
  }
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
};
const small = new Set();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n; (n = walker.nextNode()); ) {
  const text = n.textContent.trim();
  const el = n.parentElement;
  if (!text || !el || el.closest('svg, script, style, noscript, .visually-hidden, .sr-only') || !shown(el)) continue;
  const px = parseFloat(getComputedStyle(el).fontSize);
  if (px < 11) small.add(`${el.tagName.toLowerCase()} ${px} px: "${text.slice(0, 30)}"`);
}
for (const t of document.querySelectorAll('svg text')) {
  if (!shown(t) || !t.textContent.trim()) continue;
  const m = t.getScreenCTM();
  const px = parseFloat(getComputedStyle(t).fontSize) * (m ? Math.hypot(m.a, m.b) : 1);
  if (px < 11) small.add(`svg text ${px.toFixed(1)} px: "${t.textContent.trim().slice(0, 30)}"`);
}
for (const s of small) faults.push('text smaller than 11 px: ' + s);
// Nothing spills past the right edge of its card's content (a box that scrolls sideways
// holds what is wider than it; the box itself must fit).
for (const card of document.querySelectorAll('main')) {
  const cs = getComputedStyle(card);
  const edge = card.getBoundingClientRect().right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
  for (const el of card.querySelectorAll('*')) {
    if (!shown(el) || el.closest('svg') && el.tagName.toLowerCase() !== 'svg') continue;
    let framed = false;
    for (let a = el.parentElement; a && a !== card; a = a.parentElement) {
      if (/(auto|scroll|hidden)/.test(getComputedStyle(a).overflowX)) { framed = true; break; }
    }
    const right = el.getBoundingClientRect().right;
    const parentSpills = el.parentElement && el.parentElement !== card
      && el.parentElement.getBoundingClientRect().right > edge + 1;
    if (!framed && !parentSpills && right > edge + 1)
      faults.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''} spills ${Math.round(right - edge)} px past its card`);
  }
}
const clipped = new Set();
for (const box of document.querySelectorAll('body *')) {
  const cs = getComputedStyle(box);
  if (!/(auto|scroll|hidden)/.test(cs.overflowY) || box.scrollHeight <= box.clientHeight + 1 || !shown(box)) continue;
  const r = box.getBoundingClientRect();
  const top = r.top + box.clientTop, bottom = top + box.clientHeight;
  const lines = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
  for (let n; (n = lines.nextNode()); ) {
    if (!n.textContent.trim() || !n.parentElement || !shown(n.parentElement)) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    for (const line of range.getClientRects()) {
      const cut = (line.top < top - 0.5 && line.bottom > top + 0.5) || (line.top < bottom - 0.5 && line.bottom > bottom + 0.5);
      if (cut) clipped.add(`${box.tagName.toLowerCase()}${box.id ? '#' + box.id : ''}: "${n.textContent.trim().slice(0, 30)}"`);
    }
  }
}
for (const c of clipped) faults.push('a line cut through its letters by a scrolling box: ' + c);
if (arguments[0]) {
  for (const box of document.querySelectorAll('body *')) {
    if (/(auto|scroll)/.test(getComputedStyle(box).overflowX) && box.scrollWidth > box.clientWidth + 1 && shown(box))
      faults.push(`${box.tagName.toLowerCase()}${box.id ? '#' + box.id : ''}.${box.className} scrolls sideways: ${box.scrollWidth} px in ${box.clientWidth}`);
  }
}
return faults;
"#,
                vec![serde_json::json!(desktop)],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap_or_default()
    }

    /// Every page state the tests look at, at a desktop and a phone size: the page fits
    /// (see [`Browser::layout_faults`]), then its screenshots are saved.
    pub async fn fits_and_screenshots(&self, name: &str) {
        let mut faults = Vec::new();
        for (size, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            self.client.set_window_size(w, h).await.unwrap();
            let _ = self.client.execute("window.scrollTo(0, 0);", vec![]).await;
            faults.extend(
                self.layout_faults(size == "desktop")
                    .await
                    .into_iter()
                    .map(|f| format!("{size}: {f}")),
            );
            self.screenshot(&format!("{name}-{size}")).await;
        }
        assert!(faults.is_empty(), "{name} does not fit: {faults:#?}");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// axe-core's script (`CALLGATE_TEST_AXE`, which `./scripts/test` fetches).
fn axe_source() -> Option<String> {
    let path = std::env::var("CALLGATE_TEST_AXE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/axe-core-4.10.2.min.js").to_string()
    });
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "axe-core is required under CI=true ({path}: {e}); ./scripts/test fetches it"
            );
            eprintln!("SKIPPED accessibility check: {path}: {e}");
            None
        }
    }
}
