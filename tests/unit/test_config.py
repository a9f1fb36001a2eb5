"""davserver.config: defaults, file + environment layering, every error path, secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from davserver import config
from davserver.config import Config, Secret, load
from davserver.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

S3_OK = """\
storage:
  backend: s3
  s3:
    endpoint: minio.internal:9000
    bucket: vault
    access_key: AKIDEXAMPLE
    secret_key: "wJalrXUtnFEMI/K7MDENG"
"""


def write(tmp_path: Path, text: str, name: str = "davserver.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load(write(tmp_path, text), env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    assert cfg.data_dir == tmp_path
    s = cfg.server
    assert (s.host, s.port, s.threads, s.timeout) == ("127.0.0.1", 8080, 32, 300)
    assert (s.tls_cert, s.tls_key, s.block_size, s.max_body_bytes) == (None, None, 1 << 20, 0)
    assert (s.access_log, s.log_level, s.realm) == (True, "info", "davserver")
    assert s.trusted_proxies == ()
    assert cfg.storage.backend == "local"
    assert cfg.storage.local.path == str(tmp_path / "blobs")
    s3 = cfg.storage.s3
    assert (s3.endpoint, s3.bucket, s3.access_key, s3.secret_key) == ("", "", "", Secret(""))
    assert (s3.secure, s3.region, s3.prefix, s3.create_bucket) == (True, None, "", False)
    assert s3.part_size == 8 * 1024 * 1024
    assert cfg.index.url == f"sqlite:///{tmp_path}/index.db"
    sec = cfg.security
    assert sec.pepper_file == str(tmp_path / "pepper")
    assert (sec.argon2_opslimit, sec.argon2_memlimit, sec.argon2_concurrency) == (3, 64 << 20, 0)
    assert (sec.login_cache_ttl, sec.login_cache_size) == (600, 1024)
    assert (sec.login_fail_limit, sec.login_fail_window) == (10, 300)
    assert cfg.quota.default_bytes == 0
    assert (cfg.gc.upload_expiry, cfg.gc.interval) == (86400, 300)


def test_comment_only_file_and_empty_sections_are_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "# nothing\nserver:\nstorage:\n  s3:\n")
    assert cfg == config.default_config(tmp_path)


def test_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load(None, {"DAVSERVER_SERVER_PORT": "9"})
    assert cfg.data_dir == tmp_path
    assert cfg.server.port == 9


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = config.default_config(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


def test_paths_resolve_against_data_dir(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    text = """\
data_dir: ../var
server: {tls_cert: certs/c.pem, tls_key: /abs/k.pem}
storage: {local: {path: store}}
security: {pepper_file: secret/pepper}
index: {url: "sqlite:///db/index.sqlite?timeout=5"}
"""
    cfg = load(write(tmp_path / "etc", text), {})
    var = tmp_path / "var"
    assert cfg.data_dir == var
    assert cfg.server.tls_cert == str(var / "certs/c.pem")
    assert cfg.server.tls_key == "/abs/k.pem"
    assert cfg.storage.local.path == str(var / "store")
    assert cfg.security.pepper_file == str(var / "secret/pepper")
    assert cfg.index.url == f"sqlite:///{var}/db/index.sqlite?timeout=5"
    assert cfg.resolve_path("x/y") == var / "x/y"
    assert cfg.resolve_path("/etc/z") == Path("/etc/z")


@pytest.mark.parametrize("url", ["sqlite:////srv/i.db", "sqlite:///:memory:"])
def test_absolute_and_memory_sqlite_urls_unchanged(tmp_path: Path, url: str) -> None:
    assert load_text(tmp_path, f'index: {{url: "{url}"}}').index.url == url


# -- file + environment layering --------------------------------------------------------------


def test_file_values(tmp_path: Path) -> None:
    text = """\
server:
  host: 0.0.0.0
  port: 8443
  access_log: no
  log_level: DEBUG
  trusted_proxies: [10.0.0.1, "::1"]
