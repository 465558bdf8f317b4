//! The post-install guidance of `--traffic gateway-api` offline: text snapshots per front, valid shell, and what differs from ingress-nginx.

use gridos_setup::guidance::{Guidance, GuidanceInput, RETIREMENT_WARNING, guidance, to_text};
use gridos_setup::profile::{ProfileSource, Values, ValuesRequest, resolve};

const HOST: &str = "app.example.com";

fn values(profile: &str, sets: &[&str]) -> Values {
    let mut all = vec!["traffic.layer=gateway-api".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    resolve(&ValuesRequest {
        profile: Some(ProfileSource::Builtin(profile.into())),
        host: Some(HOST.into()),
        sets: all,
        ..Default::default()
    })
    .expect("builtin profile resolves with the Gateway API")
}

fn guide(profile: &str, sets: &[&str], address: Option<&str>) -> Guidance {
    guidance(&GuidanceInput {
        values: &values(profile, sets),
        address,
        az_available: true,
        dns_zone: Some(("dns-rg", "example.com")),
    })
}

#[test]
fn guidance_gateway_nginx_text() {
    insta::assert_snapshot!(
        "guidance_gateway_nginx",
        to_text(&guide("nginx", &[], Some("203.0.113.10")))
    );
}

#[test]
fn guidance_gateway_appgw_text() {
    insta::assert_snapshot!(
        "guidance_gateway_appgw",
        to_text(&guide("appgw", &[], Some("198.51.100.10")))
    );
}

#[test]
fn guidance_gateway_frontdoor_text() {
    insta::assert_snapshot!(
        "guidance_gateway_frontdoor",
        to_text(&guide(
            "frontdoor",
            &["gateway.tls.secretName=app-tls"],
            Some("203.0.113.10")
        ))
    );
}

#[test]
fn guidance_gateway_frontdoor_private_link_text() {
    insta::assert_snapshot!(
        "guidance_gateway_frontdoor_private_link",
        to_text(&guide(
            "frontdoor",
            &["frontDoor.privateLink=true"],
            Some("198.51.100.10")
        ))
    );
}

/// Every command parses as shell (`bash -n`).
#[test]
fn guidance_gateway_commands_are_valid_shell() {
    for (profile, sets) in [
        ("nginx", &[][..]),
        ("appgw", &[][..]),
        ("frontdoor", &[][..]),
        ("frontdoor", &["frontDoor.privateLink=true"][..]),
    ] {
        let g = guide(profile, sets, Some("203.0.113.10"));
        crate::guidance::assert_valid_shell(&g, &format!("{profile} {sets:?}"));
    }
}

#[test]
fn guidance_gateway_names_the_gateway_not_ingress_nginx() {
    for profile in ["nginx", "appgw", "frontdoor"] {
        let g = guide(profile, &[], Some("203.0.113.10"));
        let text = to_text(&g);
        assert!(
            !g.warnings.iter().any(|w| w == RETIREMENT_WARNING),
            "{profile}: no retirement notice on the Gateway API path"
        );
        assert!(!text.contains("ingress-nginx"), "{profile}:\n{text}");
        assert!(!text.contains("ingress.enabled=true"), "{profile}");
        assert!(text.contains("ingress.enabled=false"), "{profile}");
        assert!(
            text.contains("kubectl get httproute gridos -n gridos"),
            "{profile}"
        );
        // Commands that re-run install keep the layer.
        for c in g.next_steps.iter().flat_map(|s| s.commands.iter()) {
            if c.starts_with("gridos-setup install") {
                assert!(c.contains("--traffic gateway-api"), "{profile}: {c}");
            }
        }
    }
    // Application Gateway probes the gateway's status port, not the app through the HTTPRoute.
    let appgw = guide("appgw", &[], Some("198.51.100.10"));
    let probe = appgw
        .next_steps
        .iter()
        .flat_map(|s| s.commands.iter())
        .find(|c| c.contains("probe create"))
        .expect("a probe step");
    assert!(
        probe.contains("--port 15021") && probe.contains("--path /healthz/ready"),
        "{probe}"
    );
    // Without a certificate Front Door reaches the public Gateway over HTTP, and says so.
    let fd = guide("frontdoor", &[], Some("203.0.113.10"));
    assert!(
        fd.warnings
            .iter()
            .any(|w| w.contains("plain HTTP") && w.contains("gateway.tls.secretName")),
        "{:?}",
        fd.warnings
    );
    let pending = guide("nginx", &[], None);
    assert!(
        pending
            .warnings
            .iter()
            .any(|w| w.contains("kubectl get gateway gridos -n gridos-gateway")),
        "{:?}",
        pending.warnings
    );
}
