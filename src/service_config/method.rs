//! The method-config table: `methodConfig` entries in input order, indexed by name for lookup.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::MethodConfig;
use super::duration::format_duration;

/// Method configs in input order, indexed by name for lookup without allocating.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct MethodTable {
    pub(super) entries: Vec<MethodEntry>,
    services: BTreeMap<String, ServiceEntries>,
    default: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ServiceEntries {
    whole_service: Option<usize>,
    methods: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct MethodEntry {
    pub(super) names: Vec<MethodName>,
    pub(super) config: MethodConfig,
}

/// A `{service, method}` name; empty strings stand for absent fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct MethodName {
    pub(super) service: String,
    pub(super) method: String,
}

impl MethodTable {
    pub(super) fn push(&mut self, entry: MethodEntry) {
        let index = self.entries.len();
        for name in &entry.names {
            if name.service.is_empty() {
                self.default = Some(index);
            } else {
                let service = self.services.entry(name.service.clone()).or_default();
                if name.method.is_empty() {
                    service.whole_service = Some(index);
                } else {
                    service.methods.insert(name.method.clone(), index);
                }
            }
        }
        self.entries.push(entry);
    }

    pub(super) fn lookup(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        let by_service = self.services.get(service);
        let index = by_service
            .and_then(|s| s.methods.get(method).copied().or(s.whole_service))
            .or(self.default)?;
        self.entries.get(index).map(|entry| &entry.config)
    }
}

impl MethodEntry {
    pub(super) fn to_json(&self) -> Value {
        let names: Vec<Value> = self.names.iter().map(MethodName::to_json).collect();
        let mut entry = Map::new();
        entry.insert("name".into(), Value::Array(names));
        let config = &self.config;
        if let Some(timeout) = config.timeout {
            entry.insert("timeout".into(), format_duration(timeout).into());
        }
        if let Some(wait_for_ready) = config.wait_for_ready {
            entry.insert("waitForReady".into(), wait_for_ready.into());
        }
        if let Some(retry) = &config.retry_policy {
            entry.insert("retryPolicy".into(), retry.to_json());
        }
        Value::Object(entry)
    }
}

impl MethodName {
    pub(super) fn to_json(&self) -> Value {
        let mut name = Map::new();
        for (key, value) in [("service", &self.service), ("method", &self.method)] {
            if !value.is_empty() {
                name.insert(key.into(), value.as_str().into());
            }
        }
        Value::Object(name)
    }
}
