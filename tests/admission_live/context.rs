//! Policy context lookups through the real webhook and API server: a
//! `configMap` entry read from the webhook's watched cache (and its
//! updates), an `apiCall` answered by the API server, and an `apiCall` that
//! fails, once with a `default` (the rule decides on it) and once without
//! (the rule errors, which an Enforce policy turns into a denial), and a
//! CEL rule's parameter resources (`paramKind` + `paramRef.selector`, found
//! by discovery and listed).
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::live_webhook::{Certs, Expect, LiveWebhook, Options, project_policies_copy};
use crate::objects::{Refusal, create_object};
use crate::support::{Sandbox, wait_until};

/// Four rules, each for pods carrying its own `context-test` label, so a
/// pod meets exactly one of them.
const CONTEXT_POLICIES: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: context-registries
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Enforce
  rules:
  - name: allowed-registry
    match:
      any:
      - resources:
          kinds: [Pod]
          selector:
            matchLabels:
              context-test: registry
    context:
    - name: registries
      configMap:
        name: allowed-registries
        namespace: "{{ request.namespace }}"
    validate:
      message: "registry not in {{ registries.data.allowed }}"
      deny:
        conditions:
          any:
          - key: "{{ images.containers.*.registry }}"
            operator: AnyNotIn
            value: "{{ registries.data.allowed | split(@, ',') }}"
---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: context-api
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Enforce
  rules:
  - name: gate-service
    match:
      any:
      - resources:
          kinds: [Pod]
          selector:
            matchLabels:
              context-test: gate
    context:
    - name: gates
      apiCall:
        urlPath: "/api/v1/namespaces/{{ request.namespace }}/services"
        jmesPath: "items[?metadata.name == 'gate'] | length(@)"
    validate:
      message: "no gate service ({{ gates }} found)"
      deny:
        conditions:
          any:
          - key: "{{ gates }}"
            operator: Equals
            value: 0
  - name: owner-with-default
    match:
      any:
      - resources:
          kinds: [Pod]
          selector:
            matchLabels:
              context-test: default
    context:
    - name: owner
      apiCall:
        urlPath: "/api/v1/namespaces/{{ request.namespace }}/configmaps/no-such-owner"
        jmesPath: data.owner
        default: nobody
    validate:
      message: "owner is {{ owner }}"
      deny:
        conditions:
          any:
          - key: "{{ owner }}"
            operator: Equals
            value: nobody
  - name: owner-without-default
    match:
      any:
      - resources:
          kinds: [Pod]
          selector:
            matchLabels:
              context-test: error
    context:
    - name: owner
      apiCall:
        urlPath: "/api/v1/namespaces/{{ request.namespace }}/configmaps/no-such-owner"
        jmesPath: data.owner
    validate:
      message: "owner is {{ owner }}"
      deny:
        conditions:
          any:
          - key: "{{ owner }}"
            operator: Equals
            value: nobody
---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: context-params
  annotations:
    pod-policies.kyverno.io/autogen-controllers: none
spec:
  validationFailureAction: Enforce
  rules:
  - name: image-prefix-param
    match:
      any:
      - resources:
          kinds: [Pod]
          selector:
            matchLabels:
              context-test: params
    validate:
      cel:
        paramKind: {apiVersion: v1, kind: ConfigMap}
        paramRef:
          selector: {matchLabels: {aiops-param: image-prefix}}
          parameterNotFoundAction: Deny
        expressions:
        - expression: "object.spec.containers.all(c, c.image.startsWith(params.data.prefix))"
          messageExpression: "'images must start with ' + params.data.prefix"
"#;

fn pod(name: &str, test: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"context-test": test}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}

/// A server-side dry run of `manifest` in `namespace`.
async fn try_create(
    webhook: &LiveWebhook,
    namespace: &str,
    manifest: &Value,
) -> Result<(), Refusal> {
    create_object(&webhook.client, namespace, manifest, true).await
}

/// Waits until a dry run of `manifest` is admitted.
async fn wait_admitted(webhook: &LiveWebhook, namespace: &str, manifest: &Value, what: &str) {
    wait_until(Duration::from_secs(30), what, || async {
        try_create(webhook, namespace, manifest).await.ok()
    })
    .await;
}

/// The denial of a dry run of `manifest`, which must be one by `policy`.
async fn denial(webhook: &LiveWebhook, namespace: &str, manifest: &Value, policy: &str) -> String {
    match try_create(webhook, namespace, manifest).await {
        Ok(()) => panic!("{manifest} was admitted; {policy} should deny it"),
        Err(refusal) => {
            assert!(
                refusal.is_denial_by(policy),
                "not a denial by {policy}: {refusal}"
            );
            refusal.message
        }
    }
}

