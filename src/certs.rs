//! The ingress-nginx admission webhook's serving certificate, made here instead of by upstream's kube-webhook-certgen Jobs, and kept while it is still good.
//!
//! Doing it in-process means the Secret and the webhook's `caBundle` are known before anything is
//! applied, so both go out in one server-side apply and no Job has to run (or be cleaned up) in the
//! cluster. Reusing a good certificate byte for byte keeps a repeated install a no-op.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::render::WebhookCert;

/// The keys of the Secret `ingress-nginx-admission`, as ingress-nginx's controller mounts them.
pub const CA_CRT: &str = "ca.crt";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// The leaf is renewed only when gridos-setup runs (nothing in the cluster rotates it), so it has to
/// outlast the gap between runs; a year is long enough for that yet short enough that a leaked key
/// does not stay useful for the cluster's whole life.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The CA's key is thrown away after signing the one leaf (the Secret has no slot for it), so a
/// renewal always makes a new CA; its lifetime only has to exceed any leaf's, which ten years does.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Renewing this long before expiry leaves a month of monthly runs to catch it before the API
/// server starts rejecting the webhook (whose failure blocks every Ingress change).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Backdating absorbs clock skew between this machine and the API server, which would otherwise
/// reject a certificate that is "not yet valid" by its clock.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

const CA_COMMON_NAME: &str = "gridos-setup ingress-nginx admission CA";

/// What happened to the certificate on this run, for the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertDecision {
    Reused,
    Created,
    Renewed { reason: String },
}

/// Failures to make a certificate; none of them carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("cannot generate the admission webhook certificate: {reason}")]
    Generate { reason: String },
    #[error("the clock reads a time a certificate cannot carry: {reason}")]
    Clock { reason: String },
    #[error("invalid webhook service name {name:?}: {reason}")]
    Name { name: String, reason: String },
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        // rcgen's errors describe parameters and algorithms, never key bytes, so showing them is safe.
        CertError::Generate {
            reason: e.to_string(),
        }
    }
}

/// The webhook's serving certificate for this run: the stored one if it is still good, else a new one.
///
/// `existing`: the decoded `data` of the Secret `ingress-nginx-admission` if it exists (keys
/// "ca.crt", "tls.crt", "tls.key", raw PEM bytes); `now`: current time.
pub fn webhook_cert(
    existing: Option<&BTreeMap<String, Vec<u8>>>,
    service: &str,
    namespace: &str,
    now: SystemTime,
) -> Result<(WebhookCert, CertDecision), CertError> {
    let decision = match existing {
        None => CertDecision::Created,
        Some(data) => match check_existing(data, service, namespace, now)? {
            Ok(reused) => return Ok((reused, CertDecision::Reused)),
            Err(reason) => CertDecision::Renewed {
                reason: reason.to_string(),
            },
        },
    };
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let cert = generate(service, namespace, not_before, LEAF_VALIDITY)?;
    Ok((cert, decision))
}

/// A fresh CA and a leaf for `<service>.<namespace>.svc` signed by it, valid from `not_before` for
/// `leaf_validity`.
pub fn generate(
    service: &str,
    namespace: &str,
    not_before: SystemTime,
    leaf_validity: Duration,
) -> Result<WebhookCert, CertError> {
    let leaf_not_after = add(not_before, leaf_validity)?;
    // The CA must never expire before the leaf it vouches for.
    let ca_not_after = add(not_before, CA_VALIDITY.max(leaf_validity))?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    // Path length 0: this CA signs only the serving leaf, never another CA.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca_params.not_before = not_before.into();
    ca_params.not_after = ca_not_after.into();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let names = dns_names(service, namespace);
    let mut leaf_params = CertificateParams::new(names.clone()).map_err(|e| CertError::Name {
        name: format!("{service}.{namespace}"),
        reason: e.to_string(),
    })?;
    leaf_params.distinguished_name = common_name(&names[2]);
    // DigitalSignature is what an ECDSA key needs for the TLS handshake.
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = not_before.into();
    leaf_params.not_after = leaf_not_after.into();
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let ca_crt = b64(ca_cert.pem().as_bytes());
    Ok(WebhookCert {
        ca_bundle: ca_crt.clone(),
        ca_crt,
        tls_crt: b64(leaf_cert.pem().as_bytes()),
        tls_key: b64(leaf_key.serialize_pem().as_bytes()),
    })
}

