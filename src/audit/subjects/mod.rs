//! The resolvers the audit ships as subjects: anchorage's own, and **models** of other
//! implementations, each in its own module and labelled as a model; and the clients: anchorage's
//! channel and tonic's own clients, run unmodified on the simulated network
//! ([`crate::sim::tonic_client`]).

use std::sync::Arc;

use crate::etcd::EtcdClient;
use crate::resolver::ResolverBuilder;
use crate::resolver::etcd::EtcdBuilder;
use crate::resolver::pass::PassBuilder;
use crate::sim::ClientKind;

pub mod grpc_go;
pub mod notes_port;

/// Which grammar a subject resolves, and so which properties apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectKind {
    /// Anchor lists, `pass:///a:1#2,b:1`: the [`syntax`](super::syntax) and
    /// [`scenarios`](super::scenarios) properties.
    Pass,
    /// etcd service names, `etcd://endpoint/service#N`: the [`etcd`](super::etcd) properties.
    Etcd,
    /// A client in place of anchorage's channel, with each scenario's own resolver: the
    /// [`CLIENT_PROPERTIES`](super::scenarios::CLIENT_PROPERTIES).
    Client(ClientKind),
}

/// One resolver to audit, with a name for the matrix.
#[derive(Debug, Clone)]
pub struct Subject {
    /// A short name (`anchorage-pass`, `notes-port`, `grpc-go-1.42-1.70`).
    pub name: String,
    /// What it is, one line.
    pub description: String,
    /// Which properties apply.
    pub kind: SubjectKind,
    /// The resolver builder (for a [`SubjectKind::Client`], anchorage's `pass` resolver, unused:
    /// a client subject takes each scenario's own resolver).
    pub builder: Arc<dyn ResolverBuilder>,
}

/// Every subject shipped with the crate, in matrix order.
pub fn shipped() -> Vec<Subject> {
    let mut subjects = vec![
        Subject {
            name: "anchorage-pass".into(),
            description: "anchorage's pass resolver".into(),
            kind: SubjectKind::Pass,
            builder: Arc::new(PassBuilder),
        },
        Subject {
            name: "notes-port".into(),
            description: "model: the original notes' Go resolver, ported line for line".into(),
            kind: SubjectKind::Pass,
            builder: Arc::new(notes_port::NotesPassBuilder::new("pass")),
        },
    ];
    for model in grpc_go::MODELS {
        subjects.push(Subject {
            name: format!("grpc-go-{}", model.versions),
            description: format!(
                "model: the pass resolver as grpc-go {} treats it",
                model.versions
            ),
            kind: SubjectKind::Pass,
            builder: Arc::new(grpc_go::GrpcGoPassBuilder::new(model)),
        });
    }
    subjects.push(Subject {
        name: "anchorage-etcd".into(),
        description: "anchorage's etcd resolver".into(),
        kind: SubjectKind::Etcd,
        builder: Arc::new(EtcdBuilder::new(EtcdClient::builder().seed(0))),
    });
    for client in [ClientKind::Anchorage].into_iter().chain(ClientKind::TONIC) {
        subjects.push(Subject {
            name: client.name().to_owned(),
            description: client.description().to_owned(),
            kind: SubjectKind::Client(client),
            builder: Arc::new(PassBuilder),
        });
    }
    subjects
}
