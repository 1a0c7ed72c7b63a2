//! A real headless Chromium, driven over WebDriver: Debian's `chromium`
//! and `chromium-driver` packages (`.ci/run` installs them). Each
//! [`Browser`] starts its own `chromedriver` on a free port and one
//! browser session; both end when it is dropped.

use std::path::Path;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

/// Debian's ChromeDriver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Whether Chromium and ChromeDriver are installed. Without them the
/// browser tests are skipped with a note, unless
/// `TASKPLANE_REQUIRE_BROWSER=1` (as in CI) makes that a failure.
pub fn browser_available() -> bool {
    let available = Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists();
    if !available {
        assert!(
            std::env::var("TASKPLANE_REQUIRE_BROWSER").is_err(),
            "Chromium is required: apt-get install -y chromium chromium-driver"
        );
        eprintln!("skipped: no Chromium (apt-get install -y chromium chromium-driver)");
    }
    available
}

/// A headless Chromium at one site.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    base: String,
    _driver: Child,
    /// Chromium's profile, removed with the browser (Chromium leaves its
    /// own in /tmp when chromedriver is stopped).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium (1280×900) for the site at `base`
    /// (`http://host:port`).
    pub async fn open(base: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "chromedriver did not start a session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `path` of the site.
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|error| panic!("opening {path}: {error}"));
    }

    /// The path of the page shown.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("a URL")
            .path()
            .to_owned()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no element {css} within {PATIENCE:?}: {error}"))
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("a search")
            .is_empty()
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.attempt(css, async |element| element.text().await)
            .await
    }

    /// The attribute `name` of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.attempt(css, async |element| element.attr(name).await)
            .await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.attempt(css, async |element| element.click().await)
            .await
    }

    /// Types `text` into the field matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.attempt(css, async |element| element.send_keys(text).await)
            .await
    }

    /// `act` on the first element matching `css`, found again when a live
    /// update replaced it in between.
    async fn attempt<T>(
        &self,
        css: &str,
        act: impl AsyncFn(Element) -> Result<T, fantoccini::error::CmdError>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match act(self.find(css).await).await {
                Ok(value) => return value,
                Err(fantoccini::error::CmdError::Standard(error))
                    if error.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && tokio::time::Instant::now() < deadline => {}
                Err(error) => panic!("{css}: {error}"),
            }
        }
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("the script runs")
    }

    /// Waits until the page is connected to live updates.
    pub async fn wait_live(&self) {
        self.find("body[data-live='connected']").await;
    }

    /// A PNG of the window, also written to `docs/console/NAME.png` when
    /// `TASKPLANE_UPDATE_SCREENSHOTS=1` (how `docs/console.md` gets its
    /// pictures).
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.expect("a screenshot");
        if std::env::var("TASKPLANE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
            std::fs::create_dir_all(&dir).expect("docs/console");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("screenshot written");
        }
        png
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
