"""Object-store errors are one line naming the path (and the config key) and the fix, not an
SDK traceback: a missing bucket, a missing key, refused credentials, credentials that may not
write, no credentials at all. Against moto's S3 server on 127.0.0.1 (no Ray)."""
from __future__ import annotations

import json
import urllib.request

import pyarrow.fs as pafs
import pytest

from segsynth import io


def test_a_missing_bucket_is_named_with_the_fix(s3_env):
    path = "s3://segsynth-no-such-bucket/run/cutouts"
    with pytest.raises(io.InputError, match=r"^out: s3://segsynth-no-such-bucket/run/cutouts: the bucket "
                                            r"segsynth-no-such-bucket does not exist at http://127\.0\.0\.1:\d+; create it"):
        io.require_output(path, "out")
    with pytest.raises(io.InputError, match="^data: s3://segsynth-no-such-bucket/run/cutouts/manifest.parquet: the bucket "
                                            "segsynth-no-such-bucket does not exist"):
        io.require_input(f"{path}/manifest.parquet", "data")
    with pytest.raises(io.InputError, match="^s3://segsynth-no-such-bucket/run/cutouts/summary.json: the bucket "
                                            "segsynth-no-such-bucket does not exist.*aws s3 mb"):
        io.write_bytes(f"{path}/summary.json", b"{}")


def test_a_missing_key_says_which_and_how_to_fix_it(s3_bucket):
    missing = f"{s3_bucket}/run/train/summary.json"
    with pytest.raises(io.InputError, match=f"^ckpt: {missing} does not exist; fix the path"):
        io.require_input(missing, "ckpt")
    with pytest.raises(io.MissingPathError, match=f"^{missing} does not exist; fix the path, or run the stage") as info:
        io.read_bytes(missing)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)  # callers' "none yet" still works
    assert not io.exists(missing)
    with pytest.raises(FileNotFoundError):
        io.list_files(f"{s3_bucket}/run/synth/shards", [".parquet"])


@pytest.fixture
def s3_auth(s3_env):
    """The local S3 checking signatures and IAM policies (moto's server API), for one test: yields
    ``(bucket, reader_credentials)``, a bucket with one object and a user who may only read it."""
    bucket = s3_env.make_bucket()
    io.write_bytes(f"{bucket}/a/x.txt", b"hi")
    iam = s3_env.client("iam")
    iam.create_user(UserName=bucket[5:])
    key = iam.create_access_key(UserName=bucket[5:])["AccessKey"]
    read_only = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                         "Resource": "*"}]}
    iam.put_user_policy(UserName=bucket[5:], PolicyName="read-only", PolicyDocument=json.dumps(read_only))

    def enforce(count: str) -> None:  # requests allowed unauthenticated from now on: 0, or inf (moto's default)
        urllib.request.urlopen(urllib.request.Request(f"{s3_env.endpoint}/moto-api/reset-auth", data=count.encode(),
                                                      method="POST", headers={"Content-Type": "text/plain"})).read()

    enforce("0")
    try:
        yield bucket, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        enforce("inf")


