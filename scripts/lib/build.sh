# shellcheck shell=bash
# The one build of the workspace that the suite (scripts/test) and the stand
# (scripts/up) share. Same packages, same targets, hence the same feature unification:
# whichever runs first, the other finds every unit fresh (`cargo build -p devd` alone
# unifies features differently and would compile ~60 s of crates again).
build_workspace() {
  cargo build --workspace --all-targets --locked
}
