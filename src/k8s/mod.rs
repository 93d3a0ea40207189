//! Small facts about Kubernetes objects that every other module needs, in
//! one leaf module that imports nothing else from the project: the
//! redaction of credential-looking text before it leaves as evidence or a
//! prompt, and (as they are consolidated here) the helpers for workloads,
//! pods and JSON pointers.
pub mod redact;
