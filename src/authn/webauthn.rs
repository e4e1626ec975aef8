//! WebAuthn device identity: enrol a device, prove it, remove it.
//!
//! The ceremonies run on the authenticate host (the relying party id is its name), so one
//! enrolment serves every route, as with Pomerium. Enrolled credentials are records in the
//! session store, per user, so every node of a fleet sees them; the proof ("this session used
//! device X") is written into the session itself, which is what the `device` criterion reads on
//! the hot path without another store call. Ceremony state (the challenge) is a short-lived
//! record, used once. The protocol itself is webauthn-rs's.

use super::signout::csrf_token;
use super::*;
use crate::config::devices::{Attachment, DeviceType};
use crate::session::ProvenDevice;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::Digest;
use webauthn_rs::prelude::{
    AuthenticatorAttachment, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// Where the device page lives on both the authenticate host and route hosts.
pub const PATH: &str = "/.pomerium/webauthn";
/// How long a started ceremony may take.
const CEREMONY_TTL: u64 = 300;
/// Devices one user may enrol (bounds the record and the page).
const MAX_DEVICES: usize = 20;

/// An enrolled device, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolledDevice {
    /// Credential id, base64url.
    pub id: String,
    pub type_id: String,
    pub name: String,
    pub created_at: u64,
    /// Set by an administrator (`vallum devices approve`), for `device: {approved: true}`.
    #[serde(default)]
    pub approved: bool,
    pub passkey: Passkey,
}

fn devices_key(user_id: &str) -> String {
    format!("devices:{user_id}")
}

pub async fn load_devices(
    store: &dyn SessionStore,
    user_id: &str,
) -> Result<Vec<EnrolledDevice>, StoreError> {
    Ok(store
        .get_record(&devices_key(user_id))
        .await?
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_default())
}

pub async fn save_devices(
    store: &dyn SessionStore,
    user_id: &str,
    devices: &[EnrolledDevice],
) -> Result<(), StoreError> {
    if devices.is_empty() {
        return store.delete_record(&devices_key(user_id)).await;
    }
    let raw = serde_json::to_vec(devices).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    store.put_record(&devices_key(user_id), raw, 0).await
}

/// Removes a device and every session's proof of it (so a removed device stops opening doors
/// now, not when sessions end).
pub async fn remove_device(
    store: &dyn SessionStore,
    user: &UserSession,
    device_id: &str,
) -> Result<bool, StoreError> {
    let mut devices = load_devices(store, &user.user_id).await?;
    let before = devices.len();
    devices.retain(|d| d.id != device_id);
    if devices.len() == before {
        return Ok(false);
    }
    save_devices(store, &user.user_id, &devices).await?;
    let index = crate::session::redis::index_name(user);
    for s in store.sessions_of(&index).await? {
        if s.devices.iter().any(|d| d.id == device_id) {
            // The copy `sessions_of` just read from the store itself, fresher than what a local
            // cache in front of it may hold.
            let mut s = (*s).clone();
            s.devices.retain(|d| d.id != device_id);
            store.replace(s).await?;
        }
    }
    Ok(true)
}

/// The signed link a route sends a browser to when its policy needs a device this session has
/// not proven.
pub fn device_url(auth: &Auth<'_>, original: &str, type_id: Option<&str>) -> Url {
    let extra: Vec<(&str, &str)> = type_id
        .map(|t| vec![("pomerium_device_type", t)])
        .unwrap_or_default();
    signed::sign(
        &auth.shared_secret,
        &auth.authenticate_url,
        PATH,
        original,
        &extra,
        unix_now(),
    )
}

fn relying_party(auth: &Auth<'_>, name: &str) -> Option<Webauthn> {
    let rp_id = auth.authenticate_url.host_str()?;
    let origin = Url::parse(&auth.authenticate_url.origin().ascii_serialization()).ok()?;
    WebauthnBuilder::new(rp_id, &origin)
        .ok()?
        .rp_name(name)
        .build()
        .ok()
}

