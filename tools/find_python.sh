# Sourced by .ci/run and benchmarks/gpu_prebuild.sh (one definition, so the two cannot drift apart).
# find_python X.Y prints an interpreter of that minor version (on PATH, pyenv's, /usr/bin) or returns 1.
find_python() {
  local want="$1" p
  for p in "python$want" "$(pyenv root 2>/dev/null)"/versions/"$want".*/bin/python"$want" /usr/bin/python"$want"; do
    if "$p" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want'" >/dev/null 2>&1; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
