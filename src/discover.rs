//! `throtl discover`: inference engines in the current kube context.
//!
//! Reads Services, Ingresses and (on OpenShift) Routes through `kubectl`
//! (see [`crate::k8s`] for why), turns each into the URL a client outside
//! or inside the cluster would use, and probes it as `throtl probe` does.

use std::collections::BTreeSet;
use std::process::Command;

use serde::Serialize;
use serde_json::Value;

use crate::k8s::K8sError;

/// Where and how to look.
#[derive(Debug, Clone, Default)]
pub struct DiscoverQuery {
    /// `kubectl` (or `oc`) binary.
    pub kubectl: String,
    /// Only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Label selector, e.g. `app=vllm`.
    pub selector: Option<String>,
    /// `--kubeconfig` for kubectl.
    pub kubeconfig: Option<String>,
}

/// One endpoint found in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// `service`, `ingress` or `route`.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Base URL to benchmark.
    pub url: String,
    /// Engine identified by the probe (`unknown` when it answered oddly).
    pub engine: Option<String>,
    /// First model served.
    pub model: Option<String>,
    /// The engine answered (health route OK or models listed).
    pub healthy: bool,
    /// Why it was not probed or did not answer.
    pub note: Option<String>,
}

impl DiscoverQuery {
    fn kubectl(&self, args: &[&str]) -> Result<Value, K8sError> {
        let mut cmd = Command::new(&self.kubectl);
        if let Some(k) = &self.kubeconfig {
            cmd.args(["--kubeconfig", k]);
        }
        match &self.namespace {
            Some(ns) => cmd.args(["--namespace", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        if let Some(l) = &self.selector {
            cmd.args(["-l", l]);
        }
        let shown = args.join(" ");
        let out = cmd
            .args(args)
            .args(["-o", "json"])
            .output()
            .map_err(|e| K8sError::Kubectl {
                args: shown.clone(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(K8sError::Kubectl {
                args: shown,
                reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| K8sError::Kubectl {
            args: shown,
            reason: format!("not JSON: {e}"),
        })
    }

    /// Every endpoint of Services, Ingresses and Routes, not yet probed.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, K8sError> {
        let services = self.kubectl(&["get", "services"])?;
        let ready = ready_services(&self.kubectl(&["get", "endpoints"])?);
        let node_ip = self
            .kubectl(&["get", "nodes"])
            .ok()
            .and_then(|n| external_ip(&n));
        let mut out: Vec<Endpoint> = items(&services)
            .flat_map(|s| service_endpoints(s, &ready, node_ip.as_deref()))
            .collect();
        out.extend(items(&self.kubectl(&["get", "ingresses"])?).flat_map(ingress_endpoints));
        // Routes exist on OpenShift only: elsewhere the resource type is unknown.
        if let Ok(routes) = self.kubectl(&["get", "routes.route.openshift.io"]) {
            out.extend(items(&routes).filter_map(route_endpoint));
        }
        Ok(out)
    }
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

fn endpoint(kind: &str, v: &Value, url: String, note: Option<String>) -> Endpoint {
    Endpoint {
        kind: kind.into(),
        name: str_at(v, &["metadata", "name"]).into(),
        namespace: str_at(v, &["metadata", "namespace"]).into(),
        url,
        engine: None,
        model: None,
        healthy: false,
        note,
    }
}

/// `namespace/name` of every Endpoints object with at least one ready address.
fn ready_services(endpoints: &Value) -> BTreeSet<String> {
    items(endpoints)
        .filter(|e| {
            e["subsets"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
            })
        })
        .map(|e| {
            format!(
                "{}/{}",
                str_at(e, &["metadata", "namespace"]),
                str_at(e, &["metadata", "name"])
            )
        })
        .collect()
}

/// The first node's ExternalIP (for NodePort services).
fn external_ip(nodes: &Value) -> Option<String> {
    items(nodes).find_map(|n| {
        n["status"]["addresses"].as_array()?.iter().find_map(|a| {
            (a["type"] == "ExternalIP").then(|| a["address"].as_str().map(str::to_owned))?
        })
    })
}

fn scheme_for(port: u64, name: &str) -> &'static str {
    if port == 443 || name.contains("https") {
        "https"
    } else {
        "http"
    }
}

/// One endpoint per service port: LoadBalancer → its ingress address,
/// NodePort → a node's external IP and the node port, else the in-cluster
/// DNS name. A service without ready endpoints is listed, not probed.
fn service_endpoints(s: &Value, ready: &BTreeSet<String>, node_ip: Option<&str>) -> Vec<Endpoint> {
    let (name, ns) = (
        str_at(s, &["metadata", "name"]),
        str_at(s, &["metadata", "namespace"]),
    );
    if s["spec"]["type"] == "ExternalName" || name == "kubernetes" {
        return Vec::new();
    }
    let no_endpoints =
        (!ready.contains(&format!("{ns}/{name}"))).then(|| "no ready endpoints".to_owned());
    let lb = s["status"]["loadBalancer"]["ingress"][0].clone();
    let lb_host = lb["ip"].as_str().or(lb["hostname"].as_str());
    s["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p["port"].as_u64().unwrap_or(80);
            let scheme = scheme_for(port, p["name"].as_str().unwrap_or_default());
            let url = match (
                str_at(s, &["spec", "type"]),
                lb_host,
                node_ip,
                p["nodePort"].as_u64(),
            ) {
                ("LoadBalancer", Some(h), _, _) => format!("{scheme}://{h}:{port}"),
                ("NodePort", _, Some(ip), Some(np)) => format!("{scheme}://{ip}:{np}"),
                _ => format!("{scheme}://{name}.{ns}.svc.cluster.local:{port}"),
            };
            endpoint("service", s, url, no_endpoints.clone())
        })
        .collect()
}

/// One endpoint per ingress rule host; `https` when the host is in `spec.tls`.
fn ingress_endpoints(i: &Value) -> Vec<Endpoint> {
    let tls: BTreeSet<&str> = i["spec"]["tls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["hosts"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    i["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["host"].as_str())
        .map(|host| {
            let scheme = if tls.contains(host) { "https" } else { "http" };
            endpoint("ingress", i, format!("{scheme}://{host}"), None)
        })
        .collect()
}

/// An OpenShift route: `https` when it has a `spec.tls` section.
fn route_endpoint(r: &Value) -> Option<Endpoint> {
    let host = r["spec"]["host"].as_str()?;
    let scheme = if r["spec"]["tls"].is_object() {
        "https"
    } else {
        "http"
    };
    let path = r["spec"]["path"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/');
    Some(endpoint(
        "route",
        r,
        format!("{scheme}://{host}{path}"),
        None,
    ))
}

/// Probes every endpoint that has ready backends, as `throtl probe` does,
/// all at once, each given at most `timeout`.
pub async fn probe_all(endpoints: &mut [Endpoint], timeout: std::time::Duration) {
    let probes = endpoints.iter().map(|e| async move {
        if e.note.is_some() {
            return None;
        }
        let p = tokio::time::timeout(timeout, crate::probe::probe(&e.url, &[])).await;
        Some(p)
    });
    let results = futures_util::future::join_all(probes).await;
    for (e, r) in endpoints.iter_mut().zip(results) {
        match r {
            None => {}
            Some(Ok(Ok(p))) => {
                e.healthy = p.healthy.unwrap_or(!p.models.is_empty());
                e.model = p.models.first().cloned();
                e.engine = Some(p.engine);
            }
            Some(Ok(Err(err))) => e.note = Some(err.to_string()),
            Some(Err(_)) => e.note = Some(format!("no answer within {timeout:?}")),
        }
    }
}

/// The table `throtl discover` prints.
pub fn render(endpoints: &[Endpoint]) -> String {
    let mut s = format!(
        "{:<8} {:<24} {:<14} {:<44} {:<10} {:<24} {}\n",
        "KIND", "NAME", "NAMESPACE", "URL", "ENGINE", "MODEL", "HEALTHY"
    );
    for e in endpoints {
        let healthy = match (&e.note, e.healthy) {
            (Some(n), _) => format!("no ({n})"),
            (None, true) => "yes".into(),
            (None, false) => "no".into(),
        };
        s.push_str(&format!(
            "{:<8} {:<24} {:<14} {:<44} {:<10} {:<24} {healthy}\n",
            e.kind,
            e.name,
            e.namespace,
            e.url,
            e.engine.as_deref().unwrap_or("-"),
            e.model.as_deref().unwrap_or("-"),
        ));
    }
    s
}
