"""scripts/gen-secrets.sh: what the overlays' secretGenerators read, and the rotation helpers."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from conftest import MANIFESTS, REPO

SCRIPT = REPO / "scripts" / "gen-secrets.sh"


@pytest.fixture
def tree(tmp_path):
    shutil.copytree(MANIFESTS, tmp_path / "manifests", ignore=shutil.ignore_patterns("secrets", "tests"))
    return tmp_path / "manifests"


def gen(tree, *args, env=None):
    return subprocess.run([str(SCRIPT), "--manifests", str(tree), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def keys(tree, overlay="minikube"):
    lines = (tree / "overlays" / overlay / "secrets" / "jwt-keys.env").read_text().splitlines()
    return dict(l.split("=", 1) for l in lines)


def test_minikube_secrets_are_private_consistent_and_kept(tree):
    assert gen(tree).returncode == 0
    secrets = tree / "overlays" / "minikube" / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for f in secrets.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    password = (secrets / "mysql-password").read_text()
    url = (secrets / "database-url").read_text()
    assert url == f"mysql://auth_user:{password}@mysql.edge-auth.svc.cluster.local:3306/auth"
    assert list(keys(tree)) == ["key-1"] and len(keys(tree)["key-1"]) == 64
    feed_token = (secrets / "revocation-feed-token").read_text()
    assert len(feed_token) == 64 and all(ch in "0123456789abcdef" for ch in feed_token)
    before = {f.name: f.read_text() for f in secrets.iterdir()}
    assert gen(tree).returncode == 0
    assert before == {f.name: f.read_text() for f in secrets.iterdir()}, "a second run must change nothing"


def test_rotation_helpers(tree):
    assert gen(tree).returncode == 0
    assert gen(tree, "--add-key", "key-2").returncode == 0
    assert list(keys(tree)) == ["key-1", "key-2"] and keys(tree)["key-1"] != keys(tree)["key-2"]
    assert gen(tree, "--add-key", "key-2").returncode != 0, "duplicate kid"
    assert gen(tree, "--add-key", "../evil").returncode != 0, "kid must be a safe file name"
    assert gen(tree, "--remove-key", "key-1").returncode == 0
    assert list(keys(tree)) == ["key-2"]
    assert gen(tree, "--remove-key", "key-2").returncode != 0, "the last key stays"


def test_production_needs_a_database_url(tree):
    assert gen(tree, "production", env={"DATABASE_URL": ""}).returncode == 64
    url = "mysql://auth_user:pw@db.internal:3306/auth"
    assert gen(tree, "production", env={"DATABASE_URL": url}).returncode == 0
    assert (tree / "overlays" / "production" / "secrets" / "database-url").read_text() == url
    assert not (tree / "overlays" / "production" / "secrets" / "mysql-password").exists()
    token = (tree / "overlays" / "production" / "secrets" / "revocation-feed-token").read_text()
    assert len(token) == 64, "production gets its own feed token"
    minikube = tree / "overlays" / "minikube" / "secrets" / "revocation-feed-token"
    assert gen(tree).returncode == 0 and minikube.read_text() != token


def test_eddsa_key_pair_private_for_login_public_for_the_gateway(tree):
    assert gen(tree, "--eddsa", "ed-1").returncode == 0
    secrets = tree / "overlays" / "minikube" / "secrets"
    private = secrets / "jwt-signing-key" / "ed-1.pem"
    public = secrets / "jwt-public-keys" / "ed-1.pub.pem"
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # The gateway's directory holds public keys only: no private key, no HMAC secret.
    assert [f.name for f in public.parent.iterdir()] == ["ed-1.pub.pem"]
    for f in (private, public):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    derived = subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout"], capture_output=True, text=True)
    assert derived.stdout == public.read_text()
    before = private.read_text()
    assert gen(tree, "--eddsa", "ed-1").returncode == 0
    assert private.read_text() == before, "a second run keeps the key"
    assert gen(tree, "--eddsa", "../evil").returncode != 0, "kid must be a safe file name"


def test_an_eddsa_overlay_gets_an_ed25519_pair_and_no_hmac_key(tree):
    """An overlay using components/eddsa (minikube-eddsa): the pair of its initial kid ed-1 (the
    kid its kustomization names), the minikube secrets, and no jwt-keys.env at all."""
    assert gen(tree, "minikube-eddsa").returncode == 0
    secrets = tree / "overlays" / "minikube-eddsa" / "secrets"
    assert not (secrets / "jwt-keys.env").exists(), "an HMAC key in the EdDSA mode"
    private = secrets / "jwt-signing-key" / "ed-1.pem"
    public = secrets / "jwt-public-keys" / "ed-1.pub.pem"
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    kustomization = (tree / "overlays" / "minikube-eddsa" / "kustomization.yaml").read_text()
    assert "secrets/jwt-signing-key/ed-1.pem" in kustomization
    assert "secrets/jwt-public-keys/ed-1.pub.pem" in kustomization
    for name in ("database-url", "revocation-feed-token", "mysql-password", "tls.crt"):
        assert (secrets / name).is_file(), name
    before = private.read_text()
    assert gen(tree, "minikube-eddsa").returncode == 0
    assert private.read_text() == before, "a second run keeps the key"


def test_explicit_database_url_replaces_only_the_url(tree):
    """Issue #18 item 4: `DATABASE_URL=... gen-secrets.sh production` on an existing overlay used
    to keep the old URL silently, and --force, the only way out, also replaced the JWT keys and
    the feed token (every token invalid, every replica re-keyed). An explicit DATABASE_URL now
    replaces exactly the URL and says so, without printing it (it holds a password)."""
    secrets = tree / "overlays" / "production" / "secrets"
    first = "mysql://auth_user:first-pw@db.internal:3306/auth"
    assert gen(tree, "production", env={"DATABASE_URL": first}).returncode == 0
    before = {f.name: f.read_text() for f in secrets.iterdir()}
    second = "mysql://auth_user:second-pw@db2.internal:3306/auth?ssl_mode=VERIFY_IDENTITY"
    proc = gen(tree, "production", env={"DATABASE_URL": second})
    assert proc.returncode == 0, proc.stderr
    after = {f.name: f.read_text() for f in secrets.iterdir()}
    assert after["database-url"] == second
    assert {k: v for k, v in after.items() if k != "database-url"} == \
        {k: v for k, v in before.items() if k != "database-url"}, "only the URL may change"
    assert stat.S_IMODE((secrets / "database-url").stat().st_mode) == 0o600
    assert "replaced production/secrets/database-url" in proc.stderr
    assert "second-pw" not in proc.stderr + proc.stdout and "first-pw" not in proc.stderr + proc.stdout
    # Without DATABASE_URL the file is kept, and the script says how to change it.
    proc = gen(tree, "production", env={"DATABASE_URL": ""})
    assert proc.returncode == 0, proc.stderr
    assert (secrets / "database-url").read_text() == second
    assert "keeping production/secrets/database-url" in proc.stderr and "DATABASE_URL=" in proc.stderr
    # The same URL again: nothing to replace, nothing rewritten.
    proc = gen(tree, "production", env={"DATABASE_URL": second})
    assert "keeping production/secrets/database-url" in proc.stderr


@pytest.mark.parametrize("bad", ["sqlite:///tmp/x.sqlite", "mysql://u:p@h:3306/auth\n", "mysql://u:p w@h/auth", " mysql://u@h/auth"])
def test_production_refuses_a_database_url_it_cannot_use(tree, bad):
    """A managed MySQL URL, one line, no whitespace: a pasted trailing newline would otherwise
    end up in the Secret. Refused with exit 64, the value never echoed, the old file kept."""
    secrets = tree / "overlays" / "production" / "secrets"
    good = "mysql://auth_user:pw@db.internal:3306/auth"
    assert gen(tree, "production", env={"DATABASE_URL": good}).returncode == 0
    proc = gen(tree, "production", env={"DATABASE_URL": bad})
    assert proc.returncode == 64, proc.stderr
    assert bad.strip() not in proc.stderr + proc.stdout
    assert (secrets / "database-url").read_text() == good


def test_minikube_ignores_database_url_and_says_so(tree):
    """The minikube overlay's URL points at its in-cluster MariaDB with the generated password;
    a DATABASE_URL in the environment (check-k8s.sh sets one for every overlay) must not replace
    it, and the script says it did not use it."""
    proc = gen(tree, env={"DATABASE_URL": "mysql://someone:else@elsewhere:3306/auth"})
    assert proc.returncode == 0, proc.stderr
    url = (tree / "overlays" / "minikube" / "secrets" / "database-url").read_text()
    assert url.startswith("mysql://auth_user:") and "@mysql.edge-auth.svc.cluster.local:3306/auth" in url
    assert "DATABASE_URL from the environment is not used for minikube" in proc.stderr
