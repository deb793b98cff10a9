//! A minimal W3C WebDriver client, enough to drive the review page in headless Chromium.
//!
//! [`Driver::start`] spawns `chromedriver` on a port of its own, waits until its `/status`
//! says ready, and opens one session; every method is one WebDriver command
//! (`POST /session/{id}/element`, …) over plain HTTP to 127.0.0.1. Elements are the opaque
//! ids WebDriver hands out. A failed command becomes a [`WebDriverError`] carrying the
//! driver's own `error` and `message`, so `anyhow` chains say what the browser said.
//!
//! Call [`Driver::quit`] at the end: it closes the browser through the session before it
//! stops `chromedriver` (dropping the `Driver` only kills `chromedriver`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

/// The key under which WebDriver returns (and accepts) a web element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often `wait_*` asks again. A poll interval under a deadline, not a guess at timing.
const POLL: Duration = Duration::from_millis(50);

/// Chromium's flags for a test: no display, no sandbox (containers), a fixed window.
const CHROMIUM_ARGS: [&str; 5] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// An error the WebDriver server returned: its `error` code and its `message`.
#[derive(Debug)]
pub struct WebDriverError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebDriver {} ({}): {}",
            self.error, self.status, self.message
        )
    }
}

impl std::error::Error for WebDriverError {}

/// Whether `err` is WebDriver's "no such element", the one error worth waiting out.
fn is_no_such_element(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<WebDriverError>())
        .any(|e| e.error == "no such element")
}

