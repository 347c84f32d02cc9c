//! The `mock-upstream` binary, as the Python suite and the load benchmark drive it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use xai_tests::client;

#[tokio::test]
async fn binary_prints_its_address_serves_and_exits_zero_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mock-upstream");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("no listening line within 10 s")
        .expect("read stdout")
        .expect("a line");
    let addr = line.strip_prefix("mock-upstream listening on ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let url = format!("http://{addr}");
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");

    let script = json!({"behaviors": [{"status": 503}]});
    assert_eq!(client::post_json(&format!("{url}/_mock/script"), None, &script).await.status, 200);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(client::post_json(&format!("{url}/v1/chat/completions"), Some("k"), &body).await.status, 503);
    let ok = client::post_json(&format!("{url}/v1/chat/completions"), Some("k"), &body).await;
    assert_eq!(ok.json()["choices"][0]["message"]["content"], "mock reply: hi");
    let log = client::get(&format!("{url}/_mock/requests"), None).await.json();
    assert_eq!(log["requests"].as_array().map(Vec::len), Some(2), "{log}");

    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("mock-upstream did not exit within 10 s of SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}
