# Shared by the deployment scripts; sourced, not run.
# shellcheck shell=bash

# run CMD...: runs CMD, or with DRY_RUN=1 prints it, shell-quoted, instead.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
