//! Post-install guidance: the DNS records to create and the next steps, per profile, with the real values filled in.
//!
//! Pure logic, no cluster access: the integrator passes the resolved [`Values`], the ingress
//! controller's load-balancer address (if known) and whether the Azure CLI is at hand. What the
//! tool cannot know (gateway, Front Door and resource-group names, tokens) stays a `<placeholder>`.
//!
//! Record names are fully qualified (`app.example.com`, `_dnsauth.app.example.com`) because the
//! DNS zone is usually unknown; each record's note gives the name relative to the zone, which is
//! what Azure DNS and most DNS consoles ask for.

use serde::Serialize;

use crate::profile::{Front, Values};

/// What the user must do after install, for people (text) and pipelines (JSON).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Guidance {
    pub dns: Vec<DnsRecord>,
    pub next_steps: Vec<Step>,
    pub warnings: Vec<String>,
}

/// One DNS record to create; `value` may be a `<placeholder>` when only Azure knows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DnsRecord {
    /// `A`, `TXT` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Fully qualified name.
    pub name: String,
    pub value: String,
    pub note: Option<String>,
}

/// One thing to do, with shell commands ready to copy (placeholders in `<...>`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Step {
    pub title: String,
    pub commands: Vec<String>,
    pub note: Option<String>,
}

/// What the guidance is computed from.
pub struct GuidanceInput<'a> {
    pub values: &'a Values,
    /// The ingress controller's load-balancer address; `None` with `--no-wait` or `--dry-run`.
    pub address: Option<&'a str>,
    /// Whether the `az` CLI is installed; adds ready-to-run DNS commands.
    pub az_available: bool,
    /// The Azure DNS zone the host lives in: (resource group, zone).
    pub dns_zone: Option<(&'a str, &'a str)>,
}

/// Stands in for the address while the load balancer has none yet.
pub const ADDRESS_PENDING: &str = "<address pending: run gridos-setup status>";
/// Stands in for the Application Gateway's public IP (the A record's value with `appgw`).
pub const APPGW_PUBLIC_IP: &str = "<application-gateway-public-ip>";
/// Stands in for the Front Door endpoint's host name (the CNAME's value with `frontdoor`).
pub const AFD_ENDPOINT_HOST: &str = "<endpoint>.z01.azurefd.net";

/// The retirement notice every profile carries.
pub const RETIREMENT_WARNING: &str = "ingress-nginx was retired in March 2026 and gets no more \
     security fixes. Plan the move to the Gateway API: Application Gateway for Containers on AKS, \
     or another Gateway API implementation; Flagger supports it as provider gatewayapi:v1.";

/// Placeholders of the Azure resources the tool cannot know.
const RG: &str = "<resource-group>";
const GATEWAY: &str = "<gateway-name>";
const POOL: &str = "<pool-name>";
const HTTP_SETTINGS: &str = "<http-settings-name>";
const PROBE: &str = "gridos-healthz";
const AFD_PROFILE: &str = "<profile-name>";
const AFD_ENDPOINT: &str = "<endpoint>";
const AFD_ORIGIN_GROUP: &str = "<origin-group-name>";
const AFD_DOMAIN: &str = "<custom-domain-name>";
const PLS_ID: &str = "<private-link-service-id>";
const DNS_RG: &str = "<dns-resource-group>";
const DNS_ZONE: &str = "<dns-zone>";
const DNS_NAME: &str = "<name-in-zone>";

