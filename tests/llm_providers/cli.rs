//! `aiops-operator llm propose` prints the guarded proposal for an
//! evidence file.
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::double::{Double, ollama_reply};
use crate::good_answer;
use crate::support::{pull_evidence, repo_root};

#[tokio::test]
async fn llm_propose_prints_the_guarded_proposal() {
    let double = Double::start().await;
    double.always(ollama_reply(&good_answer()));
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("evidence.json");
    let mut evidence = serde_json::to_value(pull_evidence("shop")).unwrap();
    evidence["statuses"] = json!([{"pod": "web-1", "container": "app",
        "state": "waiting: ImagePullBackOff", "image": "ngnix:1.25.5"}]);
    std::fs::write(&file, evidence.to_string()).unwrap();
    let url = double.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aiops-operator"))
            .args([
                "llm",
                "propose",
                "--provider",
                "ollama",
                "--url",
                &url,
                "--model",
                "qwen2.5:7b",
            ])
            .arg("--evidence")
            .arg(&file)
            .arg("--policies")
            .arg(repo_root().join("policies"))
            .args(["--cluster-image", "nginx:1.25.5"])
            .env_remove("OLLAMA_URL")
            .output()
            .expect("run the binary")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(report["source"], "ollama:qwen2.5:7b");
    assert_eq!(report["guardrail"]["allowed"], true);
    assert_eq!(report["proposal"]["source"], "ollama:qwen2.5:7b");
    assert!(report["prompt"]["estimatedTokens"].as_u64().unwrap() > 100);
    assert_eq!(report["usage"]["promptTokens"], 812);
}
