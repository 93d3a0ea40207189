//! Small facts about Kubernetes objects that every other module needs, in
//! one leaf module that imports nothing else from the project:
//!
//! - [`redact`]: masks credential-looking text before it leaves as
//!   evidence or a prompt;
//! - [`workload`]: the dynamic API of any workload kind, and the selector
//!   of its pods;
//! - [`pod`]: pod readiness.
pub mod pod;
pub mod redact;
pub mod workload;