/// A stable WebAuthn user handle for an IdP subject (no personal data in it).
fn user_handle(user_id: &str) -> Uuid {
    let digest = sha2::Sha256::digest(format!("vallum webauthn user|{user_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(b)
}

/// A refused ceremony step, answered to the page's script (which asks for JSON).
fn ceremony_error(req: &Request<'_>, status: StatusCode, message: &str) -> Reply {
    req.answer.refuse(Refusal::sign_in(
        status,
        "Device problem",
        message.to_string(),
    ))
}

#[derive(Serialize, Deserialize)]
struct RegisterState {
    type_id: String,
    state: PasskeyRegistration,
}

fn ceremony_key(session: &UserSession, kind: &str) -> String {
    format!("webauthn:{kind}:{}", session.id)
}

/// Keeps a started ceremony's state (its challenge) for `CEREMONY_TTL`, for the one answer.
async fn save_ceremony<T: Serialize>(
    store: &dyn SessionStore,
    session: &UserSession,
    kind: &str,
    state: &T,
) -> Result<(), String> {
    let raw = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    store
        .put_record(&ceremony_key(session, kind), raw, CEREMONY_TTL)
        .await
        .map_err(|e| e.to_string())
}

/// A started ceremony's saved state, removed as it is read: each challenge answers once.
async fn take_ceremony<T: serde::de::DeserializeOwned>(
    store: &dyn SessionStore,
    session: &UserSession,
    kind: &str,
) -> Result<Option<T>, String> {
    let key = ceremony_key(session, kind);
    let saved = store.get_record(&key).await.map_err(|e| e.to_string())?;
    store.delete_record(&key).await.map_err(|e| e.to_string())?;
    Ok(saved.and_then(|s| serde_json::from_slice(&s).ok()))
}

/// The authenticator's answer the page posted.
fn credential<T: serde::de::DeserializeOwned>(req: &Request<'_>) -> Result<T, String> {
    serde_json::from_str(req.field("credential").unwrap_or(""))
        .map_err(|e| format!("malformed credential: {e}"))
}

/// Records a proof in the session (and in the store, so every node sees it).
async fn mark_proven(
    state: &Arc<AuthState>,
    session: &UserSession,
    device: &EnrolledDevice,
) -> Result<(), StoreError> {
    let proven = ProvenDevice {
        id: device.id.clone(),
        type_id: device.type_id.clone(),
        approved: device.approved,
    };
    let prove = |s: &mut UserSession| {
        s.devices.retain(|d| d.id != proven.id);
        s.devices.push(proven);
    };
    crate::session::update(&*state.store, &session.id, prove)
        .await
        .map(|_| ())
}

/// `/.pomerium/webauthn` on the authenticate host: the device page (GET) and its ceremonies
/// (POST `action=register-begin|register-finish|authenticate-begin|authenticate-finish|unregister`).
pub async fn authenticate_page(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
) -> Reply {
    let device_types = auth.device_types.as_slice();
    let session = match auth_sessions(auth, state, req).await.map(|v| v.into_iter().next()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return req.answer.refuse(Refusal::sign_in(StatusCode::UNAUTHORIZED, "Sign in first", "Devices belong to a signed-in user. Open the application again to sign in, then come back."))
        }
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    // Where to go afterwards: a signed target, or this page.
    let target = if req.param("pomerium_redirect_uri").is_some() {
        match signed::verify(&auth.shared_secret, PATH, &req.query, unix_now()) {
            Ok(t) if routed_target(req, &t).is_some() => Some(t),
            Ok(_) => return bad_request(req, "the return link points nowhere Vallum serves"),
            Err(e) => return bad_request(req, &e.to_string()),
        }
    } else {
        None
    };
    let wanted_type = req
        .param("pomerium_device_type")
        .and_then(|t| device_types.iter().find(|d| d.id == t));
    let Some(rp) = relying_party(auth, &auth.rp_name) else {
        return req.answer.refuse(Refusal::sign_in(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Devices unavailable",
            "WebAuthn is not available for this authenticate URL",
        ));
    };
    let csrf = csrf_token(auth, Some(&session));
    if req.method == http::Method::POST {
        if !req.field("csrf").is_some_and(|c| ct_eq(c, &csrf)) {
            return ceremony_error(req, StatusCode::FORBIDDEN, "missing or wrong csrf token");
        }
        let after = target.clone().unwrap_or_else(|| PATH.to_string());
        return match ceremony(state, device_types, &rp, &session, req, &after).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(problem = %e, "webauthn ceremony refused");
                ceremony_error(req, StatusCode::BAD_REQUEST, &e)
            }
        };
    }
    let devices = match load_devices(state.store.as_ref(), &session.user_id).await {
        Ok(d) => d,
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    Reply::html(
        StatusCode::OK,
        super::device_page::device_page(req, &session, &devices, device_types, wanted_type, &csrf),
    )
}

async fn ceremony(
    state: &Arc<AuthState>,
    device_types: &[DeviceType],
    rp: &Webauthn,
    session: &UserSession,
    req: &Request<'_>,
    after: &str,
) -> Result<Reply, String> {
    let store = state.store.as_ref();
    let devices = load_devices(store, &session.user_id)
        .await
        .map_err(unavailable)?;
    let c = Ceremony {
        state,
        store,
        device_types,
        rp,
        session,
        req,
        after,
    };
    match req.field("action").unwrap_or("") {
        "register-begin" => register_begin(&c, &devices).await,
        "register-finish" => register_finish(&c, devices).await,
        "authenticate-begin" => authenticate_begin(&c, &devices).await,
        "authenticate-finish" => authenticate_finish(&c, devices).await,
        "unregister" => {
            let id = req.field("device").ok_or("which device?")?;
            remove_device(store, session, id)
                .await
                .map_err(unavailable)?;
            Ok(Reply::found(PATH))
        }
        _ => Err("unknown action".into()),
    }
}

fn unavailable(e: StoreError) -> String {
    e.to_string()
}

/// One ceremony request's context.
struct Ceremony<'a> {
    state: &'a Arc<AuthState>,
    store: &'a dyn SessionStore,
    device_types: &'a [DeviceType],
    rp: &'a Webauthn,
    session: &'a UserSession,
    req: &'a Request<'a>,
    /// Where the page goes once the ceremony succeeds.
    after: &'a str,
}

