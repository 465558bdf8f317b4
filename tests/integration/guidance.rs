//! The post-install guidance offline: text snapshots per profile with real values, and the JSON shape pipelines read.

use gridos_setup::guidance::{Guidance, GuidanceInput, guidance, to_text};
use gridos_setup::profile::{ProfileSource, Values, ValuesRequest, resolve};

const HOST: &str = "app.example.com";

fn values(profile: &str) -> Values {
    resolve(&ValuesRequest {
        profile: Some(ProfileSource::Builtin(profile.into())),
        host: Some(HOST.into()),
        ..Default::default()
    })
    .expect("builtin profile resolves")
}

fn guide(profile: &str, address: &str) -> Guidance {
    guidance(&GuidanceInput {
        values: &values(profile),
        address: Some(address),
        az_available: false,
        dns_zone: None,
    })
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