/// The guidance for the profile in `input.values`.
pub fn guidance(input: &GuidanceInput) -> Guidance {
    let v = input.values;
    let address = input.address.unwrap_or(ADDRESS_PENDING);
    let mut dns = Vec::new();
    let mut steps = Vec::new();
    let mut warnings = Vec::new();

    if input.address.is_none() {
        warnings.push(format!(
            "The ingress controller has no load-balancer address yet; commands show {ADDRESS_PENDING}. \
             Run `gridos-setup status` (or `kubectl get service ingress-nginx-controller -n {}`) once Azure has assigned it.",
            v.namespaces.ingress
        ));
    }

    match v.front {
        Front::Nginx => {
            dns.push(DnsRecord {
                kind: "A".into(),
                name: v.host.clone(),
                value: address.into(),
                note: Some(format!(
                    "the ingress controller's public load-balancer address; {}",
                    relative_note(&v.host, input.dns_zone)
                )),
            });
        }
        Front::Appgw => {
            dns.push(DnsRecord {
                kind: "A".into(),
                name: v.host.clone(),
                value: APPGW_PUBLIC_IP.into(),
                note: Some(format!(
                    "the Application Gateway's public IP, not the private address {address}: \
                     az network public-ip show -g {RG} -n <gateway-public-ip-name> --query ipAddress -o tsv; {}",
                    relative_note(&v.host, input.dns_zone)
                )),
            });
            steps.extend(appgw_steps(v, address));
        }
        Front::Frontdoor => {
            dns.push(DnsRecord {
                kind: "TXT".into(),
                name: format!("_dnsauth.{}", v.host),
                value: format!(
                    "<validation-token from: az afd custom-domain show -g {RG} --profile-name {AFD_PROFILE} \
                     --custom-domain-name {AFD_DOMAIN} --query validationProperties.validationToken -o tsv>"
                ),
                note: Some(format!(
                    "proves to Front Door that you own the domain (the token expires after 7 days); {}",
                    relative_note(&format!("_dnsauth.{}", v.host), input.dns_zone)
                )),
            });
            dns.push(DnsRecord {
                kind: "CNAME".into(),
                name: v.host.clone(),
                value: AFD_ENDPOINT_HOST.into(),
                note: Some(format!(
                    "the Front Door endpoint's host name: az afd endpoint show -g {RG} --profile-name {AFD_PROFILE} \
                     --endpoint-name {AFD_ENDPOINT} --query hostName -o tsv; {}",
                    relative_note(&v.host, input.dns_zone)
                )),
            });
            if let Some((_, zone)) = input.dns_zone
                && v.host == zone
            {
                warnings.push(format!(
                    "{} is the zone apex, where a CNAME cannot be: use an alias record to the Front Door endpoint instead \
                     (az network dns record-set a create -g <dns-resource-group> -z {zone} -n @ --target-resource <endpoint-resource-id>).",
                    v.host
                ));
            }
            steps.extend(frontdoor_steps(v, address));
        }
    }

    if let Some((_, zone)) = input.dns_zone
        && relative_name(&v.host, zone).is_none()
    {
        warnings.push(format!(
            "{} is not inside the DNS zone {zone}: create the records in the zone that holds the host.",
            v.host
        ));
    }

    if input.az_available {
        steps.insert(0, az_dns_step(v, address, input.dns_zone));
    }
    steps.extend(app_steps(v));
    steps.extend(grafana_step(v));
    warnings.push(RETIREMENT_WARNING.into());

    Guidance {
        dns,
        next_steps: steps,
        warnings,
    }
}

/// `az network dns record-set ...` argv lists for the records whose value is known, for `--apply-dns`.
///
/// Only the `nginx` profile has one (A `host` -> `address`); the Application Gateway's public IP
/// and Front Door's token and endpoint are not known to the tool, so those yield nothing. A host
/// outside `zone` yields nothing either. `add-record` adds the address to the record set (a no-op
/// when it is there); an older address in the set stays until removed with `remove-record`.
pub fn az_dns_commands(
    values: &Values,
    address: &str,
    resource_group: &str,
    zone: &str,
) -> Vec<Vec<String>> {
    if values.front != Front::Nginx {
        return Vec::new();
    }
    let Some(name) = relative_name(&values.host, zone) else {
        return Vec::new();
    };
    vec![a_record_argv(resource_group, zone, &name, address)]
}

fn a_record_argv(rg: &str, zone: &str, name: &str, address: &str) -> Vec<String> {
    [
        "az",
        "network",
        "dns",
        "record-set",
        "a",
        "add-record",
        "-g",
        rg,
        "-z",
        zone,
        "-n",
        name,
        "-a",
        address,
    ]
    .map(String::from)
    .to_vec()
}

/// The name of `fqdn` relative to `zone` (`@` for the apex); `None` when it is not inside the zone.
pub fn relative_name(fqdn: &str, zone: &str) -> Option<String> {
    let zone = zone.trim_end_matches('.');
    if fqdn == zone {
        return Some("@".into());
    }
    fqdn.strip_suffix(zone)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|rest| !rest.is_empty())
        .map(String::from)
}

