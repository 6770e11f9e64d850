//! The certificates and keys of a test control plane: a CA, the API server's serving
//! certificate (for 127.0.0.1, localhost, the real node's address and the `kubernetes`
//! Service), the API server's client certificate for kubelets, and the service-account
//! signing key.

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::node::config::{KUBERNETES_SERVICE_IP, NODE_IP};

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// PEM-encoded material, ready to be written to files.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
    pub service_account_key: String,
    pub service_account_public_key: String,
}

impl Pki {
    pub(crate) fn generate() -> Result<Self, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "coffer test control plane CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec!["localhost".to_owned()])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(ip(NODE_IP)),
            SanType::IpAddress(ip(KUBERNETES_SERVICE_IP)),
            SanType::DnsName("kubernetes".try_into()?),
            SanType::DnsName("kubernetes.default".try_into()?),
            SanType::DnsName("kubernetes.default.svc".try_into()?),
            SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
        ]);
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        // The API server's identity towards kubelets (logs, exec): a member of system:masters.
        let mut kubelet_client = CertificateParams::new(Vec::<String>::new())?;
        kubelet_client
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        kubelet_client
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let kubelet_client_key = KeyPair::generate()?;
        let kubelet_client_cert = kubelet_client.signed_by(&kubelet_client_key, &ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_cert: ca.as_ref().pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            kubelet_client_cert: kubelet_client_cert.pem(),
            kubelet_client_key: kubelet_client_key.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
            service_account_key: service_account.serialize_pem(),
        })
    }
}
