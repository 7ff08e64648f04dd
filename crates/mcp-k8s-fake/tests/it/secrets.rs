//! `secret` volumes: the apiserver's validation of their fields and of `subPath`, the kubelet
//! projecting a Secret's keys with their modes (`fsGroup` adding group read), waiting in
//! `ContainerCreating` until a missing Secret exists, and a real program reading the file its
//! variable names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    EnvVar, KeyToPath, Pod, PodSecurityContext, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use kube::api::{Api, DeleteParams, LogParams, ObjectMeta, PostParams};
use mcp_orchestrator_api::fixture::{FixtureScript, mode_line};

use crate::{WAIT, create, is_running, script_pod, start, status_of, waiting_reason};

const VALUE: &str = "fake-s3cret-value";

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// `pod` with a secret volume projecting `key` of `secret_name` as `value` (0400), mounted by
/// `subPath` at `/run/secrets/token`, `TOKEN_FILE` naming it, and the pod's `fsGroup` set.
fn with_secret_file(mut pod: Pod, secret_name: &str, key: &str) -> Pod {
    let spec = pod.spec.as_mut().unwrap();
    spec.security_context = Some(PodSecurityContext {
        fs_group: Some(1000),
        ..PodSecurityContext::default()
    });
    spec.volumes = Some(vec![Volume {
        name: "secret-file-0".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: "value".into(),
                mode: None,
            }]),
            default_mode: Some(0o400),
            optional: None,
        }),
        ..Volume::default()
    }]);
    let container = &mut spec.containers[0];
    container.volume_mounts = Some(vec![VolumeMount {
        name: "secret-file-0".into(),
        mount_path: "/run/secrets/token".into(),
        sub_path: Some("value".into()),
        read_only: Some(true),
        ..VolumeMount::default()
    }]);
    container.env = Some(vec![EnvVar {
        name: "TOKEN_FILE".into(),
        value: Some("/run/secrets/token".into()),
        value_from: None,
    }]);
    pod
}

async fn log_lines(pods: &Api<Pod>, name: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = pods
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn invalid_secret_volumes_and_sub_paths_are_refused() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "v");
    let mut pod = with_secret_file(
        script_pod("bad", "Never", &FixtureScript::new()),
        "gh",
        "token",
    );
    {
        let spec = pod.spec.as_mut().unwrap();
        let source = spec.volumes.as_mut().unwrap()[0].secret.as_mut().unwrap();
        source.secret_name = None;
        source.default_mode = Some(0o1000);
        source.items.as_mut().unwrap()[0].path = "../escape".into();
        spec.containers[0].volume_mounts.as_mut().unwrap()[0].sub_path = Some("/abs".into());
    }
    let status = status_of(pods.create(&PostParams::default(), &pod).await);
    assert_eq!(status.code, 422);
    for field in [
        "spec.volumes[0].secret.secretName",
        "spec.volumes[0].secret.defaultMode",
        "spec.volumes[0].secret.items[0].path",
        "spec.containers[0].volumeMounts.subPath",
    ] {
        assert!(
            status.message.contains(field),
            "{field}: {}",
            status.message
        );
    }
}

#[tokio::test]
async fn a_secret_file_holds_the_key_read_only_with_group_read_from_the_fs_group() {
    let (server, client) = start().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "s");
    secrets
        .create(&PostParams::default(), &secret("gh", &[("token", VALUE)]))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "s");
    let script = FixtureScript::new()
        .print_env_file("TOKEN_FILE")
        .print_env_file_mode("TOKEN_FILE")
        .print_file("/run/secrets/token")
        .write_file("/run/secrets/token", "changed")
        .print_file("/run/secrets/token");
    create(
        &pods,
        &with_secret_file(script_pod("reader", "Never", &script), "gh", "token"),
    )
    .await;
    let lines = log_lines(&pods, "reader", 5).await;
    assert_eq!(
        lines,
        [
            VALUE.to_owned(),
            mode_line("TOKEN_FILE", 0o440),
            VALUE.to_owned(),
            "wrote /run/secrets/token failed: read-only file system".to_owned(),
            VALUE.to_owned(),
        ]
    );
    // The pod as stored names the Secret and key, never the value.
    let stored = pods.get("reader").await.unwrap();
    let json = serde_json::to_string(&stored).unwrap();
    assert!(!json.contains(VALUE), "{json}");
    drop(server);
}

#[tokio::test]
async fn a_missing_secret_keeps_the_container_creating_until_it_exists() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "m");
    let script = FixtureScript::new().print_env_file("TOKEN_FILE");
    create(
        &pods,
        &with_secret_file(script_pod("waits", "Never", &script), "later", "token"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pod = pods.get("waits").await.unwrap();
    assert_eq!(waiting_reason(&pod).as_deref(), Some("ContainerCreating"));
    let secrets: Api<Secret> = Api::namespaced(client, "m");
    // A Secret without the key the volume projects: still waiting.
    secrets
        .create(&PostParams::default(), &secret("later", &[("other", "x")]))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pod = pods.get("waits").await.unwrap();
    assert_eq!(waiting_reason(&pod).as_deref(), Some("ContainerCreating"));
    secrets
        .delete("later", &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("later", &[("token", VALUE)]),
        )
        .await
        .unwrap();
    assert_eq!(log_lines(&pods, "waits", 1).await, [VALUE]);
    drop(server);
}

async fn test_server_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| mcp_test_server::static_binary().expect("build mcp-test-server"))
        .await
        .expect("build task")
}

/// The host copies of secret volumes this process's fake kubelet made.
fn host_copies() -> Vec<String> {
    let prefix = format!("mcp-k8s-fake-secrets-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn a_real_program_reads_the_file_its_variable_names() {
    let image = "example.com/real-secret-reader:1";
    let (server, client) = start().await;
    server
        .handle()
        .run_image_as(image, test_server_binary().await);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "r");
    secrets
        .create(&PostParams::default(), &secret("gh", &[("token", VALUE)]))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "r");
    let script = FixtureScript::new()
        .print_env_file("TOKEN_FILE")
        .print_env_file_mode("TOKEN_FILE")
        .stdout("ready");
    let mut pod = with_secret_file(script_pod("real", "Never", &script), "gh", "token");
    pod.spec.as_mut().unwrap().containers[0].image = Some(image.to_owned());
    create(&pods, &pod).await;
    server
        .handle()
        .wait_for_pod("r", "real", WAIT, is_running)
        .await;
    assert_eq!(
        log_lines(&pods, "real", 3).await,
        [
            VALUE.to_owned(),
            mode_line("TOKEN_FILE", 0o440),
            "ready".to_owned()
        ]
    );
    assert_eq!(host_copies().len(), 1, "{:?}", host_copies());
    pods.delete("real", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !host_copies().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(host_copies().is_empty(), "{:?}", host_copies());
    drop(server);
}