quota: {default_bytes: 1000}
"""
    cfg = load_text(tmp_path, text)
    assert (cfg.server.host, cfg.server.port, cfg.server.access_log) == ("0.0.0.0", 8443, False)
    assert cfg.server.log_level == "debug"
    assert cfg.server.trusted_proxies == ("10.0.0.1", "::1")
    assert cfg.quota.default_bytes == 1000
    assert cfg.server.threads == 32  # untouched options keep their defaults


def test_environment_beats_file(tmp_path: Path) -> None:
    env = {
        "DAVSERVER_SERVER_PORT": "9000",
        "DAVSERVER_SERVER_ACCESS_LOG": "0",
        "DAVSERVER_SERVER_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
        "DAVSERVER_SERVER_TLS_CERT": "",  # empty = null
        "DAVSERVER_STORAGE_S3_ACCESS_KEY": "AKIDENV",
        "DAVSERVER_STORAGE_S3_SECRET_KEY": "from-env",
        "DAVSERVER_INDEX_URL": "postgresql://dav:pw@db:5432/dav",
        "DAVSERVER_GC_INTERVAL": "60",
    }
    cfg = load_text(tmp_path, S3_OK + "server: {port: 8081, access_log: true}\n", env)
    assert cfg.server.port == 9000
    assert cfg.server.access_log is False
    assert cfg.server.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert cfg.server.tls_cert is None
    assert cfg.storage.s3.bucket == "vault"  # from the file
    assert cfg.storage.s3.access_key == "AKIDENV"
    assert cfg.storage.s3.secret_key.get() == "from-env"
    assert cfg.index.url == "postgresql://dav:pw@db:5432/dav"
    assert cfg.gc.interval == 60


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)],
)
def test_environment_booleans(tmp_path: Path, word: str, value: bool) -> None:
    cfg = load_text(tmp_path, "", {"DAVSERVER_STORAGE_S3_CREATE_BUCKET": word})
    assert cfg.storage.s3.create_bucket is value


def test_data_dir_from_environment(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "data_dir: elsewhere\n", {"DAVSERVER_DATA_DIR": str(tmp_path / "d")})
    assert cfg.data_dir == tmp_path / "d"
    assert cfg.storage.local.path == str(tmp_path / "d" / "blobs")


def test_environment_can_complete_s3(tmp_path: Path) -> None:
    env = {
        "DAVSERVER_STORAGE_BACKEND": "s3",
        "DAVSERVER_STORAGE_S3_ENDPOINT": "s3.example.com",
        "DAVSERVER_STORAGE_S3_BUCKET": "b",
        "DAVSERVER_STORAGE_S3_ACCESS_KEY": "a",
        "DAVSERVER_STORAGE_S3_SECRET_KEY": "s",
    }
    assert load_text(tmp_path, "", env).storage.backend == "s3"


def test_unrelated_and_reserved_variables_are_ignored(tmp_path: Path) -> None:
    env = {
        "DAVSERVER_TEST_POSTGRES_URL": "postgresql://x",
        "DAVSERVER_TEST_SERVER_PROT": "1",
        "DAVSERVER_CACHE_DIR": "/tmp/cache",
        "DAVSERVER_CONFIG": "/etc/davserver.yaml",
        "DAVSERVERX": "1",
        "HOME": "/root",
    }
    assert load_text(tmp_path, "", env) == config.default_config(tmp_path)


def test_every_option_has_an_environment_variable(tmp_path: Path) -> None:
    names = [env for _, env, _ in config.iter_options()]
    assert len(names) == len(set(names))
    assert {"DAVSERVER_DATA_DIR", "DAVSERVER_SERVER_PORT", "DAVSERVER_INDEX_URL"} <= set(names)
    assert "DAVSERVER_STORAGE_S3_ACCESS_KEY" in names
    assert "DAVSERVER_STORAGE_LOCAL_PATH" in names


# -- errors: each names the file (or variable), the section and the option -------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server:\n  port: abc\n",
            "server.port: expected an integer between 0 and 65535, got 'abc'",
        ),
        ("server:\n  port: 70000\n", "server.port: expected an integer between 0 and 65535"),
        ("server:\n  port: true\n", "server.port: expected an integer"),
        ("server:\n  threads: 0\n", "server.threads: expected an integer between 1 and 4096"),
        ("server:\n  access_log: maybe\n", "server.access_log: expected a boolean"),
        ("server:\n  log_level: loud\n", "server.log_level: expected one of debug, info"),
        ("server:\n  host: 8080\n", "server.host: expected a non-empty string, got 8080"),
        ("server:\n  realm: 'a\"b'\n", "server.realm: expected"),
        ("server:\n  trusted_proxies: [nope]\n", "server.trusted_proxies: expected a list of IP"),
        ("storage:\n  backend: ftp\n", "storage.backend: expected one of local, s3, got 'ftp'"),
        ("storage:\n  local:\n    path: ''\n", "storage.local.path: expected a non-empty string"),
        ("storage:\n  s3:\n    part_size: 1024\n", "storage.s3.part_size: expected an integer"),
        ("storage:\n  s3:\n    endpoint: 'https://x'\n", "storage.s3.endpoint: expected host"),
        ("index:\n  url: mysql://x/y\n", "index.url: expected a sqlite:///path or postgresql://"),
        ("security:\n  argon2_opslimit: 0\n", "security.argon2_opslimit: expected an integer >= 1"),
        ("quota:\n  default_bytes: -1\n", "quota.default_bytes: expected an integer >= 0"),
        ("gc:\n  interval: 1.5\n", "gc.interval: expected an integer >= 1, got 1.5"),
        ("data_dir: ''\n", "data_dir: expected a non-empty string"),
        ("server: 5\n", "server: expected a mapping of options"),
        ("storage:\n  s3: [1]\n", "storage.s3: expected a mapping of options"),
    ],
)
def test_bad_values_name_file_section_and_option(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'davserver.yaml'}: ")
    assert expected in message


def test_example_message_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "server:\n  port: abc\n")
    with pytest.raises(ConfigError) as info:
        load("davserver.yaml", {})
    assert str(info.value) == (
        "davserver.yaml: server.port: expected an integer between 0 and 65535, got 'abc'"
    )


def test_unknown_option(tmp_path: Path) -> None:
    message = error(tmp_path, "server:\n  prot: 8080\n")
    assert message.startswith(f"{tmp_path / 'davserver.yaml'}: unknown option 'server.prot'")
    assert "did you mean 'server.port'" in message


def test_unknown_nested_option(tmp_path: Path) -> None:
    assert "unknown option 'storage.s3.bukket'" in error(tmp_path, "storage:\n  s3: {bukket: b}\n")


def test_unknown_section(tmp_path: Path) -> None:
    message = error(tmp_path, "sever:\n  port: 1\n")
    assert f"{tmp_path / 'davserver.yaml'}: unknown section 'sever'" in message


def test_unknown_top_level_option(tmp_path: Path) -> None:
    assert "unknown option 'datadir'" in error(tmp_path, "datadir: x\n")


@pytest.mark.parametrize(
    ("text", "line"),
    [("server:\n  port: [1\n", None), ("server:\n\tport: 1\n", 2), ("a: b: c\n", 1)],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int | None) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'davserver.yaml'}:")
    assert "invalid YAML" in message
    if line is not None:
        assert message.startswith(f"{tmp_path / 'davserver.yaml'}:{line}:")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, "server:\n  port: 1\n  port: 2\n")
    assert message.startswith(f"{tmp_path / 'davserver.yaml'}:3:")
    assert "duplicate key 'port'" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of sections" in error(tmp_path, "- a\n- b\n")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.yaml", {})
    (tmp_path / "bin.yaml").write_bytes(b"server:\n  host: \xff\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml: not valid UTF-8"):
        load(tmp_path / "bin.yaml", {})


@pytest.mark.parametrize("missing", ["endpoint", "bucket", "access_key", "secret_key"])
def test_s3_requires_connection_settings(tmp_path: Path, missing: str) -> None:
    text = "\n".join(line for line in S3_OK.splitlines() if not line.strip().startswith(missing))
    message = error(tmp_path, text)
    assert message == (
        f"{tmp_path / 'davserver.yaml'}: storage.s3.{missing}: "
        "required when storage.backend is 's3'"
    )


def test_s3_complete(tmp_path: Path) -> None:
    s3 = load_text(tmp_path, S3_OK).storage.s3
    assert (s3.endpoint, s3.bucket) == ("minio.internal:9000", "vault")
    assert s3.access_key == "AKIDEXAMPLE"
    assert s3.secret_key.get() == "wJalrXUtnFEMI/K7MDENG"


@pytest.mark.parametrize(("given", "missing"), [("tls_cert", "tls_key"), ("tls_key", "tls_cert")])
def test_tls_needs_both_files(tmp_path: Path, given: str, missing: str) -> None:
    message = error(tmp_path, f"server:\n  {given}: x.pem\n")
    assert f"server.{missing}: required when server.{given} is set" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"DAVSERVER_SERVER_PORT": "http"},
            "environment variable DAVSERVER_SERVER_PORT (server.port): expected an integer",
        ),
        (
            {"DAVSERVER_SERVER_ACCESS_LOG": "maybe"},
            "DAVSERVER_SERVER_ACCESS_LOG (server.access_log): expected a boolean",
        ),
        (
            {"DAVSERVER_STORAGE_S3_PART_SIZE": "1"},
            "DAVSERVER_STORAGE_S3_PART_SIZE (storage.s3.part_size): expected an integer",
        ),
        (
            {"DAVSERVER_SERVER_TRUSTED_PROXIES": "10.0.0.1,bad"},
            "DAVSERVER_SERVER_TRUSTED_PROXIES (server.trusted_proxies): expected a list",
        ),
    ],
)
def test_environment_errors_name_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    assert expected in error(tmp_path, "", env)


@pytest.mark.parametrize(
    "var", ["DAVSERVER_SERVER_PROT", "DAVSERVER_STORAGE_S3_BUKKET", "DAVSERVER_INDEX_URI"]
)
def test_environment_typos_are_errors(tmp_path: Path, var: str) -> None:
    message = error(tmp_path, "", {var: "1"})
    assert message.startswith(f"environment variable {var}: unknown option")


def test_environment_typo_suggests(tmp_path: Path) -> None:
    assert "DAVSERVER_SERVER_PORT" in error(tmp_path, "", {"DAVSERVER_SERVER_PROT": "1"})


# -- secrets ---------------------------------------------------------------------------------


def test_secret_type() -> None:
    s = Secret("hunter2")
    assert s.get() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in f"{s}"
    assert s == Secret("hunter2") and s != Secret("other") and bool(s)
    assert not Secret("") and repr(Secret("")) == "Secret('')"


def test_secrets_masked_in_repr(tmp_path: Path) -> None:
    env = {"DAVSERVER_INDEX_URL": "postgresql://dav:pg-pass-123@db:5432/dav"}
    cfg = load_text(tmp_path, S3_OK, env)
    for text in (repr(cfg), str(cfg), repr(cfg.storage.s3), repr(cfg.index)):
        assert "wJalrXUtnFEMI" not in text
        assert "pg-pass-123" not in text
    assert "postgresql://dav:***@db:5432/dav" in repr(cfg.index)
    assert cfg.index.url == "postgresql://dav:pg-pass-123@db:5432/dav"


def test_secrets_masked_in_errors(tmp_path: Path) -> None:
    message = error(tmp_path, "index:\n  url: 'mysql://dav:pg-pass-123@db/dav'\n")
    assert "pg-pass-123" not in message and "mysql://dav:***@db/dav" in message
    message = error(tmp_path, "storage:\n  s3:\n    secret_key: 12345678\n")
    assert "storage.s3.secret_key: expected a string" in message and "12345678" not in message


def test_mask_url() -> None:
    assert config.mask_url("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert config.mask_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert config.mask_url("postgresql://h:5432/d") == "postgresql://h:5432/d"
    assert config.mask_url("sqlite:///x.db") == "sqlite:///x.db"


# -- the schema documents itself ---------------------------------------------------------------


def test_every_option_and_section_has_help() -> None:
    for dotted, _, option in config.iter_options():
        assert option.help.strip(), f"option {dotted} has no help text"
        assert option.help.rstrip().endswith("."), f"help of {dotted} is not a sentence"

    def sections(cls: object) -> list[type]:
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "option" not in f.metadata:
                out += [f.default_factory, *sections(f.default_factory)]
        return out

    for cls in sections(Config):
        doc = cls.__doc__ or ""
        # dataclass() invents "Name(field=...)" when a section class has no docstring.
        assert doc and not doc.startswith(cls.__name__ + "("), f"{cls.__name__} has no help"


def test_example_file_is_in_sync() -> None:
    example = REPO / "config" / "davserver.example.yaml"
    assert example.read_text(encoding="utf-8") == config.render_example(), (
        "config/davserver.example.yaml is stale; regenerate it with: python -c "
        "\"from davserver.config import render_example; print(render_example(), end='')\" "
        "> config/davserver.example.yaml"
    )


def test_example_mentions_every_option_with_its_help() -> None:
    text = config.render_example()
    for dotted, _, option in config.iter_options():
        name = dotted.rpartition(".")[2]
        assert f"{name}:" in text
        assert option.help.split()[0] in text


def test_example_loads_to_the_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, config.render_example()), {})
    assert cfg == config.default_config(tmp_path)


def test_render_for_init_round_trips(tmp_path: Path) -> None:
    text = config.render_for_init(tmp_path)
    assert "data_dir: .\n" in text
    assert str(tmp_path) not in text  # relative paths only: the directory can move
    cfg = load(write(tmp_path, text), {})
    assert cfg == config.default_config(tmp_path)
    assert cfg.storage.backend == "local"
    assert cfg.index.url == f"sqlite:///{tmp_path}/index.db"


def test_render_for_init_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    text = config.render_for_init(tmp_path / "data", config_dir=tmp_path / "etc")
    assert "data_dir: ../data\n" in text
    cfg = load(write(tmp_path / "etc", text), {})
    assert cfg.data_dir == tmp_path / "data"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sha1,md5", ("sha1", "md5")),
        ("md5, sha1", ("sha1", "md5")),
        ("SHA1", ("sha1",)),
        ("md5", ("md5",)),
        ("none", ()),
        ("", ()),
    ],
)
def test_storage_checksums_values(tmp_path: Path, value: str, expected: tuple[str, ...]) -> None:
    cfg = load_text(tmp_path, "", {"DAVSERVER_STORAGE_CHECKSUMS": value})
    assert cfg.storage.checksums == expected
    listed = load_text(tmp_path, "storage:\n  checksums: [md5]\n")
    assert listed.storage.checksums == ("md5",)


@pytest.mark.parametrize("value", ["crc32", "sha1,sha1", "sha1,none"])
def test_storage_checksums_bad_values(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="DAVSERVER_STORAGE_CHECKSUMS"):
        load_text(tmp_path, "", {"DAVSERVER_STORAGE_CHECKSUMS": value})
