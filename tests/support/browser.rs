//! Debian's Chromium, headless, driven through its chromedriver over
//! WebDriver (`fantoccini`), for tests of the console in a real browser.
//!
//! Both come from Debian at the versions pinned in `hack/versions.env`
//! (`hack/browser-tools.sh` installs them); a missing one fails the test
//! with that command. chromedriver listens on a free loopback port and runs
//! in its own process group, so the browsers it starts go with it.
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::sandbox::try_wait_until;
use super::webhook::free_port;

/// The browser: Debian's launcher, which sets up its library paths.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver, from the same source package as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Every session's viewport (width, height): the size of the README's screenshot.
pub const WINDOW: (u32, u32) = (1280, 900);

const INSTALL: &str = "install the pinned versions with `bash hack/browser-tools.sh` (as root), \
     or run `make test-browser`, which does";

/// A chromedriver process of this test; killed with its browsers on drop.
pub struct Chromedriver {
    child: Child,
    /// The WebDriver endpoint, `http://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts chromedriver, failing the test loudly when Chromium or
    /// chromedriver is missing.
    pub async fn start() -> Chromedriver {
        Chromedriver::try_start()
            .await
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// [`Chromedriver::start`], with an error instead of a failed test.
    pub async fn try_start() -> anyhow::Result<Chromedriver> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(tool).exists() {
                bail!("{tool} is not installed: {INSTALL}");
            }
        }
        let dir = tempfile::tempdir().context("a directory for chromedriver's log")?;
        let port = free_port()?;
        let log = dir.path().join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: on drop the browsers go with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}; {INSTALL}"))?;
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let status = format!("{}/status", driver.url);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("an HTTP client for chromedriver's /status")?;
        try_wait_until(
            Duration::from_secs(30),
            "chromedriver to answer /status",
            || async {
                let body: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
                (body["value"]["ready"] == json!(true)).then_some(())
            },
        )
        .await
        .with_context(|| format!("chromedriver's log:\n{}", driver.log_tail(40)))?;
        Ok(driver)
    }

    /// A new headless Chromium with a fresh profile (no cookies shared with
    /// any other session), trusting the console's self-signed certificate.
    pub async fn session(&self) -> Browser {
        self.try_session()
            .await
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// [`Chromedriver::session`], with an error instead of a failed test.
    pub async fn try_session(&self) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir().context("a fresh Chromium profile")?;
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            // This machine's network is closed: without these Chromium
            // reaches out on its own and its connections are refused.
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            // The console serves the operator's self-signed certificate.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            bail!("the capabilities are a JSON object");
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .with_context(|| {
                format!(
                    "a Chromium session through chromedriver; its log:\n{}",
                    self.log_tail(40)
                )
            })?;
        fit_viewport(&client)
            .await
            .context("sizing the window to its viewport")?;
        Ok(Browser {
            client,
            _profile: profile,
        })
    }

    /// The last `lines` lines of chromedriver's log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        super::operator::last_lines(&log, lines)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Sizes the window so that the page's viewport is [`WINDOW`]: the
/// window's frame takes a part of its size, which `--window-size` counts.
async fn fit_viewport(client: &Client) -> anyhow::Result<()> {
    let frame = client
        .execute(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
            vec![],
        )
        .await
        .context("the window's frame")?;
    let (Some(width), Some(height)) = (frame[0].as_u64(), frame[1].as_u64()) else {
        bail!("the window's frame is not two numbers: {frame}");
    };
    let width = u32::try_from(width).context("the frame's width")?;
    let height = u32::try_from(height).context("the frame's height")?;
    client
        .set_window_size(WINDOW.0 + width, WINDOW.1 + height)
        .await
        .context("resizing the window")?;
    Ok(())
}

/// One browser session; its profile directory lives as long as it does.
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Ends the session (Chromium exits); the profile is removed on drop.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
