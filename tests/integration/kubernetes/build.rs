//! Build script: the kind tests are compiled to run (cfg `mcpctl_kind`) only when built for a
//! cluster, i.e. with `MCPCTL_KIND_CLUSTER` set as `cargo xtask kind-test` does; everywhere else
//! libtest reports them as ignored, so a count of passed tests never includes them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mcpctl_kind)");
    println!("cargo::rerun-if-env-changed=MCPCTL_KIND_CLUSTER");
    println!("cargo::rerun-if-env-changed=MCPCTL_REQUIRE_KIND");
    if std::env::var_os("MCPCTL_KIND_CLUSTER").is_some() {
        println!("cargo::rustc-cfg=mcpctl_kind");
    } else if std::env::var("MCPCTL_REQUIRE_KIND").as_deref() == Ok("1") {
        println!(
            "cargo::error=MCPCTL_REQUIRE_KIND=1 but MCPCTL_KIND_CLUSTER is not set: the kind \
             tests would be ignored; run `cargo xtask kind-test`"
        );
    }
}
