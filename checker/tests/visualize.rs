//! The HTML visualization: well formed, self-contained, showing every operation; and, when
//! Chromium is installed, rendered headless with the expected elements in its DOM.
//!
//! Without Chromium the render test skips on a developer's machine; under CI (`CI=true`) it
//! fails, since `.ci/run` installs Chromium and a skip there would hide a missing install.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::data_dir;
use raftkv_checker::models::{KvErr, KvInput, KvModel, KvOp, KvOutput};
use raftkv_checker::{
    check, visualize, AnyHistory, CheckOptions, CheckResult, Format, Operation, Verdict,
};

fn kv(
    client: u64,
    call: u64,
    ret: Option<u64>,
    op: KvOp,
    key: &str,
    value: Option<&str>,
    out: KvOutput,
) -> Operation<KvInput, KvOutput> {
    let input = KvInput {
        op,
        key: key.into(),
        value: value.map(Into::into),
        version: None,
    };
    Operation {
        client,
        call,
        ret,
        input,
        output: out,
    }
}

fn ok_version(v: u64) -> KvOutput {
    KvOutput {
        value: None,
        version: Some(v),
        err: None,
    }
}

fn read(value: &str, v: u64) -> KvOutput {
    KvOutput {
        value: Some(value.into()),
        version: Some(v),
        err: None,
    }
}

/// Key "a" is fine; key "<b>" (a name that needs escaping) reads a value that was overwritten
/// before the read began.
fn small_illegal_history() -> Vec<Operation<KvInput, KvOutput>> {
    vec![
        kv(0, 0, Some(10), KvOp::Put, "a", Some("1"), ok_version(1)),
        kv(1, 5, Some(15), KvOp::Get, "a", None, read("1", 1)),
        kv(
            0,
            20,
            Some(30),
            KvOp::Put,
            "<b>",
            Some("x & y"),
            ok_version(1),
        ),
        kv(
            1,
            25,
            Some(35),
            KvOp::Append,
            "<b>",
            Some("z"),
            ok_version(2),
        ),
        kv(2, 40, Some(50), KvOp::Get, "<b>", None, read("x & y", 1)),
        kv(
            2,
            60,
            None,
            KvOp::Delete,
            "a",
            None,
            KvOutput {
                err: Some(KvErr::Timeout),
                ..KvOutput::default()
            },
        ),
    ]
}

/// Decide every partition, so that the page does not depend on timing.
fn every_partition() -> CheckOptions {
    CheckOptions {
        stop_on_illegal: false,
        ..CheckOptions::default()
    }
}

fn render(ops: &[Operation<KvInput, KvOutput>], result: &CheckResult) -> String {
    let mut out = Vec::new();
    visualize(&KvModel, ops, result, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Every opening tag of `name` has its closing tag.
fn assert_balanced(html: &str, name: &str) {
    let opens =
        html.matches(&format!("<{name} ")).count() + html.matches(&format!("<{name}>")).count();
    let closes = html.matches(&format!("</{name}>")).count();
    assert_eq!(
        opens, closes,
        "<{name}> opened {opens} times, closed {closes} times"
    );
}

fn assert_well_formed(html: &str, ops: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    for tag in [
        "html", "head", "body", "section", "details", "summary", "svg", "g", "table", "tr", "td",
        "script", "style", "title", "text",
    ] {
        assert_balanced(html, tag);
    }
    assert_eq!(
        html.matches("<g class=\"op ").count(),
        ops,
        "one bar per operation"
    );
    // Self-contained: nothing fetched (the SVG namespace is a name, not a fetch).
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in ["http://", "https://", "<link", " src=", "@import", "url("] {
        assert!(
            !without_namespace.contains(needle),
            "the page must not load {needle}"
        );
    }
}

#[test]
fn html_shows_every_operation_and_marks_the_failure() {
    let ops = small_illegal_history();
    let result = check(&KvModel, &ops, &every_partition());
    assert_eq!(result.verdict, Verdict::Illegal);
    let html = render(&ops, &result);
    assert_well_formed(&html, ops.len());
    for i in 0..ops.len() {
        assert_eq!(
            html.matches(&format!("data-op=\"{i}\"")).count(),
            1,
            "op {i}"
        );
    }
    // Key "<b>" is escaped, never raw markup.
    assert!(html.contains("key &quot;&lt;b&gt;&quot;"));
    assert!(!html.contains("\"<b>\""));
    // The failing partition: put(<b>) and append(<b>) linearized, the stale read unplaceable.
    assert!(html.contains("class=\"op lin\" id=\"op-0-2\""));
    assert!(html.contains("data-order=\"2\""));
    assert!(html.contains("class=\"op bad\" id=\"op-0-4\""));
    assert!(html.contains("None of these could be placed next"));
    // The timed-out delete is drawn as an unknown outcome.
    assert!(html.contains("class=\"op lin unknown\" id=\"op-1-5\""));
    assert!(html.contains("data-verdict=\"illegal\""));
}

#[test]
fn html_of_a_real_illegal_history_holds_every_operation() {
    let path = data_dir().join("kv/c10-bad.txt");
    let history = AnyHistory::read_file(Format::PorcupineKv, &path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let result = history.check(&CheckOptions::default());
    let mut out = Vec::new();
    history.visualize(&result, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    assert_well_formed(&html, history.len());
    assert!(html.contains("class=\"op bad\""));
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

/// Runs headless Chromium on `page` with `args`; its stdout, or a panic after `limit`.
fn run_chromium(
    chromium: &Path,
    profile: &Path,
    args: &[&str],
    page: &Path,
    limit: Duration,
) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("chromium output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn chromium_renders_the_page_and_runs_its_script() {
    let Some(chromium) = chromium() else {
        let msg = "no chromium at $CHROMIUM or /usr/bin/chromium (set CHROMIUM to its path)";
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            panic!("{msg}; CI must install it (.ci/run does, with apt-get)");
        }
        println!("skipped: {msg}");
        return;
    };
    let dir = std::env::temp_dir().join(format!("raftkv-visualize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ops = small_illegal_history();
    let result = check(&KvModel, &ops, &every_partition());
    let page = dir.join("history.html");
    std::fs::write(&page, render(&ops, &result)).unwrap();

    let dom = run_chromium(
        &chromium,
        &dir.join("profile"),
        &["--dump-dom"],
        &page,
        Duration::from_secs(90),
    );
    assert!(
        dom.contains("data-ready=\"yes\""),
        "the script ran: {dom:.400}"
    );
    assert!(
        dom.contains(&format!("data-op-count=\"{}\"", ops.len())),
        "the script saw every bar"
    );
    assert_eq!(dom.matches("<section class=\"partition").count(), 2);
    assert_eq!(dom.matches("<g class=\"op ").count(), ops.len());
    assert!(dom.contains("<svg class=\"timeline\""));

    let shot = dir.join("history.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    run_chromium(
        &chromium,
        &dir.join("profile"),
        &[&shot_arg, "--window-size=1200,900"],
        &page,
        Duration::from_secs(90),
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("screenshot: {}", shot.display());
    if std::env::var_os("RAFTKV_KEEP_SCREENSHOT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