/// Options for `navigator.credentials.create`, with the device type's attachment.
async fn register_begin(c: &Ceremony<'_>, devices: &[EnrolledDevice]) -> Result<Reply, String> {
    if devices.len() >= MAX_DEVICES {
        return Err(format!("at most {MAX_DEVICES} devices per user"));
    }
    let type_id = c.req.field("type").unwrap_or("any");
    let t = c
        .device_types
        .iter()
        .find(|d| d.id == type_id)
        .ok_or("unknown device type")?;
    let label = c.session.email.as_deref().unwrap_or(&c.session.user_id);
    let exclude = devices
        .iter()
        .map(|d| d.passkey.cred_id().clone())
        .collect::<Vec<_>>();
    let (mut options, reg) =
        c.rp.start_passkey_registration(
            user_handle(&c.session.user_id),
            label,
            c.session.name.as_deref().unwrap_or(label),
            Some(exclude),
        )
        .map_err(|e| e.to_string())?;
    if let Some(sel) = options.public_key.authenticator_selection.as_mut() {
        sel.authenticator_attachment = match t.attachment {
            Attachment::Any => None,
            Attachment::Platform => Some(AuthenticatorAttachment::Platform),
            Attachment::CrossPlatform => Some(AuthenticatorAttachment::CrossPlatform),
        };
    }
    let saved = RegisterState {
        type_id: t.id.clone(),
        state: reg,
    };
    save_ceremony(c.store, c.session, "reg", &saved).await?;
    Ok(Reply::json(StatusCode::OK, &serde_json::json!(options)))
}

/// Verifies the new credential against the device type, stores it and proves it.
async fn register_finish(
    c: &Ceremony<'_>,
    mut devices: Vec<EnrolledDevice>,
) -> Result<Reply, String> {
    let saved: RegisterState = take_ceremony(c.store, c.session, "reg")
        .await?
        .ok_or("no enrolment in progress (it expired or was used)")?;
    let cred: RegisterPublicKeyCredential = credential(c.req)?;
    let passkey =
        c.rp.finish_passkey_registration(&cred, &saved.state)
            .map_err(|e| format!("the authenticator's answer does not verify: {e}"))?;
    let t = c
        .device_types
        .iter()
        .find(|d| d.id == saved.type_id)
        .ok_or("unknown device type")?;
    let flags: webauthn_rs::prelude::Credential = passkey.clone().into();
    if t.user_verification_required && !flags.user_verified {
        return Err(format!(
            "{} needs an authenticator that verifies the user (PIN or biometrics)",
            t.name
        ));
    }
    if !t.backup_allowed && flags.backup_eligible {
        return Err(format!(
            "{} needs a key that cannot leave the device; this one can be synced",
            t.name
        ));
    }
    let id = URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref());
    let name = c
        .req
        .field("name")
        .map(|n| n.trim().chars().take(64).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| t.name.clone());
    let device = EnrolledDevice {
        id: id.clone(),
        type_id: t.id.clone(),
        name,
        created_at: unix_now(),
        approved: false,
        passkey,
    };
    devices.retain(|d| d.id != id);
    devices.push(device.clone());
    save_devices(c.store, &c.session.user_id, &devices)
        .await
        .map_err(unavailable)?;
    // Enrolling is proving: the authenticator just signed with the new key.
    mark_proven(c.state, c.session, &device)
        .await
        .map_err(unavailable)?;
    tracing::info!(user = %c.session.user_id, device = %id, type_id = %t.id, "device enrolled");
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "device": id, "redirect": c.after }),
    ))
}

