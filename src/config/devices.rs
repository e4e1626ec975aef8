//! `device_types`: what kinds of WebAuthn authenticators the `device` criterion can ask for.
//!
//! Two are built in, as in Pomerium: `any` (any authenticator the browser offers) and
//! `enclave_only` (a key that cannot leave the device: a platform authenticator such as a TPM or
//! Secure Enclave, with user verification, and not a synced passkey). A config may redefine
//! them or add its own.

use super::error::Errors;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDeviceType {
    pub id: String,
    pub name: Option<String>,
    /// `any`, `platform` or `cross_platform`.
    pub attachment: Option<String>,
    /// `required` or `preferred`.
    pub user_verification: Option<String>,
    /// `allowed` or `forbidden`: whether a synced (backup-eligible) passkey qualifies.
    pub backup: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    Any,
    Platform,
    CrossPlatform,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceType {
    pub id: String,
    pub name: String,
    /// Asked of the browser; a hint it may not follow (WebAuthn cannot prove it without
    /// attestation), which is why `backup` and `user_verification` are checked as well.
    pub attachment: Attachment,
    /// Checked on the authenticator's signed flags at enrolment.
    pub user_verification_required: bool,
    /// Checked on the signed backup-eligibility flag at enrolment.
    pub backup_allowed: bool,
}

pub fn builtin() -> Vec<DeviceType> {
    vec![
        DeviceType {
            id: "any".into(),
            name: "Any device".into(),
            attachment: Attachment::Any,
            user_verification_required: false,
            backup_allowed: true,
        },
        DeviceType {
            id: "enclave_only".into(),
            name: "Secure enclave only".into(),
            attachment: Attachment::Platform,
            user_verification_required: true,
            backup_allowed: false,
        },
    ]
}

pub fn compile(raw: &[RawDeviceType], errs: &mut Errors) -> Vec<DeviceType> {
    let mut out = builtin();
    for (i, r) in raw.iter().enumerate() {
        let at = |k: &str| format!("device_types[{i}].{k}");
        if r.id.is_empty()
            || !r
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errs.push(at("id"), "needs an id of letters, digits, '_' or '-'");
            continue;
        }
        let attachment = match r.attachment.as_deref() {
            None | Some("any") => Attachment::Any,
            Some("platform") => Attachment::Platform,
            Some("cross_platform") => Attachment::CrossPlatform,
            Some(other) => {
                errs.push(
                    at("attachment"),
                    format!("unknown value {other:?}; expected any, platform or cross_platform"),
                );
                continue;
            }
        };
        let uv = match r.user_verification.as_deref() {
            None | Some("preferred") => false,
            Some("required") => true,
            Some(other) => {
                errs.push(
                    at("user_verification"),
                    format!("unknown value {other:?}; expected required or preferred"),
                );
                continue;
            }
        };
        let backup = match r.backup.as_deref() {
            None | Some("allowed") => true,
            Some("forbidden") => false,
            Some(other) => {
                errs.push(
                    at("backup"),
                    format!("unknown value {other:?}; expected allowed or forbidden"),
                );
                continue;
            }
        };
        let t = DeviceType {
            id: r.id.clone(),
            name: r.name.clone().unwrap_or_else(|| r.id.clone()),
            attachment,
            user_verification_required: uv,
            backup_allowed: backup,
        };
        match out.iter_mut().find(|d| d.id == t.id) {
            Some(existing) => *existing = t,
            None => out.push(t),
        }
    }
    out
}