/// The zone people most likely use: the parent domain of a host with three or more labels, else the host.
fn likely_zone(host: &str) -> &str {
    match host.split_once('.') {
        Some((_, parent)) if parent.contains('.') => parent,
        _ => host,
    }
}

/// "in zone Z the name is N", from the given zone or, without one, the likely zone as an example.
fn relative_note(fqdn: &str, dns_zone: Option<(&str, &str)>) -> String {
    match dns_zone {
        Some((_, zone)) => match relative_name(fqdn, zone) {
            Some(rel) => format!("in zone {zone} the record's name is {rel}"),
            None => format!("not inside zone {zone}"),
        },
        None => {
            // The TXT record's name is `_dnsauth.` plus the host's name in its zone.
            let host = fqdn.strip_prefix("_dnsauth.").unwrap_or(fqdn);
            let zone = likely_zone(host);
            let rel = relative_name(fqdn, zone).unwrap_or_else(|| fqdn.to_string());
            format!("name relative to the zone, e.g. {rel} in zone {zone}")
        }
    }
}

fn shell_join(argv: &[String]) -> String {
    argv.join(" ")
}

/// Ready-to-run `az network dns` commands for every record of the profile.
fn az_dns_step(v: &Values, address: &str, dns_zone: Option<(&str, &str)>) -> Step {
    let (rg, zone, name) = match dns_zone {
        Some((rg, zone)) => (
            rg.to_string(),
            zone.to_string(),
            relative_name(&v.host, zone).unwrap_or_else(|| DNS_NAME.into()),
        ),
        None => (DNS_RG.into(), DNS_ZONE.into(), DNS_NAME.into()),
    };
    let txt_name = if name == "@" {
        "_dnsauth".to_string()
    } else {
        format!("_dnsauth.{name}")
    };
    let commands = match v.front {
        Front::Nginx => vec![shell_join(&a_record_argv(&rg, &zone, &name, address))],
        Front::Appgw => vec![shell_join(&a_record_argv(
            &rg,
            &zone,
            &name,
            APPGW_PUBLIC_IP,
        ))],
        Front::Frontdoor => vec![
            format!(
                "az network dns record-set txt add-record -g {rg} -z {zone} -n {txt_name} -v <validation-token>"
            ),
            format!(
                "az network dns record-set cname set-record -g {rg} -z {zone} -n {name} -c {AFD_ENDPOINT_HOST}"
            ),
        ],
    };
    let note = if dns_zone.is_none() {
        let example = relative_name(&v.host, likely_zone(&v.host)).unwrap_or_default();
        Some(format!(
            "{DNS_NAME} is the host's name relative to the zone, e.g. {example} for {} in zone {}",
            v.host,
            likely_zone(&v.host)
        ))
    } else {
        None
    };
    Step {
        title: "Create the DNS records in Azure DNS".into(),
        commands,
        note,
    }
}

/// Backend pool, health probe and HTTP settings of the Application Gateway.
fn appgw_steps(v: &Values, address: &str) -> Vec<Step> {
    let host = &v.host;
    vec![
        Step {
            title: format!("Put the ingress controller's private address {address} in the Application Gateway backend pool"),
            commands: vec![format!(
                "az network application-gateway address-pool update -g {RG} --gateway-name {GATEWAY} -n {POOL} --servers {address}"
            )],
            note: Some("the internal load balancer's address in the cluster's VNet; the gateway needs a route to it (same or peered VNet)".into()),
        },
        Step {
            title: format!("Add a health probe on /healthz with Host {host}"),
            commands: vec![format!(
                "az network application-gateway probe create -g {RG} --gateway-name {GATEWAY} -n {PROBE} \
                 --protocol Http --host {host} --path /healthz --interval 30 --timeout 30 --threshold 3"
            )],
            note: Some(format!(
                "with Host {host} the probe reaches the app's Ingress, so the app must answer /healthz with 200-399"
            )),
        },
        Step {
            title: format!("Send traffic on port 80 with host name {host}"),
            commands: vec![format!(
                "az network application-gateway http-settings update -g {RG} --gateway-name {GATEWAY} -n {HTTP_SETTINGS} \
                 --port 80 --protocol Http --probe {PROBE} --host-name {host}"
            )],
            note: Some(format!(
                "the host name override makes NGINX pick the app's Ingress for {host}; the listener and rule stay yours"
            )),
        },
    ]
}

