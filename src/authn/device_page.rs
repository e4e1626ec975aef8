//! The device pages: the enrolment and proof page on the authenticate host (its ceremony
//! script included inline, so the page loads nothing from elsewhere) and the device list on the
//! user page.

use super::webauthn::{EnrolledDevice, PATH};
use super::Request;
use crate::config::devices::DeviceType;
use crate::respond::pages;
use crate::session::UserSession;

/// The device list on the user page, with a remove button per device.
pub fn user_page_section(devices: &[EnrolledDevice], csrf: &str) -> String {
    let e = pages::escape;
    let rows: String = devices
        .iter()
        .map(|d| {
            format!(
                "<tr class=\"device\" data-device=\"{id}\"><td>{name}</td><td>{t}</td><td>{approved}</td>\
                 <td><form method=\"post\" action=\"{PATH}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"action\" value=\"unregister\"><input type=\"hidden\" name=\"device\" value=\"{id}\">\
                 <button type=\"submit\">Remove</button></form></td></tr>",
                id = e(&d.id),
                name = e(&d.name),
                t = e(&d.type_id),
                approved = if d.approved { "approved" } else { "" },
                csrf = e(csrf),
            )
        })
        .collect();
    format!(
        "<h2>Devices</h2><table id=\"devices\"><tr><th>Name</th><th>Type</th><th>Approved</th><th></th></tr>{rows}</table>\
         <p><a href=\"{PATH}\">Enrol a device</a></p>"
    )
}

pub(super) fn device_page(
    req: &Request<'_>,
    session: &UserSession,
    devices: &[EnrolledDevice],
    types: &[DeviceType],
    wanted: Option<&DeviceType>,
    csrf: &str,
) -> String {
    let e = pages::escape;
    let list: String = devices
        .iter()
        .map(|d| {
            format!(
                "<li class=\"device\">{} <small>({})</small></li>",
                e(&d.name),
                e(&d.type_id)
            )
        })
        .collect();
    let options: String = types
        .iter()
        .map(|t| {
            format!(
                "<option value=\"{id}\"{sel}>{name}</option>",
                id = e(&t.id),
                name = e(&t.name),
                sel = if wanted.is_some_and(|w| w.id == t.id) {
                    " selected"
                } else {
                    ""
                }
            )
        })
        .collect();
    let intro = match wanted {
        Some(t) => format!(
            "<p>This application needs a device of type <b>{}</b>. Use one you enrolled, or enrol this one.</p>",
            e(&t.name)
        ),
        None => "<p>Enrol this device, or prove one you enrolled before.</p>".to_string(),
    };
    let body = format!(
        "{intro}<p>Signed in as {who}.</p><h2>Your devices</h2><ul id=\"device-list\">{list}</ul>\
         <p><button id=\"prove\" type=\"button\">Use an enrolled device</button></p>\
         <p><label>Name <input id=\"name\" value=\"\" maxlength=\"64\"></label> \
         <select id=\"type\">{options}</select> <button id=\"enrol\" type=\"button\">Enrol this device</button></p>\
         <p id=\"status\" role=\"status\"></p>\
         <script>const CSRF={csrf_js};const WANT={want_js};{SCRIPT}</script>",
        who = e(session.email.as_deref().unwrap_or(&session.user_id)),
        csrf_js = serde_json::json!(csrf),
        want_js = serde_json::json!(wanted.map(|t| t.id.as_str()).unwrap_or("")),
    );
    req.answer.page_html("Devices", &body)
}

/// The page's ceremony code: base64url ↔ bytes around `navigator.credentials`, nothing else.
const SCRIPT: &str = r#"
const enc=b=>btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g,'-').replace(/\//g,'_').replace(/=+$/,'');
const dec=s=>Uint8Array.from(atob(s.replace(/-/g,'+').replace(/_/g,'/')),c=>c.charCodeAt(0));
const status=t=>{document.getElementById('status').textContent=t;};
async function post(fields){
  const body=new URLSearchParams(Object.assign({csrf:CSRF},fields));
  const r=await fetch(location.pathname+location.search,{method:'POST',body,headers:{Accept:'application/json'},credentials:'same-origin'});
  const j=await r.json().catch(()=>({error:'HTTP '+r.status}));
  if(!r.ok)throw new Error(j.error||('HTTP '+r.status));
  return j;
}
document.getElementById('enrol').onclick=async()=>{
  try{
    status('Waiting for the authenticator…');
    const type=document.getElementById('type').value;
    const o=(await post({action:'register-begin',type})).publicKey;
    o.challenge=dec(o.challenge);o.user.id=dec(o.user.id);
    (o.excludeCredentials||[]).forEach(c=>c.id=dec(c.id));
    const c=await navigator.credentials.create({publicKey:o});
    const cred={id:c.id,rawId:enc(c.rawId),type:c.type,extensions:c.getClientExtensionResults(),
      response:{attestationObject:enc(c.response.attestationObject),clientDataJSON:enc(c.response.clientDataJSON)}};
    const done=await post({action:'register-finish',credential:JSON.stringify(cred),name:document.getElementById('name').value});
    status('Device enrolled.');location.href=done.redirect;
  }catch(e){status('Enrolment failed: '+e.message);}
};
document.getElementById('prove').onclick=async()=>{
  try{
    status('Waiting for the authenticator…');
    const o=(await post({action:'authenticate-begin',type:WANT})).publicKey;
    o.challenge=dec(o.challenge);(o.allowCredentials||[]).forEach(c=>c.id=dec(c.id));
    const c=await navigator.credentials.get({publicKey:o});
    const r=c.response;
    const cred={id:c.id,rawId:enc(c.rawId),type:c.type,extensions:c.getClientExtensionResults(),
      response:{authenticatorData:enc(r.authenticatorData),clientDataJSON:enc(r.clientDataJSON),signature:enc(r.signature),userHandle:r.userHandle?enc(r.userHandle):null}};
    const done=await post({action:'authenticate-finish',credential:JSON.stringify(cred)});
    status('Device verified.');location.href=done.redirect;
  }catch(e){status('Verification failed: '+e.message);}
};
"#;
