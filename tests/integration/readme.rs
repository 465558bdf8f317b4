//! The README's pipeline snippets, run the way each CI system runs them, with a failing
//! `gridos-setup` stand-in: each must fail the step, and each would pass without its pipefail/-e.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::unique_name;

/// One shell script the README tells a pipeline to run, and the shell that CI system runs it with.
#[derive(Debug)]
pub(crate) struct Snippet {
    pub(crate) what: String,
    /// The command line before the script's path (`{0}` in GitHub's terms).
    pub(crate) shell: Vec<&'static str>,
    pub(crate) script: String,
    pub(crate) env: Vec<(String, String)>,
}

/// GitHub Actions' built-in shells on Linux runners (workflow syntax, jobs.<job_id>.steps[*].shell):
/// unspecified is `bash -e {0}`; an explicit `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`.
fn github_shell(shell: Option<&str>) -> Vec<&'static str> {
    match shell {
        None => vec!["bash", "-e"],
        Some("bash") => vec!["bash", "--noprofile", "--norc", "-eo", "pipefail"],
        Some("sh") => vec!["sh", "-e"],
        Some(other) => panic!("the README uses shell {other:?}, which this test does not model"),
    }
}

/// Pipeline variables the Azure Pipelines snippets use. Azure Pipelines replaces `$(name)` of a
/// defined variable before the script runs and leaves any other `$(...)` (a command substitution) alone.
const ADO_VARIABLES: [(&str, &str); 6] = [
    ("serviceConnection", "gridos-connection"),
    ("resourceGroup", "gridos-rg"),
    ("cluster", "gridos-aks"),
    ("appHost", "app.example.com"),
    ("registry", "gridos.azurecr.io"),
    ("Build.BuildId", "42"),
];

