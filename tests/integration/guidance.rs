//! The post-install guidance offline: text snapshots per profile with real values, and the JSON shape pipelines read.

use gridos_setup::guidance::{Guidance, GuidanceInput, guidance, to_text};
use gridos_setup::profile::{ProfileSource, Values, ValuesRequest, resolve};

const HOST: &str = "app.example.com";

fn values(profile: &str, sets: &[&str]) -> Values {
    resolve(&ValuesRequest {
        profile: Some(ProfileSource::Builtin(profile.into())),
        host: Some(HOST.into()),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .expect("builtin profile resolves")
}

/// The guidance as printed with the Azure CLI at hand and `--dns-zone dns-rg/example.com`: every step.
fn guide_with(profile: &str, sets: &[&str], address: &str) -> Guidance {
    guidance(&GuidanceInput {
        values: &values(profile, sets),
        address: Some(address),
        az_available: true,
        dns_zone: Some(("dns-rg", "example.com")),
    })
}

fn guide(profile: &str, address: &str) -> Guidance {
    guide_with(profile, &[], address)
}

#[test]
fn guidance_nginx_text() {
    insta::assert_snapshot!("guidance_nginx", to_text(&guide("nginx", "203.0.113.10")));
}

#[test]
fn guidance_appgw_text() {
    insta::assert_snapshot!("guidance_appgw", to_text(&guide("appgw", "198.51.100.10")));
}

#[test]
fn guidance_frontdoor_text() {
    insta::assert_snapshot!(
        "guidance_frontdoor",
        to_text(&guide("frontdoor", "203.0.113.10"))
    );
}

#[test]
fn guidance_frontdoor_private_link_text() {
    insta::assert_snapshot!(
        "guidance_frontdoor_private_link",
        to_text(&guide_with(
            "frontdoor",
            &["frontDoor.privateLink=true"],
            "198.51.100.10"
        ))
    );
}

/// Every command of the guidance parses as shell (`bash -n`).
pub fn assert_valid_shell(g: &Guidance, what: &str) {
    let script: String = g
        .next_steps
        .iter()
        .flat_map(|s| s.commands.iter())
        .map(|c| format!("{c}\n"))
        .collect();
    let out = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{what}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every command of the guidance parses as shell (`bash -n`), with its values as single words.
#[test]
fn guidance_commands_are_valid_shell() {
    for (profile, sets) in [
        ("nginx", &[][..]),
        ("appgw", &[][..]),
        ("frontdoor", &[][..]),
        ("frontdoor", &["frontDoor.privateLink=true"][..]),
    ] {
        let g = guide_with(profile, sets, "203.0.113.10");
        assert_valid_shell(&g, &format!("{profile} {sets:?}"));
        for c in g.next_steps.iter().flat_map(|s| s.commands.iter()) {
            if c.contains("--origin-host-header") {
                let words = shlex::split(c.rsplit("|| ").next().unwrap()).unwrap();
                let at = words
                    .iter()
                    .position(|w| w == "--origin-host-header")
                    .unwrap();
                assert_eq!(words[at + 1], HOST);
            }
        }
    }
}

#[test]
fn guidance_text_carries_the_values() {
    for (profile, address) in [
        ("nginx", "203.0.113.10"),
        ("appgw", "198.51.100.10"),
        ("frontdoor", "203.0.113.10"),
    ] {
        let text = to_text(&guide(profile, address));
        assert!(text.starts_with("DNS records\n"), "{profile}");
        assert!(
            text.contains("\nNext steps\n") && text.contains("\nWarnings\n"),
            "{profile}"
        );
        assert!(text.contains(HOST) && text.contains(address), "{profile}");
        assert!(text.contains("retired in March 2026"), "{profile}");
    }
}

#[test]
fn guidance_json_shape() {
    let j = serde_json::to_value(guide("frontdoor", "203.0.113.10")).unwrap();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["dns", "next_steps", "warnings"]);
    let types: Vec<&str> = j["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["TXT", "CNAME"]);
    assert!(
        j["dns"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("_dnsauth.")
    );
    assert!(
        j["dns"][1]["value"]
            .as_str()
            .unwrap()
            .ends_with(".azurefd.net")
    );
}

// ---- Cluster tests: the guidance a real install prints, and --apply-dns through a stand-in for `az`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gridos_setup::guidance::RETIREMENT_WARNING;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use crate::util::{client, cluster_lock, kubeconfig, ok, reset, stderr, stdout, unique_name};

/// `install --yes` on the test control plane; `path_first` is put before $PATH (for the `az` stand-in).
fn install(profile: &str, extra: &[&str], path_first: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args(["install", "--profile", profile, "--host", HOST, "--yes"])
        .args(extra)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .env_remove("GRIDOS_PROFILE")
        .stdin(std::process::Stdio::null());
    if let Some(dir) = path_first {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    cmd.output().expect("run gridos-setup")
}

/// A stand-in for the Azure CLI: a script named `az` that appends its arguments (one per line,
/// then `--`) to `calls` and exits with `code`, printing `stderr_text` on stderr.
struct AzStandIn {
    dir: PathBuf,
    calls: PathBuf,
}

impl AzStandIn {
    fn new(code: i32, stderr_text: &str) -> Self {
        Self::answering(code, stderr_text, "")
    }

    /// Like `new`, and `record-set a show` prints `show_json` (the record set as az prints it).
    fn answering(code: i32, stderr_text: &str, show_json: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(unique_name("az-standin"));
        std::fs::create_dir_all(&dir).unwrap();
        let calls = dir.join("calls");
        let script = format!(
            "#!/bin/sh\n# Stand-in for the Azure CLI in gridos-setup's tests: records argv, answers {code}.\n\
             for a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\necho -- >> '{}'\n\
             if [ \"$5\" = show ]; then printf '%s\\n' '{show_json}'; fi\n\
             printf '%s\\n' '{stderr_text}' >&2\nexit {code}\n",
            calls.display(),
            calls.display()
        );
        let az = dir.join("az");
        std::fs::write(&az, script).unwrap();
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        AzStandIn { dir, calls }
    }

    /// Each call's argv (without `az`).
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&self.calls).unwrap_or_default();
        text.split_terminator("--\n")
            .map(|call| call.lines().map(String::from).collect())
            .collect()
    }
}

impl Drop for AzStandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The guidance part of install's text output: from "DNS records" to the end.
fn guidance_part(text: &str) -> &str {
    let start = text
        .find("DNS records\n")
        .unwrap_or_else(|| panic!("no guidance in:\n{text}"));
    &text[start..]
}

/// The summary object: the last line of `-o json` output.
fn json_summary(out: &Output) -> serde_json::Value {
    let text = ok(out);
    let last = text.lines().last().expect("a summary line");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(v["event"], "summary", "{last}");
    v
}

async fn assigned_address(c: &kube::Client) -> String {
    let svc = Api::<Service>::namespaced(c.clone(), "ingress-nginx")
        .get("ingress-nginx-controller")
        .await
        .unwrap();
    gridos_setup::wait::service_address(&svc).expect("the stand-in assigned an address")
}

#[tokio::test]
async fn cluster_guidance_after_install_names_the_address_per_profile() {
    let _lock = cluster_lock().await;
    let c = client().await;
    for (profile, range) in [
        ("nginx", "203.0.113."),
        ("appgw", "198.51.100."),
        ("frontdoor", "203.0.113."),
    ] {
        reset(&c).await;
        let first = ok(&install(profile, &[], None));
        let address = assigned_address(&c).await;
        assert!(address.starts_with(range), "{profile}: {address}");
        let text = guidance_part(&first);
        assert!(
            text.contains(&address) && text.contains(HOST),
            "{profile}: guidance names {address}:\n{text}"
        );
        if profile == "nginx" {
            assert!(
                text.contains(&format!("A  {HOST}  ->  {address}\n")),
                "{text}"
            );
        }
        assert!(text.contains("retired in March 2026"), "{profile}");

        // Nothing changes on a re-run, and the guidance is the same.
        let again = ok(&install(profile, &[], None));
        assert!(again.contains("0 created, 0 configured"), "{again}");
        assert_eq!(guidance_part(&again), text, "{profile}: same guidance");

        let j = json_summary(&install(profile, &["-o", "json"], None));
        assert_eq!(j["address"], address.as_str(), "{profile}");
        let dns = j["dns"].as_array().expect("dns records");
        let kinds: Vec<&str> = dns.iter().map(|r| r["type"].as_str().unwrap()).collect();
        match profile {
            "nginx" => {
                assert_eq!(kinds, ["A"]);
                assert_eq!(dns[0]["name"], HOST);
                assert_eq!(dns[0]["value"], address.as_str());
            }
            "appgw" => {
                assert_eq!(kinds, ["A"]);
                assert_eq!(dns[0]["name"], HOST);
            }
            _ => {
                assert_eq!(kinds, ["TXT", "CNAME"]);
                let txt = dns[0]["name"].as_str().unwrap();
                assert!(txt.starts_with("_dnsauth"), "{txt}");
                let cname = dns[1]["value"].as_str().unwrap();
                assert!(cname.ends_with(".azurefd.net"), "{cname}");
            }
        }
        let steps = j["next_steps"].as_array().expect("next_steps");
        assert!(!steps.is_empty(), "{profile}");
        // nginx's address is the A record's value; behind a gateway or Front Door it goes into a step.
        if profile != "nginx" {
            assert!(
                steps.iter().any(|s| s.to_string().contains(&address)),
                "{profile}: a next step uses {address}"
            );
        }
        let warnings: Vec<&str> = j["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert!(
            warnings.contains(&RETIREMENT_WARNING),
            "{profile}: {warnings:?}"
        );

        if profile == "nginx" {
            apply_dns_through_the_az_stand_in(&address);
        }
    }
    reset(&c).await;
}

/// `--dns-zone` fills the az commands in; `--apply-dns` runs them (recorded by the stand-in): the
/// address is added, the set read back, and an older address in it removed; exit 1 when az fails.
fn apply_dns_through_the_az_stand_in(address: &str) {
    let az = AzStandIn::answering(
        0,
        "",
        &format!(
            r#"{{"ARecords":[{{"ipv4Address":"203.0.113.250"}},{{"ipv4Address":"{address}"}}],"TTL":3600,"fqdn":"app.example.com."}}"#
        ),
    );
    let out = install(
        "nginx",
        &["--dns-zone", "dns-rg/example.com", "--apply-dns"],
        Some(&az.dir),
    );
    let text = ok(&out);
    let call = |verb: &str, tail: &[&str]| {
        let mut v: Vec<String> = [
            "network",
            "dns",
            "record-set",
            "a",
            verb,
            "-g",
            "dns-rg",
            "-z",
            "example.com",
            "-n",
            "app",
        ]
        .map(String::from)
        .to_vec();
        v.extend(tail.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(
        az.calls(),
        vec![
            call("add-record", &["-a", address]),
            call("show", &["-o", "json"]),
            call(
                "remove-record",
                &["-a", "203.0.113.250", "--keep-empty-record-set"]
            ),
        ],
        "add, read back, remove the stale address"
    );
    let command = format!("az {}", call("add-record", &["-a", address]).join(" "));
    assert!(
        guidance_part(&text).contains(&command),
        "the guidance shows the command with the zone filled in:\n{text}"
    );
    for done in [
        command.clone(),
        format!(
            "az {}",
            call(
                "remove-record",
                &["-a", "203.0.113.250", "--keep-empty-record-set"]
            )
            .join(" ")
        ),
    ] {
        assert!(
            stderr(&out).contains(&format!("dns: {done}: done")),
            "each command is reported: {}",
            stderr(&out)
        );
    }

    let failing = AzStandIn::new(
        3,
        "ERROR: (AuthorizationFailed) no write access to zone example.com",
    );
    let out = install(
        "nginx",
        &["--dns-zone", "dns-rg/example.com", "--apply-dns"],
        Some(&failing.dir),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let last = stderr(&out)
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("error: ")
            && last.contains("AuthorizationFailed")
            && last.contains("add-record"),
        "the failing command and its stderr tail: {last}"
    );
    assert!(
        stdout(&out).contains("DNS records"),
        "the guidance is still printed: the install itself worked"
    );
    assert_eq!(failing.calls().len(), 1);
}

#[test]
fn apply_dns_is_refused_before_anything_is_written() {
    let kc = "/nonexistent/kubeconfig";
    for (args, says) in [
        (vec!["--apply-dns"], "--apply-dns needs --dns-zone"),
        (vec!["--dns-zone", "example.com"], "RESOURCE_GROUP/ZONE"),
        (
            vec!["--dns-zone", "rg/example.org"],
            "not inside zone example.org",
        ),
        (
            vec!["--dns-zone", "rg/example.com", "--apply-dns", "--no-wait"],
            "--apply-dns needs the load-balancer address",
        ),
    ] {
        let mut all = vec![
            "install",
            "--profile",
            "nginx",
            "--host",
            HOST,
            "--yes",
            "--kubeconfig",
            kc,
        ];
        all.extend(args);
        let out = crate::util::gridos(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{all:?}: {err}"
        );
    }
}