/// Origin (public address or Private Link), custom domain, route and the origin lock of Front Door.
fn frontdoor_steps(v: &Values, address: &str) -> Vec<Step> {
    let host = &v.host;
    let ingress_ns = &v.namespaces.ingress;
    let mut steps = vec![Step {
        title: "Create a Front Door origin group that probes /healthz".into(),
        commands: vec![format!(
            "az afd origin-group create -g {RG} --profile-name {AFD_PROFILE} --origin-group-name {AFD_ORIGIN_GROUP} \
             --probe-request-type GET --probe-protocol Http --probe-interval-in-seconds 60 --probe-path /healthz \
             --sample-size 4 --successful-samples-required 3 --additional-latency-in-milliseconds 50"
        )],
        note: Some(format!(
            "Front Door probes with the origin host header {host}, so the app's Ingress answers /healthz"
        )),
    }];
    let origin = format!(
        "az afd origin create -g {RG} --profile-name {AFD_PROFILE} --origin-group-name {AFD_ORIGIN_GROUP} \
         --origin-name gridos --host-name {address} --origin-host-header {host} --http-port 80 --https-port 443 \
         --priority 1 --weight 1000 --enabled-state Enabled"
    );
    if v.front_door.private_link {
        steps.push(Step {
            title: "Find the Private Link service AKS created for the ingress controller".into(),
            commands: vec![
                "az aks show -g <aks-resource-group> -n <cluster-name> --query nodeResourceGroup -o tsv".into(),
                "az network private-link-service list -g <node-resource-group> --query \"[].{name:name, id:id}\" -o table".into(),
            ],
            note: Some(format!(
                "the Service ingress-nginx-controller in {ingress_ns} carries azure-pls-create: \"true\"; \
                 the service's id is {PLS_ID} below (Front Door Premium only)"
            )),
        });
        steps.push(Step {
            title: format!("Add the ingress controller as a Private Link origin with origin host header {host}"),
            commands: vec![format!(
                "{origin} --enable-private-link true --private-link-resource {PLS_ID} \
                 --private-link-location <region> --private-link-request-message \"Front Door origin for {host}\""
            )],
            note: Some(format!("origin = the internal address {address} behind the Private Link service; origin host header = {host}")),
        });
        steps.push(Step {
            title: "Approve Front Door's pending private endpoint connection".into(),
            commands: vec![
                format!("az network private-endpoint-connection list --id {PLS_ID} --query \"[?properties.privateLinkServiceConnectionState.status=='Pending'].id\" -o tsv"),
                "az network private-endpoint-connection approve --id <connection-id> --description \"Front Door gridos origin\"".into(),
            ],
            note: Some("Front Door reaches the origin only after this approval; until then it answers 502/504".into()),
        });
    } else {
        steps.push(Step {
            title: format!(
                "Add the ingress controller {address} as the origin with origin host header {host}"
            ),
            commands: vec![origin],
            note: None,
        });
    }
    steps.push(Step {
        title: format!("Add {host} as a custom domain and read its validation token (the TXT record above)"),
        commands: vec![
            format!(
                "az afd custom-domain create -g {RG} --profile-name {AFD_PROFILE} --custom-domain-name {AFD_DOMAIN} \
                 --host-name {host} --certificate-type ManagedCertificate --minimum-tls-version TLS12"
            ),
            format!(
                "az afd custom-domain show -g {RG} --profile-name {AFD_PROFILE} --custom-domain-name {AFD_DOMAIN} \
                 --query validationProperties.validationToken -o tsv"
            ),
        ],
        note: None,
    });
    steps.push(Step {
        title: format!("Route {host} to the origin group"),
        commands: vec![format!(
            "az afd route create -g {RG} --profile-name {AFD_PROFILE} --endpoint-name {AFD_ENDPOINT} --route-name gridos \
             --origin-group {AFD_ORIGIN_GROUP} --custom-domains {AFD_DOMAIN} --supported-protocols Http Https \
             --https-redirect Enabled --forwarding-protocol HttpOnly --link-to-default-domain Disabled"
        )],
        note: Some("Front Door terminates TLS and forwards HTTP on port 80; the app's Ingress then needs no certificate".into()),
    });
    if v.front_door.private_link {
        steps.push(Step {
            title: "Check that the origin is private".into(),
            commands: vec![format!(
                "kubectl get service ingress-nginx-controller -n {ingress_ns} -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}'"
            )],
            note: Some("the internal load balancer has no public IP; only approved private endpoints (Front Door's) reach it".into()),
        });
    } else {
        steps.push(Step {
            title: "Lock the origin to your Front Door".into(),
            commands: vec![
                format!(
                    "kubectl get service ingress-nginx-controller -n {ingress_ns} \
                     -o jsonpath='{{.metadata.annotations.service\\.beta\\.kubernetes\\.io/azure-allowed-service-tags}}'"
                ),
                format!("az afd profile show -g {RG} --profile-name {AFD_PROFILE} --query frontDoorId -o tsv"),
            ],
            note: Some(
                "the Service's azure-allowed-service-tags: AzureFrontDoor.Backend admits only Front Door's addresses, \
                 but every Front Door customer shares them: also reject requests whose X-Azure-FDID header is not your \
                 Front Door ID (second command). Snippets are disabled in this install (allow-snippet-annotations: false), \
                 so do it in the app (e.g. a middleware that answers 403); Front Door rule sets and WAF run before the \
                 origin and cannot stop traffic that comes through someone else's Front Door"
                    .into(),
            ),
        });
    }
    steps
}

