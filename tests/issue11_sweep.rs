//! Issue 11: two sweep bugs found while reading the code.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn issue11_a_bad_markdown_or_csv_path_fails_before_the_first_step() {
    let server = common::sim(2, 1);
    for flag in ["--markdown", "--csv"] {
        let out = Command::new(common::bin())
            .args([
                "sweep",
                "--url",
                &server.url(),
                "-m",
                "throtl-sim",
                "-c",
                "1,2",
                "-n",
                "4",
            ])
            .args([
                "--warmup",
                "0",
                "--output-tokens",
                "2",
                "--no-store",
                "--tokenizer",
                "words",
            ])
            .args([flag, "/nonexistent-dir/out"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("/nonexistent-dir/out"), "{err}");
        assert!(!err.contains("step 1"), "failed only after a step: {err}");
    }
}

#[test]
fn issue11_rates_auto_probes_with_the_given_users() {
    let server = common::sim(2, 1);
    let dir = common::tmpdir();
    let json = dir.path().join("sweep.json");
    let out = Command::new(common::bin())
        .args([
            "sweep",
            "--url",
            &server.url(),
            "-m",
            "throtl-sim",
            "--users",
            "16",
            "--rates",
            "auto",
        ])
        .args([
            "-n",
            "32",
            "--warmup",
            "0",
            "--output-tokens",
            "2",
            "--no-store",
            "--tokenizer",
            "words",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v["probe"]["load"]["concurrency"], 16,
        "the probe ran with --users 16"
    );
}
