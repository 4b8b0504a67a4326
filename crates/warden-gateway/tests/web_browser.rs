//! The web app in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven with
//! fantoccini over WebDriver): an approver sees a request arrive live and approves it while the
//! engineer's waiting call returns the result; a rule created through the form takes effect (the
//! web terminal is held, then shows the result live); an XSS payload inside a command renders as
//! text. Screenshots of the main pages are saved to `target/screenshots/` for review.
//!
//! Missing Chromium or ChromeDriver is a failure with the command to install them, never a skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use warden_gateway::testing::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestGateway};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and ChromeDriver, or a loud failure saying how to install them.
fn require_browser() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("WARDEN_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_program(&["chromium", "chromium-browser"]));
    let driver = std::env::var_os("WARDEN_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find_program(&["chromedriver"]));
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "the browser tests need Chromium and ChromeDriver (found chromium: {c:?}, chromedriver: {d:?}).\n\
             Install Debian's packages and run again:\n\n    {INSTALL}\n"
        ),
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// A running chromedriver on a free port (killed when dropped).
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn start_driver(driver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {}: {e}\nInstall with: {INSTALL}",
                driver.display()
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{url}/status")).send().await
            && r.status().is_success()
        {
            return Driver { _child: child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not become ready on {url}");
}

async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900"
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("starting headless Chromium through chromedriver: {e}"))
}

struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Ui {
    async fn goto(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("running {script:?}: {e}"))
    }

    /// Polls a JS expression until it is truthy.
    async fn until(&self, what: &str, expr: &str, secs: u64) {
        let script = format!("return !!({expr});");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            // Errors are retried: the page may be navigating (a form post, a redirect).
            if let Ok(v) = self.c.execute(&script, vec![]).await
                && v == json!(true)
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.c.current_url().await.map(|u| u.to_string());
                let text = self
                    .c
                    .execute("return document.body.innerText;", vec![])
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {what} ({expr}) on {url:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn login(&self, email: &str, password: &str) {
        self.goto("/login").await;
        self.find("input[name=email]")
            .await
            .send_keys(email)
            .await
            .unwrap();
        self.find("input[name=password]")
            .await
            .send_keys(password)
            .await
            .unwrap();
        self.find("form[action='/login'] button")
            .await
            .click()
            .await
            .unwrap();
        self.find(".who").await;
    }

    async fn logout(&self) {
        self.find("form[action='/logout'] button")
            .await
            .click()
            .await
            .unwrap();
        self.find("input[name=email]").await;
    }

    /// The text of the first element matching `css`, read in the page (immune to the element
    /// being swapped by a live update between two WebDriver calls).
    async fn text_of(&self, css: &str) -> String {
        self.find(css).await;
        let script = format!(
            "var e = document.querySelector({}); return e ? e.innerText : null;",
            json!(css)
        );
        self.js(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks the first element matching `css`, finding it again if a live update replaced it.
    async fn click(&self, css: &str) {
        for _ in 0..20 {
            if self.find(css).await.click().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not click {css}");
    }

    /// True when no alert dialog is open.
    async fn no_alert(&self) -> bool {
        self.c.get_alert_text().await.is_err()
    }
}

async fn user(gw: &TestGateway, email: &str, groups: &[&str], password: &str) -> String {
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": email, "groups": groups, "password": password})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = gw
        .admin("POST", "/api/tokens", Some(json!({"user": email})))
        .await;
    assert_eq!(s, 201, "{b}");
    b["token"].as_str().unwrap().to_string()
}

/// An engineer's `exec` that is held, then waits on `/api/reviews/{id}/wait` like the CLI does.
/// Sends the review id as soon as it exists; resolves to the final review.
fn engineer_exec(
    base: String,
    token: String,
    connection: &str,
    command: &str,
) -> (
    tokio::sync::oneshot::Receiver<String>,
    tokio::task::JoinHandle<Value>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = json!({"connection": connection, "command": command});
    let task = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/exec"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "the command is held");
        let v: Value = r.json().await.unwrap();
        let id = v["review"]["id"].as_str().unwrap().to_string();
        let _ = tx.send(id.clone());
        loop {
            let v: Value = http
                .get(format!("{base}/api/reviews/{id}/wait?timeout=30"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] != "PENDING" && v["status"] != "APPROVED" {
                return v;
            }
        }
    });
    (rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approver_flows_in_headless_chromium() {
    let (chromium, chromedriver) = require_browser();
    let driver = start_driver(&chromedriver).await;
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    let dba = user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    gw.command_connection("scripts", &["sh"], &[]).await;
    let ui = Ui {
        c: browser(&driver, &chromium).await,
        base: gw.base.clone(),
        shots: screenshot_dir(),
    };

    // --- 1. A request arrives live, is approved, and the engineer's wait returns it ----------
    ui.goto("/login").await;
    ui.shot("login").await;
    ui.login("dba@example.com", "dba-password-1").await;
    ui.goto("/reviews").await;
    ui.find("#live-state.on").await; // the event stream is open
    ui.js("window.__sameDocument = 42; return true;").await;

    let (id_rx, waiting) = engineer_exec(
        gw.base.clone(),
        dev.clone(),
        "shell",
        "echo rows-updated: 3; echo done",
    );
    let id = tokio::time::timeout(Duration::from_secs(10), id_rx)
        .await
        .unwrap()
        .unwrap();
    let row_css = format!("tr[data-id='{id}']");
    let text = ui.text_of(&row_css).await;
    assert_eq!(
        ui.js("return window.__sameDocument;").await,
        json!(42),
        "the request appeared without a reload"
    );
    assert!(
        text.contains("dev@example.com") && text.contains("shell"),
        "{text}"
    );
    assert!(text.contains("0 of 1: dba …"), "{text}");
    ui.shot("reviews-live").await;

    ui.click(&format!("{row_css} td.cmd a")).await;
    let cmd = ui.text_of("#review-command").await;
    assert_eq!(cmd, "echo rows-updated: 3; echo done");
    ui.shot("review-pending").await;
    ui.click("#approve").await;
    ui.until(
        "EXECUTED on the detail page",
        "document.getElementById('review-status') && document.getElementById('review-status').textContent.trim() === 'EXECUTED'",
        20,
    )
    .await;
    let result = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result["status"], "EXECUTED", "{result}");
    assert_eq!(result["result"]["output"], "rows-updated: 3\ndone\n");
    assert_eq!(result["result"]["exit_code"], 0);
    ui.until(
        "the output on the detail page",
        "document.querySelector('pre.output') && document.querySelector('pre.output').textContent.includes('rows-updated: 3')",
        10,
    )
    .await;
    ui.shot("review-executed").await;

    // A link from another site (as in Slack's web app) arrives without the Strict session
    // cookie; the login page retries once same-site and lands on the review, signed in.
    let link_page = format!(
        "data:text/html,<a id=go href='{}/reviews/{id}'>open the review</a>",
        gw.base
    );
    ui.c.goto(&link_page).await.unwrap();
    ui.click("#go").await;
    ui.until(
        "the review page after a cross-site link",
        &format!(
            "location.pathname === '/reviews/{id}' && document.getElementById('review-command')"
        ),
        10,
    )
    .await;

    // The status change also reaches an open list without reload.
    ui.goto("/reviews?status=all").await;
    ui.find("#live-state.on").await;
    ui.js("window.__sameDocument = 43; return true;").await;
    let (id_rx, waiting2) = engineer_exec(gw.base.clone(), dev.clone(), "shell", "echo second");
    let id2 = id_rx.await.unwrap();
    ui.find(&format!("tr[data-id='{id2}']")).await;
    let (s, _) = gw
        .decide(&dba, &id2, "reject", Some(json!({"reason": "not today"})))
        .await;
    assert_eq!(s, 200);
    ui.until(
        "the row to show REJECTED",
        &format!("document.querySelector(\"tr[data-id='{id2}']\").dataset.status === 'REJECTED'"),
        10,
    )
    .await;
    assert_eq!(ui.js("return window.__sameDocument;").await, json!(43));
    assert_eq!(waiting2.await.unwrap()["status"], "REJECTED");
    ui.logout().await;

    // --- 2. A rule created through the form takes effect ---------------------------------------
    ui.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    ui.goto("/rules/new").await;
    ui.find("#f-name")
        .await
        .send_keys("scripts-guard")
        .await
        .unwrap();
    ui.find("#f-description")
        .await
        .send_keys("every script needs a DBA")
        .await
        .unwrap();
    ui.find("input[name=type][value=command]")
        .await
        .click()
        .await
        .unwrap();
    ui.find("input[name=connections][value=scripts]")
        .await
        .click()
        .await
        .unwrap();
    // First without approval groups: the error shows next to the field.
    ui.find("#save-rule").await.click().await.unwrap();
    let err = ui.find("#err-approval_groups").await.text().await.unwrap();
    assert!(err.contains("at least one approval group"), "{err}");
    ui.shot("rule-form-error").await;
    ui.find("#f-approval").await.send_keys("dba").await.unwrap();
    ui.find("#f-timeout").await.send_keys("30m").await.unwrap();
    ui.shot("rule-form").await;
    ui.find("#save-rule").await.click().await.unwrap();
    ui.find("p.notice").await;
    assert!(ui.c.current_url().await.unwrap().path() == "/rules");
    ui.shot("rules").await;
    let (s, rule) = gw.admin("GET", "/api/rules/scripts-guard", None).await;
    assert_eq!(s, 200);
    assert_eq!(rule["connections"], json!(["scripts"]));
    assert_eq!(rule["timeout_sec"], 1800);
    ui.goto("/connections").await;
    ui.shot("connections").await;
    ui.logout().await;

    // The engineer's next command on that connection is held — in the web terminal.
    ui.login("dev@example.com", "dev-password-1").await;
    ui.goto("/terminal?connection=scripts").await;
    ui.find("#t-command")
        .await
        .send_keys("echo held-by-the-new-rule")
        .await
        .unwrap();
    ui.find("#run").await.click().await.unwrap();
    let waiting_text = ui
        .find("#terminal-outcome .waiting")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        waiting_text.contains("Waiting for approval…"),
        "{waiting_text}"
    );
    let held_id = ui
        .find("#terminal-outcome")
        .await
        .attr("data-review-id")
        .await
        .unwrap()
        .unwrap();
    ui.shot("terminal-waiting").await;
    ui.js("window.__sameDocument = 44; return true;").await;
    let (s, v) = gw.decide(&dba, &held_id, "approve", None).await;
    assert_eq!(s, 200, "{v}");
    ui.until(
        "the terminal result",
        "document.querySelector('#terminal-outcome pre.output') && document.querySelector('#terminal-outcome pre.output').textContent.includes('held-by-the-new-rule')",
        15,
    )
    .await;
    assert_eq!(ui.js("return window.__sameDocument;").await, json!(44));
    ui.shot("terminal-result").await;

    // --- 3. An XSS payload inside a command renders as text ------------------------------------
    let payload = "echo '<script>window.__xss=1;alert(1)</script>' '\"><img src=x onerror=\"window.__xss=2;alert(2)\">'";
    ui.goto("/reviews").await;
    ui.find("#live-state.on").await;
    let (id_rx, _xss_wait) = engineer_exec(gw.base.clone(), dev.clone(), "shell", payload);
    let xss_id = id_rx.await.unwrap();
    let row_text = ui.text_of(&format!("tr[data-id='{xss_id}']")).await;
    assert!(
        row_text.contains("<script>window.__xss=1;alert(1)</script>"),
        "the payload is visible as text: {row_text}"
    );
    assert!(ui.no_alert().await, "no alert on the list");
    assert_eq!(
        ui.js("return window.__xss === undefined;").await,
        json!(true)
    );
    ui.goto(&format!("/reviews/{xss_id}")).await;
    let shown = ui.text_of("#review-command").await;
    assert_eq!(shown, payload, "the exact command, as text");
    assert!(ui.no_alert().await, "no alert on the detail page");
    assert_eq!(
        ui.js("return window.__xss === undefined;").await,
        json!(true)
    );
    assert_eq!(
        ui.js("return document.querySelectorAll('#review-command *').length;")
            .await,
        json!(0),
        "no element was created from the payload"
    );
    ui.shot("review-xss-as-text").await;

    // --- 4. The remaining pages, at laptop and phone widths ------------------------------------
    ui.goto("/sessions").await;
    ui.shot("sessions-engineer").await;
    ui.logout().await;
    ui.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    ui.goto("/sessions").await;
    ui.find("table.list").await;
    ui.shot("sessions").await;
    ui.goto("/analytics?period=24h").await;
    let total = ui.text_of("#kpi-total").await;
    assert_eq!(total, "4");
    ui.shot("analytics").await;
    ui.goto("/reviews?status=all").await;
    ui.shot("reviews-all").await;
    ui.c.set_window_size(390, 844).await.unwrap();
    ui.goto("/reviews?status=all").await;
    ui.find("table.list").await;
    let overflow = ui
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(overflow, json!(true), "no horizontal scrolling on a phone");
    ui.shot("phone-reviews").await;
    ui.goto(&format!("/reviews/{id}")).await;
    ui.find("#review-command").await;
    let overflow = ui
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(
        overflow,
        json!(true),
        "no horizontal scrolling on a phone (detail)"
    );
    ui.shot("phone-review-detail").await;
    ui.goto("/rules/new").await;
    ui.shot("phone-rule-form").await;

    ui.c.close().await.unwrap();
    for name in [
        "login",
        "reviews-live",
        "review-pending",
        "review-executed",
        "rule-form",
        "rules",
        "terminal-waiting",
        "terminal-result",
        "review-xss-as-text",
        "sessions",
        "analytics",
        "phone-reviews",
    ] {
        let p = ui.shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing or empty", p.display());
    }
}
