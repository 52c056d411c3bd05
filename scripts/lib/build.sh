# shellcheck shell=bash
# The one build of the workspace that the suite (scripts/test) and the stand
# (scripts/up) share. Same packages, same targets, hence the same feature unification:
# whichever runs first, the other finds every unit fresh (`cargo build -p devd` alone
# unifies features differently and would compile ~60 s of crates again).
# The static shim every dev image carries (release, +crt-static, devd/shim/README.md)
# is built here too, into the same target dir where devd's image build looks for it:
# otherwise the first `devd up` compiles it silently inside "image built in 46 s".
build_workspace() {
  cargo build --workspace --all-targets --locked
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release -p stand-shim --bin stand-shim \
    --target "$(rustc -vV | sed -n 's/^host: //p')"
}