/// Deploy, trigger, watch and gate: the same behind every front.
fn app_steps(v: &Values) -> Vec<Step> {
    let host = &v.host;
    let app = &v.namespaces.app;
    let flagger = &v.namespaces.flagger;
    vec![
        Step {
            title: "Deploy gridos with its Helm chart behind the ingress".into(),
            commands: vec![format!(
                "helm upgrade --install gridos <chart> -n {app} --set fullnameOverride=gridos \
                 --set service.type=ClusterIP --set ingress.enabled=true --set ingress.className=nginx \
                 --set 'ingress.hosts[0].host={host}' \
                 --set-string ingress.annotations.\"nginx\\.ingress\\.kubernetes\\.io/ssl-redirect\"=true \
                 --set-string ingress.annotations.\"nginx\\.ingress\\.kubernetes\\.io/limit-rps\"=100"
            )],
            note: Some(
                "the app's Deployment, Service and Ingress must all be named gridos: the Canary targets \
                 deployment/gridos and ingress/gridos, and Flagger takes the Service gridos over"
                    .into(),
            ),
        },
        Step {
            title: "Trigger a canary release by changing the image".into(),
            commands: vec![format!(
                "kubectl set image deployment/gridos gridos=<registry>/gridos-api:<tag> -n {app}"
            )],
            note: None,
        },
        Step {
            title: "Watch the canary".into(),
            commands: vec![
                format!("kubectl get canaries -n {app} --watch"),
                format!("kubectl describe canary gridos -n {app}"),
                format!("kubectl logs -n {flagger} deploy/flagger -f"),
                format!(
                    "kubectl get ingress gridos-canary -n {app} \
                     -o jsonpath='{{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}}'"
                ),
            ],
            note: Some(
                "the last command prints the share of traffic the canary gets right now".into(),
            ),
        },
        Step {
            title: "Gate a pipeline on the outcome".into(),
            commands: vec![format!("gridos-setup canary wait -n {app}")],
            note: Some(
                "exit 0 when Flagger promotes, 1 when it rolls back, 3 on timeout; run it after the image change"
                    .into(),
            ),
        },
        Step {
            title: "Handy aliases".into(),
            commands: vec![
                "alias kgc='kubectl get canaries -A'".into(),
                format!("alias kdc='kubectl describe canary gridos -n {app}'"),
                format!("alias kfl='kubectl logs -n {flagger} deploy/flagger -f'"),
            ],
            note: None,
        },
    ]
}

