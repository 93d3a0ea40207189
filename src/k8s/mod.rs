//! Small facts about Kubernetes objects that every other module needs, in
//! one leaf module that imports nothing else from the operator (only the
//! policy engine's quantity parser):
//!
//! - [`redact`]: credential-looking text masked before it leaves as
//!   evidence, an Event or a prompt;
//! - [`pod_spec`]: where each workload kind keeps its pod spec, and the
//!   partial object that changes containers there;
//! - [`quantity`]: memory quantities as bytes;
//! - [`workload`]: the dynamic API of any workload kind, and the selector
//!   of its pods;
//! - [`pod`]: pod readiness;
//! - [`age`]: an object's age as kubectl prints it.
pub mod age;
pub mod pod;
pub mod pod_spec;
pub mod quantity;
pub mod redact;
pub mod workload;