/// One running `chromedriver` with one browser session.
pub struct Driver {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`, the prefix of every command.
    session: String,
    child: tokio::process::Child,
}

impl Driver {
    /// Starts `chromedriver` on a free port and opens a headless session of `chromium`.
    pub async fn start(chromedriver: &Path, chromium: &Path) -> anyhow::Result<Driver> {
        // Port 0: chromedriver binds a free port itself and says which on its first line.
        let mut child = tokio::process::Command::new(chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let stdout = child.stdout.take().context("chromedriver's stdout")?;
        let port = tokio::time::timeout(Duration::from_secs(20), announced_port(stdout))
            .await
            .context("chromedriver did not say its port within 20 s")??;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the WebDriver HTTP client")?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &base, &mut child, Duration::from_secs(20)).await?;

        let binary = chromium
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 path", chromium.display()))?;
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": binary, "args": CHROMIUM_ARGS },
                }
            }
        });
        let created = command(
            &http,
            Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await
        .context("creating a WebDriver session")?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("new session answer has no sessionId: {created}"))?;
        Ok(Driver {
            http,
            session: format!("{base}/session/{id}"),
            child,
        })
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.post("/url", json!({ "url": url }))
            .await
            .with_context(|| format!("navigating to {url}"))?;
        Ok(())
    }

    /// The first element matching `css`; fails with "no such element" if there is none.
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await
            .with_context(|| format!("finding {css}"))?;
        element_id(&found)
    }

    pub async fn click(&self, el: &str) -> anyhow::Result<()> {
        self.post(&format!("/element/{el}/click"), json!({}))
            .await
            .context("clicking an element")?;
        Ok(())
    }

    /// Types `text` into `el` (appending to what it holds).
    pub async fn send_keys(&self, el: &str, text: &str) -> anyhow::Result<()> {
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await
            .context("typing into an element")?;
        Ok(())
    }

    /// The element's rendered text (what a user sees; hidden text is empty).
    pub async fn text(&self, el: &str) -> anyhow::Result<String> {
        let text = self
            .get(&format!("/element/{el}/text"))
            .await
            .context("reading an element's text")?;
        as_string(text)
    }

    /// Runs `script` as a function body in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
            .context("executing a script")
    }

    /// Polls until an element matches `css`, for at most `deadline`.
    pub async fn wait_for(&self, css: &str, deadline: Duration) -> anyhow::Result<String> {
        let until = Instant::now() + deadline;
        loop {
            match self.find(css).await {
                Ok(el) => return Ok(el),
                Err(err) if is_no_such_element(&err) && Instant::now() < until => {
                    tokio::time::sleep(POLL).await
                }
                Err(err) => {
                    return Err(err.context(format!("waited {deadline:?} for {css}")));
                }
            }
        }
    }

    /// Polls until `script` returns `true`, for at most `deadline`. A script that throws
    /// fails at once rather than at the deadline.
    pub async fn wait_until_js(&self, script: &str, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let got = self.execute(script).await?;
            if got == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("waited {deadline:?} for `{script}` to be true; it last returned {got}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resizes the browser window (the viewport a page lays itself out for).
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await
            .with_context(|| format!("resizing the window to {width}x{height}"))?;
        Ok(())
    }

    /// A PNG of the viewport, for a failing test to leave behind.
    pub async fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let encoded = as_string(
            self.get("/screenshot")
                .await
                .context("taking a screenshot")?,
        )?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("decoding the screenshot's base64")
    }

    /// Ends the session (closing the browser) and stops `chromedriver`.
    pub async fn quit(mut self) {
        if let Err(err) = command(&self.http, Method::DELETE, &self.session, None).await {
            eprintln!("deleting the WebDriver session: {err:#}");
        }
        let _ = self.child.kill().await;
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        command(
            &self.http,
            Method::GET,
            &format!("{}{path}", self.session),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        command(
            &self.http,
            Method::POST,
            &format!("{}{path}", self.session),
            Some(body),
        )
        .await
    }
}

/// Reads chromedriver's stdout until "... started successfully on port N."; keeps draining
/// it afterwards so the driver never blocks on a full pipe.
async fn announced_port(stdout: tokio::process::ChildStdout) -> anyhow::Result<u16> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            let port = rest
                .trim_end_matches('.')
                .trim()
                .parse()
                .with_context(|| format!("chromedriver's port in {line:?}"))?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(port);
        }
    }
    bail!("chromedriver exited before saying its port")
}

/// Chromedriver and Chromium: `$CHROMEDRIVER` / `$CHROMIUM` if set, else on `PATH`, else
/// where Debian installs them.
pub fn locate() -> Option<(PathBuf, PathBuf)> {
    let driver = from_env("CHROMEDRIVER")
        .or_else(|| on_path("chromedriver"))
        .or_else(|| existing("/usr/bin/chromedriver"))?;
    let browser = from_env("CHROMIUM")
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
        .or_else(|| existing("/usr/bin/chromium"))
        .or_else(|| existing("/usr/lib/chromium/chromium"))?;
    Some((driver, browser))
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn existing(path: &str) -> Option<PathBuf> {
    Some(PathBuf::from(path)).filter(|p| p.is_file())
}

/// Polls `GET /status` until chromedriver says it is ready, failing early if it exits.
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    let url = format!("{base}/status");
    loop {
        if let Some(status) = child.try_wait().context("checking on chromedriver")? {
            bail!("chromedriver exited before it was ready ({status})");
        }
        match command(http, Method::GET, &url, None).await {
            Ok(status) if status["ready"] == Value::Bool(true) => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < until => tokio::time::sleep(POLL).await,
            Ok(status) => bail!("chromedriver not ready after {deadline:?}: {status}"),
            Err(err) => return Err(err.context(format!("chromedriver not up after {deadline:?}"))),
        }
    }
}

/// One WebDriver command: its `value` on success, a [`WebDriverError`] otherwise.
async fn command(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let mut answer: Value = response
        .json()
        .await
        .with_context(|| format!("{method} {url}: the answer ({status}) is not JSON"))?;
    let value = answer.get_mut("value").map(Value::take).unwrap_or_default();
    if status.is_success() {
        return Ok(value);
    }
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
    Err(WebDriverError {
        status: status.as_u16(),
        error: field("error"),
        message: field("message"),
    })
    .with_context(|| format!("{method} {url}"))
}

fn element_id(value: &Value) -> anyhow::Result<String> {
    value[ELEMENT_KEY]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("not a web element reference: {value}"))
}

fn as_string(value: Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("expected a string from WebDriver, got {other}"),
    }
}