#[tokio::test]
async fn config_map_and_api_call_context_entries_decide_admission() {
    let sandbox = Sandbox::connect().await;
    let policies = project_policies_copy();
    std::fs::write(policies.path().join("context.yaml"), CONTEXT_POLICIES)
        .expect("writing the context policies");
    let options = Options {
        policies_dir: Some(policies.path().to_path_buf()),
        ..Options::default()
    };
    let webhook =
        LiveWebhook::start_with(&sandbox, &[("mode", "Enforce")], Certs::Cli, options).await;
    let ns = sandbox.namespace("awh-context").await;
    webhook.serve(&ns.name, Expect::Deny).await;

    // configMap: missing, the rule cannot be evaluated and Enforce denies.
    let good = pod("good", "registry", "good.example/app:1.0");
    let evil = pod("evil", "registry", "evil.example/app:1.0");
    let message = denial(&webhook, &ns.name, &good, "context-registries").await;
    assert!(
        message.contains("rule could not be evaluated")
            && message.contains(&format!("configmap {}/allowed-registries", ns.name)),
        "{message}"
    );

    // Created: the watched cache sees it, and it decides.
    let config_maps: Api<ConfigMap> = Api::namespaced(sandbox.client.clone(), &ns.name);
    let registries: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "allowed-registries"},
        "data": {"allowed": "good.example"},
    }))
    .expect("ConfigMap manifest");
    config_maps
        .create(&PostParams::default(), &registries)
        .await
        .expect("creating the registries ConfigMap");
    wait_admitted(&webhook, &ns.name, &good, "the good registry admitted").await;
    let message = denial(&webhook, &ns.name, &evil, "context-registries").await;
    assert!(
        message.contains("registry not in good.example"),
        "{message}"
    );

    // Updated: the next reviews read the new data.
    let both = json!({"data": {"allowed": "good.example,evil.example"}});
    config_maps
        .patch(
            "allowed-registries",
            &PatchParams::default(),
            &Patch::Merge(&both),
        )
        .await
        .expect("updating the registries ConfigMap");
    wait_admitted(&webhook, &ns.name, &evil, "the updated ConfigMap applied").await;

    // apiCall: no gate Service yet, so denied with the count.
    let gated = pod("gated", "gate", "good.example/app:1.0");
    let message = denial(&webhook, &ns.name, &gated, "context-api").await;
    assert!(message.contains("no gate service (0 found)"), "{message}");
    let gate: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "gate"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .expect("Service manifest");
    Api::<Service>::namespaced(sandbox.client.clone(), &ns.name)
        .create(&PostParams::default(), &gate)
        .await
        .expect("creating the gate Service");
    // Admitted once the cached answer (a few seconds) has expired.
    wait_admitted(&webhook, &ns.name, &gated, "admitted once the gate exists").await;

    // A failing apiCall with a default: the rule decides on the default.
    let defaulted = pod("defaulted", "default", "good.example/app:1.0");
    let message = denial(&webhook, &ns.name, &defaulted, "context-api").await;
    assert!(
        message.contains("owner-with-default: owner is nobody"),
        "{message}"
    );
    assert!(!message.contains("could not be evaluated"), "{message}");

    // Without a default: the rule errors, and Enforce fails closed.
    let erroring = pod("erroring", "error", "good.example/app:1.0");
    let message = denial(&webhook, &ns.name, &erroring, "context-api").await;
    assert!(
        message.contains("owner-without-default: rule could not be evaluated")
            && message.contains("no-such-owner"),
        "{message}"
    );
    // paramKind/paramRef: no parameter resource yet, Deny.
    let with_params = pod("with-params", "params", "good.example/app:1.0");
    let message = denial(&webhook, &ns.name, &with_params, "context-params").await;
    assert!(message.contains("no parameter resource"), "{message}");
    let prefix: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "image-prefix", "labels": {"aiops-param": "image-prefix"}},
        "data": {"prefix": "good.example/"},
    }))
    .expect("ConfigMap manifest");
    config_maps
        .create(&PostParams::default(), &prefix)
        .await
        .expect("creating the parameter ConfigMap");
    // Listed again once the cached answer has expired.
    wait_admitted(
        &webhook,
        &ns.name,
        &with_params,
        "admitted by the parameter",
    )
    .await;
    let off_prefix = pod("off-prefix", "params", "evil.example/app:1.0");
    let message = denial(&webhook, &ns.name, &off_prefix, "context-params").await;
    assert!(
        message.contains("images must start with good.example/"),
        "{message}"
    );
}