fn ado_macros(script: &str) -> String {
    let mut out = script.to_string();
    for (name, value) in ADO_VARIABLES {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// The ```yaml blocks of the README's "## Pipelines" section.
fn pipeline_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## Pipelines\n")
        .expect("a Pipelines section");
    let rest = &readme[start + 1..];
    let section = match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    };
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

pub(crate) fn snippets() -> Vec<Snippet> {
    let mut out = Vec::new();
    for (i, block) in pipeline_blocks().into_iter().enumerate() {
        let doc: Value = serde_saphyr::from_str(&block)
            .unwrap_or_else(|e| panic!("README pipeline block {i} is not YAML: {e}\n{block}"));
        // A block is a list of steps, or a job's keys with its `steps`.
        let steps = if doc.is_object() { &doc["steps"] } else { &doc };
        for step in steps.as_array().expect("a list of steps") {
            let env: Vec<(String, String)> = step["env"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(run) = step["run"].as_str() {
                out.push(Snippet {
                    what: format!("block {i}, GitHub step {:?}", step["name"]),
                    shell: github_shell(step["shell"].as_str()),
                    script: run.to_string(),
                    env,
                });
            } else if step["task"]
                .as_str()
                .is_some_and(|t| t.starts_with("AzureCLI@"))
            {
                let inputs = &step["inputs"];
                assert_eq!(inputs["scriptType"], "bash", "block {i}");
                let script = inputs["inlineScript"].as_str().expect("an inline script");
                // The task writes the inline script to a file and runs it with bash, no options
                // (microsoft/azure-pipelines-tasks#10125: only the last command's status counts).
                out.push(Snippet {
                    what: format!("block {i}, AzureCLI task {:?}", step["displayName"]),
                    shell: vec!["bash"],
                    script: ado_macros(script),
                    env,
                });
            }
        }
    }
    out
}

/// The README's pipeline blocks as YAML documents.
fn pipeline_docs() -> Vec<Value> {
    pipeline_blocks()
        .iter()
        .map(|b| serde_saphyr::from_str(b).unwrap())
        .collect()
}

/// GitHub: OIDC `azure/login` (a client-id, no secret) needs the job's `permissions: id-token:
/// write` ("Configuring OpenID Connect in Azure"), and v3 is the Node 24 release (v2's Node 20 is
/// retired). Azure Pipelines: `azureSubscription` is resolved at compile time, so a `$(var)` macro
/// (a runtime variable) cannot name the service connection; a literal or `${{ ... }}` can.
#[test]
fn readme_pipeline_snippets_log_in_the_way_each_ci_allows() {
    let docs = pipeline_docs();
    let mut logins = 0;
    let mut tasks = 0;
    for (i, doc) in docs.iter().enumerate() {
        let steps = if doc.is_object() { &doc["steps"] } else { doc };
        for step in steps.as_array().unwrap() {
            if let Some(uses) = step["uses"]
                .as_str()
                .filter(|u| u.starts_with("azure/login@"))
            {
                logins += 1;
                assert_eq!(uses, "azure/login@v3", "block {i}: the Node 24 release");
                assert_eq!(
                    doc["permissions"]["id-token"], "write",
                    "block {i}: OIDC azure/login needs the job's permissions: id-token: write"
                );
            }
            if step["task"]
                .as_str()
                .is_some_and(|t| t.starts_with("AzureCLI@"))
            {
                tasks += 1;
                let sub = step["inputs"]["azureSubscription"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    !sub.is_empty() && !sub.contains("$("),
                    "block {i}: azureSubscription {sub:?} must resolve at compile time (a literal or ${{{{ ... }}}})"
                );
            }
        }
    }
    assert!(
        logins >= 1 && tasks >= 2,
        "logins {logins}, AzureCLI tasks {tasks}"
    );
}

/// Stand-ins on PATH: `gridos-setup` fails as a failed install or a rolled-back canary does (an
/// error line on stderr, exit 1); `az`, `kubectl` and `kubelogin` succeed silently; `jq` prints null.
fn standins(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let scripts = [
        (
            "gridos-setup",
            "echo 'error: stand-in for gridos-setup: failing on purpose' >&2\nexit 1",
        ),
        ("az", "exit 0"),
        ("kubectl", "exit 0"),
        ("kubelogin", "exit 0"),
        ("jq", "cat >/dev/null\necho null"),
    ];
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n# Stand-in for {name} in gridos-setup's README snippet test.\n{body}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Runs the script under the shell in a scratch directory, stand-ins first on PATH; the exit code.
fn run(s: &Snippet, shell: &[&str], script: &str, bin: &Path, work: &Path) -> Option<i32> {
    let file = work.join("step.sh");
    std::fs::write(&file, script).unwrap();
    // What an earlier step (install -o json | tee install.ndjson) leaves for a later one.
    std::fs::write(
        work.join("install.ndjson"),
        "{\"event\":\"summary\",\"address\":\"203.0.113.10\"}\n",
    )
    .unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let mut cmd = Command::new(shell[0]);
    cmd.args(&shell[1..])
        .arg(&file)
        .current_dir(work)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("APP_HOST", "app.example.com")
        .env("AKS_RG", "gridos-rg")
        .env("AKS_NAME", "gridos-aks")
        .env("IMAGE", "gridos.azurecr.io/gridos-api:42")
        .stdin(std::process::Stdio::null());
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the snippet's shell").status.code()
}

/// The snippet as it would be without its fail-fast settings: the default GitHub shell, or the
/// inline script without `set -euo pipefail`.
fn without_pipefail(s: &Snippet) -> (Vec<&'static str>, String) {
    if s.shell.contains(&"pipefail") {
        return (github_shell(None), s.script.clone());
    }
    let script = s
        .script
        .lines()
        .filter(|l| l.trim() != "set -euo pipefail")
        .collect::<Vec<_>>()
        .join("\n");
    (s.shell.clone(), script)
}

#[test]
fn readme_pipeline_snippets_fail_when_gridos_setup_fails() {
    let root = std::env::temp_dir().join(unique_name("readme-snippets"));
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    standins(&bin);
    let all = snippets();
    let gated: Vec<&Snippet> = all
        .iter()
        .filter(|s| s.script.contains("gridos-setup"))
        .collect();
    assert_eq!(gated.len(), 4, "snippets that call gridos-setup: {all:#?}");
    for (i, s) in all.iter().enumerate() {
        let work = root.join(format!("run-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let code = run(s, &s.shell, &s.script, &bin, &work);
        if s.script.contains("gridos-setup") {
            assert!(
                code.is_some_and(|c| c != 0),
                "{}: the step passes although gridos-setup failed (exit {code:?}):\n{}",
                s.what,
                s.script
            );
            // The failure comes from the shell settings: without them the same script passes,
            // which is how the snippets behaved before (issue 14).
            let (shell, script) = without_pipefail(s);
            let work = root.join(format!("run-{i}-stripped"));
            std::fs::create_dir_all(&work).unwrap();
            assert_eq!(
                run(s, &shell, &script, &bin, &work),
                Some(0),
                "{}: without pipefail/-e the stand-in failure should go unnoticed",
                s.what
            );
        } else {
            assert_eq!(
                code,
                Some(0),
                "{}: fails even with working tools:\n{}",
                s.what,
                s.script
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The README's alerting commands, pasted into bash as they stand (with `set -eo pipefail`): the
/// install renders the AlertProvider, and the Secret it names holds the webhook address. Nothing is
/// sent to the URL (Flagger is not running its alerts here).
#[tokio::test]
async fn cluster_readme_alerting_commands_create_the_provider_and_its_secret() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DynamicObject};
    use kube::discovery::ApiResource;

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("**Alerts**").expect("the alerting paragraph");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").expect("its commands") + 6..];
    let script = &body[..body.find("```").unwrap()];

    let _lock = crate::util::cluster_lock().await;
    let c = crate::util::client().await;
    crate::util::reset(&c).await;
    let bin = Path::new(env!("CARGO_BIN_EXE_gridos-setup"))
        .parent()
        .unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let url = "https://example.invalid/webhook/gridos";
    let out = Command::new("bash")
        .args(["-eo", "pipefail", "-c", script])
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("KUBECONFIG", crate::util::kubeconfig())
        .env("TEAMS_WEBHOOK_URL", url)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::util::stdout(&out),
        crate::util::stderr(&out)
    );
    let secret = Api::<Secret>::namespaced(c.clone(), "gridos")
        .get("gridos-alerts")
        .await
        .unwrap();
    let address = secret.data.unwrap_or_default()["address"].0.clone();
    assert_eq!(address, url.as_bytes());
    let ar = ApiResource {
        group: "flagger.app".into(),
        version: "v1beta1".into(),
        api_version: "flagger.app/v1beta1".into(),
        kind: "AlertProvider".into(),
        plural: "alertproviders".into(),
    };
    let provider = Api::<DynamicObject>::namespaced_with(c.clone(), "gridos", &ar)
        .get("gridos-alerts")
        .await
        .unwrap();
    assert_eq!(provider.data["spec"]["type"], "msteams");
    assert_eq!(provider.data["spec"]["secretRef"]["name"], "gridos-alerts");
    crate::util::reset(&c).await;
}
