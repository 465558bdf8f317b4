//! `--dns-zone RESOURCE_GROUP/ZONE` and `--apply-dns`: which Azure DNS zone holds the host, and running the `az` commands that set its records.

use crate::error::InputError;

/// An Azure DNS zone and the resource group it lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsZone {
    pub resource_group: String,
    pub zone: String,
}

fn bad_zone(value: &str, reason: &str) -> InputError {
    InputError::OutOfRange {
        path: "--dns-zone".into(),
        value: format!("{value:?}"),
        reason: reason.into(),
        fix: "write --dns-zone RESOURCE_GROUP/ZONE, e.g. --dns-zone dns-rg/example.com".into(),
    }
}

impl DnsZone {
    /// Parses `RESOURCE_GROUP/ZONE`; a trailing dot on the zone is dropped.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let Some((rg, zone)) = text.split_once('/') else {
            return Err(bad_zone(text, "no '/' between resource group and zone"));
        };
        let rg_ok = crate::profile::is_resource_group(rg);
        if !rg_ok {
            return Err(bad_zone(
                text,
                "the resource group must be 1-90 letters, digits, '_', '(', ')', '-' or '.', not ending in '.'",
            ));
        }
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        if crate::profile::check_host(&zone).is_err() {
            return Err(bad_zone(
                text,
                "the zone is not a DNS name such as example.com",
            ));
        }
        Ok(DnsZone {
            resource_group: rg.to_string(),
            zone,
        })
    }

    /// Refuses a host outside the zone: records for it could not be created there.
    pub fn check_host(&self, host: &str) -> Result<(), InputError> {
        if crate::guidance::relative_name(host, &self.zone).is_some() {
            return Ok(());
        }
        Err(InputError::OutOfRange {
            path: "--dns-zone".into(),
            value: format!("{}/{}", self.resource_group, self.zone),
            reason: format!("host {host} is not inside zone {}", self.zone),
            fix: "give the zone that holds the host (e.g. example.com for app.example.com)".into(),
        })
    }
}

/// An `az` command of `--apply-dns` did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("`{command}` could not start: {reason}")]
    Spawn { command: String, reason: String },
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    Failed {
        command: String,
        status: String,
        stderr_tail: String,
    },
}

impl DnsError {
    pub fn hint(&self) -> String {
        match self {
            DnsError::Spawn { .. } => {
                "install the Azure CLI (az) and run `az login`, or drop --apply-dns and create the records yourself".into()
            }
            DnsError::Failed { .. } => {
                "fix the cause (`az login`, the zone's resource group, your DNS Zone Contributor role) and re-run; \
                 the install is done and setting the record again is harmless"
                    .into()
            }
        }
    }
}

/// The last lines of a command's stderr: where the Azure CLI says what went wrong.
fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    let joined = all[start..].join(" | ");
    if joined.is_empty() {
        "no output on stderr".into()
    } else {
        joined
    }
}

/// The argv as a shell command line, as the reports and errors show it.
fn display(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// Runs one argv and returns its stdout; a failure carries the end of its stderr.
fn run(argv: &[String]) -> Result<Vec<u8>, DnsError> {
    let command = display(argv);
    let Some((program, args)) = argv.split_first() else {
        return Ok(Vec::new());
    };
    let out = duct::cmd(program, args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| DnsError::Spawn {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DnsError::Failed {
            command,
            status: out.status.to_string(),
            stderr_tail: tail(&out.stderr, 3),
        });
    }
    Ok(out.stdout)
}

/// Runs each argv in order, calling `report` after each success; stops at the first failure.
pub fn run_commands(
    commands: &[Vec<String>],
    report: &mut dyn FnMut(&str),
) -> Result<(), DnsError> {
    for argv in commands {
        run(argv)?;
        report(&display(argv));
    }
    Ok(())
}

/// The addresses of an A record set as `az network dns record-set a show -o json` prints it
/// (`ARecords`, the REST property; `aRecords` from older CLI versions).
fn a_addresses(json: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    ["ARecords", "aRecords"]
        .iter()
        .filter_map(|k| v[k].as_array())
        .flatten()
        .filter_map(|r| r["ipv4Address"].as_str().map(String::from))
        .collect()
}

/// Makes the A record hold exactly `record.address`: adds it (creating the record set if needed),
/// then removes every other address, so the one that went with an old Service does not linger.
/// Adding first means the name never resolves to nothing in between.
pub fn replace_a_record(
    record: &crate::guidance::ARecord,
    report: &mut dyn FnMut(&str),
) -> Result<(), DnsError> {
    run_commands(&[record.add_argv()], report)?;
    let shown = run(&record.show_argv())?;
    let stale: Vec<Vec<String>> = a_addresses(&shown)
        .iter()
        .filter(|a| **a != record.address)
        .map(|a| record.remove_argv(a))
        .collect();
    run_commands(&stale, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_parses_and_checks_the_host() {
        let z = DnsZone::parse("dns-rg/Example.com.").unwrap();
        assert_eq!(
            z,
            DnsZone {
                resource_group: "dns-rg".into(),
                zone: "example.com".into()
            }
        );
        assert!(z.check_host("app.example.com").is_ok());
        assert!(z.check_host("example.com").is_ok());
        let e = z.check_host("app.example.org").unwrap_err();
        assert!(e.to_string().contains("not inside zone example.com"), "{e}");
        assert!(z.check_host("badexample.com").is_err());
    }

    #[test]
    fn bad_zones_are_refused_with_the_form_in_the_fix() {
        for text in [
            "example.com",
            "/example.com",
            "rg/",
            "rg/com",
            "r g/example.com",
            "rg./example.com",
        ] {
            let e = DnsZone::parse(text).unwrap_err();
            assert!(e.hint().contains("RESOURCE_GROUP/ZONE"), "{text}: {e}");
        }
    }

    #[test]
    fn a_failing_command_reports_its_stderr_tail() {
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let mut done = Vec::new();
        let e = run_commands(
            &[
                argv("true"),
                argv("echo one >&2; echo two >&2; exit 3"),
                argv("true"),
            ],
            &mut |c| done.push(c.to_string()),
        )
        .unwrap_err();
        assert_eq!(done, ["sh -c true"]);
        let text = e.to_string();
        assert!(
            text.contains("one | two") && text.contains("exit status: 3"),
            "{text}"
        );
    }
}