/// Options for `navigator.credentials.get` over the user's keys (of one type, if asked).
async fn authenticate_begin(c: &Ceremony<'_>, devices: &[EnrolledDevice]) -> Result<Reply, String> {
    let type_id = c.req.field("type").filter(|t| !t.is_empty());
    let keys: Vec<Passkey> = devices
        .iter()
        .filter(|d| type_id.is_none_or(|t| d.type_id == t))
        .map(|d| d.passkey.clone())
        .collect();
    if keys.is_empty() {
        return Err("no enrolled device of this type".into());
    }
    let (options, auth_state) =
        c.rp.start_passkey_authentication(&keys)
            .map_err(|e| e.to_string())?;
    save_ceremony(c.store, c.session, "auth", &auth_state).await?;
    Ok(Reply::json(StatusCode::OK, &serde_json::json!(options)))
}

/// Verifies the assertion, moves the key's counter forward and proves the device.
async fn authenticate_finish(
    c: &Ceremony<'_>,
    mut devices: Vec<EnrolledDevice>,
) -> Result<Reply, String> {
    let saved: PasskeyAuthentication = take_ceremony(c.store, c.session, "auth")
        .await?
        .ok_or("no proof in progress (it expired or was used)")?;
    let cred: PublicKeyCredential = credential(c.req)?;
    let result =
        c.rp.finish_passkey_authentication(&cred, &saved)
            .map_err(|e| format!("the authenticator's answer does not verify: {e}"))?;
    let id = URL_SAFE_NO_PAD.encode(result.cred_id().as_ref());
    let device = devices
        .iter_mut()
        .find(|d| d.id == id)
        .ok_or("this device is not enrolled")?;
    // Signature counter and backup state move forward; a cloned key shows up here.
    device.passkey.update_credential(&result);
    let device = device.clone();
    save_devices(c.store, &c.session.user_id, &devices)
        .await
        .map_err(unavailable)?;
    mark_proven(c.state, c.session, &device)
        .await
        .map_err(unavailable)?;
    Ok(Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "device": id, "redirect": c.after }),
    ))
}

/// `/.pomerium/webauthn` on a route host: GET goes to the authenticate host's page; POST
/// `action=unregister` (from the user page) removes a device.
pub async fn route_page(auth: &Auth<'_>, state: &Arc<AuthState>, req: &Request<'_>) -> Reply {
    let session = match host_session(auth, state, req).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let original = format!("{}://{}/.pomerium/", req.scheme, req.host);
            return Reply::found(host_sign_in_url(auth, req, &original).as_str());
        }
        Err(_) => return req.answer.refuse(Refusal::StoreUnavailable),
    };
    if req.method == http::Method::POST {
        let csrf = csrf_token(auth, Some(&session));
        if !req.field("csrf").is_some_and(|c| ct_eq(c, &csrf)) {
            return bad_request(req, "missing or wrong csrf token");
        }
        if req.field("action") != Some("unregister") {
            return bad_request(req, "unknown action");
        }
        let Some(id) = req.field("device") else {
            return bad_request(req, "which device?");
        };
        return match remove_device(state.store.as_ref(), &session, id).await {
            Ok(_) => Reply::found("/.pomerium/"),
            Err(_) => req.answer.refuse(Refusal::StoreUnavailable),
        };
    }
    let back = format!("{}://{}/.pomerium/", req.scheme, req.host);
    Reply::found(device_url(auth, &back, None).as_str())
}
