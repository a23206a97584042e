//! Anchor lists (`pass` endpoints) and etcd service names (DESIGN §2.2).
