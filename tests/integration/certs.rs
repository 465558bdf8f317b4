//! The admission webhook's certificate on a real cluster: reused byte for byte while good, renewed
//! when it expires within 30 days or names another Service, and the webhook's caBundle always the CA
//! that signed the serving certificate.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gridos_setup::applyset::FIELD_MANAGER;
use gridos_setup::plan::{ADMISSION_SECRET, ADMISSION_SERVICE};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

use crate::util::{client, cluster_lock, ok, reset, stderr};

const NS: &str = "ingress-nginx";
const DAY: u64 = 24 * 60 * 60;

/// The Secret's data (raw PEM), its resourceVersion, and the webhook's caBundle (decoded PEM).
async fn read(c: &Client) -> (BTreeMap<String, Vec<u8>>, String, Vec<u8>, String) {
    let s = Api::<Secret>::namespaced(c.clone(), NS)
        .get(ADMISSION_SECRET)
        .await
        .expect("admission Secret");
    let data = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let vwc = Api::<ValidatingWebhookConfiguration>::all(c.clone())
        .get("ingress-nginx-admission")
        .await
        .expect("ValidatingWebhookConfiguration");
    let bundle = vwc.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle")
        .0;
    (
        data,
        s.metadata.resource_version.unwrap_or_default(),
        bundle,
        vwc.metadata.resource_version.unwrap_or_default(),
    )
}

/// Checks the serving certificate against the caBundle: signed by it, named for the Service, and
/// valid for about `days` from now. Returns the leaf's notAfter (Unix seconds).
fn check_serving(data: &BTreeMap<String, Vec<u8>>, bundle: &[u8], days: u64) -> i64 {
    assert_eq!(
        bundle,
        data["ca.crt"].as_slice(),
        "the caBundle is the Secret's ca.crt"
    );
    let (_, ca_pem) = parse_x509_pem(bundle).expect("caBundle is PEM");
    let ca = ca_pem.parse_x509().expect("caBundle parses");
    let (_, leaf_pem) = parse_x509_pem(&data["tls.crt"]).expect("tls.crt is PEM");
    let leaf = leaf_pem.parse_x509().expect("tls.crt parses");
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("the caBundle's CA signed the serving certificate");
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let wanted = format!("{ADMISSION_SERVICE}.{NS}.svc");
    assert!(names.contains(&wanted), "{wanted} in {names:?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let not_after = leaf.validity().not_after.timestamp();
    let expected = now + (days * DAY) as i64;
    assert!(
        (not_after - expected).abs() < DAY as i64,
        "notAfter {not_after} is about {days} days from now ({expected})"
    );
    not_after
}

/// Replaces the Secret's certificate as gridos-setup itself would apply it (same field manager, the
/// live labels and annotations kept), so the next install sees only the certificate changed.
async fn plant(c: &Client, cert: &gridos_setup::render::WebhookCert) {
    let api = Api::<Secret>::namespaced(c.clone(), NS);
    let live = api.get(ADMISSION_SECRET).await.unwrap();
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": ADMISSION_SECRET,
            "namespace": NS,
            "labels": live.metadata.labels,
            "annotations": live.metadata.annotations,
        },
        "type": live.type_,
        "data": {
            "ca.crt": cert.ca_crt,
            "tls.crt": cert.tls_crt,
            "tls.key": cert.tls_key,
        },
    });
    api.patch(
        ADMISSION_SECRET,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("plant a certificate");
}

fn install() -> std::process::Output {
    crate::util::install_nginx()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn cluster_webhook_certificate_reused_while_good_renewed_when_expiring_or_misnamed() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;

    // A fresh install makes a year-long certificate and puts its CA in the caBundle.
    ok(&install());
    let (first, secret_rv, bundle, vwc_rv) = read(&c).await;
    check_serving(&first, &bundle, 365);

    // A re-run reuses it: the same bytes, neither object written.
    let out = install();
    ok(&out);
    assert!(!stderr(&out).contains("renewing"), "{}", stderr(&out));
    let (again, rv2, bundle2, vwc_rv2) = read(&c).await;
    assert_eq!(again, first, "the certificate is reused byte for byte");
    assert_eq!(
        (rv2, vwc_rv2),
        (secret_rv, vwc_rv),
        "neither object rewritten"
    );
    assert_eq!(bundle2, bundle);

    // A certificate valid for one more day is renewed (a day is inside the 30-day window).
    let now = SystemTime::now();
    let short = gridos_setup::certs::generate(
        ADMISSION_SERVICE,
        NS,
        now - Duration::from_secs(DAY),
        Duration::from_secs(2 * DAY),
    )
    .unwrap();
    plant(&c, &short).await;
    let (planted, ..) = read(&c).await;
    assert_eq!(planted["tls.crt"], b64(&short.tls_crt));
    let out = install();
    ok(&out);
    assert!(
        stderr(&out).contains("renewing the admission webhook certificate: expires within 30 days"),
        "{}",
        stderr(&out)
    );
    let (renewed, _, bundle, _) = read(&c).await;
    assert_ne!(renewed["tls.crt"], b64(&short.tls_crt), "a new certificate");
    assert_ne!(renewed["ca.crt"], b64(&short.ca_crt), "under a new CA");
    check_serving(&renewed, &bundle, 365);

    // A good, year-long certificate for another Service's name is renewed too.
    let misnamed = gridos_setup::certs::generate(
        "some-other-webhook",
        NS,
        now,
        Duration::from_secs(365 * DAY),
    )
    .unwrap();
    plant(&c, &misnamed).await;
    let out = install();
    ok(&out);
    assert!(
        stderr(&out).contains("renewing the admission webhook certificate: names do not match"),
        "{}",
        stderr(&out)
    );
    let (renamed, secret_rv, bundle, vwc_rv) = read(&c).await;
    assert_ne!(renamed["tls.crt"], b64(&misnamed.tls_crt));
    check_serving(&renamed, &bundle, 365);

    // And the renewed certificate is then kept.
    ok(&install());
    let (kept, rv, bundle2, vwc_rv2) = read(&c).await;
    assert_eq!(kept, renamed);
    assert_eq!((rv, vwc_rv2), (secret_rv, vwc_rv));
    assert_eq!(bundle2, bundle);
}
