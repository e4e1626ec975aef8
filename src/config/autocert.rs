//! `autocert`: certificates from an ACME CA (Let's Encrypt by default) for every route host and
//! the authenticate host, with Pomerium's keys and meaning. Plain data; the client that orders
//! and renews is `acme`.

use super::error::Errors;
use super::pem::{self, PemSource};
use super::raw::RawSettings;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Clone)]
pub struct Autocert {
    /// The ACME directory: `autocert_ca`, else Let's Encrypt (staging with
    /// `autocert_use_staging`).
    pub directory_url: String,
    pub email: Option<String>,
    pub must_staple: bool,
    /// Where certificates, keys and the account are kept.
    pub dir: PathBuf,
    /// External account binding: key id and the decoded MAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// Roots trusted for the ACME server's own certificate, beside the public ones.
    pub trusted_ca: Vec<CertificateDer<'static>>,
    /// Staging certificates are not publicly trusted (HSTS would lock browsers out).
    pub staging: bool,
}

/// The MAC key is a secret: never printed.
impl std::fmt::Debug for Autocert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autocert")
            .field("directory_url", &self.directory_url)
            .field("email", &self.email)
            .field("must_staple", &self.must_staple)
            .field("dir", &self.dir)
            .field("eab_key_id", &self.eab.as_ref().map(|e| &e.0))
            .field("trusted_ca", &self.trusted_ca.len())
            .finish()
    }
}

/// Pomerium's default: `$XDG_DATA_HOME/pomerium/autocert`; Vallum keeps its own under `vallum`.
fn default_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    data.join("vallum").join("autocert")
}

pub fn compile(
    raw: &RawSettings,
    insecure: bool,
    files: &mut Vec<PathBuf>,
    errs: &mut Errors,
) -> Option<Autocert> {
    if !raw.autocert {
        return None;
    }
    if insecure {
        errs.push(
            "autocert",
            "gets certificates for the TLS listener, but insecure_server is true",
        );
        return None;
    }
    let directory_url = match raw.autocert_ca.as_deref().map(str::trim) {
        Some(ca) if !ca.is_empty() => match url::Url::parse(ca) {
            Ok(u) if u.scheme() == "https" => ca.to_string(),
            _ => {
                errs.push("autocert_ca", format!("{ca:?} is not an https:// URL"));
                return None;
            }
        },
        _ if raw.autocert_use_staging => LETS_ENCRYPT_STAGING.to_string(),
        _ => LETS_ENCRYPT.to_string(),
    };
    let eab = eab(raw, errs);
    let trusted_ca = trusted_ca(raw, files, errs);
    Some(Autocert {
        staging: directory_url == LETS_ENCRYPT_STAGING,
        directory_url,
        email: raw.autocert_email.clone().filter(|e| !e.trim().is_empty()),
        must_staple: raw.autocert_must_staple,
        dir: raw
            .autocert_dir
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_dir),
        eab,
        trusted_ca,
    })
}

/// Both keys or neither; the MAC key is base64url as the CA hands it out (padding optional).
fn eab(raw: &RawSettings, errs: &mut Errors) -> Option<(String, Vec<u8>)> {
    let id = raw.autocert_eab_key_id.as_deref().filter(|s| !s.is_empty());
    let mac = raw
        .autocert_eab_mac_key
        .as_deref()
        .filter(|s| !s.is_empty());
    match (id, mac) {
        (None, None) => None,
        (Some(id), Some(mac)) => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(mac.trim().trim_end_matches('='));
            match decoded {
                Ok(key) if !key.is_empty() => Some((id.to_string(), key)),
                _ => {
                    errs.push("autocert_eab_mac_key", "is not base64url-encoded");
                    None
                }
            }
        }
        (Some(_), None) => {
            errs.push("autocert_eab_mac_key", "is needed with autocert_eab_key_id");
            None
        }
        (None, Some(_)) => {
            errs.push("autocert_eab_key_id", "is needed with autocert_eab_mac_key");
            None
        }
    }
}

fn trusted_ca(
    raw: &RawSettings,
    files: &mut Vec<PathBuf>,
    errs: &mut Errors,
) -> Vec<CertificateDer<'static>> {
    let (key, src) = match (&raw.autocert_trusted_ca, &raw.autocert_trusted_ca_file) {
        (Some(_), Some(_)) => {
            errs.push(
                "autocert_trusted_ca",
                "set either autocert_trusted_ca or autocert_trusted_ca_file, not both",
            );
            return Vec::new();
        }
        (Some(v), None) => ("autocert_trusted_ca", PemSource::Inline(v.clone())),
        (None, Some(f)) => {
            files.push(PathBuf::from(f));
            (
                "autocert_trusted_ca_file",
                PemSource::File(PathBuf::from(f)),
            )
        }
        (None, None) => return Vec::new(),
    };
    let certs = pem::read(&src).and_then(|p| pem::certs(&p));
    errs.check(key, certs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> (Option<Autocert>, Vec<String>) {
        let raw: RawSettings = serde_yaml_ng::from_str(yaml).expect("yaml");
        let mut errs = Errors::default();
        let mut files = Vec::new();
        let a = compile(&raw, raw.insecure_server, &mut files, &mut errs);
        (
            a,
            errs.into_errors().0.iter().map(|e| e.to_string()).collect(),
        )
    }

    #[test]
    fn staging_and_a_custom_ca_pick_the_directory() {
        let (a, _) = compiled("autocert: true\n");
        assert_eq!(a.expect("on").directory_url, LETS_ENCRYPT);
        let (a, _) = compiled("autocert: true\nautocert_use_staging: true\n");
        let a = a.expect("on");
        assert_eq!(a.directory_url, LETS_ENCRYPT_STAGING);
        assert!(a.staging);
        let (a, _) = compiled(
            "autocert: true\nautocert_use_staging: true\nautocert_ca: https://ca.test/dir\n",
        );
        assert_eq!(a.expect("on").directory_url, "https://ca.test/dir");
        let (a, _) = compiled("autocert_use_staging: true\n");
        assert!(a.is_none(), "off unless autocert is true");
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_, e) = compiled("autocert: true\ninsecure_server: true\n");
        assert!(
            e[0].contains("autocert") && e[0].contains("insecure_server"),
            "{e:?}"
        );
        let (_, e) = compiled("autocert: true\nautocert_ca: http://ca.test/dir\n");
        assert!(e[0].contains("autocert_ca"), "{e:?}");
        let (_, e) = compiled("autocert: true\nautocert_eab_key_id: kid\n");
        assert!(e[0].contains("autocert_eab_mac_key"), "{e:?}");
        let (_, e) =
            compiled("autocert: true\nautocert_eab_key_id: kid\nautocert_eab_mac_key: '!!'\n");
        assert!(e[0].contains("base64url"), "{e:?}");
        let (_, e) = compiled("autocert: true\nautocert_trusted_ca_file: /nonexistent/ca.pem\n");
        assert!(e[0].contains("autocert_trusted_ca_file"), "{e:?}");
    }

    #[test]
    fn the_mac_key_is_decoded_and_never_printed() {
        let (a, e) = compiled(
            "autocert: true\nautocert_eab_key_id: kid-1\nautocert_eab_mac_key: c2VjcmV0LW1hYw\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let a = a.expect("on");
        assert_eq!(
            a.eab.as_ref().map(|e| e.1.as_slice()),
            Some(&b"secret-mac"[..])
        );
        assert!(!format!("{a:?}").contains("c2VjcmV0"));
    }
}
