//! Sharded runs on Kubernetes: the Indexed Job that runs the shards
//! (`throtl k8s job`) and collecting their shard files from the pod logs
//! (`throtl k8s collect`). Throtl talks to the cluster through `kubectl`,
//! as its users do: it inherits their kubeconfig, context and auth plugins,
//! and adds no Kubernetes client crate to the build (docs/distributed.md).

use std::process::Command;

use serde_norway::{Mapping, Value};

/// What the Job runs.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Job name (DNS-1123 label).
    pub name: String,
    /// Namespace, if not the context's.
    pub namespace: Option<String>,
    /// Shards N: completions and parallelism.
    pub shards: u32,
    /// Container image holding the `throtl` binary.
    pub image: String,
    /// The common start T0 every shard waits for (RFC 3339).
    pub start_at: String,
    /// `bench` flags (without `--shard`, `--start-at`, `--shard-out`).
    pub bench_args: Vec<String>,
}

/// Errors of the Kubernetes helpers.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// `kubectl` could not run or failed.
    #[error("kubectl {args}: {reason}. Is kubectl installed and its context the cluster of the job (--kubectl, --namespace)?")]
    Kubectl {
        /// The arguments.
        args: String,
        /// What failed.
        reason: String,
    },
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn str_map(pairs: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::String((*k).to_owned()), v.clone());
    }
    Value::Mapping(m)
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Flags the Job sets itself; a plan must not carry them.
const RESERVED: [&str; 3] = ["--shard", "--start-at", "--shard-out"];

/// The Indexed Job as YAML: `completionMode: Indexed`, N completions run in
/// parallel, `backoffLimit: 0` (a failed slice is never replayed late),
/// each pod's completion index as its `--shard`, the shard file printed
/// between markers in the pod log for [`collect`].
pub fn job_manifest(p: &JobPlan) -> Result<String, K8sError> {
    if !is_dns_label(&p.name) {
        return Err(K8sError::Invalid(format!(
            "--name '{}' must be a DNS label: lower-case letters, digits and '-', at most 63",
            p.name
        )));
    }
    if p.shards == 0 {
        return Err(K8sError::Invalid("--shards must be at least 1".into()));
    }
    if let Some(f) = p
        .bench_args
        .iter()
        .find(|a| RESERVED.iter().any(|r| a.starts_with(r)))
    {
        return Err(K8sError::Invalid(format!(
            "'{f}' is set by the job itself; leave it out of the bench flags"
        )));
    }
    let mut args = vec![s("bench")];
    args.extend(p.bench_args.iter().map(|a| s(a)));
    for a in [
        "--shard",
        &format!("$(JOB_COMPLETION_INDEX)/{}", p.shards),
        "--start-at",
        &p.start_at,
        "--shard-out",
        "-",
        "--no-store",
        "--no-tui",
    ] {
        args.push(s(a));
    }
    let index_env = str_map(&[
        ("name", s("JOB_COMPLETION_INDEX")),
        (
            "valueFrom",
            str_map(&[(
                "fieldRef",
                str_map(&[(
                    "fieldPath",
                    s("metadata.annotations['batch.kubernetes.io/job-completion-index']"),
                )]),
            )]),
        ),
    ]);
    let container = str_map(&[
        ("name", s("throtl")),
        ("image", s(&p.image)),
        ("command", Value::Sequence(vec![s("throtl")])),
        ("args", Value::Sequence(args)),
        ("env", Value::Sequence(vec![index_env])),
    ]);
    let labels = str_map(&[
        ("app.kubernetes.io/name", s("throtl")),
        ("throtl.dev/run", s(&p.name)),
    ]);
    let mut metadata = vec![("name", s(&p.name)), ("labels", labels.clone())];
    if let Some(ns) = &p.namespace {
        metadata.push(("namespace", s(ns)));
    }
    let n = Value::Number(p.shards.into());
    let job = str_map(&[
        ("apiVersion", s("batch/v1")),
        ("kind", s("Job")),
        ("metadata", str_map(&metadata)),
        (
            "spec",
            str_map(&[
                ("completionMode", s("Indexed")),
                ("completions", n.clone()),
                ("parallelism", n),
                ("backoffLimit", Value::Number(0.into())),
                (
                    "template",
                    str_map(&[
                        ("metadata", str_map(&[("labels", labels)])),
                        (
                            "spec",
                            str_map(&[
                                ("restartPolicy", s("Never")),
                                ("containers", Value::Sequence(vec![container])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    serde_norway::to_string(&job).map_err(|e| K8sError::Invalid(e.to_string()))
}

/// Runs `kubectl ARGS` and returns its stdout.
fn kubectl(bin: &str, namespace: Option<&str>, args: &[&str]) -> Result<String, K8sError> {
    let mut cmd = Command::new(bin);
    if let Some(ns) = namespace {
        cmd.args(["--namespace", ns]);
    }
    let shown = args.join(" ");
    let out = cmd.args(args).output().map_err(|e| K8sError::Kubectl {
        args: shown.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(K8sError::Kubectl {
            args: shown,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shard files printed in the logs of every pod of `job`, through
/// `kubectl get pods -l job-name=JOB` and `kubectl logs POD`.
pub fn collect(bin: &str, namespace: Option<&str>, job: &str) -> Result<Vec<String>, K8sError> {
    let selector = format!("job-name={job}");
    let pods = kubectl(
        bin,
        namespace,
        &["get", "pods", "-l", &selector, "-o", "name"],
    )?;
    let mut files = Vec::new();
    for pod in pods.lines().map(str::trim).filter(|p| !p.is_empty()) {
        let log = kubectl(bin, namespace, &["logs", pod])?;
        files.extend(
            crate::shard::extract_from_log(&log)
                .into_iter()
                .map(str::to_owned),
        );
    }
    if files.is_empty() {
        return Err(K8sError::Invalid(format!(
            "no shard results in the logs of job '{job}' (pods: {}); has it finished?",
            pods.lines().count()
        )));
    }
    Ok(files)
}
