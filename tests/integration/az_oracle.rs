//! Every `az` command the guidance and the README print, run through the real Azure CLI (logged out, offline): a parse error fails the test.
//!
//! The guidance's JSON `next_steps` (what `-o json` prints) for every variant are pasted into bash
//! the way a user pastes them, with a recording stand-in `az` first on PATH that answers each
//! `$(... --query Q)` capture with a placeholder of the right shape. Each recorded argv then goes to
//! the real CLI (`azure-cli` from PyPI, installed by `scripts/azure-cli`), imported once by
//! `az_parse.py` and run in a network namespace of its own with an empty AZURE_CONFIG_DIR: the CLI
//! parses every argument (sub-commands, flags, choices, required arguments) before it asks for an
//! account, so a correct command ends at "Please run 'az login'" and a wrong one exits 2.
//! `az extension add` is the one command that needs no account: offline it ends at the extension
//! index download, after its arguments parsed; that is the outcome the test accepts for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gridos_setup::guidance::{GuidanceInput, guidance};
use gridos_setup::profile::{ProfileSource, ValuesRequest, resolve};

use crate::util::unique_name;

const HOST: &str = "app.example.com";

/// One command's arguments, without the program.
type Argv = Vec<String>;

/// The `--query` captures the guidance makes, and what Azure would print for each (placeholders of
/// the right shape: resource IDs where an ID is read, an address where an address is).
const ANSWERS: &[(&str, &str)] = &[
    ("nodeResourceGroup", "MC_gridos-rg_gridos-aks_westeurope"),
    ("ipAddress", "203.0.113.50"),
    ("ARecords[].ipv4Address", "203.0.113.99"),
    ("validationProperties.validationToken", "placeholder-token"),
    ("domainValidationState", "Approved"),
    ("hostName", "gridos-abc123.z01.azurefd.net"),
    ("frontDoorId", "00000000-1111-2222-3333-444444444444"),
    ("location", "westeurope"),
    ("addressPrefix", "10.225.0.0/24"),
    (
        "[?properties.privateLinkServiceConnectionState.status=='Pending'].id",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MC_gridos-rg_gridos-aks_westeurope/providers/Microsoft.Network/privateLinkServices/gridos-pls/privateEndpointConnections/fd-conn",
    ),
    (
        "[?properties.privateLinkServiceConnectionState.status=='Approved'].id",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MC_gridos-rg_gridos-aks_westeurope/providers/Microsoft.Network/privateLinkServices/gridos-pls/privateEndpointConnections/fd-conn",
    ),
    (
        "values[?name=='AzureFrontDoor.Backend'].properties.addressPrefixes[]",
        "13.73.248.8/29\n147.243.0.0/16\n2a01:111:2050::/44",
    ),
];

/// What `--query id` prints, by command group: an ARM ID of the resource the command shows.
const IDS: &[(&str, &str)] = &[
    (
        "network vnet subnet",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vnet-rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/appgw-subnet",
    ),
    (
        "network private-link-service",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MC_gridos-rg_gridos-aks_westeurope/providers/Microsoft.Network/privateLinkServices/gridos-pls",
    ),
    (
        "afd custom-domain",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/gridos-rg/providers/Microsoft.Cdn/profiles/gridos-fd/customDomains/app-example-com",
    ),
    (
        "network front-door",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/gridos-rg/providers/Microsoft.Network/frontdoorWebApplicationFirewallPolicies/gridoswaf",
    ),
];

