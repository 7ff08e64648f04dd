//! Failure injection: what the simulated kubelet and scheduler should get wrong, keyed by image
//! or by pod.

use std::sync::{Mutex, PoisonError};

/// A failure the fake cluster simulates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The image cannot be pulled: the container waits with reason `ErrImagePull`, then
    /// `ImagePullBackOff`, alternating until the failure is cleared.
    ImagePull,
    /// Every container instance exits with `exit_code` shortly after starting (reason `Error`),
    /// so restart policies Always/OnFailure produce `CrashLoopBackOff`.
    CrashLoop {
        /// The exit code of each crash (non-zero for a realistic crash loop).
        exit_code: i32,
    },
    /// Every container instance is killed shortly after starting with reason `OOMKilled`, exit
    /// code 137.
    OomKilled,
    /// The scheduler finds no node: the pod stays Pending with condition `PodScheduled=False`,
    /// reason `Unschedulable`, until the failure is cleared.
    Unschedulable,
    /// Containers ignore SIGTERM: a graceful delete only ends them when the grace period runs
    /// out (exit code 137).
    IgnoreSigterm,
}

/// What a failure applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureTarget {
    /// Every container whose `image` is exactly this string.
    Image(String),
    /// Every container of the pod with this namespace and name.
    Pod {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
    },
    /// Every container of pods in `namespace` whose name starts with `prefix` (handy with
    /// `generateName`).
    PodNamePrefix {
        /// Namespace of the pods.
        namespace: String,
        /// Prefix of the pod names.
        prefix: String,
    },
}

impl FailureTarget {
    /// Targets an image.
    pub fn image(image: impl Into<String>) -> Self {
        Self::Image(image.into())
    }

    /// Targets one pod.
    pub fn pod(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Pod {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Targets the pods whose names start with `prefix`.
    pub fn pod_name_prefix(namespace: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::PodNamePrefix {
            namespace: namespace.into(),
            prefix: prefix.into(),
        }
    }

    fn applies(&self, namespace: &str, pod: &str, image: Option<&str>) -> bool {
        match self {
            Self::Image(wanted) => image == Some(wanted.as_str()),
            Self::Pod {
                namespace: ns,
                name,
            } => ns == namespace && name == pod,
            Self::PodNamePrefix {
                namespace: ns,
                prefix,
            } => ns == namespace && pod.starts_with(prefix.as_str()),
        }
    }
}

/// The injected failures.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    entries: Mutex<Vec<(FailureTarget, Failure)>>,
}

impl Failures {
    pub(crate) fn inject(&self, target: FailureTarget, failure: Failure) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.iter().any(|(t, f)| *t == target && *f == failure) {
            entries.push((target, failure));
        }
    }

    pub(crate) fn clear(&self, target: &FailureTarget) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(t, _)| t != target);
    }

    pub(crate) fn clear_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The first injected failure accepted by `pick` that applies to this container (or, with
    /// `image` None, to the pod as a whole).
    pub(crate) fn find(
        &self,
        namespace: &str,
        pod: &str,
        image: Option<&str>,
        pick: impl Fn(&Failure) -> bool,
    ) -> Option<Failure> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(target, failure)| pick(failure) && target.applies(namespace, pod, image))
            .map(|(_, failure)| failure.clone())
    }
}