def test_refused_credentials_are_one_line(s3_auth, monkeypatch):
    bucket, _ = s3_auth
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(io.InputError, match=rf"^data: {bucket}/a/x.txt: access denied \(\w+\) to read it; check "
                                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        io.require_input(f"{bucket}/a/x.txt", "data")
    with pytest.raises(io.InputError, match=rf"^{bucket}/b/y.txt: access denied \(\w+\) to write it"):
        io.write_bytes(f"{bucket}/b/y.txt", b"x")
    with pytest.raises(io.InputError, match=rf"^{bucket}/a: access denied .* to list it"):
        io.list_files(f"{bucket}/a")


def test_credentials_that_may_only_read_are_denied_writing(s3_auth, monkeypatch):
    bucket, reader = s3_auth
    for key, value in reader.items():
        monkeypatch.setenv(key, value)
    assert io.read_bytes(f"{bucket}/a/x.txt") == b"hi"
    with pytest.raises(io.InputError, match=rf"^out: {bucket}/run: access denied \(\w+\) to write it; check "
                                            rf"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that they may write {bucket}$"):
        io.require_output(f"{bucket}/run", "out")
    with pytest.raises(io.InputError, match="access denied .* to write it"):
        io.write_bytes(f"{bucket}/run/summary.json", b"{}")


def test_no_credentials_at_all_says_which_variables_to_set(monkeypatch, tmp_path):
    # moto's server answers an unsigned request under IAM checks with an internal error (moto
    # 5.2.5), not S3's 403, so the S3 answer is made here: what pyarrow raises on a 403
    for key in io.AWS_CREDENTIAL_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    denied = OSError("When getting information for key 'a/x.txt' in bucket 'b': AWS Error ACCESS_DENIED during "
                     "HeadObject operation: No response body.")
    error = io.storage_error(denied, "s3://b/a/x.txt", "read", "data")
    assert str(error).startswith("data: s3://b/a/x.txt: access denied (ACCESS_DENIED) and no AWS credentials are set; "
                                 "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_an_unreachable_endpoint_names_the_variable(monkeypatch):
    refused = OSError("When reading information for key 'x' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                      "HeadObject operation: curlCode: 7, Couldn't connect to server")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    error = io.storage_error(refused, "s3://b/x", "read")
    assert str(error).startswith("s3://b/x: cannot reach the object store at http://127.0.0.1:9 (")
    assert "check AWS_ENDPOINT_URL" in str(error)


def test_local_paths_keep_their_own_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        io.read_bytes(tmp_path / "missing.txt")
    assert not isinstance(info.value, io.InputError)
    assert isinstance(io.resolve(tmp_path)[0], pafs.LocalFileSystem)


def test_the_cli_says_it_in_one_line_and_exits_2(s3_bucket, capsys):
    from segsynth.cli import main

    missing = f"{s3_bucket}/run/train/best"
    assert main(["export", missing, "--out", f"{s3_bucket}/run/model.onnx"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"segsynth export: error: ckpt: {missing} does not exist; fix the path (run the stage that writes it first)"]


def test_storage_errors_are_input_errors_and_os_errors(s3_env):
    # the CLI's one line (InputError), and code that tolerates an unwritable file still does (OSError)
    with pytest.raises(io.StorageError) as info:
        io.write_bytes("s3://segsynth-no-such-bucket/x.json", b"{}")
    assert isinstance(info.value, io.InputError) and isinstance(info.value, OSError)


def test_endpoint_and_credentials_from_the_config(s3_server, tmp_path):
    """A stage config's `storage:` section: the endpoint, region and a credentials file (keys
    never in the YAML), applied by the entry point (apply_storage) before anything touches s3://;
    not written beside outputs. In a fresh process with none of the AWS variables set, as on a
    machine configured by file only."""
    import os
    import subprocess
    import sys
    import textwrap

    bucket = s3_server.make_bucket()
    creds = tmp_path / "credentials"
    creds.write_text("[segsynth]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    config = tmp_path / "synth.yaml"
    config.write_text(textwrap.dedent(f"""\
        out: {bucket}/synth
        storage:
          endpoint_url: {s3_server.endpoint}
          region: us-east-1
          profile: segsynth
          credentials_file: {creds}
        """))
    code = textwrap.dedent("""\
        import sys
        from segsynth import io
        from segsynth.config import apply_storage, dump_config, load_config
        from segsynth.synth.config import SynthConfig
        apply_storage(sys.argv[1])
        cfg = load_config(SynthConfig, sys.argv[1])
        io.write_bytes(io.join(cfg.out, "hello.txt"), b"hi")
        assert io.read_bytes(io.join(cfg.out, "hello.txt")) == b"hi"
        assert "storage" not in dump_config(cfg) and "testing" not in dump_config(cfg)
        print("OK")
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-config")})
    proc = subprocess.run([sys.executable, "-c", code, str(config)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "OK", proc.stderr[-3000:]


def test_keys_in_a_config_are_refused_with_the_fix(tmp_path):
    from segsynth.config import ConfigError, load_config
    from segsynth.synth.config import SynthConfig

    with pytest.raises(ConfigError, match="unknown config key storage.secret_access_key;.*storage.credentials_file"):
        load_config(SynthConfig, None, ["storage.secret_access_key=abc"])
    with pytest.raises(ConfigError, match="storage.credentials_file: .* does not exist"):
        load_config(SynthConfig, None, [f"storage.credentials_file={tmp_path / 'nope'}"])
