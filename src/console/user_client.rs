//! Kubernetes clients that act as the signed-in user: the operator's
//! cluster settings (API server URL, its CA, timeouts) with every credential
//! of the operator's removed and the user's bearer token put in their
//! place. What the user sees and may do is what RBAC grants that token.
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config};
use secrecy::SecretString;

use crate::remediation::crd::Remediation;

/// An API call made for the user that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum UserApiError {
    /// The API server answered with an error status (401, 403, 404, 409…).
    #[error("{message}")]
    Refused { code: u16, message: String },
    /// No answer (connection, TLS, a body that did not decode).
    #[error("the Kubernetes API could not be reached: {0}")]
    Unreachable(String),
    #[error("the API server did not say who the token belongs to")]
    NoIdentity,
}

impl UserApiError {
    /// The HTTP status the console answers with: the API server's own
    /// refusal (403 stays 403), 502 when it could not be asked.
    pub fn status(&self) -> u16 {
        match self {
            UserApiError::Refused { code, .. } => *code,
            UserApiError::Unreachable(_) | UserApiError::NoIdentity => 502,
        }
    }

    /// Whether the token itself was refused (expired, revoked, wrong).
    pub fn unauthenticated(&self) -> bool {
        matches!(self, UserApiError::Refused { code: 401, .. })
    }
}

impl From<kube::Error> for UserApiError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => UserApiError::Refused {
                code: status.code,
                message: status.message,
            },
            other => UserApiError::Unreachable(other.to_string()),
        }
    }
}

/// The operator's cluster settings with the credentials replaced by
/// `token` alone: no client certificate, token file, exec plugin, basic
/// auth, impersonation or extra header of the operator's survives.
pub fn user_config(base: &Config, token: &str) -> Config {
    let mut config = base.clone();
    config.auth_info = AuthInfo {
        token: Some(SecretString::from(token.to_string())),
        ..AuthInfo::default()
    };
    config.headers = Vec::new();
    config
}

/// A client that acts as the holder of `token`.
pub fn user_client(base: &Config, token: &str) -> Result<Client, UserApiError> {
    Client::try_from(user_config(base, token)).map_err(|e| UserApiError::Unreachable(e.to_string()))
}

/// Who the client's token belongs to, asked of the API server itself
/// (authentication.k8s.io/v1 SelfSubjectReview): any token it accepts
/// (ServiceAccount, OIDC, webhook) works, and a wrong one is a 401.
pub async fn who_am_i(client: &Client) -> Result<String, UserApiError> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|name| !name.is_empty())
        .ok_or(UserApiError::NoIdentity)
}

/// Whether the user may `patch` Remediations in `namespace`
/// (SelfSubjectAccessReview with their token): decides which buttons show.
/// The API server still decides the patch itself.
pub async fn may_patch_remediations(
    client: &Client,
    namespace: &str,
) -> Result<bool, UserApiError> {
    use kube::Resource;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(Remediation::group(&()).to_string()),
                resource: Some(Remediation::plural(&()).to_string()),
                verb: Some("patch".into()),
                namespace: Some(namespace.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_config_keeps_the_cluster_and_drops_every_operator_credential() {
        let mut base = Config::new(
            "https://10.0.0.1:6443"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        base.root_cert = Some(vec![b"ca".to_vec()]);
        base.auth_info = AuthInfo {
            token_file: Some("/var/run/secrets/token".into()),
            client_certificate_data: Some("cert".into()),
            client_key_data: Some(SecretString::from("key".to_string())),
            impersonate: Some("system:admin".into()),
            username: Some("admin".into()),
            ..AuthInfo::default()
        };
        base.headers = vec![(
            "authorization".parse().unwrap_or_else(|e| panic!("{e}")),
            "Bearer operator".parse().unwrap_or_else(|e| panic!("{e}")),
        )];
        let user = user_config(&base, "user-token");
        assert_eq!(user.cluster_url, base.cluster_url);
        assert_eq!(user.root_cert, base.root_cert);
        assert!(user.headers.is_empty());
        let auth = &user.auth_info;
        assert!(auth.token_file.is_none() && auth.client_certificate_data.is_none());
        assert!(auth.client_key_data.is_none() && auth.impersonate.is_none());
        assert!(auth.username.is_none() && auth.exec.is_none() && auth.auth_provider.is_none());
        use secrecy::ExposeSecret;
        assert_eq!(
            auth.token
                .as_ref()
                .map(|t| t.expose_secret().to_string())
                .as_deref(),
            Some("user-token")
        );
    }
}
