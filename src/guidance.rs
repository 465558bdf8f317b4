//! Post-install guidance: the DNS records to create and the next steps, per profile, with the real values filled in.
//!
//! Pure logic, no cluster access: the integrator passes the resolved [`Values`], the ingress
//! controller's load-balancer address (if known) and whether the Azure CLI is at hand. What the
//! tool cannot know (gateway, Front Door and resource-group names, the certificate) is a shell
//! variable, set once in the first Azure step from a `<placeholder>`; tokens and addresses Azure
//! assigns are read into variables by the commands themselves. Every value is quoted for the shell.
//!
//! Record names are fully qualified (`app.example.com`, `_dnsauth.app.example.com`) because the
//! DNS zone is usually unknown; each record's note gives the name relative to the zone, which is
//! what Azure DNS and most DNS consoles ask for.

use serde::Serialize;

use crate::profile::{self, Front, OriginProtocol, TrafficLayer, Values};
use crate::render;

/// What carries the traffic for the guidance's words and commands: the ingress controller's
/// Service, or the Service AKS makes for the Gateway.
struct Target {
    /// "the ingress controller" or "the Gateway".
    what: &'static str,
    /// The load-balancer Service's namespace and name.
    ns: String,
    service: String,
    gateway: bool,
}

fn target(v: &Values) -> Target {
    let gateway = v.traffic.layer == TrafficLayer::GatewayApi;
    let (ns, service) = crate::plan::traffic_service(v);
    Target {
        what: if gateway {
            "the Gateway"
        } else {
            "the ingress controller"
        },
        ns,
        service,
        gateway,
    }
}

/// ` --traffic gateway-api` for the install commands the guidance prints, when that is the layer.
fn traffic_flag(v: &Values) -> &'static str {
    if v.traffic.layer == TrafficLayer::GatewayApi {
        " --traffic gateway-api"
    } else {
        ""
    }
}

/// The Istio gateway's readiness endpoint on its status port (istio kube-gateway template: the
/// pods' readiness and startup probes), which the Application Gateway probe asks instead of the
/// app: it answers 200 whenever the gateway can serve.
const GATEWAY_READY_PATH: &str = "/healthz/ready";

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
///
/// The enablement is one call: managed Gateway API needs its implementing add-on enabled before or
/// with it (Learn, "managed Gateway API": `--enable-gateway-api` together with
/// `--enable-app-routing-istio`).
pub const RETIREMENT_WARNING: &str = concat!(
    "ingress-nginx was retired in March 2026 and gets no more security fixes. Move to the Gateway \
     API on AKS application routing: enable it in one call (`",
    crate::gateway_enable_command!(),
    "`), check with `gridos-setup check --pre --traffic gateway-api`, then re-run install with \
     `--traffic gateway-api` (see the README)."
);

/// The shell variables the Azure commands read, each with what it stands for: the values only the
/// user knows. The first Azure step sets them once (`NAME='<meaning>'`), so every later command can be
/// pasted as it is.
const V_RG: (&str, &str) = ("AZ_RG", "<resource-group for the gateway or Front Door>");
const V_LOCATION: (&str, &str) = ("AZ_LOCATION", "<region, e.g. westeurope>");
const V_GATEWAY: (&str, &str) = ("APPGW_NAME", "<application-gateway-name>");
const V_VNET_RG: (&str, &str) = ("VNET_RG", "<resource group of the cluster's VNet>");
const V_VNET: (&str, &str) = ("VNET_NAME", "<the cluster's VNet>");
const V_SUBNET_CIDR: (&str, &str) = (
    "APPGW_SUBNET_CIDR",
    "<free range in that VNet for the gateway, e.g. 10.225.0.0/24>",
);
const V_WAF: (&str, &str) = ("WAF_POLICY", "<waf-policy-name>");
const V_CERT: (&str, &str) = ("CERT_PFX", "<path to the PFX certificate for the host>");
const V_CERT_PASSWORD: (&str, &str) = ("CERT_PASSWORD", "<the PFX's password>");
const V_AFD_PROFILE: (&str, &str) = ("AFD_PROFILE", "<front-door-profile-name>");
const V_AFD_ENDPOINT: (&str, &str) = ("AFD_ENDPOINT", "<endpoint-name, globally unique>");
const V_AFD_WAF: (&str, &str) = (
    "AFD_WAF_POLICY",
    "<front-door-waf-policy-name, letters and digits only>",
);
const V_AKS_RG: (&str, &str) = ("AKS_RG", "<the cluster's resource group>");
const V_AKS: (&str, &str) = ("AKS_NAME", "<the cluster's name>");
const V_DNS_RG: (&str, &str) = ("DNS_RG", "<resource group of the Azure DNS zone>");
const V_DNS_ZONE: (&str, &str) = ("DNS_ZONE", "<the Azure DNS zone, e.g. example.com>");

/// Fixed names for what the steps create inside the gateway or the Front Door profile.
const POOL: &str = "gridos-pool";
const PROBE: &str = "gridos-healthz";
const HTTP_SETTINGS: &str = "gridos-http";
const LISTENER: &str = "gridos-https";
const FRONTEND_PORT: &str = "gridos-443";
const SSL_CERT: &str = "gridos-cert";
const REWRITE_SET: &str = "gridos-xff";
const RULE: &str = "gridos";
const APPGW_SUBNET: &str = "appgw-subnet";
const AFD_ORIGIN_GROUP: &str = "gridos";
const AFD_ORIGIN: &str = "gridos";
const AFD_ROUTE: &str = "gridos";

/// The App Gateway probe's Host: an IP literal matches no Ingress (Kubernetes refuses IP hosts in
/// Ingress rules), so the probe reaches ingress-nginx's default server, which answers `/healthz`
/// itself, and never the app or its canary. It is also the host Application Gateway's default
/// probe uses.
pub const APPGW_PROBE_HOST: &str = "127.0.0.1";

/// The guidance for the profile in `input.values`.
pub fn guidance(input: &GuidanceInput) -> Guidance {
    let v = input.values;
    let address = input.address.unwrap_or(ADDRESS_PENDING);
    let mut g = Guidance {
        dns: Vec::new(),
        next_steps: Vec::new(),
        warnings: Vec::new(),
    };
    if input.address.is_none() {
        let t = target(v);
        if t.gateway {
            g.warnings.push(format!(
                "The Gateway has no address yet; commands show {ADDRESS_PENDING}. Run `gridos-setup status` (or \
                 `kubectl get gateway {} -n {}`) once it is Programmed.",
                v.gateway.name, t.ns
            ));
        } else {
            g.warnings.push(format!(
                "The ingress controller has no load-balancer address yet; commands show {ADDRESS_PENDING}. \
                 Run `gridos-setup status` (or `kubectl get service ingress-nginx-controller -n {}`) once Azure has assigned it.",
                v.namespaces.ingress
            ));
        }
    }
    match v.front {
        Front::Nginx => nginx_front(&mut g, v, address, input),
        Front::Appgw => appgw_front(&mut g, v, address, input),
        Front::Frontdoor => frontdoor_front(&mut g, v, address, input),
    }
    shared_advice(&mut g, v, address, input);
    g
}

/// nginx: the A record points at the ingress controller's own load balancer.
fn nginx_front(g: &mut Guidance, v: &Values, address: &str, input: &GuidanceInput) {
    g.dns.push(DnsRecord {
        kind: "A".into(),
        name: v.host.clone(),
        value: address.into(),
        note: Some(format!(
            "{}'s public load-balancer address; {}",
            target(v).what,
            relative_note(&v.host, input.dns_zone)
        )),
    });
    if input.az_available {
        g.next_steps.push(a_record_step(
            v,
            &format!("Point the A record at {}", target(v).what),
            address,
            input.dns_zone,
        ));
    }
}

/// Application Gateway: the A record points at the gateway, which forwards to the internal load balancer.
fn appgw_front(g: &mut Guidance, v: &Values, address: &str, input: &GuidanceInput) {
    g.dns.push(DnsRecord {
        kind: "A".into(),
        name: v.host.clone(),
        value: APPGW_PUBLIC_IP.into(),
        note: Some(format!(
            "the Application Gateway's public IP, not the private address {address} (step \"Point the A record\" below); {}",
            relative_note(&v.host, input.dns_zone)
        )),
    });
    g.next_steps.extend(appgw_steps(v, address, input));
}

/// Front Door: a TXT record proves the domain, then a CNAME points at the endpoint.
fn frontdoor_front(g: &mut Guidance, v: &Values, address: &str, input: &GuidanceInput) {
    g.dns.push(DnsRecord {
        kind: "TXT".into(),
        name: format!("_dnsauth.{}", v.host),
        value: "<validation token of the custom domain, read in the steps below>".into(),
        note: Some(format!(
            "exists only once the custom domain is created; proves to Front Door that you own the domain \
             (the token expires after 7 days); {}",
            relative_note(&format!("_dnsauth.{}", v.host), input.dns_zone)
        )),
    });
    g.dns.push(DnsRecord {
        kind: "CNAME".into(),
        name: v.host.clone(),
        value: AFD_ENDPOINT_HOST.into(),
        note: Some(format!(
            "the Front Door endpoint's host name; create it last, once the route exists, or the host answers 404; {}",
            relative_note(&v.host, input.dns_zone)
        )),
    });
    if let Some((_, zone)) = input.dns_zone
        && v.host == zone
    {
        g.warnings.push(format!(
            "{} is the zone apex, where a CNAME cannot be: use an alias record to the Front Door endpoint instead \
             (az network dns record-set a create -g <dns-resource-group> -z {zone} -n @ --target-resource <endpoint-resource-id>).",
            v.host
        ));
    }
    if v.front_door.origin_protocol == OriginProtocol::Http && !v.front_door.private_link {
        g.warnings.push(format!(
            "frontDoor.originProtocol=http: Front Door forwards user traffic to the public origin {address} in plain \
             HTTP, readable on the way between the edge and AKS. Drop the setting for HTTPS, or use Private Link."
        ));
    } else if !profile::origin_https(v) && !v.front_door.private_link {
        g.warnings.push(format!(
            "Front Door forwards user traffic to the public origin {address} in plain HTTP, readable on the way between \
             the edge and AKS: the Gateway has no HTTPS listener. Create a kubernetes.io/tls Secret for {} from a publicly \
             trusted CA in {} and set gateway.tls.secretName to its name, or use Private Link.",
            v.host, v.namespaces.gateway
        ));
    }
    g.next_steps.extend(frontdoor_steps(v, address, input));
}

