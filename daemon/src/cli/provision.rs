//! `vcfd provision`: first-boot identity (serial, key, CSR) and site config.

use std::net::SocketAddr;
use std::path::PathBuf;
use vcfd::config::IpNet;
use vcfd::provision::{self, PacsSite, ProvisionOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix for every file written (tests, image staging); the box itself uses /.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Serial from the box label; a random VCF-xxxxxxxxxx when absent.
    #[arg(long)]
    pub serial: Option<String>,
    /// AE title of this box, as the modalities will call it.
    #[arg(long, default_value = "VCFD")]
    pub ae_title: String,
    /// Address the DICOM receiver binds when not socket-activated.
    #[arg(long, default_value = "0.0.0.0:104")]
    pub listen: SocketAddr,
    /// Calling AE title of a modality allowed to send (repeat; none = any title).
    #[arg(long = "allow-ae", value_name = "AE")]
    pub allow_ae: Vec<String>,
    /// Network allowed to send, CIDR (repeat). Default: loopback only.
    #[arg(long = "allow-source", value_name = "CIDR")]
    pub allow_source: Vec<IpNet>,
    /// State folder as the running box sees it (not prefixed with --root).
    #[arg(long, default_value = "/var/lib/vcfd")]
    pub state_dir: PathBuf,
    /// Organisation for the certificate subject (O=).
    #[arg(long)]
    pub organization: Option<String>,
    /// PACS host name or address; omit to provision without a PACS.
    #[arg(long)]
    pub pacs_host: Option<String>,
    /// PACS DICOM port (2762 is DICOM over TLS).
    #[arg(long, default_value_t = 2762)]
    pub pacs_port: u16,
    /// PACS AE title.
    #[arg(long, default_value = "PACS")]
    pub pacs_ae: String,
    /// Name of the destination in logs and `vcfd check`.
    #[arg(long, default_value = "main")]
    pub pacs_name: String,
    /// CA certificate(s), PEM, that signed the PACS certificate; copied to /etc/vcfd.
    #[arg(long)]
    pub pacs_ca: Option<PathBuf>,
    /// Send to the PACS unencrypted (isolated networks only).
    #[arg(long)]
    pub pacs_plain: bool,
    /// Also write a self-signed client certificate (tests and labs, not for a hospital PACS).
    #[arg(long)]
    pub self_signed: bool,
    /// Validity of the self-signed certificate, days.
    #[arg(long, default_value_t = 365)]
    pub self_signed_days: u32,
    /// Replace an existing identity (new key: every PACS must trust the new certificate).
    #[arg(long)]
    pub force: bool,
    /// System user the service runs as.
    #[arg(long, default_value = "vcfd")]
    pub user: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let pacs = args.pacs_host.clone().map(|host| PacsSite {
        name: args.pacs_name.clone(),
        host,
        port: args.pacs_port,
        called_ae_title: args.pacs_ae.clone(),
        ca: args.pacs_ca.clone(),
        plain: args.pacs_plain,
    });
    if pacs.is_none() && (args.pacs_ca.is_some() || args.pacs_plain) {
        anyhow::bail!("--pacs-ca and --pacs-plain need --pacs-host");
    }
    let allowed_sources = if args.allow_source.is_empty() {
        vec![IpNet::LOOPBACK_V4, IpNet::LOOPBACK_V6]
    } else {
        args.allow_source.clone()
    };
    let opts = ProvisionOptions {
        root: args.root.clone(),
        serial: args.serial.clone(),
        ae_title: args.ae_title.clone(),
        listen: args.listen,
        allowed_calling_ae_titles: args.allow_ae.clone(),
        allowed_sources,
        state_dir: args.state_dir.clone(),
        pacs,
        organization: args.organization.clone(),
        self_signed_days: args.self_signed.then_some(args.self_signed_days),
        force: args.force,
        service_user: args.user.clone(),
    };
    let out = provision::provision(&opts)?;

    println!("provisioned box {}", out.serial);
    println!("  config       {}", out.config.display());
    println!("  private key  {} (0600)", out.key.display());
    println!("  CSR          {}", out.csr.display());
    if let Some(cert) = &out.cert {
        println!("  certificate  {} (self-signed)", cert.display());
    }
    if let Some(ca) = &out.ca {
        println!("  PACS CA      {}", ca.display());
    }
    for note in &out.notes {
        println!("note: {note}");
    }
    println!("next steps:");
    if opts.pacs.as_ref().is_some_and(|p| !p.plain) && out.cert.is_none() {
        println!(
            "  1. have {} signed by a CA the PACS trusts (client authentication);",
            out.csr.display()
        );
        println!(
            "     install the certificate (PEM) as {}",
            opts_cert_path(&opts).display()
        );
        println!("  2. vcfd check --config {}", out.config.display());
    } else {
        println!("  vcfd check --config {}", out.config.display());
    }
    println!("  systemctl enable --now vcfd.socket vcfd.service");
    Ok(())
}

fn opts_cert_path(opts: &ProvisionOptions) -> PathBuf {
    provision::Layout::new(&opts.root).cert()
}
