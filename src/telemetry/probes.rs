//! Whether this node should get traffic, as `/readyz` reports it: the config is loaded, the
//! identity provider answers (when sign-in is configured) and the session store answers. The
//! state only; `server::readiness` is the background probe that keeps it current.

use std::sync::Mutex;

/// One component's state: `None` when it does not apply to this config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub ready: bool,
    pub detail: String,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    /// False until the first check has run: a node is not ready before it has looked.
    pub checked: bool,
    pub config: Option<Component>,
    pub idp: Option<Component>,
    pub store: Option<Component>,
    /// Hosts that autocert has no certificate for yet. Reported, but it does not make the node
    /// unready: the CA's HTTP-01 request may reach this node through the load balancer.
    pub certificates: Option<Component>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.checked
            && [&self.config, &self.idp, &self.store]
                .iter()
                .all(|c| c.as_ref().is_none_or(|c| c.ready))
    }

    pub fn to_json(&self) -> serde_json::Value {
        let c = |c: &Option<Component>| match c {
            None => serde_json::json!({ "status": "not configured" }),
            Some(c) => serde_json::json!({
                "status": if c.ready { "ready" } else { "not ready" },
                "detail": c.detail,
            }),
        };
        serde_json::json!({
            "ready": self.ready(),
            "version": env!("CARGO_PKG_VERSION"),
            "components": {
                "config": c(&self.config),
                "identity_provider": c(&self.idp),
                "session_store": c(&self.store),
                "certificates": c(&self.certificates),
            }
        })
    }
}

#[derive(Default)]
pub struct Readiness {
    now: Mutex<Report>,
}

impl Readiness {
    pub fn report(&self) -> Report {
        self.now.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set(&self, s: Report) {
        if let Ok(mut now) = self.now.lock() {
            *now = s;
        }
    }
}
