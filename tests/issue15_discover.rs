//! Issue 15: `throtl discover` against canned Kubernetes API answers (a fake
//! `kubectl` on the fixtures in tests/fixtures/k8s), probing simulators.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use throtl::sim::{self, EngineFlavor, SimConfig};

fn port(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_owned()
}

/// A `kubectl` answering `get RESOURCE -o json` from the fixtures, with the
/// simulators' ports; without `routes`, Ingresses and Routes are empty
/// (their hosts do not resolve here, so probing them only takes time).
fn fake_kubectl(dir: &std::path::Path, a: &str, b: &str, routes: bool) -> std::path::PathBuf {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s");
    let fake = dir.join("kubectl");
    let edge = if routes {
        "ingresses) f=ingresses ;;\n  routes.route.openshift.io) f=routes ;;"
    } else {
        "ingresses|routes.route.openshift.io) echo '{\"items\": []}'; exit 0 ;;"
    };
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{log}'\nfor a in \"$@\"; do case \"$a\" in\n  services|endpoints|nodes) f=\"$a\" ;;\n  {edge}\nesac; done\nsed -e 's/PORT_A/{a}/' -e 's/PORT_B/{b}/' '{fixtures}/'\"$f\".json\n",
        log = dir.join("calls.log").display(),
        a = port(a),
        b = port(b),
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

#[test]
fn issue15_discover_lists_services_ingresses_and_routes_and_probes_them() {
    let vllm = common::sim(5, 1);
    let tgi = sim::start(SimConfig {
        engine: EngineFlavor::Tgi,
        ..SimConfig::default()
    })
    .unwrap();
    let dir = common::tmpdir();
    let fake = fake_kubectl(dir.path(), &vllm.url(), &tgi.url(), true);
    let out = std::process::Command::new(common::bin())
        .args([
            "discover",
            "--kubectl",
            fake.to_str().unwrap(),
            "-l",
            "tier=llm",
            "--json",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |name: &str| {
        found
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {found:?}"))
    };
    let lb = by("vllm-lb");
    assert_eq!(lb["url"], format!("http://127.0.0.1:{}", port(&vllm.url())));
    assert_eq!(
        (lb["engine"].as_str(), lb["healthy"].as_bool()),
        (Some("vllm"), Some(true))
    );
    assert_eq!(lb["model"], "throtl-sim");
    let np = by("tgi-np");
    assert_eq!(
        np["url"],
        format!("http://127.0.0.1:{}", port(&tgi.url())),
        "NodePort on the node's ExternalIP"
    );
    assert_eq!(np["engine"], "tgi");
    // In-cluster DNS is unreachable from here: listed, not healthy, with why.
    let ci = by("ollama");
    assert_eq!(ci["url"], "http://ollama.ml.svc.cluster.local:11434");
    assert_eq!(ci["healthy"], false);
    assert!(ci["note"].is_string());
    let idle = by("idle");
    assert_eq!(idle["note"], "no ready endpoints");
    assert!(found.iter().all(|e| e["name"] != "kubernetes"));
    // Ingress hosts, https where the host has TLS; the OpenShift route with TLS.
    let urls: Vec<&str> = found
        .iter()
        .filter(|e| e["kind"] != "service")
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://chat.example.com",
            "http://plain.example.com",
            "https://sglang-ai.apps.ocp.example.com"
        ]
    );
    // The selector and all-namespaces scope reached kubectl.
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert!(
        calls
            .lines()
            .all(|l| l.contains("--all-namespaces") && l.contains("-l tier=llm")),
        "{calls}"
    );

    // The table names every endpoint; a missing kubectl is an actionable error.
    let table = std::process::Command::new(common::bin())
        .args([
            "discover",
            "--kubectl",
            fake.to_str().unwrap(),
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("vllm-lb") && text.contains("no ready endpoints"),
        "{text}"
    );
    let missing = std::process::Command::new(common::bin())
        .args(["discover", "--kubectl", "/nonexistent/kubectl"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Is kubectl installed"));
}

#[test]
fn issue15_bench_race_and_monitor_take_discovered_targets() {
    let vllm = common::sim(5, 1);
    let tgi = sim::start(SimConfig {
        engine: EngineFlavor::Tgi,
        ..SimConfig::default()
    })
    .unwrap();
    let dir = common::tmpdir();
    let fake = fake_kubectl(dir.path(), &vllm.url(), &tgi.url(), false);
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .env("THROTL_KUBECTL", &fake)
            .output()
            .unwrap()
    };
    let bench = run(&[
        "bench",
        "--discover",
        "-n",
        "4",
        "--warmup",
        "0",
        "--output-tokens",
        "2",
        "--no-store",
        "-q",
        "--tokenizer",
        "words",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&bench.stdout),
        String::from_utf8_lossy(&bench.stderr),
    );
    assert!(bench.status.success(), "{err}");
    // The two healthy services, benched as two targets.
    assert!(
        out.contains("inference-vllm-lb") && out.contains("inference-tgi-np"),
        "{out}"
    );
    assert!(
        !out.contains("ml-ollama"),
        "unhealthy endpoints are left out: {out}"
    );
    let race = run(&["race", "--discover", "tier=llm", "--max-tokens", "4"]);
    assert!(
        race.status.success(),
        "{}",
        String::from_utf8_lossy(&race.stderr)
    );
    assert!(String::from_utf8_lossy(&race.stdout).contains("inference-tgi-np"));
    let monitor = run(&["monitor", "--discover", "--once", "--no-tui"]);
    let text = String::from_utf8_lossy(&monitor.stdout);
    assert!(
        text.contains(&vllm.url()) && text.contains(&tgi.url()),
        "{text}"
    );
}