/// The recording stand-ins: `az` logs its argv (NUL-separated, then \x01) and answers captures;
/// `kubectl`, `helm`, `kubelogin` and `gridos-setup` log theirs; `sleep` returns at once, `jq` prints null. A `show` whose output
/// goes to /dev/null is the existence check of `show || create` (and `show && delete`): it answers
/// "exists" when ORACLE_EXISTS=1, so both branches get recorded over two runs.
fn standins(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut answers = String::new();
    for (q, out) in ANSWERS {
        answers.push_str(&format!("  {}) printf '%s\\n' {} ;;\n", sq(q), sq(out)));
    }
    let mut ids = String::new();
    for (group, id) in IDS {
        ids.push_str(&format!("    {}*) echo {} ;;\n", sq(group), sq(id)));
    }
    let az = format!(
        "#!/bin/bash\n# Stand-in for az in gridos-setup's oracle test: records argv for the real CLI.\n\
         {{ printf '%s\\0' \"$@\"; printf '\\001\\0'; }} >> \"$ORACLE_LOG.az\"\n\
         q=; prev=; for a in \"$@\"; do [ \"$prev\" = --query ] && q=$a; prev=$a; done\n\
         if [ \"$(readlink /proc/$$/fd/1)\" = /dev/null ]; then [ \"$ORACLE_EXISTS\" = 1 ]; exit; fi\n\
         case \"$q\" in\n  '') ;;\n{answers}  id) case \"$*\" in\n{ids}    *) echo \"unknown id: $*\" >> \"$ORACLE_LOG.unknown\" ;;\n    esac ;;\n\
           *) printf '%s\\n' \"$q\" >> \"$ORACLE_LOG.unknown\" ;;\nesac\nexit 0\n"
    );
    let record = |name: &str| {
        format!(
            "#!/bin/bash\n# Stand-in for {name} in gridos-setup's oracle test: records argv.\n\
             {{ printf '%s\\0' \"$@\"; printf '\\001\\0'; }} >> \"$ORACLE_LOG.{name}\"\nexit 0\n"
        )
    };
    for (name, body) in [
        ("az".to_string(), az),
        ("kubectl".into(), record("kubectl")),
        ("helm".into(), record("helm")),
        ("gridos-setup".into(), record("gridos-setup")),
        ("kubelogin".into(), record("kubelogin")),
        ("sleep".into(), "#!/bin/sh\nexit 0\n".into()),
        ("jq".into(), "#!/bin/sh\ncat >/dev/null\necho null\n".into()),
    ] {
        let path = dir.join(&name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A word single-quoted for the stand-in scripts.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a user sets the guidance's variables to (`NAME='<meaning>'` in its first step). CERT_PFX
/// names a file the test creates: `ssl-cert create` reads it before it asks for an account.
const USER_VALUES: &[(&str, &str)] = &[
    ("AZ_RG", "gridos-rg"),
    ("AZ_LOCATION", "westeurope"),
    ("APPGW_NAME", "gridos-appgw"),
    ("VNET_RG", "vnet-rg"),
    ("VNET_NAME", "aks-vnet"),
    ("APPGW_SUBNET_CIDR", "10.225.0.0/24"),
    ("WAF_POLICY", "gridos-waf"),
    ("CERT_PFX", "cert.pfx"),
    ("CERT_PASSWORD", "placeholder-password"),
    ("AFD_PROFILE", "gridos-fd"),
    ("AFD_ENDPOINT", "gridos-app"),
    ("AFD_WAF_POLICY", "gridoswaf"),
    ("AKS_RG", "gridos-rg"),
    ("AKS_NAME", "gridos-aks"),
    ("DNS_RG", "dns-rg"),
    ("DNS_ZONE", "example.com"),
];

/// The user's part of pasting: each variable set to a `<placeholder>` gets the user's value, and
/// each bare `<word>` placeholder elsewhere (`<chart>`, `<tag>`) a value too.
fn fill_placeholders(script: &str) -> String {
    let lines: Vec<String> = script
        .lines()
        .map(|line| {
            let Some((name, value)) = line.split_once('=') else {
                return line.to_string();
            };
            let quoted =
                |q: char| value.starts_with(&format!("{q}<")) && value.ends_with(&format!(">{q}"));
            if !name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                || !(quoted('\'') || quoted('"'))
            {
                return line.to_string();
            }
            let user = USER_VALUES
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| {
                    panic!("no user value for {name} (add it to USER_VALUES): {line}")
                });
            format!("{name}={}", user.1)
        })
        .collect();
    let script = lines.join("\n") + "\n";
    let mut out = String::new();
    let mut rest = script.as_str();
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let word = tail.find('>').map(|end| &tail[..end]).filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        match word {
            Some(w) => {
                out.push_str(&format!("placeholder-{w}"));
                rest = &tail[w.len() + 1..];
            }
            None => {
                out.push('<');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Records written by a stand-in: each argv.
fn records(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut current = Vec::new();
    for field in bytes.split(|b| *b == 0) {
        match field {
            [1] => out.push(std::mem::take(&mut current)),
            [] => {}
            f => current.push(String::from_utf8_lossy(f).into_owned()),
        }
    }
    out
}

/// What a script ran: argv per stand-in name, over both existence answers.
struct Run {
    az: Vec<Vec<String>>,
    kubectl: Vec<Vec<String>>,
}

/// Runs `script` under `shell` with the stand-ins first on PATH, twice (nothing exists / all
/// exists); fails on a non-zero exit or a capture the stand-in cannot answer.
fn paste(what: &str, shell: &[&str], script: &str, env: &[(String, String)]) -> Run {
    let dir = std::env::temp_dir().join(unique_name("az-oracle"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    standins(&bin);
    let log = dir.join("log");
    std::fs::write(dir.join("cert.pfx"), b"").unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    for exists in ["0", "1"] {
        let file = dir.join("script.sh");
        std::fs::write(&file, fill_placeholders(script)).unwrap();
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg(&file)
            .current_dir(&dir)
            .env("PATH", std::env::join_paths(&dirs).unwrap())
            .env("ORACLE_LOG", &log)
            .env("ORACLE_EXISTS", exists)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run bash");
        assert!(
            out.status.success(),
            "{what} (exists={exists}): the pasted commands fail under {shell:?}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let unknown = std::fs::read_to_string(log.with_extension("unknown")).unwrap_or_default();
    assert!(
        unknown.is_empty(),
        "{what}: captures the az stand-in has no answer for (add them to ANSWERS/IDS):\n{unknown}"
    );
    let run = Run {
        az: records(&log.with_extension("az")),
        kubectl: records(&log.with_extension("kubectl")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// The guidance variants: every profile, both traffic layers, Private Link, the pinned-address
/// variants, with and without `--dns-zone` and the Azure CLI, with and without an address.
fn variants() -> Vec<(String, Vec<String>, bool, bool, bool)> {
    let mut out = Vec::new();
    let sets: &[(&str, &[&str])] = &[
        ("nginx", &[]),
        (
            "nginx",
            &["ingressController.service.publicIpName=gridos-ingress"],
        ),
        ("nginx", &["ingressController.service.dnsLabel=gridos-app"]),
        ("appgw", &[]),
        (
            "appgw",
            &["ingressController.service.privateIp=10.224.0.50"],
        ),
        ("frontdoor", &[]),
        ("frontdoor", &["frontDoor.originProtocol=http"]),
        (
            "frontdoor",
            &["ingressController.service.publicIpName=gridos-ingress"],
        ),
        ("frontdoor", &["frontDoor.privateLink=true"]),
        (
            "frontdoor",
            &[
                "frontDoor.privateLink=true",
                "frontDoor.privateLinkSubnet=pls-subnet",
                "ingressController.service.privateIp=10.224.0.50",
            ],
        ),
    ];
    for layer in ["ingress-nginx", "gateway-api"] {
        for (profile, extra) in sets {
            let mut all: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            all.push(format!("traffic.layer={layer}"));
            if layer == "gateway-api" && *profile == "frontdoor" {
                all.push("gateway.tls.secretName=app-tls".into());
            }
            for (zone, az, address) in [
                (true, true, true),
                (false, true, true),
                (false, false, true),
                (true, true, false),
            ] {
                out.push((profile.to_string(), all.clone(), zone, az, address));
            }
        }
    }
    out
}

/// Every argv the guidance makes `az` run, per variant (label -> argvs), and every kubectl argv.
fn guidance_commands() -> (BTreeMap<String, Vec<Argv>>, Vec<Argv>) {
    let mut az = BTreeMap::new();
    let mut kubectl = Vec::new();
    for (profile, sets, zone, az_available, address) in variants() {
        let v = resolve(&ValuesRequest {
            profile: Some(ProfileSource::Builtin(profile.clone())),
            host: Some(HOST.into()),
            sets: sets.clone(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{profile} {sets:?}: {e}"));
        let g = guidance(&GuidanceInput {
            values: &v,
            address: address.then_some("198.51.100.10"),
            az_available,
            dns_zone: zone.then_some(("dns-rg", "example.com")),
        });
        // The commands as pipelines read them: the JSON `next_steps`.
        let json = serde_json::to_value(&g).unwrap();
        let mut script = String::new();
        for step in json["next_steps"].as_array().unwrap() {
            for c in step["commands"].as_array().unwrap() {
                script.push_str(c.as_str().unwrap());
                script.push('\n');
            }
        }
        // Commands a warning names in backticks (e.g. the Gateway API enablement).
        for w in json["warnings"].as_array().unwrap() {
            for (i, part) in w.as_str().unwrap().split('`').enumerate() {
                if i % 2 == 1 && part.starts_with("az ") {
                    script.push_str(part);
                    script.push('\n');
                }
            }
        }
        let label =
            format!("{profile} {sets:?} dns-zone={zone} az={az_available} address={address}");
        let run = paste(&label, &["bash", "-e"], &script, &[]);
        assert!(
            !run.az.is_empty() || !az_available || profile == "nginx",
            "{label}"
        );
        kubectl.extend(run.kubectl);
        az.insert(label, run.az);
    }
    (az, kubectl)
}

/// The README's `az` commands: each line of a ```sh block that starts with `az `, and every `az` the
/// pipeline snippets run under their CI's shell.
fn readme_commands() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut script = String::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim_end() {
            "```sh" | "```bash" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && l.trim_start().starts_with("az ") => {
                script.push_str(l.trim_start());
                script.push('\n');
            }
            _ => {}
        }
    }
    let mut all = paste("README sh blocks", &["bash", "-e"], &script, &[]).az;
    for s in crate::readme::snippets()
        .into_iter()
        .filter(|s| s.script.contains("az "))
    {
        let mut env = s.env.clone();
        env.extend(
            [
                ("APP_HOST", HOST),
                ("AKS_RG", "gridos-rg"),
                ("AKS_NAME", "gridos-aks"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        // gridos-setup is recorded, not run: the step runs to its end.
        all.extend(paste(&s.what, &s.shell, &s.script, &env).az);
    }
    all
}

/// The real Azure CLI's virtualenv, installed (or found warm) by `scripts/azure-cli`.
fn azure_cli_python() -> PathBuf {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/azure-cli"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/azure-cli");
    assert!(out.status.success(), "scripts/azure-cli failed");
    let az = String::from_utf8(out.stdout).unwrap();
    let az = PathBuf::from(az.trim().lines().last().unwrap());
    az.parent().unwrap().join("python")
}

/// One verdict of the real CLI on one argv.
#[derive(serde::Deserialize)]
struct Verdict {
    argv: Vec<String>,
    code: i32,
    stderr: String,
}

/// Runs every argv through the real CLI in one process (az_parse.py), offline and logged out.
fn parse_all(argvs: &BTreeSet<Vec<String>>) -> Vec<Verdict> {
    let python = azure_cli_python();
    let config = std::env::temp_dir().join(unique_name("azure-config"));
    std::fs::create_dir_all(&config).unwrap();
    // The CLI runs where the user pasted: CERT_PFX (USER_VALUES) is a file there.
    std::fs::write(config.join("cert.pfx"), b"").unwrap();
    let input = serde_json::to_vec(&argvs.iter().collect::<Vec<_>>()).unwrap();
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/az_parse.py"
        ))
        .current_dir(&config)
        .env("AZURE_CONFIG_DIR", &config)
        .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
        .env("AZURE_CORE_NO_COLOR", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the Azure CLI driver under unshare --net");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Azure CLI driver failed");
    let _ = std::fs::remove_dir_all(&config);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Command groups of CLI extensions that are not on PyPI (Azure serves extensions from its own
/// index, which this offline test cannot reach), with the extension the guidance adds first:
/// `az network front-door waf-policy` is the front-door extension's. The pinned CLI does not know
/// them, so they are not parsed; the test checks that the extension is added before their first use
/// and reports how many there are.
const EXTENSION_GROUPS: &[(&[&str], &str)] = &[(&["network", "front-door"], "front-door")];

/// The extension an argv needs, when it is one of [`EXTENSION_GROUPS`].
fn extension_of(argv: &[String]) -> Option<&'static str> {
    EXTENSION_GROUPS
        .iter()
        .find(|(group, _)| argv.len() >= group.len() && group.iter().zip(argv).all(|(g, a)| g == a))
        .map(|(_, ext)| *ext)
}

/// Whether the real CLI accepted the argv: it got as far as wanting an account (or, for `az
/// extension add`, the extension index on the network).
fn accepted(v: &Verdict) -> bool {
    let login = v.code == 1 && v.stderr.contains("Please run 'az login' to setup account.");
    let index = v
        .argv
        .starts_with(&["extension".to_string(), "add".to_string()])
        && v.code == 1
        && v.stderr.contains("Unable to get extension index");
    login || index
}

#[test]
fn the_real_azure_cli_accepts_every_printed_az_command() {
    let (per_variant, _) = guidance_commands();
    let readme = readme_commands();
    let mut all: BTreeSet<Vec<String>> = BTreeSet::new();
    for argvs in per_variant.values() {
        all.extend(argvs.iter().cloned());
    }
    all.extend(readme.iter().cloned());
    // Both branches of `show || create` and `if show; then delete; fi` were taken (the stand-in's
    // existence answer works).
    for verb in ["create", "delete"] {
        assert!(
            all.iter().any(|a| a.iter().any(|w| w == verb)),
            "no `{verb}` recorded: the stand-in's existence answer is broken"
        );
    }
    // Extension commands come after the `az extension add` that brings their group.
    for (label, argvs) in &per_variant {
        for (i, argv) in argvs.iter().enumerate() {
            if let Some(ext) = extension_of(argv) {
                let add = ["extension", "add", "--name", ext, "--upgrade"].map(String::from);
                assert!(
                    argvs[..i].iter().any(|a| a[..] == add[..]),
                    "{label}: az {} before az extension add --name {ext}",
                    argv.join(" ")
                );
            }
        }
    }
    let (unparsed, all): (BTreeSet<Argv>, BTreeSet<Argv>) =
        all.into_iter().partition(|a| extension_of(a).is_some());
    let verdicts = parse_all(&all);
    assert_eq!(verdicts.len(), all.len(), "one verdict per command");
    let refused: Vec<String> = verdicts
        .iter()
        .filter(|v| !accepted(v))
        .map(|v| {
            format!(
                "az {}\n  exit {}: {}",
                v.argv.join(" "),
                v.code,
                v.stderr.trim()
            )
        })
        .collect();
    // The figures for the issue's note: commands per variant and the CLI version.
    for (label, argvs) in &per_variant {
        eprintln!(
            "az commands: {:3} ({:3} distinct)  {label}",
            argvs.len(),
            argvs.iter().collect::<BTreeSet<_>>().len()
        );
    }
    eprintln!(
        "az commands: {} from the README; {} distinct in all, checked with azure-cli {}; {} of extensions not on PyPI, not parsed",
        readme.len(),
        all.len(),
        azure_cli_version(),
        unparsed.len()
    );
    for a in &unparsed {
        eprintln!(
            "not parsed (extension {}): az {}",
            extension_of(a).unwrap_or_default(),
            a.join(" ")
        );
    }
    assert!(
        refused.is_empty(),
        "the real Azure CLI refuses {} of {} printed commands:\n{}",
        refused.len(),
        all.len(),
        refused.join("\n")
    );
}

/// The installed CLI's version, from its package metadata.
fn azure_cli_version() -> String {
    let out = Command::new(azure_cli_python())
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('azure-cli'))",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What kubectl says when a command line is wrong (cobra's flag and argument errors, a jsonpath or
/// a resource name it cannot parse), as opposed to what the cluster lacks (NotFound).
const KUBECTL_USAGE_ERRORS: &[&str] = &[
    "unknown flag",
    "unknown shorthand flag",
    "unknown command",
    "flag needs an argument",
    "invalid argument",
    "error parsing",
    "unrecognized",
    "accepts ",
    "required flag",
    "must specify",
];

/// Runs `kubectl ARGV` against the test control plane for at most `secs` seconds (a `--watch`,
/// `logs -f` or `port-forward` runs until stopped): its stderr, and whether it was still running.
fn kubectl_for(argv: &[String], secs: u64) -> (String, bool) {
    let dir = std::env::temp_dir().join(unique_name("kubectl-oracle"));
    std::fs::create_dir_all(&dir).unwrap();
    let err = dir.join("stderr");
    let mut child = Command::new(crate::util::on_path("kubectl"))
        .args(argv)
        .arg("--kubeconfig")
        .arg(crate::util::kubeconfig())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run kubectl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut running = false;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            running = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (text, running)
}

/// Every `kubectl` command the guidance prints (ingress-nginx and Gateway API variants), run against
/// the test control plane after an install, with the app's Deployment in place: none is refused as a
/// command line. Writes (`set image`) run with `--dry-run=server`; commands that stream run for 5 s.
#[tokio::test]
async fn cluster_every_printed_kubectl_command_runs_against_the_control_plane() {
    let _lock = crate::util::cluster_lock().await;
    let c = crate::util::client().await;
    crate::util::reset(&c).await;
    crate::util::ok(&crate::util::install_nginx());
    // The app the guidance's deploy step would create: Deployment gridos, container gridos.
    let (err, _) = kubectl_for(
        &[
            "create",
            "deployment",
            "gridos",
            "--image=registry.example/gridos",
            "-n",
            "gridos",
        ]
        .map(String::from),
        30,
    );
    // A warning (Pod Security "restricted" in the app namespace) is fine; an error is not.
    assert!(!err.contains("error"), "{err}");
    let (_, kubectl) = guidance_commands();
    let distinct: BTreeSet<Argv> = kubectl.into_iter().collect();
    assert!(distinct.len() >= 8, "{distinct:#?}");
    let mut refused = Vec::new();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for argv in &distinct {
        let mut run = argv.clone();
        if run.first().is_some_and(|v| v == "set") {
            run.push("--dry-run=server".into());
        }
        let (err, running) = kubectl_for(&run, 5);
        let outcome = if running {
            "ran until stopped"
        } else if !err.contains("rror") {
            "succeeded"
        } else {
            // NotFound for what Flagger or the Gateway layer would create, and no kubelet behind
            // kwok's nodes for logs and port-forward: the command line itself was taken.
            "refused by the cluster, not as a command line"
        };
        *outcomes.entry(outcome).or_default() += 1;
        eprintln!(
            "kubectl {}: {outcome}: {}",
            run.join(" "),
            err.trim().lines().next().unwrap_or_default()
        );
        if KUBECTL_USAGE_ERRORS.iter().any(|p| err.contains(p)) {
            refused.push(format!("kubectl {}\n  {}", run.join(" "), err.trim()));
        }
    }
    eprintln!(
        "kubectl commands: {} distinct: {outcomes:?}",
        distinct.len()
    );
    crate::util::reset(&c).await;
    assert!(
        refused.is_empty(),
        "kubectl refuses printed commands:\n{}",
        refused.join("\n")
    );
}
