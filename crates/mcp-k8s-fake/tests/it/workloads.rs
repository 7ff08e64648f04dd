//! The kinds the egress proxy needs (Deployments, Roles, RoleBindings) through a real kube
//! client: created with their defaults, refused with the apiserver's field errors, listed and
//! deleted; NetworkPolicy `ipBlock`s refused unless strict; pods on a configured network.

use std::net::IpAddr;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use mcp_k8s_fake::{FakeKubeOptions, FakeKubeServer};
use serde_json::json;

use crate::{WAIT, idle_pod, start, status_of};

fn causes(status: &kube::core::Status) -> Vec<String> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

fn deployment(selector: &str, label: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "proxy", "labels": {"app": "proxy"}},
        "spec": {
            "selector": {"matchLabels": {"app": selector}},
            "template": {
                "metadata": {"labels": {"app": label}},
                "spec": {"containers": [{"name": "proxy", "image": "proxy:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn deployments_are_defaulted_validated_and_stored_without_pods() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let created = deployments
        .create(&PostParams::default(), &deployment("proxy", "proxy"))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    assert_eq!(created.metadata.generation, Some(1));
    // No controller: no pod appears.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let status = status_of(
        deployments
            .create(&PostParams::default(), &{
                let mut d = deployment("proxy", "other");
                d.metadata.name = Some("bad".into());
                d
            })
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(causes(&status), ["spec.template.metadata.labels"]);
    assert!(
        status
            .message
            .starts_with("Deployment.apps \"bad\" is invalid"),
        "{}",
        status.message
    );

    let status = status_of(
        deployments
            .create(&PostParams::default(), &deployment("proxy", "proxy"))
            .await,
    );
    assert_eq!(status.code, 409);
    let listed = deployments
        .list(&ListParams::default().labels("app=proxy"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(server.handle().get::<Deployment>("team", "proxy").is_some());
    // A Deployment's delete answers with a Status.
    let deleted = deployments
        .delete("proxy", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right());
    assert!(server.handle().list::<Deployment>(None).is_empty());
}

#[tokio::test]
async fn roles_and_bindings_are_validated_and_stored() {
    let (server, client) = start().await;
    let roles: Api<Role> = Api::namespaced(client.clone(), "team");
    let bindings: Api<RoleBinding> = Api::namespaced(client, "team");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "proxy", "namespace": "team"}]
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    assert!(
        server
            .handle()
            .get::<RoleBinding>("team", "reader")
            .is_some()
    );

    let bad_role: Role = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "rules": [{"resources": ["pods"], "verbs": []}]
    }))
    .unwrap();
    let status = status_of(roles.create(&PostParams::default(), &bad_role).await);
    assert_eq!(causes(&status), ["rules[0].verbs", "rules[0].apiGroups"]);
    let mut bad_binding = binding.clone();
    bad_binding.metadata.name = Some("bad".into());
    bad_binding.role_ref.kind = "Secret".into();
    let status = status_of(bindings.create(&PostParams::default(), &bad_binding).await);
    assert_eq!(causes(&status), ["roleRef.kind"]);
    assert!(
        roles
            .delete("reader", &DeleteParams::default())
            .await
            .unwrap()
            .is_right()
    );
}

#[tokio::test]
async fn ip_blocks_must_be_strict_and_excepts_strict_subsets() {
    let (_server, client) = start().await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client, "team");
    let policy = |name: &str, cidr: &str, except: &[&str]| -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": except}}]}]
            }
        }))
        .unwrap()
    };
    policies
        .create(
            &PostParams::default(),
            &policy("open", "0.0.0.0/0", &["169.254.0.0/16"]),
        )
        .await
        .unwrap();
    let status = status_of(
        policies
            .create(
                &PostParams::default(),
                &policy("wide", "10.0.0.0/8", &["0.0.0.0/0", "10.0.0.1/8"]),
            )
            .await,
    );
    assert_eq!(status.code, 422);
    // `10.0.0.1/8` is both sloppy and, as the network it names, not a strict subset.
    assert_eq!(
        causes(&status),
        [
            "spec.egress[0].to[0].ipBlock.except[0]",
            "spec.egress[0].to[0].ipBlock.except[1]",
            "spec.egress[0].to[0].ipBlock.except[1]"
        ]
    );
    assert!(
        status.message.contains("must be a strict subset of `cidr`"),
        "{}",
        status.message
    );
    assert!(
        status
            .message
            .contains("must not have bits set beyond the prefix length"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn pods_get_addresses_on_the_configured_network() {
    let server = FakeKubeServer::with_options(FakeKubeOptions {
        pod_network: [127, 77],
        ..FakeKubeOptions::default()
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    pods.create(&PostParams::default(), &idle_pod("a", &[]))
        .await
        .unwrap();
    let running = server
        .handle()
        .wait_for_pod("default", "a", WAIT, |p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
        })
        .await
        .expect("an address in time");
    let ip: IpAddr = running.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert!(ip.is_loopback(), "{ip}");
    assert_eq!(
        ip.to_string().split('.').take(2).collect::<Vec<_>>(),
        ["127", "77"]
    );
    // A socket can be bound to it: tests connect from a pod's address.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((ip, 0).into()).unwrap();
}