/// What every profile gets after its front's records and steps: zone and proxy warnings, the
/// stable-address, app and Grafana steps, and the retirement notice.
fn shared_advice(g: &mut Guidance, v: &Values, address: &str, input: &GuidanceInput) {
    if let Some((_, zone)) = input.dns_zone
        && relative_name(&v.host, zone).is_none()
    {
        g.warnings.push(format!(
            "{} is not inside the DNS zone {zone}: create the records in the zone that holds the host.",
            v.host
        ));
    }

    if let Some(step) = real_client_ip_step(v) {
        g.next_steps.push(step);
    }
    if profile::trusted_proxies(v).is_some()
        && v.ingress_controller.real_client_ip.trusted_cidrs.is_empty()
        && profile::front_ranges(v) == profile::PRIVATE_RANGES
    {
        let how = if v.front == Front::Appgw {
            "(step \"Trust forwarded client addresses from the gateway's subnet only\")"
        } else {
            "with --set 'ingressController.realClientIp.trustedCidrs=[<subnet-cidr>]'"
        };
        g.warnings.push(format!(
            "nginx takes the client's address from X-Forwarded-For sent from any private address ({}): narrow it to the \
             front's subnet {how} so that nothing else in the VNet can set it.",
            profile::PRIVATE_RANGES.join(", ")
        ));
    }
    if render::stable_address_annotations(v).is_empty() {
        g.warnings.push(unstable_address_warning(v, address));
        g.next_steps.push(stable_address_step(v));
    }
    g.next_steps.extend(app_steps(v));
    g.next_steps.extend(grafana_step(v));
    // The Gateway API path is the way off ingress-nginx: no retirement notice there.
    if !target(v).gateway {
        g.warnings.push(RETIREMENT_WARNING.into());
    }
}

/// One A record whose address replaces whatever the record set held, for `--apply-dns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ARecord {
    pub resource_group: String,
    pub zone: String,
    /// The name relative to the zone (`@` for the apex).
    pub name: String,
    pub address: String,
}

/// The A record `--apply-dns` writes: only with `nginx`, where the address is the install's own.
///
/// The Application Gateway's public IP and Front Door's token and endpoint come from Azure, so
/// those profiles yield nothing; a host outside `zone` yields nothing either.
pub fn az_dns_record(
    values: &Values,
    address: &str,
    resource_group: &str,
    zone: &str,
) -> Option<ARecord> {
    if values.front != Front::Nginx {
        return None;
    }
    let name = relative_name(&values.host, zone)?;
    Some(ARecord {
        resource_group: resource_group.into(),
        zone: zone.trim_end_matches('.').into(),
        name,
        address: address.into(),
    })
}

