//! Test PKI shared by the TLS tests: a CA and certificates it signs, made with rcgen.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A test CA: its PEM file and the issuer that signs certificates.
pub struct Ca {
    pub pem: PathBuf,
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn validity(params: &mut rcgen::CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
}

pub fn make_ca(dir: &Path, name: &str) -> Ca {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params);
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca {
        pem,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// Key and certificate signed by `ca`; `server` picks the names and extended key usage.
pub fn make_cert(dir: &Path, ca: &Ca, name: &str, server: bool) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        vec![]
    };
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    validity(&mut params);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (k, c) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::write(&c, cert.pem()).unwrap();
    (k, c)
}
