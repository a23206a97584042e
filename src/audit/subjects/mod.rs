//! The resolvers the audit ships as subjects: anchorage's own, and **models** of other
//! implementations, each in its own module and labelled as a model.

use std::sync::Arc;

use crate::resolver::ResolverBuilder;
use crate::resolver::pass::PassBuilder;

pub mod grpc_go;
pub mod notes_port;

/// One resolver to audit, with a name for the matrix.
#[derive(Debug, Clone)]
pub struct Subject {
    /// A short name (`anchorage-pass`, `notes-port`, `grpc-go-1.42-1.70`).
    pub name: String,
    /// What it is, one line.
    pub description: String,
    /// The resolver builder, for the `pass` scheme.
    pub builder: Arc<dyn ResolverBuilder>,
}

/// Every subject shipped with the crate, in matrix order.
pub fn shipped() -> Vec<Subject> {
    let mut subjects = vec![
        Subject {
            name: "anchorage-pass".into(),
            description: "anchorage's pass resolver".into(),
            builder: Arc::new(PassBuilder),
        },
        Subject {
            name: "notes-port".into(),
            description: "model: the original notes' Go resolver, ported line for line".into(),
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
            builder: Arc::new(grpc_go::GrpcGoPassBuilder::new(model)),
        });
    }
    subjects
}
