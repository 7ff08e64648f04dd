//! Every generated example (`examples/k8s/*.yaml`, `cargo xtask manifests`) is accepted by the
//! fake as the backend would send it: the namespace's Pod Security labels are applied first, so
//! every pod passes `restricted` admission; a Deployment's pod template is admitted as the pod
//! its ReplicaSet would create.

use std::path::Path;

use serde_json::Value;

use crate::start;

/// The REST collection of an object: `/api/v1/...` for the core group, `/apis/<group>/...`
/// otherwise.
fn collection(object: &Value, namespace: &str) -> String {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap().to_lowercase();
    let plural = match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    };
    let base = if api_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    format!("{base}/namespaces/{namespace}/{plural}")
}

async fn create(client: &kube::Client, object: &Value, what: &str) {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let request = http::Request::post(collection(object, namespace))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object).unwrap())
        .unwrap();
    if let Err(e) = client.request::<Value>(request).await {
        panic!("{what} was refused: {e}");
    }
}

#[tokio::test]
async fn every_generated_example_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    // namespace.yaml first: its labels make the namespace enforce `restricted`.
    files.sort_by_key(|p| p.file_name() != Some("namespace.yaml".as_ref()));
    assert!(files.len() >= 5, "{files:?}");
    let (server, client) = start().await;
    let mut pods = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for object in objects {
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let what = format!("{} {name} of {}", object["kind"], path.display());
            match object["kind"].as_str().unwrap() {
                // Namespaces are not stored: every namespace exists; apply its labels.
                "Namespace" => {
                    for (key, value) in object["metadata"]["labels"].as_object().unwrap() {
                        server
                            .handle()
                            .set_namespace_label(&name, key, value.as_str());
                    }
                }
                "Deployment" => {
                    create(&client, &object, &what).await;
                    let template = &object["spec"]["template"];
                    let mut pod = serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": template["metadata"].clone(),
                        "spec": template["spec"].clone(),
                    });
                    pod["metadata"]["name"] = format!("{name}-5d8f7c6b4-x2x9q").into();
                    pod["metadata"]["namespace"] = object["metadata"]["namespace"].clone();
                    create(&client, &pod, &format!("the pod template of {what}")).await;
                    pods += 1;
                }
                kind => {
                    create(&client, &object, &what).await;
                    pods += usize::from(kind == "Pod");
                }
            }
        }
    }
    assert!(pods >= 5, "{pods} pods");
    let stored = server
        .handle()
        .list::<k8s_openapi::api::core::v1::Pod>(Some("mcpctl"));
    assert_eq!(stored.len(), pods);
}
