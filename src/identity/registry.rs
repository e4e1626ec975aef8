//! The sign-in providers a node has discovered, by key (`config::route_idp`; empty for the
//! global one). Swapped whole on change, so the request path reads it with one atomic load.

use super::Provider;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Providers(ArcSwap<HashMap<String, Arc<Provider>>>);

impl Providers {
    /// The provider with this key, once discovered.
    pub fn get(&self, key: &str) -> Option<Arc<Provider>> {
        self.0.load().get(key).cloned()
    }

    /// The global provider (the `idp_*` keys at the top of the config).
    pub fn global(&self) -> Option<Arc<Provider>> {
        self.get("")
    }

    /// Records a discovered provider (`Some`) or forgets one (`None`).
    pub fn set(&self, key: &str, provider: Option<Arc<Provider>>) {
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            match &provider {
                Some(p) => m.insert(key.to_string(), Arc::clone(p)),
                None => m.remove(key),
            };
            m
        });
    }

    /// Keys of the providers discovered now.
    pub fn keys(&self) -> Vec<String> {
        self.0.load().keys().cloned().collect()
    }

    /// Every discovered provider (the back-channel logout asks each whose issuer matches).
    pub fn all(&self) -> Vec<(String, Arc<Provider>)> {
        self.0
            .load()
            .iter()
            .map(|(k, p)| (k.clone(), Arc::clone(p)))
            .collect()
    }
}