/// The dashboard, when Grafana is installed (`grafana.enabled`): reached through a port-forward only.
fn grafana_step(v: &Values) -> Option<Step> {
    v.grafana.enabled.then(|| {
        Step {
        title: "Open the \"Canary Deployment Dashboard\" in Grafana".into(),
        commands: vec![format!(
            "kubectl port-forward -n {} svc/grafana 3000:80",
            v.namespaces.flagger
        )],
        note: Some(
            "then browse http://localhost:3000: the dashboard is the home page, read-only, no login"
                .into(),
        ),
    }
    })
}

/// Human text, plain (no colours): "DNS records", "Next steps", "Warnings"; empty sections are left out.
pub fn to_text(g: &Guidance) -> String {
    let mut out = String::new();
    if !g.dns.is_empty() {
        out.push_str("DNS records\n");
        let kind_w = g.dns.iter().map(|r| r.kind.len()).max().unwrap_or(0);
        let name_w = g.dns.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &g.dns {
            out.push_str(&format!(
                "  {:kind_w$}  {:name_w$}  ->  {}\n",
                r.kind, r.name, r.value
            ));
            if let Some(n) = &r.note {
                out.push_str(&format!("  {:kind_w$}  {n}\n", ""));
            }
        }
    }
    if !g.next_steps.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Next steps\n");
        // Numbers right-aligned so commands and notes line up past step 9.
        let num_w = g.next_steps.len().to_string().len();
        let pad = " ".repeat(num_w + 4);
        for (i, s) in g.next_steps.iter().enumerate() {
            out.push_str(&format!("  {:>num_w$}. {}\n", i + 1, s.title));
            for c in &s.commands {
                out.push_str(&format!("{pad}  {c}\n"));
            }
            if let Some(n) = &s.note {
                out.push_str(&format!("{pad}{n}\n"));
            }
        }
    }
    if !g.warnings.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Warnings\n");
        for w in &g.warnings {
            out.push_str(&format!("  ! {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileSource, ValuesRequest, resolve};

    const HOST: &str = "app.example.com";

    fn values(profile: &str, sets: &[&str]) -> Values {
        resolve(&ValuesRequest {
            profile: Some(ProfileSource::Builtin(profile.into())),
            values_files: Vec::new(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            host: Some(HOST.into()),
        })
        .expect("profile resolves")
    }

    fn run(v: &Values, address: Option<&str>) -> Guidance {
        guidance(&GuidanceInput {
            values: v,
            address,
            az_available: false,
            dns_zone: None,
        })
    }

    fn all_commands(g: &Guidance) -> Vec<&str> {
        g.next_steps
            .iter()
            .flat_map(|s| s.commands.iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn nginx_has_one_a_record_with_the_address() {
        let g = run(&values("nginx", &[]), Some("203.0.113.10"));
        assert_eq!(g.dns.len(), 1);
        assert_eq!(g.dns[0].kind, "A");
        assert_eq!(g.dns[0].name, HOST);
        assert_eq!(g.dns[0].value, "203.0.113.10");
    }

    #[test]
    fn appgw_points_the_a_record_at_the_gateway_and_the_pool_at_the_address() {
        let g = run(&values("appgw", &[]), Some("198.51.100.10"));
        assert_eq!(g.dns.len(), 1);
        assert_eq!(g.dns[0].kind, "A");
        assert_eq!(g.dns[0].name, HOST);
        assert_eq!(g.dns[0].value, APPGW_PUBLIC_IP);
        let pool = g
            .next_steps
            .iter()
            .find(|s| s.title.contains("backend pool"))
            .expect("a backend-pool step");
        assert!(pool.title.contains("198.51.100.10"));
        assert!(pool.commands[0].contains("address-pool update"));
        assert!(pool.commands[0].contains("--servers 198.51.100.10"));
        let cmds = all_commands(&g);
        assert!(cmds.iter().any(|c| c.contains("probe create")
            && c.contains("--path /healthz")
            && c.contains(&format!("--host {HOST}"))));
        assert!(cmds.iter().any(|c| c.contains("http-settings update")
            && c.contains("--port 80")
            && c.contains(&format!("--host-name {HOST}"))));
    }

    #[test]
    fn frontdoor_has_one_txt_and_one_cname() {
        for private_link in ["false", "true"] {
            let v = values(
                "frontdoor",
                &[&format!("frontDoor.privateLink={private_link}")],
            );
            let g = run(&v, Some("203.0.113.10"));
            let txt: Vec<_> = g.dns.iter().filter(|r| r.kind == "TXT").collect();
            let cname: Vec<_> = g.dns.iter().filter(|r| r.kind == "CNAME").collect();
            assert_eq!(txt.len(), 1);
            assert!(txt[0].name.starts_with("_dnsauth"));
            assert_eq!(txt[0].name, format!("_dnsauth.{HOST}"));
            assert_eq!(cname.len(), 1);
            assert_eq!(cname[0].name, HOST);
            assert!(cname[0].value.ends_with(".azurefd.net"));
            assert_eq!(g.dns.len(), 2);
            let cmds = all_commands(&g);
            assert!(cmds.iter().any(|c| c.contains("az afd origin create")
                && c.contains("--host-name 203.0.113.10")
                && c.contains(&format!("--origin-host-header {HOST}"))));
        }
    }

    #[test]
    fn frontdoor_private_link_approves_the_connection_and_public_locks_to_fdid() {
        let g = run(
            &values("frontdoor", &["frontDoor.privateLink=true"]),
            Some("10.0.0.7"),
        );
        let cmds = all_commands(&g);
        assert!(
            cmds.iter()
                .any(|c| c.starts_with("az network private-link-service"))
        );
        assert!(
            cmds.iter()
                .any(|c| c.starts_with("az network private-endpoint-connection approve"))
        );
        assert!(
            cmds.iter()
                .any(|c| c.contains("--enable-private-link true"))
        );
        let g = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        let text = to_text(&g);
        assert!(text.contains("X-Azure-FDID"));
        assert!(text.contains("AzureFrontDoor.Backend"));
        assert!(text.contains("allow-snippet-annotations: false"));
        assert!(
            !all_commands(&g)
                .iter()
                .any(|c| c.contains("private-endpoint-connection"))
        );
    }

    #[test]
    fn every_profile_warns_about_the_retirement_and_gets_the_app_steps() {
        for p in crate::profile::BUILTIN {
            let g = run(&values(p, &[]), Some("203.0.113.10"));
            assert!(
                g.warnings
                    .iter()
                    .any(|w| w.contains("retired in March 2026") && w.contains("Gateway API")),
                "{p}"
            );
            let cmds = all_commands(&g);
            for want in [
                "helm upgrade --install gridos <chart> -n gridos",
                "kubectl set image deployment/gridos gridos=<registry>/gridos-api:<tag> -n gridos",
                "kubectl get canaries -n gridos --watch",
                "kubectl logs -n flagger-system deploy/flagger -f",
                "gridos-setup canary wait -n gridos",
                "alias kgc='kubectl get canaries -A'",
            ] {
                assert!(cmds.iter().any(|c| c.starts_with(want)), "{p}: {want}");
            }
        }
    }

    #[test]
    fn namespaces_come_from_the_values() {
        let v = values(
            "nginx",
            &[
                "namespaces.app=shop",
                "namespaces.flagger=fl",
                "namespaces.ingress=ing",
            ],
        );
        let g = run(&v, None);
        let cmds = all_commands(&g);
        assert!(
            cmds.iter()
                .any(|c| c.contains("kubectl describe canary gridos -n shop"))
        );
        assert!(
            cmds.iter()
                .any(|c| c == &"kubectl logs -n fl deploy/flagger -f")
        );
        assert!(g.warnings.iter().any(|w| w.contains("-n ing")));
    }

    #[test]
    fn a_missing_address_is_a_placeholder_and_a_warning() {
        let g = run(&values("nginx", &[]), None);
        assert_eq!(g.dns[0].value, ADDRESS_PENDING);
        assert_eq!(g.warnings.len(), 2);
        let g = run(&values("appgw", &[]), None);
        assert!(
            all_commands(&g)
                .iter()
                .any(|c| c.ends_with(&format!("--servers {ADDRESS_PENDING}")))
        );
    }

    #[test]
    fn json_shape() {
        let g = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        let j = serde_json::to_value(&g).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["dns", "next_steps", "warnings"]);
        for r in j["dns"].as_array().unwrap() {
            for k in ["type", "name", "value", "note"] {
                assert!(r.get(k).is_some(), "dns item has {k}: {r}");
            }
            assert!(r.get("kind").is_none());
        }
        for s in j["next_steps"].as_array().unwrap() {
            assert!(s["title"].is_string());
            assert!(s["commands"].is_array());
        }
        assert!(
            j["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w.is_string())
        );
    }

    #[test]
    fn az_step_uses_the_zone_or_placeholders() {
        let v = values("nginx", &[]);
        let g = guidance(&GuidanceInput {
            values: &v,
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: Some(("dns-rg", "example.com")),
        });
        assert_eq!(
            g.next_steps[0].commands,
            [
                "az network dns record-set a add-record -g dns-rg -z example.com -n app -a 203.0.113.10"
            ]
        );
        let g = guidance(&GuidanceInput {
            values: &v,
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: None,
        });
        assert_eq!(
            g.next_steps[0].commands,
            [format!(
                "az network dns record-set a add-record -g {DNS_RG} -z {DNS_ZONE} -n {DNS_NAME} -a 203.0.113.10"
            )]
        );
        assert!(
            g.next_steps[0]
                .note
                .as_deref()
                .unwrap()
                .contains("e.g. app for app.example.com in zone example.com")
        );
        // Without az, no DNS step.
        assert!(
            !all_commands(&run(&v, Some("203.0.113.10")))
                .iter()
                .any(|c| c.starts_with("az network dns"))
        );

        let fd = values("frontdoor", &[]);
        let g = guidance(&GuidanceInput {
            values: &fd,
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: Some(("dns-rg", "example.com")),
        });
        assert_eq!(
            g.next_steps[0].commands,
            [
                "az network dns record-set txt add-record -g dns-rg -z example.com -n _dnsauth.app -v <validation-token>",
                "az network dns record-set cname set-record -g dns-rg -z example.com -n app -c <endpoint>.z01.azurefd.net",
            ]
        );
        assert!(
            g.dns[0]
                .note
                .as_deref()
                .unwrap()
                .contains("in zone example.com the record's name is _dnsauth.app")
        );
    }

    #[test]
    fn az_dns_commands_only_for_known_values() {
        let v = values("nginx", &[]);
        assert_eq!(
            az_dns_commands(&v, "203.0.113.10", "dns-rg", "example.com"),
            vec![
                [
                    "az",
                    "network",
                    "dns",
                    "record-set",
                    "a",
                    "add-record",
                    "-g",
                    "dns-rg",
                    "-z",
                    "example.com",
                    "-n",
                    "app",
                    "-a",
                    "203.0.113.10"
                ]
                .map(String::from)
                .to_vec()
            ]
        );
        assert_eq!(
            az_dns_commands(&v, "203.0.113.10", "rg", "example.com.")[0][11],
            "app"
        );
        assert!(az_dns_commands(&v, "203.0.113.10", "rg", "other.org").is_empty());
        assert!(
            az_dns_commands(&values("appgw", &[]), "198.51.100.10", "rg", "example.com").is_empty()
        );
        assert!(
            az_dns_commands(
                &values("frontdoor", &[]),
                "203.0.113.10",
                "rg",
                "example.com"
            )
            .is_empty()
        );
    }

    #[test]
    fn relative_names() {
        assert_eq!(
            relative_name("app.example.com", "example.com").as_deref(),
            Some("app")
        );
        assert_eq!(
            relative_name("example.com", "example.com").as_deref(),
            Some("@")
        );
        assert_eq!(
            relative_name("a.b.example.com", "example.com").as_deref(),
            Some("a.b")
        );
        assert_eq!(relative_name("app.badexample.com", "example.com"), None);
        assert_eq!(relative_name("app.example.com", "other.org"), None);
        assert_eq!(likely_zone("app.example.com"), "example.com");
        assert_eq!(likely_zone("example.com"), "example.com");
    }

    #[test]
    fn text_has_the_three_sections_and_no_colours() {
        let t = to_text(&run(&values("nginx", &[]), Some("203.0.113.10")));
        let dns = t.find("DNS records\n").unwrap();
        let steps = t.find("\nNext steps\n").unwrap();
        let warnings = t.find("\nWarnings\n").unwrap();
        assert!(dns < steps && steps < warnings);
        assert!(!t.contains('\u{1b}'));
        assert!(t.contains("A  app.example.com  ->  203.0.113.10"));
    }
}