/// The stored certificate as-is (`Ok(Ok)`), or why it must be replaced (`Ok(Err)`).
fn check_existing(
    data: &BTreeMap<String, Vec<u8>>,
    service: &str,
    namespace: &str,
    now: SystemTime,
) -> Result<Result<WebhookCert, &'static str>, CertError> {
    let (Some(ca_pem), Some(crt_pem), Some(key_pem)) =
        (data.get(CA_CRT), data.get(TLS_CRT), data.get(TLS_KEY))
    else {
        return Ok(Err("missing keys"));
    };
    let (Some(ca_der), Some(leaf_der)) = (pem_der(ca_pem), pem_der(crt_pem)) else {
        return Ok(Err("does not parse"));
    };
    let (Ok((_, ca)), Ok((_, leaf))) = (
        x509_parser::parse_x509_certificate(&ca_der),
        x509_parser::parse_x509_certificate(&leaf_der),
    ) else {
        return Ok(Err("does not parse"));
    };
    // Only PKCS#8 keys parse here; a key in another encoding is simply replaced.
    let Some(key) = std::str::from_utf8(key_pem)
        .ok()
        .and_then(|s| KeyPair::from_pem(s).ok())
    else {
        return Ok(Err("does not parse"));
    };

    if leaf.issuer().as_raw() != ca.subject().as_raw()
        || leaf.verify_signature(Some(ca.public_key())).is_err()
    {
        return Ok(Err("not signed by ca.crt"));
    }
    let wanted = format!("{service}.{namespace}.svc");
    if !dns_sans(&leaf)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&wanted))
    {
        return Ok(Err("names do not match"));
    }
    let now_secs = unix_secs(now)?;
    let renew_at = unix_secs(add(now, RENEW_BEFORE)?)?;
    if leaf.validity().not_before.timestamp() > now_secs {
        return Ok(Err("not yet valid"));
    }
    if leaf.validity().not_after.timestamp() <= renew_at
        || ca.validity().not_after.timestamp() <= renew_at
    {
        return Ok(Err("expires within 30 days"));
    }
    if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
        return Ok(Err("key does not match"));
    }

    // The stored bytes, untouched, so the server-side apply of the Secret changes nothing.
    let ca_crt = b64(ca_pem);
    Ok(Ok(WebhookCert {
        ca_bundle: ca_crt.clone(),
        ca_crt,
        tls_crt: b64(crt_pem),
        tls_key: b64(key_pem),
    }))
}