impl ARecord {
    fn base(&self, verb: &str) -> Vec<String> {
        [
            "az",
            "network",
            "dns",
            "record-set",
            "a",
            verb,
            "-g",
            &self.resource_group,
            "-z",
            &self.zone,
            "-n",
            &self.name,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Adds the address (creating the record set if needed; a no-op when it is there).
    pub fn add_argv(&self) -> Vec<String> {
        let mut a = self.base("add-record");
        a.extend(["-a".into(), self.address.clone()]);
        a
    }

    /// Reads the record set, as JSON, to find the addresses that are not this one.
    pub fn show_argv(&self) -> Vec<String> {
        let mut a = self.base("show");
        a.extend(["-o".into(), "json".into()]);
        a
    }

    /// Removes an older address; the set stays (it holds the new one).
    pub fn remove_argv(&self, old: &str) -> Vec<String> {
        let mut a = self.base("remove-record");
        a.extend(["-a".into(), old.into(), "--keep-empty-record-set".into()]);
        a
    }
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

/// One shell word: `$NAME` and `$(...)` become `"$NAME"` and `"$(...)"` (expanded, never split);
/// anything else is quoted for POSIX shells where it needs it (values such as hosts and addresses
/// come from the user and the cluster).
fn word(part: &str) -> String {
    if part.starts_with('$') {
        format!("\"{part}\"")
    } else {
        shlex::try_quote(part)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| "''".into())
    }
}

/// A command line from its words, each quoted by [`word`].
fn sh(parts: &[&str]) -> String {
    parts.iter().map(|p| word(p)).collect::<Vec<_>>().join(" ")
}

/// `SHOW >/dev/null 2>&1 || CREATE`: creates only what is missing, so a second run changes nothing
/// (an Azure `create` on an existing gateway or profile would replace its configuration).
fn guarded(show: &[&str], create: &[&str]) -> String {
    format!("{} >/dev/null 2>&1 || {}", sh(show), sh(create))
}

/// `$NAME`, for a variable of the list above.
fn var(v: (&str, &str)) -> String {
    format!("${}", v.0)
}

/// `NAME='<meaning>'`: sets a variable of the list above to its placeholder.
fn assignment((name, meaning): (&str, &str)) -> String {
    format!("{name}={}", word(meaning))
}

/// The assignments of the DNS zone's variables, needed only when `--dns-zone` did not name the zone.
fn zone_assignments(dns_zone: Option<(&str, &str)>) -> Vec<String> {
    match dns_zone {
        Some(_) => Vec::new(),
        None => vec![assignment(V_DNS_RG), assignment(V_DNS_ZONE)],
    }
}

/// The step that sets the variables the Azure commands read; each `<...>` is explained once, here.
fn variables_step(vars: &[(&str, &str)]) -> Step {
    Step {
        title: "Set the names of your Azure resources (the commands below read these variables)".into(),
        commands: vars
            .iter()
            .map(|&v| assignment(v))
            .collect(),
        note: Some(
            "replace each <...> with your value; the steps create what is missing and leave what exists, so they can be run again"
                .into(),
        ),
    }
}

/// The DNS zone's resource group, zone and the host's name in it: from `--dns-zone`, else variables.
fn zone_words(v: &Values, dns_zone: Option<(&str, &str)>) -> (String, String, String) {
    match dns_zone {
        Some((rg, zone)) => (
            rg.to_string(),
            zone.to_string(),
            relative_name(&v.host, zone).unwrap_or_else(|| "<name-in-zone>".into()),
        ),
        None => {
            let name = relative_name(&v.host, likely_zone(&v.host)).unwrap_or_default();
            (var(V_DNS_RG), var(V_DNS_ZONE), name)
        }
    }
}

/// Sets the A record to exactly `address` (a word: a value or `$VAR`): adds it, then removes every
/// other address of the set, so an address that went with an old Service does not stay behind.
fn a_record_commands(rg: &str, zone: &str, name: &str, address: &str) -> Vec<String> {
    let base = |verb: &'static str| {
        vec![
            "az",
            "network",
            "dns",
            "record-set",
            "a",
            verb,
            "-g",
            rg,
            "-z",
            zone,
            "-n",
            name,
        ]
    };
    let mut add = base("add-record");
    add.extend(["-a", address]);
    let mut show = base("show");
    show.extend(["--query", "ARecords[].ipv4Address", "-o", "tsv"]);
    let mut remove = base("remove-record");
    remove.extend(["-a", "$old", "--keep-empty-record-set"]);
    vec![
        sh(&add),
        format!(
            "for old in $({}); do [ \"$old\" = {} ] || {}; done",
            sh(&show),
            word(address),
            sh(&remove)
        ),
    ]
}

/// The A record `host` -> `address` in Azure DNS, replacing any older address.
fn a_record_step(v: &Values, title: &str, address: &str, dns_zone: Option<(&str, &str)>) -> Step {
    let (rg, zone, name) = zone_words(v, dns_zone);
    let mut commands = zone_assignments(dns_zone);
    commands.extend(a_record_commands(&rg, &zone, &name, address));
    Step {
        title: format!("{title} (Azure DNS)"),
        commands,
        note: Some(format!(
            "the record set ends up holding only {address}: add-record adds it, the loop removes older addresses{}",
            if dns_zone.is_none() {
                format!(
                    " ({} is the host's name in the zone, as for zone {})",
                    name,
                    likely_zone(&v.host)
                )
            } else {
                String::new()
            }
        )),
    }
}

/// Application Gateway v2 with a WAF policy in front of the internal load balancer, created in the
/// order a fresh subscription needs: the VNet's region, WAF policy, subnet and public IP, gateway,
/// pool, probe, settings, TLS listener, X-Forwarded-For rewrite, rule, the port-80 redirect in place
/// of the gateway's default rule, the A record, then nginx's trust narrowed to the gateway's subnet.
fn appgw_steps(v: &Values, address: &str, input: &GuidanceInput) -> Vec<Step> {
    let host = v.host.as_str();
    let mut steps = vec![variables_step(&[
        V_RG,
        V_GATEWAY,
        V_VNET_RG,
        V_VNET,
        V_SUBNET_CIDR,
        V_WAF,
        V_CERT,
        V_CERT_PASSWORD,
    ])];
    steps.push(vnet_location_step());
    steps.push(waf_policy_step());
    steps.push(appgw_subnet_step());
    steps.push(appgw_create_step());
    steps.extend(appgw_backend_steps(v, address));
    steps.extend(appgw_listener_steps(host, target(v).gateway));
    steps.push(appgw_http_redirect_step());
    steps.push(appgw_a_record_step(v, input));
    steps.extend(appgw_trusted_subnet_step(v));
    steps
}

/// The gateway, its public IP and WAF policy go where the VNet is (a gateway must be in its
/// VNet's region): the region is read from the VNet rather than typed a second time.
fn vnet_location_step() -> Step {
    Step {
        title: "Use the VNet's region for the gateway".into(),
        commands: vec![format!(
            "{}=$({})",
            V_LOCATION.0,
            sh(&[
                "az",
                "network",
                "vnet",
                "show",
                "-g",
                "$VNET_RG",
                "-n",
                "$VNET_NAME",
                "--query",
                "location",
                "-o",
                "tsv"
            ])
        )],
        note: Some(
            "an Application Gateway must be in the same region as the VNet of its subnet".into(),
        ),
    }
}

/// `if SHOW >/dev/null 2>&1; then DELETE; fi`: removes what exists, so a second run changes nothing.
fn removed_if_present(show: Vec<String>, delete: Vec<String>) -> String {
    format!(
        "if {} >/dev/null 2>&1; then {}; fi",
        sh_words(show),
        sh_words(delete)
    )
}

/// What `az network application-gateway create` makes besides the gateway (azure-cli
/// `_template_builder.py`): a port-80 listener, a rule from it to a pool through HTTP settings that
/// use the default probe.
const APPGW_DEFAULT_LISTENER: &str = "appGatewayHttpListener";
const APPGW_DEFAULT_RULE: &str = "rule1";
const APPGW_DEFAULT_SETTINGS: &str = "appGatewayBackendHttpSettings";
const APPGW_DEFAULT_POOL: &str = "appGatewayBackendPool";
const REDIRECT: &str = "gridos-to-https";
const HTTP_RULE: &str = "gridos-http";

/// http:// answers with a permanent redirect to the HTTPS listener: the gateway's default rule (to
/// an empty pool whose default probe, `GET /` with Host 127.0.0.1, gets 404 from nginx and Istio, so
/// the backend is unhealthy and http:// answers 502) gives way to a redirect rule on the same listener.
fn appgw_http_redirect_step() -> Step {
    let redirect = [
        "--type",
        "Permanent",
        "--target-listener",
        LISTENER,
        "--include-path",
        "true",
        "--include-query-string",
        "true",
    ];
    let rule = [
        "--http-listener",
        APPGW_DEFAULT_LISTENER,
        "--redirect-config",
        REDIRECT,
        "--rule-type",
        "Basic",
        "--priority",
        "200",
    ];
    let remove = |group: &str, name: &str| {
        removed_if_present(
            gw_args(group, "show", name, &[]),
            gw_args(group, "delete", name, &[]),
        )
    };
    Step {
        title: "Redirect http:// to https:// (in place of the gateway's default port-80 rule)"
            .into(),
        commands: vec![
            guarded_words(
                gw_args("redirect-config", "show", REDIRECT, &[]),
                gw_args("redirect-config", "create", REDIRECT, &redirect),
            ),
            remove("rule", APPGW_DEFAULT_RULE),
            guarded_words(
                gw_args("rule", "show", HTTP_RULE, &[]),
                gw_args("rule", "create", HTTP_RULE, &rule),
            ),
            remove("http-settings", APPGW_DEFAULT_SETTINGS),
            remove("address-pool", APPGW_DEFAULT_POOL),
        ],
        note: Some(format!(
            "application-gateway create also made listener {APPGW_DEFAULT_LISTENER} on port 80 and rule {APPGW_DEFAULT_RULE} to \
             pool {APPGW_DEFAULT_POOL} through settings {APPGW_DEFAULT_SETTINGS}, whose default probe (GET / with Host \
             127.0.0.1, healthy on 200-399) gets 404 from the ingress, so http:// would answer 502; the listener now \
             redirects (301) to {LISTENER} with path and query, and the unused defaults are removed"
        )),
    }
}

/// nginx trusts X-Forwarded-For from all of RFC 1918 until told the gateway's subnet: read its
/// prefix and re-run install with it (only the gateway's instances can then set the client address).
fn appgw_trusted_subnet_step(v: &Values) -> Option<Step> {
    profile::trusted_proxies(v)?;
    if !v.ingress_controller.real_client_ip.trusted_cidrs.is_empty() {
        return None;
    }
    Some(Step {
        title: "Trust forwarded client addresses from the gateway's subnet only".into(),
        commands: vec![
            format!(
                "APPGW_SUBNET_PREFIX=$({})",
                sh(&[
                    "az",
                    "network",
                    "vnet",
                    "subnet",
                    "show",
                    "-g",
                    "$VNET_RG",
                    "--vnet-name",
                    "$VNET_NAME",
                    "-n",
                    APPGW_SUBNET,
                    "--query",
                    "addressPrefix",
                    "-o",
                    "tsv"
                ])
            ),
            format!(
                "gridos-setup install --profile {} --host {}{} --set \"ingressController.realClientIp.trustedCidrs=[$APPGW_SUBNET_PREFIX]\" --yes",
                word(&v.name),
                word(&v.host),
                traffic_flag(v)
            ),
        ],
        note: Some(format!(
            "the gateway's instances connect from {APPGW_SUBNET}; until this re-run nginx takes X-Forwarded-For from any \
             private address ({})",
            profile::PRIVATE_RANGES.join(", ")
        )),
    })
}

/// The Application Gateway's public IP, named after the gateway.
const APPGW_PIP: &str = "$APPGW_NAME-pip";

/// `az network application-gateway GROUP WHAT -g "$AZ_RG" --gateway-name "$APPGW_NAME" -n NAME MORE...`
fn gw_args(group: &str, what: &str, name: &str, more: &[&str]) -> Vec<String> {
    let (rg, gw) = (var(V_RG), var(V_GATEWAY));
    let head = [
        "az",
        "network",
        "application-gateway",
        group,
        what,
        "-g",
        &rg,
        "--gateway-name",
        &gw,
        "-n",
        name,
    ];
    owned_words(&head, more)
}

/// `head` then `more`, as owned words.
fn owned_words(head: &[&str], more: &[&str]) -> Vec<String> {
    head.iter().chain(more).map(|s| s.to_string()).collect()
}

/// [`guarded`] for owned words.
fn guarded_words(show: Vec<String>, create: Vec<String>) -> String {
    guarded(&as_strs(&show), &as_strs(&create))
}

/// [`sh`] for owned words.
fn sh_words(words: Vec<String>) -> String {
    sh(&as_strs(&words))
}

/// Borrows owned words for [`sh`] and [`guarded`].
fn as_strs(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// The WAF policy the gateway enforces.
fn waf_policy_step() -> Step {
    let (rg, waf) = (var(V_RG), var(V_WAF));
    let (rg, waf) = (rg.as_str(), waf.as_str());
    Step {
        title: "Create the WAF policy (Microsoft Default Rule Set 2.1, Prevention mode)".into(),
        commands: vec![
            guarded(
                &["az", "network", "application-gateway", "waf-policy", "show", "-g", rg, "-n", waf],
                &["az", "network", "application-gateway", "waf-policy", "create", "-g", rg, "-n", waf,
                  "-l", &var(V_LOCATION), "--type", "Microsoft_DefaultRuleSet", "--version", "2.1"],
            ),
            sh(&["az", "network", "application-gateway", "waf-policy", "policy-setting", "update", "-g", rg,
                 "--policy-name", waf, "--mode", "Prevention", "--state", "Enabled"]),
        ],
        note: Some(
            "the Default Rule Set (DRS) 2.1, built on OWASP CRS 3.3.2 with Microsoft Threat Intelligence rules, is the \
             managed rule set Azure recommends for Application Gateway WAF (Learn, \"DRS and CRS rule groups and rules\"); a policy made earlier with OWASP keeps it until you run `az network \
             application-gateway waf-policy managed-rule rule-set remove` for it and `rule-set add --type \
             Microsoft_DefaultRuleSet --version 2.1`. A new policy starts in Detection mode, which only logs; Prevention \
             blocks what the rules match"
                .into(),
        ),
    }
}

/// The gateway's own subnet in the cluster's VNet, and its public IP.
fn appgw_subnet_step() -> Step {
    let (vnet_rg, vnet) = (var(V_VNET_RG), var(V_VNET));
    Step {
        title: "Create the gateway's subnet (in the cluster's VNet) and its public IP".into(),
        commands: vec![
            guarded(
                &[
                    "az",
                    "network",
                    "vnet",
                    "subnet",
                    "show",
                    "-g",
                    &vnet_rg,
                    "--vnet-name",
                    &vnet,
                    "-n",
                    APPGW_SUBNET,
                ],
                &[
                    "az",
                    "network",
                    "vnet",
                    "subnet",
                    "create",
                    "-g",
                    &vnet_rg,
                    "--vnet-name",
                    &vnet,
                    "-n",
                    APPGW_SUBNET,
                    "--address-prefixes",
                    &var(V_SUBNET_CIDR),
                ],
            ),
            appgw_public_ip_command(),
        ],
        note: Some(
            "Application Gateway v2 needs a subnet of its own, and a Standard static public IP"
                .into(),
        ),
    }
}

/// `az network public-ip VERB -g "$AZ_RG" -n "$APPGW_NAME-pip" MORE...`: the gateway's public IP.
fn public_ip_args(verb: &str, more: &[&str]) -> Vec<String> {
    let rg = var(V_RG);
    owned_words(
        &[
            "az",
            "network",
            "public-ip",
            verb,
            "-g",
            &rg,
            "-n",
            APPGW_PIP,
        ],
        more,
    )
}

/// Creates the gateway's Standard static public IP unless it exists.
fn appgw_public_ip_command() -> String {
    guarded_words(
        public_ip_args("show", &[]),
        public_ip_args(
            "create",
            &[
                "-l",
                &var(V_LOCATION),
                "--sku",
                "Standard",
                "--allocation-method",
                "Static",
                "--zone",
                "1",
                "2",
                "3",
            ],
        ),
    )
}

/// The gateway itself: WAF_v2, autoscaling, zone-redundant; its backend comes in the next steps.
fn appgw_create_step() -> Step {
    let (rg, gw, waf) = (var(V_RG), var(V_GATEWAY), var(V_WAF));
    let (rg, gw, waf) = (rg.as_str(), gw.as_str(), waf.as_str());
    let vnet = var(V_VNET);
    Step {
        title: "Create the Application Gateway (WAF_v2, autoscaling 2-10 instances, zones 1-3)".into(),
        commands: vec![guarded(
            &["az", "network", "application-gateway", "show", "-g", rg, "-n", gw],
            &["az", "network", "application-gateway", "create", "-g", rg, "-n", gw, "-l", &var(V_LOCATION),
              "--sku", "WAF_v2", "--min-capacity", "2", "--max-capacity", "10", "--zones", "1", "2", "3",
              "--vnet-name", &vnet,
              "--subnet", "$(az network vnet subnet show -g \"$VNET_RG\" --vnet-name \"$VNET_NAME\" -n appgw-subnet --query id -o tsv)",
              "--public-ip-address", APPGW_PIP, "--waf-policy", waf, "--priority", "1000"],
        )],
        note: Some(
            "creating a gateway takes several minutes. v2 autoscales between --min-capacity and --max-capacity instead of a \
             fixed --capacity; --zones 1 2 3 (and the public IP's --zone 1 2 3) spread it over availability zones: drop \
             both in a region without zones"
                .into(),
        ),
    }
}

/// The backend: pool, health probe and HTTP settings toward the ingress controller.
fn appgw_backend_steps(v: &Values, address: &str) -> Vec<Step> {
    let host = v.host.as_str();
    let t = target(v);
    let port = render::GATEWAY_STATUS_PORT.to_string();
    // Where the probe goes: the gateway's status port and readiness path, or nginx's /healthz.
    let (title, target_args, note): (&str, Vec<&str>, String) = if t.gateway {
        (
            "Probe the Gateway's readiness, not the app",
            vec!["--port", &port, "--path", GATEWAY_READY_PATH],
            format!(
                "an Istio gateway answers 404 on port 80 for any host without a route, and with Host {host} the probe would go \
                 through Flagger's HTTPRoute split, so a failing canary could take the gateway's only backend down for everyone; \
                 port {port} {GATEWAY_READY_PATH} is the gateway pods' own readiness endpoint (the Gateway's Service exposes the \
                 status port)"
            ),
        )
    } else {
        (
            "Probe the ingress controller itself, not the app",
            vec!["--path", "/healthz"],
            format!(
                "Host {APPGW_PROBE_HOST} matches no Ingress, so ingress-nginx's default server answers /healthz; with Host {host} \
                 the probe would go through the app's Ingress and Flagger's split, and a failing canary could take the gateway's \
                 only backend down for everyone"
            ),
        )
    };
    let mut probe_args = vec!["--protocol", "Http", "--host", APPGW_PROBE_HOST];
    probe_args.extend(target_args);
    probe_args.extend([
        "--interval",
        "30",
        "--timeout",
        "30",
        "--threshold",
        "3",
        "--match-status-codes",
        "200-399",
    ]);
    let probe = Step {
        title: title.into(),
        commands: vec![guarded_words(
            gw_args("probe", "show", PROBE, &[]),
            gw_args("probe", "create", PROBE, &probe_args),
        )],
        note: Some(note),
    };
    vec![
        Step {
            title: format!("Put {}'s private address {address} in the backend pool", t.what),
            commands: vec![
                guarded_words(gw_args("address-pool", "show", POOL, &[]), gw_args("address-pool", "create", POOL, &["--servers", address])),
                sh_words(gw_args("address-pool", "update", POOL, &["--servers", address])),
            ],
            note: Some("the internal load balancer's address in the cluster's VNet; the update keeps the pool on the current address".into()),
        },
        probe,
        Step {
            title: format!("Send traffic on port 80 with host name {host}"),
            commands: vec![guarded_words(
                gw_args("http-settings", "show", HTTP_SETTINGS, &[]),
                gw_args(
                    "http-settings",
                    "create",
                    HTTP_SETTINGS,
                    &[
                        "--port",
                        "80",
                        "--protocol",
                        "Http",
                        "--probe",
                        PROBE,
                        "--host-name",
                        host,
                        "--timeout",
                        "60",
                    ],
                ),
            )],
            note: Some(if t.gateway {
                format!("the host name makes the Gateway pick Flagger's HTTPRoute for {host}; TLS ends at the Application Gateway")
            } else {
                format!("the host name makes NGINX pick the app's Ingress for {host}; TLS ends at the gateway")
            }),
        },
    ]
}

/// The HTTPS listener, the X-Forwarded-For rewrite and the rule tying them to the backend.
fn appgw_listener_steps(host: &str, gateway: bool) -> Vec<Step> {
    let reader = if gateway { "the app" } else { "nginx" };
    let (rg, gw) = (var(V_RG), var(V_GATEWAY));
    let (rg, gw) = (rg.as_str(), gw.as_str());
    vec![
        Step {
            title: format!("Add an HTTPS listener for {host} with your certificate"),
            commands: vec![
                guarded_words(
                    gw_args("frontend-port", "show", FRONTEND_PORT, &[]),
                    gw_args("frontend-port", "create", FRONTEND_PORT, &["--port", "443"]),
                ),
                guarded_words(
                    gw_args("ssl-cert", "show", SSL_CERT, &[]),
                    gw_args(
                        "ssl-cert",
                        "create",
                        SSL_CERT,
                        &[
                            "--cert-file",
                            "$CERT_PFX",
                            "--cert-password",
                            "$CERT_PASSWORD",
                        ],
                    ),
                ),
                guarded_words(
                    gw_args("http-listener", "show", LISTENER, &[]),
                    gw_args(
                        "http-listener",
                        "create",
                        LISTENER,
                        &[
                            "--frontend-port",
                            FRONTEND_PORT,
                            "--ssl-cert",
                            SSL_CERT,
                            "--host-name",
                            host,
                        ],
                    ),
                ),
            ],
            note: Some(format!(
                "the PFX holds the certificate and key for {host} (a Key Vault certificate works too: ssl-cert create --key-vault-secret-id)"
            )),
        },
        Step {
            title: "Pass the client's address without its port, and route the listener to the pool"
                .into(),
            commands: vec![
                guarded(
                    &[
                        "az",
                        "network",
                        "application-gateway",
                        "rewrite-rule",
                        "set",
                        "show",
                        "-g",
                        rg,
                        "--gateway-name",
                        gw,
                        "-n",
                        REWRITE_SET,
                    ],
                    &[
                        "az",
                        "network",
                        "application-gateway",
                        "rewrite-rule",
                        "set",
                        "create",
                        "-g",
                        rg,
                        "--gateway-name",
                        gw,
                        "-n",
                        REWRITE_SET,
                    ],
                ),
                guarded(
                    &[
                        "az",
                        "network",
                        "application-gateway",
                        "rewrite-rule",
                        "show",
                        "-g",
                        rg,
                        "--gateway-name",
                        gw,
                        "--rule-set-name",
                        REWRITE_SET,
                        "-n",
                        "strip-port",
                    ],
                    &[
                        "az",
                        "network",
                        "application-gateway",
                        "rewrite-rule",
                        "create",
                        "-g",
                        rg,
                        "--gateway-name",
                        gw,
                        "--rule-set-name",
                        REWRITE_SET,
                        "-n",
                        "strip-port",
                        "--sequence",
                        "100",
                        "--request-headers",
                        "X-Forwarded-For={var_add_x_forwarded_for_proxy}",
                    ],
                ),
                guarded_words(
                    gw_args("rule", "show", RULE, &[]),
                    gw_args(
                        "rule",
                        "create",
                        RULE,
                        &[
                            "--http-listener",
                            LISTENER,
                            "--address-pool",
                            POOL,
                            "--http-settings",
                            HTTP_SETTINGS,
                            "--rule-type",
                            "Basic",
                            "--priority",
                            "100",
                            "--rewrite-rule-set",
                            REWRITE_SET,
                        ],
                    ),
                ),
            ],
            note: Some(format!(
                "Application Gateway sends X-Forwarded-For as IP:port; the rewrite sets it to the server variable \
                 add_x_forwarded_for_proxy (the same list without ports), which {} reads as the client's address",
                reader
            )),
        },
    ]
}

/// The A record for the host, pointed at the gateway's public IP.
fn appgw_a_record_step(v: &Values, input: &GuidanceInput) -> Step {
    let host = v.host.as_str();
    let mut a = vec![format!(
        "APPGW_IP=$({})",
        sh_words(public_ip_args(
            "show",
            &["--query", "ipAddress", "-o", "tsv"]
        ))
    )];
    if input.az_available {
        let (zrg, zone, name) = zone_words(v, input.dns_zone);
        a.extend(zone_assignments(input.dns_zone));
        a.extend(a_record_commands(&zrg, &zone, &name, "$APPGW_IP"));
    }
    Step {
        title: format!("Point the A record for {host} at the gateway's public IP"),
        commands: a,
        note: Some(if input.az_available {
            "the record set ends up holding only the gateway's address".into()
        } else {
            "create the A record listed above with that address in your DNS".into()
        }),
    }
}

/// Front Door (Standard, or Premium with Private Link) in the order a fresh subscription needs:
/// profile, endpoint, origin group, origin, custom domain, TXT, wait for Approved, route, CNAME.
fn frontdoor_steps(v: &Values, address: &str, input: &GuidanceInput) -> Vec<Step> {
    let host = v.host.as_str();
    let private_link = v.front_door.private_link;
    // Front Door custom-domain names take letters, digits and '-': the host with '-' for '.'.
    let domain = host.replace('.', "-");
    let mut vars = vec![V_RG, V_AFD_PROFILE, V_AFD_ENDPOINT, V_AFD_WAF];
    if private_link {
        vars.extend([V_LOCATION, V_AKS_RG, V_AKS]);
    } else if front_door_ranges_needed(v) {
        vars.push(V_LOCATION);
    }
    let mut steps = vec![variables_step(&vars)];
    steps.push(afd_profile_step(private_link));
    steps.push(afd_origin_group_step(v));
    steps.extend(afd_origin_steps(v, address));
    steps.push(afd_custom_domain_step(host, &domain));
    steps.push(afd_validation_step(v, input, &domain));
    steps.push(afd_route_step(v, &domain));
    steps.push(afd_waf_step(private_link, &domain));
    steps.push(afd_cname_step(v, input));
    steps.push(afd_origin_check_step(v));
    steps
}

/// Installs or upgrades the Azure CLI's front-door extension, which carries `az network front-door
/// waf-policy` (the Front Door WAF policy commands are not in the core CLI).
pub const FRONT_DOOR_EXTENSION: [&str; 6] = [
    "az",
    "extension",
    "add",
    "--name",
    "front-door",
    "--upgrade",
];

/// The security policy's name inside the Front Door profile.
const AFD_SECURITY_POLICY: &str = "gridos-waf";

/// A Front Door WAF policy in Prevention mode, tied to the custom domain by a security policy
/// (Learn, "Tutorial: Create a WAF policy for Azure Front Door by using the Azure CLI"). Managed rule
/// sets (the Default Rule Set 2.1) need the Premium tier; on Standard the policy holds custom rules.
fn afd_waf_step(premium: bool, domain: &str) -> Step {
    let (rg, waf) = (var(V_RG), var(V_AFD_WAF));
    let (rg, waf) = (rg.as_str(), waf.as_str());
    let sku = if premium {
        "Premium_AzureFrontDoor"
    } else {
        "Standard_AzureFrontDoor"
    };
    let waf_cmd = |more: &[&str]| owned_words(&["az", "network", "front-door", "waf-policy"], more);
    let create = sh_words(waf_cmd(&[
        "create",
        "-g",
        rg,
        "-n",
        waf,
        "--sku",
        sku,
        "--mode",
        "Prevention",
    ]));
    let managed = sh_words(waf_cmd(&[
        "managed-rules",
        "add",
        "-g",
        rg,
        "--policy-name",
        waf,
        "--type",
        "Microsoft_DefaultRuleSet",
        "--version",
        "2.1",
        "--action",
        "Block",
    ]));
    let show = sh_words(waf_cmd(&["show", "-g", rg, "-n", waf]));
    let policy = if premium {
        format!("{show} >/dev/null 2>&1 || {{ {create} && {managed}; }}")
    } else {
        format!("{show} >/dev/null 2>&1 || {create}")
    };
    let ids = |cmd: Vec<String>| format!("$({})", sh_words(cmd));
    let domain_id = ids(afd_args(
        "custom-domain",
        "show",
        &["--custom-domain-name", domain, "--query", "id", "-o", "tsv"],
    ));
    let waf_id = ids(waf_cmd(&[
        "show", "-g", rg, "-n", waf, "--query", "id", "-o", "tsv",
    ]));
    let the_policy = ["--security-policy-name", AFD_SECURITY_POLICY];
    let mut attach = the_policy.to_vec();
    attach.extend(["--domains", &domain_id, "--waf-policy", &waf_id]);
    Step {
        title: "Put a WAF policy in front of the custom domain (Front Door security policy)".into(),
        commands: vec![
            sh(&FRONT_DOOR_EXTENSION),
            policy,
            guarded_words(
                afd_args("security-policy", "show", &the_policy),
                afd_args("security-policy", "create", &attach),
            ),
        ],
        note: Some(if premium {
            "the policy blocks what the Default Rule Set 2.1 matches (Prevention mode); the security policy applies it to the \
             custom domain. `az network front-door waf-policy` lives in the front-door CLI extension"
                .into()
        } else {
            "managed rule sets such as the Default Rule Set need the Premium tier: on Standard the policy runs in Prevention \
             mode with the custom rules you add (e.g. rate limits: az network front-door waf-policy rule create); the \
             security policy applies it to the custom domain. `az network front-door waf-policy` lives in the front-door CLI \
             extension"
                .into()
        }),
    }
}

/// Whether nginx should be told Front Door's full backend ranges: a public origin behind nginx whose
/// trusted ranges are still the built-in two (the AzureFrontDoor.Backend service tag holds many more).
fn front_door_ranges_needed(v: &Values) -> bool {
    v.front == Front::Frontdoor
        && !v.front_door.private_link
        && profile::trusted_proxies(v).is_some()
        && v.ingress_controller.real_client_ip.trusted_cidrs.is_empty()
}

/// Installs or upgrades the Azure CLI's cdn extension, which carries `az afd` since CLI 2.88.0 (the
/// `cdn`/`afd` command module left the core CLI then; azure-cli 2.87.0 is the last with it).
pub const CDN_EXTENSION: [&str; 6] = ["az", "extension", "add", "--name", "cdn", "--upgrade"];

/// `az afd SUB VERB -g "$AZ_RG" --profile-name "$AFD_PROFILE" MORE...`
fn afd_args(sub: &str, verb: &str, more: &[&str]) -> Vec<String> {
    let (rg, prof) = (var(V_RG), var(V_AFD_PROFILE));
    owned_words(
        &["az", "afd", sub, verb, "-g", &rg, "--profile-name", &prof],
        more,
    )
}

/// The Front Door profile (Premium for Private Link) and its endpoint.
fn afd_profile_step(private_link: bool) -> Step {
    let ep = var(V_AFD_ENDPOINT);
    let ep = ep.as_str();
    let sku = if private_link {
        "Premium_AzureFrontDoor"
    } else {
        "Standard_AzureFrontDoor"
    };
    Step {
        title: format!("Create the Front Door profile ({sku}) and its endpoint"),
        commands: vec![
            sh(&CDN_EXTENSION),
            guarded_words(
                afd_args("profile", "show", &[]),
                afd_args("profile", "create", &["--sku", sku]),
            ),
            guarded_words(
                afd_args("endpoint", "show", &["--endpoint-name", ep]),
                afd_args(
                    "endpoint",
                    "create",
                    &["--endpoint-name", ep, "--enabled-state", "Enabled"],
                ),
            ),
        ],
        note: Some(format!(
            "`az afd` left the core Azure CLI in 2.88.0 for the cdn extension: the first command installs or upgrades it \
             (a CLI older than 2.88.0 still has `az afd` built in; there, if the extension refuses your CLI version, \
             upgrade the CLI or skip that command){}",
            if private_link {
                "; Private Link origins need the Premium tier"
            } else {
                ""
            }
        )),
    }
}

/// The origin group, without a probe (it has one origin).
fn afd_origin_group_step(v: &Values) -> Step {
    let host = v.host.as_str();
    let split = if target(v).gateway {
        "Flagger's HTTPRoute and its"
    } else {
        "the app's Ingress and Flagger's"
    };
    Step {
        title: "Create the origin group (one origin, so no health probe)".into(),
        commands: vec![guarded_words(
            afd_args(
                "origin-group",
                "show",
                &["--origin-group-name", AFD_ORIGIN_GROUP],
            ),
            afd_args(
                "origin-group",
                "create",
                &[
                    "--origin-group-name",
                    AFD_ORIGIN_GROUP,
                    "--sample-size",
                    "4",
                    "--successful-samples-required",
                    "3",
                    "--additional-latency-in-milliseconds",
                    "50",
                ],
            ),
        )],
        note: Some(format!(
            "Front Door probes with the origin host header {host}, which would go through {split} \
             split; with a single origin there is nothing to fail over to, so the group has no probe"
        )),
    }
}

/// The origin: the ingress controller, over Private Link or at its public address.
fn afd_origin_steps(v: &Values, address: &str) -> Vec<Step> {
    let host = v.host.as_str();
    let https = profile::origin_https(v);
    let (origin, origin_show, origin_update) = afd_origin_commands(v, address);
    if v.front_door.private_link {
        return afd_private_link_steps(v, address, origin, origin_show, origin_update);
    }
    let t = target(v);
    vec![Step {
        title: format!(
            "Add {} {address} as the origin with origin host header {host}",
            t.what
        ),
        commands: vec![guarded_words(origin_show, origin), origin_update],
        note: Some(match (https, t.gateway) {
            (true, false) => format!(
                "Front Door connects over HTTPS and checks the origin's certificate against {host}: the app's Ingress must \
                 serve a certificate for {host} from a publicly trusted CA (a TLS Secret named in its spec.tls, e.g. from \
                 cert-manager or Key Vault); a self-signed one is refused"
            ),
            (true, true) => format!(
                "Front Door connects over HTTPS and checks the origin's certificate against {host}: the Secret {} in {} \
                 (gateway.tls.secretName), which the Gateway's https listener serves, must hold a certificate for {host} \
                 from a publicly trusted CA; a self-signed one is refused",
                v.gateway.tls.secret_name, t.ns
            ),
            (false, false) => {
                "frontDoor.originProtocol=http: Front Door connects over plain HTTP (see the warning)"
                    .into()
            }
            (false, true) => {
                "Front Door connects over plain HTTP: the Gateway listens on 443 only with gateway.tls.secretName (see the warning)"
                    .into()
            }
        }),
    }]
}

/// The origin's create, show and update commands: (create words, show words, update line).
fn afd_origin_commands(v: &Values, address: &str) -> (Vec<String>, Vec<String>, String) {
    let host = v.host.as_str();
    let https = profile::origin_https(v);
    let the_origin = [
        "--origin-group-name",
        AFD_ORIGIN_GROUP,
        "--origin-name",
        AFD_ORIGIN,
    ];
    let mut origin = afd_args("origin", "create", &the_origin);
    let target = ["--host-name", address, "--origin-host-header", host];
    origin.extend(target.map(String::from));
    origin.extend(
        [
            "--http-port",
            "80",
            "--https-port",
            "443",
            "--priority",
            "1",
            "--weight",
            "1000",
            "--enabled-state",
            "Enabled",
        ]
        .map(String::from),
    );
    if https {
        // `az afd origin create` names it --enforce-certificate-name-check (default true; there is
        // no --enable-certificate-name-check): stated so Front Door checks the origin's certificate.
        origin.extend(["--enforce-certificate-name-check", "true"].map(String::from));
    }
    let origin_show = afd_args("origin", "show", &the_origin);
    let mut update = afd_args("origin", "update", &the_origin);
    update.extend(target.map(String::from));
    let origin_update = sh_words(update);
    (origin, origin_show, origin_update)
}

/// The Private Link origin: find AKS's Private Link service, add the origin, approve its connection.
fn afd_private_link_steps(
    v: &Values,
    address: &str,
    origin: Vec<String>,
    origin_show: Vec<String>,
    origin_update: String,
) -> Vec<Step> {
    let host = v.host.as_str();
    let t = target(v);
    let (ns, service) = (&t.ns, &t.service);
    let mut create = origin;
    create.extend(
        [
            "--enable-private-link",
            "true",
            "--private-link-resource",
            "$PLS_ID",
            "--private-link-location",
            "$AZ_LOCATION",
            "--private-link-request-message",
            "Front Door origin for gridos",
        ]
        .map(String::from),
    );
    let pls = render::PRIVATE_LINK_SERVICE_NAME;
    vec![
        Step {
            title: format!("Find the Private Link service AKS created for {}", t.what),
            commands: vec![
                format!("NODE_RG=$({})", sh(&NODE_RG_QUERY)),
                format!("PLS_ID=$({})", sh(&["az", "network", "private-link-service", "show", "-g", "$NODE_RG", "-n", pls,
                    "--query", "id", "-o", "tsv"])),
            ],
            note: Some(format!(
                "the Service {service} in {ns} carries azure-pls-create: \"true\" and azure-pls-name: {pls}, so \
                 cloud-provider-azure names the Private Link service {pls} (without the name it would be \
                 pls-<frontend IP configuration name>). {}",
                private_link_subnet_note(v)
            )),
        },
        Step {
            title: format!(
                "Add {} as a Private Link origin with origin host header {host}",
                t.what
            ),
            commands: vec![guarded_words(origin_show, create), origin_update],
            note: Some(format!(
                "origin = the internal address {address} behind the Private Link service"
            )),
        },
        Step {
            title: "Approve Front Door's private endpoint connection once it is Pending".into(),
            commands: vec![private_endpoint_approval()],
            note: Some(
                "Front Door creates its private endpoint on its own time after the origin is added: the loop approves \
                 each Pending connection as it appears and stops once one is Approved (at most 10 minutes, then it \
                 fails); until then Front Door answers 502/504"
                    .into(),
            ),
        },
    ]
}

/// `az aks show ... --query nodeResourceGroup`: where AKS puts the load balancer and its Private Link service.
const NODE_RG_QUERY: [&str; 11] = [
    "az",
    "aks",
    "show",
    "-g",
    "$AKS_RG",
    "-n",
    "$AKS_NAME",
    "--query",
    "nodeResourceGroup",
    "-o",
    "tsv",
];

/// The Private Link service's NAT subnet: what `frontDoor.privateLinkSubnet` is, said once.
fn private_link_subnet_note(v: &Values) -> String {
    let subnet = &v.front_door.private_link_subnet;
    if subnet.is_empty() {
        "Its NAT addresses come from the load balancer's subnet; under Azure CNI with externalTrafficPolicy Local \
         (the ingress controller's) they must come from a subnet apart from the pods': create one in the cluster's VNet and \
         re-run install with --set frontDoor.privateLinkSubnet=<subnet name> (annotation \
         azure-pls-ip-configuration-subnet)"
            .into()
    } else {
        format!(
            "Its NAT addresses come from subnet {subnet} (frontDoor.privateLinkSubnet, annotation \
             azure-pls-ip-configuration-subnet), apart from the pods' subnet"
        )
    }
}

/// A bounded loop that approves Front Door's private endpoint connection once it is Pending: Front
/// Door requests it asynchronously after the origin is created ("Connect Azure Front Door Premium
/// to an internal load balancer origin with Private Link"), so one pass right away may find none.
fn private_endpoint_approval() -> String {
    let list = |status: &str| {
        sh(&[
            "az",
            "network",
            "private-endpoint-connection",
            "list",
            "--id",
            "$PLS_ID",
            "--query",
            &format!("[?properties.privateLinkServiceConnectionState.status=='{status}'].id"),
            "-o",
            "tsv",
        ])
    };
    let approve = sh(&[
        "az",
        "network",
        "private-endpoint-connection",
        "approve",
        "--id",
        "$id",
        "--description",
        "Front Door gridos origin",
    ]);
    format!(
        "approved=; for i in $(seq 1 60); do for id in $({}); do {approve}; done; \
         [ -n \"$({})\" ] && approved=1 && break; sleep 10; done; \
         [ -n \"$approved\" ] || {{ echo \"no approved private endpoint connection on $PLS_ID after 10 min: check the origin\" >&2; false; }}",
        list("Pending"),
        list("Approved"),
    )
}

/// The custom domain for the host, and its validation token.
fn afd_custom_domain_step(host: &str, domain: &str) -> Step {
    Step {
        title: format!("Add {host} as a custom domain and read its validation token"),
        commands: vec![
            guarded_words(
                afd_args("custom-domain", "show", &["--custom-domain-name", domain]),
                afd_args(
                    "custom-domain",
                    "create",
                    &[
                        "--custom-domain-name",
                        domain,
                        "--host-name",
                        host,
                        "--certificate-type",
                        "ManagedCertificate",
                        "--minimum-tls-version",
                        "TLS12",
                    ],
                ),
            ),
            format!(
                "AFD_TOKEN=$({})",
                sh_words(afd_args(
                    "custom-domain",
                    "show",
                    &[
                        "--custom-domain-name",
                        domain,
                        "--query",
                        "validationProperties.validationToken",
                        "-o",
                        "tsv"
                    ]
                ))
            ),
        ],
        note: Some(
            "the token exists only once the domain is created; it is the TXT record's value. The managed certificate is \
             issued by DigiCert: a CAA record on the host or a parent domain (az network dns record-set caa list) that \
             does not allow digicert.com (0 issue \"digicert.com\") blocks it"
                .into(),
        ),
    }
}

/// The TXT record that proves the domain, and the wait until Front Door approves it.
fn afd_validation_step(v: &Values, input: &GuidanceInput, domain: &str) -> Step {
    let host = v.host.as_str();
    let (zrg, zone, name) = zone_words(v, input.dns_zone);
    let txt_name = if name == "@" {
        "_dnsauth".to_string()
    } else {
        format!("_dnsauth.{name}")
    };
    let mut txt = Vec::new();
    if input.az_available {
        txt.extend(zone_assignments(input.dns_zone));
        txt.push(sh(&[
            "az",
            "network",
            "dns",
            "record-set",
            "txt",
            "add-record",
            "-g",
            &zrg,
            "-z",
            &zone,
            "-n",
            &txt_name,
            "-v",
            "$AFD_TOKEN",
        ]));
    }
    // Bounded, so a pipeline that pastes it fails instead of hanging on a wrong TXT record;
    // `false` rather than `exit`, so a pasted interactive shell stays open.
    txt.push(format!(
        "state=; for i in $(seq 1 120); do state=\"$({})\"; [ \"$state\" = Approved ] && break; sleep 30; done; \
         [ \"$state\" = Approved ] || {{ echo \"custom domain not Approved after 60 min (state: $state): check the TXT record\" >&2; false; }}",
        sh_words(afd_args(
            "custom-domain",
            "show",
            &[
                "--custom-domain-name",
                domain,
                "--query",
                "domainValidationState",
                "-o",
                "tsv"
            ]
        ))
    ));
    Step {
        title: format!(
            "Create the TXT record _dnsauth.{host} and wait until the domain is Approved"
        ),
        commands: txt,
        note: Some(if input.az_available {
            "validation usually takes minutes (the loop gives up after 60); the managed certificate follows".into()
        } else {
            "create the TXT record listed above with the value $AFD_TOKEN in your DNS, then wait"
                .into()
        }),
    }
}

/// The route from the custom domain to the origin group.
fn afd_route_step(v: &Values, domain: &str) -> Step {
    let host = v.host.as_str();
    let https = profile::origin_https(v);
    let private_link = v.front_door.private_link;
    let ep = var(V_AFD_ENDPOINT);
    let ep = ep.as_str();
    let forwarding = if https { "HttpsOnly" } else { "HttpOnly" };
    Step {
        title: format!("Route {host} to the origin group"),
        commands: vec![guarded_words(
            afd_args(
                "route",
                "show",
                &["--endpoint-name", ep, "--route-name", AFD_ROUTE],
            ),
            afd_args(
                "route",
                "create",
                &[
                    "--endpoint-name",
                    ep,
                    "--route-name",
                    AFD_ROUTE,
                    "--origin-group",
                    AFD_ORIGIN_GROUP,
                    "--custom-domains",
                    domain,
                    "--supported-protocols",
                    "Http",
                    "Https",
                    "--https-redirect",
                    "Enabled",
                    "--forwarding-protocol",
                    forwarding,
                    "--link-to-default-domain",
                    "Disabled",
                ],
            ),
        )],
        note: Some(if https {
            "Front Door terminates the client's TLS and opens a new TLS connection to the origin (HttpsOnly)".into()
        } else if private_link {
            "over Private Link the hop to the origin stays inside Azure's network, so it is plain HTTP (HttpOnly)".into()
        } else {
            "plain HTTP to a public origin, as chosen with frontDoor.originProtocol=http".into()
        }),
    }
}

/// The CNAME from the host to the endpoint, once the route serves it.
fn afd_cname_step(v: &Values, input: &GuidanceInput) -> Step {
    let host = v.host.as_str();
    let ep = var(V_AFD_ENDPOINT);
    let ep = ep.as_str();
    let (zrg, zone, name) = zone_words(v, input.dns_zone);
    let mut cname = vec![format!(
        "AFD_HOST=$({})",
        sh_words(afd_args(
            "endpoint",
            "show",
            &["--endpoint-name", ep, "--query", "hostName", "-o", "tsv"]
        ))
    )];
    if input.az_available {
        // A CNAME cannot share its name with other records (RFC 1034 3.6.2): an A record left by
        // an earlier nginx or appgw install would make set-record fail.
        let a = |verb: &str, more: &[&str]| {
            owned_words(
                &[
                    "az",
                    "network",
                    "dns",
                    "record-set",
                    "a",
                    verb,
                    "-g",
                    &zrg,
                    "-z",
                    &zone,
                    "-n",
                    &name,
                ],
                more,
            )
        };
        cname.push(removed_if_present(a("show", &[]), a("delete", &["--yes"])));
        cname.push(sh(&[
            "az",
            "network",
            "dns",
            "record-set",
            "cname",
            "set-record",
            "-g",
            &zrg,
            "-z",
            &zone,
            "-n",
            &name,
            "-c",
            "$AFD_HOST",
        ]));
    }
    Step {
        title: format!("Point {host} at the endpoint (CNAME), now that the route serves it"),
        commands: cname,
        note: Some(if input.az_available {
            "a CNAME cannot share its name with other records: an A record left by an earlier profile is deleted first; \
             set-record replaces the CNAME's target"
                .into()
        } else {
            "create the CNAME listed above with the value $AFD_HOST in your DNS".into()
        }),
    }
}

/// How to check that only Front Door reaches the origin: no public IP, or the service-tag lock.
fn afd_origin_check_step(v: &Values) -> Step {
    let private_link = v.front_door.private_link;
    let t = target(v);
    let ingress_ns = &t.ns;
    let service = word(&t.service);
    if private_link {
        Step {
            title: "Check that the origin is private".into(),
            commands: vec![format!(
                "kubectl get service {service} -n {} -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}'",
                word(ingress_ns)
            )],
            note: Some("the internal load balancer has no public IP; only approved private endpoints (Front Door's) reach it".into()),
        }
    } else {
        afd_public_origin_lock_step(v)
    }
}

/// `az network list-service-tags ... | paste -sd, -`: the AzureFrontDoor.Backend prefixes as one
/// comma-separated list. The tag's prefixes change; the service-tag discovery API publishes them.
fn front_door_ranges_command() -> String {
    format!(
        "FD_BACKEND=$({} | paste -sd, -)",
        sh(&[
            "az",
            "network",
            "list-service-tags",
            "--location",
            "$AZ_LOCATION",
            "--query",
            "values[?name=='AzureFrontDoor.Backend'].properties.addressPrefixes[]",
            "-o",
            "tsv",
        ])
    )
}

/// The public origin: admitted only from AzureFrontDoor.Backend, which every Front Door shares, so
/// the app must check X-Azure-FDID; nginx learns the tag's full ranges and the load tester the ID.
fn afd_public_origin_lock_step(v: &Values) -> Step {
    let t = target(v);
    let fdid_cmd = sh_words(afd_args(
        "profile",
        "show",
        &["--query", "frontDoorId", "-o", "tsv"],
    ));
    let mut commands = vec![
        format!(
            "kubectl get service {} -n {} -o jsonpath='{{.metadata.annotations.service\\.beta\\.kubernetes\\.io/azure-allowed-service-tags}}'",
            word(&t.service),
            word(&t.ns)
        ),
        fdid_cmd.clone(),
    ];
    let mut sets = Vec::new();
    if v.front_door.id.is_empty() {
        sets.push(format!("frontDoor.id=\"$({fdid_cmd})\""));
    }
    if front_door_ranges_needed(v) {
        commands.push(front_door_ranges_command());
        sets.push("\"ingressController.realClientIp.trustedCidrs=[$FD_BACKEND]\"".to_string());
    }
    if !sets.is_empty() {
        let sets: Vec<String> = sets.iter().map(|s| format!(" --set {s}")).collect();
        commands.push(format!(
            "gridos-setup install --profile {} --host {}{}{} --yes",
            word(&v.name),
            word(&v.host),
            traffic_flag(v),
            sets.concat()
        ));
    }
    Step {
        title: "Lock the origin to your Front Door".into(),
        commands,
        note: Some(afd_lock_note(v, !sets.is_empty())),
    }
}

/// What the lock does and does not do, said once.
fn afd_lock_note(v: &Values, rerun: bool) -> String {
    let gateway = target(v).gateway;
    let mut note = String::from(
        "the Service's azure-allowed-service-tags: AzureFrontDoor.Backend admits only Front Door's addresses, but every Front \
         Door profile shares them, anyone's: until the app rejects requests whose X-Azure-FDID header is not your Front \
         Door ID (the second command prints it), the origin is open to any Front Door. ",
    );
    note.push_str(if gateway {
        "Flagger owns the HTTPRoute and replaces any header match added to it, so check it in the app (e.g. a middleware that answers 403)."
    } else {
        "Snippets are disabled in this install (allow-snippet-annotations: false), so check it in the app (e.g. a middleware \
         that answers 403)."
    });
    if front_door_ranges_needed(v) {
        note.push_str(
            " nginx trusts X-Forwarded-For only from Front Door's documented 147.243.0.0/16 and 2a01:111:2050::/44 until \
             given the service tag's full, changing list (FD_BACKEND, from az network list-service-tags); re-run when it changes.",
        );
    }
    if rerun {
        note.push_str(" The last command re-runs install with these values");
        if v.front_door.id.is_empty() {
            note.push_str(
                " (with frontDoor.id the load tester sends the header, so the canary analysis measures requests that pass the lock)",
            );
        }
        note.push('.');
    } else if !v.front_door.id.is_empty() {
        note.push_str(&format!(
            " The load tester sends X-Azure-FDID: {}, so its requests pass the lock.",
            v.front_door.id
        ));
    }
    note
}

/// What nginx takes the client's address from, and how to see it: per-client limits (limit-rps) and
/// logs depend on it.
fn real_client_ip_step(v: &Values) -> Option<Step> {
    let cidrs = profile::trusted_proxies(v)?;
    let front = match v.front {
        Front::Appgw => {
            "the Application Gateway's instances: private addresses in the VNet".to_string()
        }
        Front::Frontdoor if v.front_door.private_link => {
            "the Private Link service's NAT addresses: private addresses in the VNet".to_string()
        }
        Front::Frontdoor => "Front Door's backend addresses (AzureFrontDoor.Backend)".to_string(),
        Front::Nginx => "your proxy".to_string(),
    };
    Some(Step {
        title: "Real client addresses: what nginx trusts".into(),
        commands: vec![format!(
            "kubectl get configmap ingress-nginx-controller -n {} -o jsonpath='{{.data.proxy-real-ip-cidr}}'",
            word(&v.namespaces.ingress)
        )],
        note: Some(format!(
            "nginx takes the client's address from X-Forwarded-For only on connections from {} ({front}); from anywhere \
             else the header is ignored. limit-rps and the access log then count each user, not the front. Change it with \
             --set 'ingressController.realClientIp.trustedCidrs=[...]'",
            cidrs.join(", ")
        )),
    })
}

fn unstable_address_warning(v: &Values, address: &str) -> String {
    let internal = v.ingress_controller.service.internal || v.front_door.private_link;
    let what = if target(v).gateway {
        "The Gateway's"
    } else {
        "The ingress controller's"
    };
    format!(
        "{what} address {address} is AKS-managed: it goes away with the Service (uninstall, a profile \
         switch) and a new one comes back, while {} still points at the old one. Keep it stable with {} (step \"Keep the \
         address stable\").",
        match v.front {
            Front::Nginx => "your A record",
            Front::Appgw => "the gateway's backend pool",
            Front::Frontdoor => "Front Door's origin",
        },
        if internal {
            "ingressController.service.privateIp"
        } else {
            "a pre-created public IP (ingressController.service.publicIpName) or a DNS label (dnsLabel)"
        }
    )
}

/// How to give the controller an address that outlives its Service.
fn stable_address_step(v: &Values) -> Step {
    let internal = v.ingress_controller.service.internal || v.front_door.private_link;
    let install = |set: &str| {
        format!(
            "gridos-setup install --profile {} --host {}{} --set {} --yes",
            word(&v.name),
            word(&v.host),
            traffic_flag(v),
            word(set)
        )
    };
    if internal {
        return Step {
            title: "Keep the address stable".into(),
            commands: vec![install("ingressController.service.privateIp=<free address in the cluster's subnet>")],
            note: Some(
                "the internal load balancer then keeps that address (annotation azure-load-balancer-ipv4) across Service re-creation"
                    .into(),
            ),
        };
    }
    Step {
        title: "Keep the address stable".into(),
        commands: vec![
            format!("{}={}", V_AKS_RG.0, word(V_AKS_RG.1)),
            format!("{}={}", V_AKS.0, word(V_AKS.1)),
            format!("NODE_RG=$({})", sh(&NODE_RG_QUERY)),
            guarded(
                &["az", "network", "public-ip", "show", "-g", "$NODE_RG", "-n", "gridos-ingress"],
                &["az", "network", "public-ip", "create", "-g", "$NODE_RG", "-n", "gridos-ingress", "--sku", "Standard",
                  "--allocation-method", "Static"],
            ),
            install("ingressController.service.publicIpName=gridos-ingress"),
        ],
        note: Some(
            "a Standard static public IP in the node resource group, named by the annotation azure-pip-name, stays when the \
             Service goes; in another resource group also set ingressController.service.publicIpResourceGroup and give the \
             cluster's identity Network Contributor there. Or set ingressController.service.dnsLabel for a stable \
             <label>.<region>.cloudapp.azure.com name"
                .into(),
        ),
    }
}

/// Deploy, trigger, watch and gate: the same behind every front.
fn app_steps(v: &Values) -> Vec<Step> {
    let host = &v.host;
    let app = &v.namespaces.app;
    let flagger = &v.namespaces.flagger;
    let gateway = target(v).gateway;
    let deploy = if gateway {
        Step {
            title: "Deploy gridos with its Helm chart, without an Ingress".into(),
            commands: vec![format!(
                "helm upgrade --install gridos <chart> -n {app} --set fullnameOverride=gridos \
                 --set service.type=ClusterIP --set ingress.enabled=false"
            )],
            note: Some(format!(
                "the app's Deployment and Service must be named gridos: the Canary targets deployment/gridos, Flagger takes \
                 the Service gridos over and creates the HTTPRoute gridos in {app} on Gateway {}/{} for {host} \
                 (do not create one yourself: Flagger overwrites it)",
                v.namespaces.gateway, v.gateway.name
            )),
        }
    } else {
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
        }
    };
    let (weight, weight_note) = if gateway {
        (
            format!(
                "kubectl get httproute gridos -n {app} \
                 -o jsonpath='{{range .spec.rules[0].backendRefs[*]}}{{.name}}={{.weight}} {{end}}'"
            ),
            "the last command prints the weights of gridos-primary and gridos-canary in the HTTPRoute right now",
        )
    } else {
        (
            format!(
                "kubectl get ingress gridos-canary -n {app} \
                 -o jsonpath='{{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}}'"
            ),
            "the last command prints the share of traffic the canary gets right now",
        )
    };
    vec![
        deploy,
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
                weight,
            ],
            note: Some(weight_note.into()),
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
    if !v.grafana.enabled {
        return None;
    }
    let note =
        "then browse http://localhost:3000: the dashboard is the home page, read-only, no login";
    Some(Step {
        title: "Open the \"Canary Deployment Dashboard\" in Grafana".into(),
        commands: vec![format!(
            "kubectl port-forward -n {} svc/grafana 3000:80",
            v.namespaces.flagger
        )],
        note: Some(note.into()),
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

    /// For each set of `--set`s on `profile`, no printed command contains `needle`.
    fn assert_no_command_contains(profile: &str, cases: &[&[&str]], address: &str, needle: &str) {
        for sets in cases {
            let g = run(&values(profile, sets), Some(address));
            assert!(
                !all_commands(&g).iter().any(|c| c.contains(needle)),
                "{sets:?}"
            );
        }
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
        assert!(pool.commands[0].contains("address-pool create"));
        assert!(pool.commands[1].contains("address-pool update"));
        assert!(pool.commands[1].ends_with("--servers 198.51.100.10"));
        let cmds = all_commands(&g);
        assert!(cmds.iter().any(|c| c.contains("http-settings create")
            && c.contains("--port 80")
            && c.contains(&format!("--host-name {HOST}"))));
    }

    #[test]
    fn the_appgw_probe_cannot_match_the_apps_host() {
        let g = run(&values("appgw", &[]), Some("198.51.100.10"));
        let probe: Vec<&str> = all_commands(&g)
            .into_iter()
            .filter(|c| c.contains("application-gateway probe create"))
            .collect();
        assert_eq!(probe.len(), 1, "{probe:?}");
        let words = shlex::split(probe[0].rsplit("|| ").next().unwrap()).unwrap();
        let host = &words[words.iter().position(|w| w == "--host").unwrap() + 1];
        // Kubernetes refuses IP addresses as Ingress hosts, so no Ingress (the app's, the canary's)
        // can match this Host: the request reaches ingress-nginx's default server.
        assert!(host.parse::<std::net::IpAddr>().is_ok(), "{host}");
        assert_ne!(host, HOST);
        assert!(!probe[0].contains(HOST), "{}", probe[0]);
        assert!(probe[0].contains("--path /healthz"));
    }

    #[test]
    fn steps_come_in_the_order_a_fresh_subscription_needs() {
        let order = |g: &Guidance, wanted: &[&str]| {
            let cmds = all_commands(g).join("\n");
            let mut last = 0;
            for w in wanted {
                let at = cmds[last..]
                    .find(w)
                    .unwrap_or_else(|| panic!("{w} after position {last} in:\n{cmds}"));
                last += at + w.len();
            }
        };
        let az = |profile: &str, sets: &[&str]| {
            guidance(&GuidanceInput {
                values: &values(profile, sets),
                address: Some("203.0.113.10"),
                az_available: true,
                dns_zone: Some(("dns-rg", "example.com")),
            })
        };
        order(
            &az("appgw", &[]),
            &[
                "AZ_LOCATION=$(az network vnet show",
                "waf-policy create",
                "vnet subnet create",
                "public-ip create",
                "application-gateway create",
                "address-pool create",
                "probe create",
                "http-settings create",
                "http-listener create",
                "rewrite-rule create",
                "rule create",
                "redirect-config create",
                "rule delete",
                "rule create",
                "record-set a add-record",
                "trustedCidrs=[$APPGW_SUBNET_PREFIX]",
            ],
        );
        for sets in [&[][..], &["frontDoor.privateLink=true"][..]] {
            order(
                &az("frontdoor", sets),
                &[
                    "az extension add --name cdn --upgrade",
                    "afd profile show",
                    "afd profile create",
                    "afd endpoint create",
                    "afd origin-group create",
                    "afd origin create",
                    "afd custom-domain create",
                    "validationProperties.validationToken",
                    "record-set txt add-record",
                    "= Approved",
                    "afd route create",
                    "record-set cname set-record",
                ],
            );
        }
    }

    #[test]
    fn a_public_front_door_origin_gets_https_unless_http_is_chosen() {
        let forwarding = |g: &Guidance| {
            let route = all_commands(g)
                .into_iter()
                .find(|c| c.contains("afd route create"))
                .expect("a route")
                .to_string();
            let words = shlex::split(route.rsplit("|| ").next().unwrap()).unwrap();
            words[words
                .iter()
                .position(|w| w == "--forwarding-protocol")
                .unwrap()
                + 1]
            .clone()
        };
        let public = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        assert_eq!(forwarding(&public), "HttpsOnly");
        assert!(!all_commands(&public).iter().any(|c| c.contains("HttpOnly")));
        assert!(to_text(&public).contains("publicly trusted CA"));
        let pl = run(
            &values("frontdoor", &["frontDoor.privateLink=true"]),
            Some("10.0.0.7"),
        );
        assert_eq!(forwarding(&pl), "HttpOnly");
        let chosen = run(
            &values("frontdoor", &["frontDoor.originProtocol=http"]),
            Some("203.0.113.10"),
        );
        assert_eq!(forwarding(&chosen), "HttpOnly");
        assert!(chosen.warnings.iter().any(|w| w.contains("plain HTTP")));
        let https_pl = run(
            &values(
                "frontdoor",
                &[
                    "frontDoor.privateLink=true",
                    "frontDoor.originProtocol=https",
                ],
            ),
            Some("10.0.0.7"),
        );
        assert_eq!(forwarding(&https_pl), "HttpsOnly");
    }

    #[test]
    fn words_are_quoted_for_the_shell_and_variables_expand() {
        assert_eq!(word("app.example.com"), "app.example.com");
        assert_eq!(word("$AZ_RG"), "\"$AZ_RG\"");
        for tricky in ["a b'c", "[?a=='b'].id", "x;rm -rf /", "<resource-group>"] {
            assert_eq!(
                shlex::split(&word(tricky)),
                Some(vec![tricky.to_string()]),
                "{tricky}"
            );
        }
        let line = sh(&["az", "x", "--query", "[?a=='b'].id", "-g", "$RG"]);
        assert!(line.ends_with(" -g \"$RG\""), "{line}");
        let g = run(&values("appgw", &[]), None);
        assert!(
            all_commands(&g)
                .iter()
                .any(|c| c.ends_with(&format!("--servers '{ADDRESS_PENDING}'")))
        );
    }

    #[test]
    fn trust_and_stability_are_named() {
        let g = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        let text = to_text(&g);
        assert!(
            text.contains("147.243.0.0/16, 2a01:111:2050::/44"),
            "{text}"
        );
        assert!(g.warnings.iter().any(|w| w.contains("AKS-managed")));
        let stable = run(
            &values(
                "nginx",
                &["ingressController.service.publicIpName=ingress-ip"],
            ),
            Some("203.0.113.10"),
        );
        assert!(!stable.warnings.iter().any(|w| w.contains("AKS-managed")));
        assert!(!to_text(&stable).contains("X-Forwarded-For only"));
        let appgw = run(&values("appgw", &[]), Some("198.51.100.10"));
        assert!(appgw.warnings.iter().any(|w| w.contains("narrow it")));
        let narrowed = run(
            &values(
                "appgw",
                &["ingressController.realClientIp.trustedCidrs=[10.225.0.0/24]"],
            ),
            Some("198.51.100.10"),
        );
        assert!(!narrowed.warnings.iter().any(|w| w.contains("narrow it")));
        assert!(to_text(&narrowed).contains("connections from 10.225.0.0/24"));
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
    fn the_wait_for_approved_is_bounded_and_fails_without_closing_the_shell() {
        let g = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        let wait = all_commands(&g)
            .into_iter()
            .find(|c| c.contains("domainValidationState"))
            .expect("the wait for Approved");
        // As pasted into bash, with `az` answering a fixed state and no real sleeping.
        let run_with = |options: &str, state: &str| {
            let script = format!(
                "{options}az() {{ echo {state}; }}; sleep() {{ :; }}; {wait}\necho still-open"
            );
            std::process::Command::new("bash")
                .args(["--noprofile", "--norc", "-c", &script])
                .output()
                .expect("bash")
        };
        let pending = run_with("", "Pending");
        assert!(String::from_utf8_lossy(&pending.stderr).contains("not Approved after 60 min"));
        assert!(String::from_utf8_lossy(&pending.stdout).contains("still-open"));
        let approved = run_with("", "Approved");
        assert!(approved.stderr.is_empty(), "{approved:?}");
        // Under `set -e`, as a pipeline runs it, a domain that is never approved fails the job.
        let strict = run_with("set -e; ", "Pending");
        assert!(!strict.status.success());
        assert!(!String::from_utf8_lossy(&strict.stdout).contains("still-open"));
    }

    #[test]
    fn frontdoor_private_link_approves_the_connection_and_public_locks_to_fdid() {
        let g = run(
            &values("frontdoor", &["frontDoor.privateLink=true"]),
            Some("10.0.0.7"),
        );
        let cmds = all_commands(&g);
        // Looked up by the fixed name the Service's azure-pls-name gives it.
        assert!(cmds.contains(
            &"PLS_ID=$(az network private-link-service show -g \"$NODE_RG\" -n gridos-pls --query id -o tsv)"
        ));
        // Approved in a bounded wait: Front Door makes its connection on its own time.
        let approve = cmds
            .iter()
            .find(|c| c.contains("az network private-endpoint-connection approve"))
            .expect("an approval");
        assert!(
            approve.starts_with("approved=; for i in $(seq 1 60); do")
                && approve.contains("status=='Pending'")
                && approve.contains("status=='Approved'")
                && approve.contains("sleep 10")
                && approve.ends_with("false; }"),
            "{approve}"
        );
        assert!(to_text(&g).contains("frontDoor.privateLinkSubnet=<subnet name>"));
        assert!(
            cmds.iter()
                .any(|c| c.contains("--enable-private-link true"))
        );
        assert!(cmds.iter().any(|c| c.contains("Premium_AzureFrontDoor")));
        let g = run(&values("frontdoor", &[]), Some("203.0.113.10"));
        let text = to_text(&g);
        assert!(text.contains("X-Azure-FDID"));
        assert!(text.contains("AzureFrontDoor.Backend"));
        assert!(text.contains("allow-snippet-annotations: false"));
        assert!(
            all_commands(&g)
                .iter()
                .any(|c| c.contains("--set frontDoor.id=\"$(az afd profile show"))
        );
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
        assert!(g.warnings[0].contains("no load-balancer address yet"));
        assert_eq!(g.warnings.len(), 3, "{:?}", g.warnings);
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
    fn az_step_uses_the_zone_or_variables_and_replaces_the_address() {
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
                "az network dns record-set a add-record -g dns-rg -z example.com -n app -a 203.0.113.10",
                "for old in $(az network dns record-set a show -g dns-rg -z example.com -n app --query 'ARecords[].ipv4Address' -o tsv); \
                 do [ \"$old\" = 203.0.113.10 ] || az network dns record-set a remove-record -g dns-rg -z example.com -n app \
                 -a \"$old\" --keep-empty-record-set; done",
            ]
        );
        let g = guidance(&GuidanceInput {
            values: &v,
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: None,
        });
        assert_eq!(
            g.next_steps[0].commands[2],
            "az network dns record-set a add-record -g \"$DNS_RG\" -z \"$DNS_ZONE\" -n app -a 203.0.113.10"
        );
        // Without az, no DNS commands.
        assert!(
            !all_commands(&run(&v, Some("203.0.113.10")))
                .iter()
                .any(|c| c.contains("az network dns"))
        );
        let fd = values("frontdoor", &[]);
        let g = guidance(&GuidanceInput {
            values: &fd,
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: Some(("dns-rg", "example.com")),
        });
        let cmds = all_commands(&g);
        assert!(cmds.contains(
            &"az network dns record-set txt add-record -g dns-rg -z example.com -n _dnsauth.app -v \"$AFD_TOKEN\""
        ));
        assert!(cmds.contains(
            &"az network dns record-set cname set-record -g dns-rg -z example.com -n app -c \"$AFD_HOST\""
        ));
        assert!(
            g.dns[0]
                .note
                .as_deref()
                .unwrap()
                .contains("in zone example.com the record's name is _dnsauth.app")
        );
    }

    #[test]
    fn az_dns_record_only_for_known_values() {
        let v = values("nginx", &[]);
        let r = az_dns_record(&v, "203.0.113.10", "dns-rg", "example.com.").expect("a record");
        assert_eq!(r.name, "app");
        assert_eq!(
            r.add_argv().join(" "),
            "az network dns record-set a add-record -g dns-rg -z example.com -n app -a 203.0.113.10"
        );
        assert_eq!(
            r.remove_argv("203.0.113.9").join(" "),
            "az network dns record-set a remove-record -g dns-rg -z example.com -n app -a 203.0.113.9 --keep-empty-record-set"
        );
        assert!(az_dns_record(&v, "203.0.113.10", "rg", "other.org").is_none());
        assert!(
            az_dns_record(&values("appgw", &[]), "198.51.100.10", "rg", "example.com").is_none()
        );
        assert!(
            az_dns_record(
                &values("frontdoor", &[]),
                "203.0.113.10",
                "rg",
                "example.com"
            )
            .is_none()
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

    /// `az afd` left the core CLI in 2.88.0: the cdn extension comes before the first `az afd` of
    /// every Front Door variant, and nowhere else.
    #[test]
    fn the_cdn_extension_comes_before_the_first_az_afd() {
        for p in crate::profile::BUILTIN {
            for sets in [&[][..], &["frontDoor.privateLink=true"][..]] {
                if !sets.is_empty() && p != "frontdoor" {
                    continue;
                }
                let v = values(p, sets);
                let g = run(&v, Some("203.0.113.10"));
                let cmds = all_commands(&g);
                let ext = cmds
                    .iter()
                    .position(|c| *c == "az extension add --name cdn --upgrade");
                let afd = cmds.iter().position(|c| c.contains("az afd "));
                match v.front {
                    Front::Frontdoor => assert!(ext.is_some() && ext < afd, "{p} {sets:?}"),
                    _ => assert!(ext.is_none() && afd.is_none(), "{p}"),
                }
            }
        }
    }

    /// Application Gateway: the default port-80 rule gives way to a redirect, the WAF runs the
    /// Default Rule Set, the gateway autoscales over zones in the VNet's region, and nginx's trust
    /// narrows to the gateway's subnet.
    #[test]
    fn appgw_redirects_http_runs_drs_autoscales_and_trusts_its_subnet() {
        let g = run(&values("appgw", &[]), Some("10.0.0.7"));
        let cmds = all_commands(&g);
        let has = |w: &str| cmds.iter().any(|c| c.contains(w));
        assert!(has(
            "redirect-config create -g \"$AZ_RG\" --gateway-name \"$APPGW_NAME\" -n gridos-to-https --type Permanent --target-listener gridos-https"
        ));
        assert!(has(
            "rule create -g \"$AZ_RG\" --gateway-name \"$APPGW_NAME\" -n gridos-http --http-listener appGatewayHttpListener --redirect-config gridos-to-https"
        ));
        assert!(has(
            "then az network application-gateway rule delete -g \"$AZ_RG\" --gateway-name \"$APPGW_NAME\" -n rule1; fi"
        ));
        assert!(has("--type Microsoft_DefaultRuleSet --version 2.1") && !has("OWASP"));
        assert!(has("--min-capacity 2 --max-capacity 10 --zones 1 2 3") && !has("--capacity 2 "));
        assert!(has("--allocation-method Static --zone 1 2 3"));
        assert!(cmds.contains(&"AZ_LOCATION=$(az network vnet show -g \"$VNET_RG\" -n \"$VNET_NAME\" --query location -o tsv)"));
        assert!(
            !cmds.iter().any(|c| c.starts_with("AZ_LOCATION='")),
            "read from the VNet, not typed"
        );
        assert!(has(
            "--set \"ingressController.realClientIp.trustedCidrs=[$APPGW_SUBNET_PREFIX]\""
        ));
        // Set already, or no nginx: nothing to narrow.
        assert_no_command_contains(
            "appgw",
            &[
                &["ingressController.realClientIp.trustedCidrs=[10.225.0.0/24]"],
                &["traffic.layer=gateway-api"],
            ],
            "10.0.0.7",
            "APPGW_SUBNET_PREFIX",
        );
    }

    /// Front Door: nginx learns the service tag's full ranges from `az network list-service-tags` (in
    /// the same re-run as frontDoor.id), a WAF policy guards the domain through a security policy
    /// (the Default Rule Set where the tier has managed rules), a leftover A record goes before the
    /// CNAME, and the notes say the origin is open until the app checks X-Azure-FDID and name CAA.
    #[test]
    fn frontdoor_trusts_the_service_tag_runs_a_waf_and_clears_the_a_record() {
        let g = guidance(&GuidanceInput {
            values: &values("frontdoor", &[]),
            address: Some("203.0.113.10"),
            az_available: true,
            dns_zone: Some(("dns-rg", "example.com")),
        });
        let cmds = all_commands(&g);
        let at = |w: &str| {
            cmds.iter()
                .position(|c| c.contains(w))
                .unwrap_or_else(|| panic!("{w} in {cmds:#?}"))
        };
        assert!(cmds.contains(&"FD_BACKEND=$(az network list-service-tags --location \"$AZ_LOCATION\" --query \"values[?name=='AzureFrontDoor.Backend'].properties.addressPrefixes[]\" -o tsv | paste -sd, -)"));
        let rerun = cmds[at("gridos-setup install")];
        assert!(
            rerun.contains("--set frontDoor.id=\"$(az afd profile show")
                && rerun.contains(
                    "--set \"ingressController.realClientIp.trustedCidrs=[$FD_BACKEND]\""
                ),
            "one re-run sets both: {rerun}"
        );
        assert!(
            at("az extension add --name front-door --upgrade")
                < at("az network front-door waf-policy create")
        );
        assert!(at("waf-policy create") < at("az afd security-policy create"));
        assert!(at("az afd security-policy create") < at("record-set cname set-record"));
        assert!(at("record-set a delete") < at("record-set cname set-record"));
        assert!(
            !cmds.iter().any(|c| c.contains("managed-rules add")),
            "Standard has no managed rules"
        );
        let text = to_text(&g);
        assert!(text.contains("the origin is open to any Front Door") && text.contains("DigiCert"));

        let g = run(
            &values("frontdoor", &["frontDoor.privateLink=true"]),
            Some("10.0.0.7"),
        );
        let cmds = all_commands(&g);
        assert!(cmds.iter().any(|c| c.contains("--sku Premium_AzureFrontDoor --mode Prevention && az network front-door waf-policy managed-rules add")
            && c.contains("--type Microsoft_DefaultRuleSet --version 2.1 --action Block")));
        assert!(
            !cmds.iter().any(|c| c.contains("list-service-tags")),
            "Private Link: private ranges"
        );
        // The Gateway API has no nginx to tell; a set trustedCidrs is the user's choice.
        assert_no_command_contains(
            "frontdoor",
            &[
                &[
                    "traffic.layer=gateway-api",
                    "gateway.tls.secretName=app-tls",
                ],
                &["ingressController.realClientIp.trustedCidrs=[147.243.0.0/16]"],
            ],
            "203.0.113.10",
            "list-service-tags",
        );
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
