#!/usr/bin/env bash
# Fetches the Beam job-server jar for `flink` or `spark` that matches the installed Beam SDK,
# verifies it, and prints its path as the last line. Idempotent: a cached jar whose SHA-256
# still matches the one recorded at fetch is reused without touching the network.
#
#   scripts/ensure_job_server.sh flink|spark
#
# The jar comes from Maven Central through `mvn` with strict checksums (Maven checks the jar
# against Central's published checksum and refuses a mismatch). Settings, from the environment:
#   MNIST_PIPELINE_JAR_CACHE      cache folder (default ~/.cache/mnist-tfx-pipeline/jars; the
#                                 pipeline looks there too)
#   MNIST_PIPELINE_FLINK_VERSION  Flink minor version of the Flink job server (default 1.20)
#   MNIST_PIPELINE_MAVEN_REPO     a Maven repository URL to fetch from instead of Central
#                                 (a company mirror; file:// works)
#   MNIST_PIPELINE_MAVEN_LOCAL_REPO  Maven's local repository for the fetch (default: in the cache)
#   PYTHON                        the Python whose Beam version decides (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "ensure_job_server: $*" >&2; exit 1; }

engine="${1:-}"
case "$engine" in
  flink) artifact="beam-runners-flink-${MNIST_PIPELINE_FLINK_VERSION:-1.20}-job-server" ;;
  spark) artifact="beam-runners-spark-3-job-server" ;;
  *) echo "usage: scripts/ensure_job_server.sh flink|spark" >&2; exit 2 ;;
esac

python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
beam_version="$("$python" -c 'from apache_beam.version import __version__; print(__version__)' 2>/dev/null)" \
  || fail "cannot read the Beam SDK version with $python (run scripts/ensure_venv.sh first)"

cache="${MNIST_PIPELINE_JAR_CACHE:-$HOME/.cache/mnist-tfx-pipeline/jars}"
jar="$cache/$artifact-$beam_version.jar"
coordinates="org.apache.beam:$artifact:$beam_version:jar"

if [ -f "$jar" ] && [ -f "$jar.sha256" ]; then
  if (cd "$cache" && sha256sum --quiet --check "$(basename "$jar").sha256" >/dev/null 2>&1); then
    echo "$jar"
    exit 0
  fi
  echo "ensure_job_server: cached $jar does not match its recorded SHA-256; fetching it again" >&2
fi

command -v mvn >/dev/null 2>&1 || fail "mvn is not installed; it fetches $coordinates"
mkdir -p "$cache"
# Maven keeps what it verified in a local repository of the cache's own (its plugins too, so a
# second fetch downloads only the jar); -U retries an artifact Maven remembers as missing.
local_repo="${MNIST_PIPELINE_MAVEN_LOCAL_REPO:-$cache/maven-repository}"
staging="$(mktemp -d "$cache/.fetch-XXXXXX")"
trap 'rm -rf "$staging"' EXIT

repo_args=()
if [ -n "${MNIST_PIPELINE_MAVEN_REPO:-}" ]; then
  repo_args=("-DremoteRepositories=mirror::default::$MNIST_PIPELINE_MAVEN_REPO")
fi
echo "fetching $coordinates with mvn..." >&2
plugin=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
if ! mvn -B -q -U --strict-checksums -Dmaven.repo.local="$local_repo" "${repo_args[@]}" \
       "$plugin:get" -Dartifact="$coordinates" -Dtransitive=false >"$staging/mvn.log" 2>&1; then
  reason="$(grep -m1 -oE '(Could not find artifact|Could not transfer artifact|Checksum validation failed)[^[]*' \
            "$staging/mvn.log" | sed 's/ *-*> *$//' || true)"
  [ -n "$reason" ] || reason="$(grep -m1 '\[ERROR\]' "$staging/mvn.log" | sed 's/^\[ERROR\] *//')"
  fail "could not fetch $coordinates: ${reason:-mvn failed}${MNIST_PIPELINE_MAVEN_REPO:+ (from $MNIST_PIPELINE_MAVEN_REPO)}"
fi
fetched="$staging/$artifact-$beam_version.jar"
cp "$local_repo/org/apache/beam/$artifact/$beam_version/$artifact-$beam_version.jar" "$fetched" \
  || fail "mvn reported success but left no $(basename "$fetched") in $local_repo"
# A job server jar is a zip with the driver's main class; anything else is not worth caching.
"$python" - "$fetched" <<'EOF' || fail "$fetched is not a readable jar"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as jar:
    manifest = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
if "Main-Class" not in manifest:
    sys.exit("no Main-Class in the jar's manifest")
EOF
(cd "$staging" && sha256sum "$(basename "$fetched")" >"$(basename "$fetched").sha256")
mv -f "$fetched.sha256" "$jar.sha256.tmp"
mv -f "$fetched" "$jar"
mv -f "$jar.sha256.tmp" "$jar.sha256"
echo "$jar"