/// The names the API server may use to reach the webhook Service; it dials `<svc>.<ns>.svc`.
fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn dns_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The DER of the first CERTIFICATE block in `bytes`.
fn pem_der(bytes: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

fn add(t: SystemTime, d: Duration) -> Result<SystemTime, CertError> {
    t.checked_add(d).ok_or_else(|| CertError::Clock {
        reason: format!("{d:?} after {t:?} overflows"),
    })
}

fn unix_secs(t: SystemTime) -> Result<i64, CertError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock {
            reason: "before 1970".into(),
        })?
        .as_secs();
    i64::try_from(secs).map_err(|_| CertError::Clock {
        reason: "too far in the future".into(),
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "ingress-nginx-controller-admission";
    const NS: &str = "ingress-nginx";
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn unb64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    /// The Secret's `data` as the install code would read it back.
    fn secret(c: &WebhookCert) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CA_CRT.to_string(), unb64(&c.ca_crt)),
            (TLS_CRT.to_string(), unb64(&c.tls_crt)),
            (TLS_KEY.to_string(), unb64(&c.tls_key)),
        ])
    }

    fn der(b64_pem: &str) -> Vec<u8> {
        pem_der(&unb64(b64_pem)).unwrap()
    }

    fn renewed(reason: &str) -> CertDecision {
        CertDecision::Renewed {
            reason: reason.into(),
        }
    }

    #[test]
    fn creates_when_no_secret() {
        let (c, d) = webhook_cert(None, SVC, NS, SystemTime::now()).unwrap();
        assert_eq!(d, CertDecision::Created);
        let key = String::from_utf8(unb64(&c.tls_key)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let leaf_der = der(&c.tls_crt);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let mut sans = dns_sans(&leaf);
        sans.sort();
        assert_eq!(
            sans,
            [
                SVC.to_string(),
                format!("{SVC}.{NS}"),
                format!("{SVC}.{NS}.svc"),
                format!("{SVC}.{NS}.svc.cluster.local"),
            ]
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth);
        assert!(!leaf.is_ca());
        let days = leaf.validity().time_to_expiration().unwrap().whole_days();
        assert!((364..=365).contains(&days), "leaf valid for {days} days");
    }

    #[test]
    fn reuses_the_same_bytes() {
        let now = SystemTime::now();
        let (first, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let stored = secret(&first);
        let later = now + 200 * DAY;
        let (again, d) = webhook_cert(Some(&stored), SVC, NS, later).unwrap();
        assert_eq!(d, CertDecision::Reused);
        assert_eq!(again, first);
    }

    #[test]
    fn renews_when_expiring_within_30_days() {
        let now = SystemTime::now();
        let short = generate(SVC, NS, now, 10 * DAY).unwrap();
        let (c, d) = webhook_cert(Some(&secret(&short)), SVC, NS, now).unwrap();
        assert_eq!(d, renewed("expires within 30 days"));
        assert_ne!(c.tls_crt, short.tls_crt);

        // A year-long leaf is renewed once its last month begins.
        let (year, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let (_, d) = webhook_cert(Some(&secret(&year)), SVC, NS, now + 340 * DAY).unwrap();
        assert_eq!(d, renewed("expires within 30 days"));
    }

    #[test]
    fn renews_when_names_differ() {
        let now = SystemTime::now();
        let (other, _) = webhook_cert(None, SVC, "elsewhere", now).unwrap();
        let (_, d) = webhook_cert(Some(&secret(&other)), SVC, NS, now).unwrap();
        assert_eq!(d, renewed("names do not match"));
    }

    #[test]
    fn renews_garbage() {
        let now = SystemTime::now();
        let (good, _) = webhook_cert(None, SVC, NS, now).unwrap();
        for key in [CA_CRT, TLS_CRT, TLS_KEY] {
            let mut stored = secret(&good);
            stored.insert(key.into(), b"not a pem at all".to_vec());
            let (c, d) = webhook_cert(Some(&stored), SVC, NS, now).unwrap();
            assert_eq!(d, renewed("does not parse"), "garbage in {key}");
            assert_ne!(c, good);
        }
    }

    #[test]
    fn renews_when_keys_are_missing() {
        let now = SystemTime::now();
        let (good, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let mut stored = secret(&good);
        stored.remove(TLS_KEY);
        let (_, d) = webhook_cert(Some(&stored), SVC, NS, now).unwrap();
        assert_eq!(d, renewed("missing keys"));
    }

    #[test]
    fn renews_when_key_does_not_match() {
        let now = SystemTime::now();
        let (good, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let (other, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let mut stored = secret(&good);
        stored.insert(TLS_KEY.into(), unb64(&other.tls_key));
        let (_, d) = webhook_cert(Some(&stored), SVC, NS, now).unwrap();
        assert_eq!(d, renewed("key does not match"));
    }

    #[test]
    fn renews_when_ca_did_not_sign_the_leaf() {
        let now = SystemTime::now();
        let (good, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let (other, _) = webhook_cert(None, SVC, NS, now).unwrap();
        let mut stored = secret(&good);
        // Same subject name, different key: only the signature check tells them apart.
        stored.insert(CA_CRT.into(), unb64(&other.ca_crt));
        let (_, d) = webhook_cert(Some(&stored), SVC, NS, now).unwrap();
        assert_eq!(d, renewed("not signed by ca.crt"));
    }

    #[test]
    fn ca_bundle_is_the_ca() {
        let (c, _) = webhook_cert(None, SVC, NS, SystemTime::now()).unwrap();
        assert_eq!(c.ca_bundle, c.ca_crt);
        let ca_der = der(&c.ca_crt);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.is_ca());
        assert_eq!(
            ca.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            CA_COMMON_NAME
        );
        let ku = ca.key_usage().unwrap().unwrap();
        assert!(ku.value.key_cert_sign());
    }

    #[test]
    fn leaf_verifies_against_ca() {
        let c = generate(SVC, NS, SystemTime::now(), LEAF_VALIDITY).unwrap();
        let (ca_der, leaf_der) = (der(&c.ca_crt), der(&c.tls_crt));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        assert!(ca.validity().not_after.timestamp() >= leaf.validity().not_after.timestamp());
    }
}
