"""Unit tests for `imgproxy.config.load_config`: TOML file, environment overrides, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devtools.azurite import ROOT
from imgproxy.config import (
    CONNECTION_STRING_ENV,
    Config,
    ConfigError,
    TransformConfig,
    load_config,
    load_transform_config,
    upstream_address,
)
from imgproxy.transform.params import check_presets

REPO_CONFIG = ROOT / "config.toml"
CONN = {CONNECTION_STRING_ENV: "x"}


def write_config(tmp_path: Path, text: str) -> Path:
    """Write `text` to a TOML file under `tmp_path` and return its path."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def expect_error(path: Path | None, environ: dict[str, str], *fragments: str) -> str:
    """Assert that loading as `python -m imgproxy` does (`load_config`, then the presets'
    queries by the transform package) raises ConfigError whose message contains every fragment."""
    with pytest.raises(ConfigError) as excinfo:
        check_presets(load_config(path, environ).transform)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_repository_config_file_equals_dataclass_defaults() -> None:
    """The shipped config.toml loads and matches the `Config()` defaults (bar the connection string)."""
    config = load_config(REPO_CONFIG, {CONNECTION_STRING_ENV: "x"})
    defaults = Config()
    assert config.origin.connection_string == "x"
    assert dataclasses.replace(config.origin, connection_string="") == defaults.origin
    for section in ("server", "cache", "http", "admin", "upstream", "transform", "redis"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config == dataclasses.replace(
        defaults, origin=dataclasses.replace(defaults.origin, connection_string="x")
    )


def test_no_file_gives_defaults() -> None:
    """`path=None` yields the defaults, with the connection string taken from the environment."""
    config = load_config(None, {CONNECTION_STRING_ENV: "conn"})
    defaults = Config()
    assert config == dataclasses.replace(
        defaults, origin=dataclasses.replace(defaults.origin, connection_string="conn")
    )


def test_env_override_wins_over_file() -> None:
    """IMGPROXY_SERVER_PORT overrides the port set in the file."""
    config = load_config(REPO_CONFIG, {**CONN, "IMGPROXY_SERVER_PORT": "9000"})
    assert config.server.port == 9000
    assert isinstance(config.server.port, int)


def test_env_override_wins_over_explicit_file_value(tmp_path: Path) -> None:
    """The environment beats a non-default value written in the file."""
    path = write_config(tmp_path, "[server]\nport = 7000\n")
    assert load_config(path, CONN).server.port == 7000
    assert load_config(path, {**CONN, "IMGPROXY_SERVER_PORT": " 9000 "}).server.port == 9000


def test_env_override_of_float_and_str() -> None:
    """Float and string settings are read from the environment with the right type."""
    config = load_config(
        None,
        {
            **CONN,
            "IMGPROXY_CACHE_TTL_S": "12.5",
            "IMGPROXY_HTTP_CACHE_CONTROL": "no-store",
            "IMGPROXY_ORIGIN_CONTAINER": "pictures",
        },
    )
    assert config.cache.ttl_s == 12.5
    assert isinstance(config.cache.ttl_s, float)
    assert config.http.cache_control == "no-store"
    assert config.origin.container == "pictures"


def test_env_integer_for_float_setting_becomes_float() -> None:
    """An integer written for a float setting (env or file) is stored as a float."""
    assert load_config(None, {**CONN, "IMGPROXY_CACHE_TTL_S": "7"}).cache.ttl_s == 7.0


def test_file_integer_for_float_setting_becomes_float(tmp_path: Path) -> None:
    """A TOML integer for a float setting is accepted and converted."""
    config = load_config(write_config(tmp_path, "[cache]\nttl_s = 7\n"), CONN)
    assert config.cache.ttl_s == 7.0
    assert isinstance(config.cache.ttl_s, float)


def test_bad_env_value_names_the_key() -> None:
    """A non-integer IMGPROXY_CACHE_MAX_ITEMS raises ConfigError naming cache.max_items."""
    expect_error(None, {**CONN, "IMGPROXY_CACHE_MAX_ITEMS": "abc"}, "cache.max_items", "'abc'")


def test_bad_env_float_names_the_key() -> None:
    """A non-numeric float override raises ConfigError naming its key."""
    expect_error(None, {**CONN, "IMGPROXY_ORIGIN_TIMEOUT_S": "soon"}, "origin.timeout_s")


def test_empty_env_value_for_integer_is_refused() -> None:
    """An empty override for an integer setting is an error, not a silent default."""
    expect_error(None, {**CONN, "IMGPROXY_SERVER_PORT": ""}, "server.port")


def test_bad_toml_type_names_the_key(tmp_path: Path) -> None:
    """A string where the port integer belongs raises ConfigError naming server.port."""
    expect_error(write_config(tmp_path, '[server]\nport = "x"\n'), CONN, "server.port")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        pytest.param("[server]\nport = true\n", "server.port", id="bool-for-int"),
        pytest.param("[server]\nport = 80.5\n", "server.port", id="float-for-int"),
        pytest.param("[cache]\nttl_s = true\n", "cache.ttl_s", id="bool-for-float"),
        pytest.param('[cache]\nttl_s = "5"\n', "cache.ttl_s", id="str-for-float"),
        pytest.param("[server]\nhost = 1\n", "server.host", id="int-for-str"),
    ],
)
def test_wrong_toml_types_are_refused(tmp_path: Path, toml: str, key: str) -> None:
    """A TOML value of the wrong type raises ConfigError naming the key."""
    expect_error(write_config(tmp_path, toml), CONN, key)


def test_wrong_toml_type_is_refused_even_when_the_environment_overrides_it(tmp_path: Path) -> None:
    """A broken file is an error whatever the environment says (it would break once the variable goes)."""
    expect_error(
        write_config(tmp_path, '[server]\nport = "x"\n'),
        {**CONN, "IMGPROXY_SERVER_PORT": "9000"},
        "server.port",
    )


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    """A key a section does not define raises ConfigError naming it."""
    expect_error(write_config(tmp_path, "[server]\nprot = 1\n"), CONN, "server.prot")


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    """A section the configuration does not define raises ConfigError naming it."""
    expect_error(write_config(tmp_path, "[serverr]\nport = 1\n"), CONN, "serverr")


def test_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    """A top-level key where a section table belongs is refused naming the section."""
    expect_error(write_config(tmp_path, "server = 1\n"), CONN, "[server]")


@pytest.mark.parametrize(
    ("env_name", "value", "key"),
    [
        ("IMGPROXY_CACHE_MAX_ITEMS", "0", "cache.max_items"),
        ("IMGPROXY_CACHE_MAX_BYTES", "0", "cache.max_bytes"),
        ("IMGPROXY_CACHE_TTL_S", "-1", "cache.ttl_s"),
        ("IMGPROXY_ORIGIN_RETRIES", "-1", "origin.retries"),
        ("IMGPROXY_ORIGIN_TIMEOUT_S", "0", "origin.timeout_s"),
        ("IMGPROXY_ORIGIN_DOWNLOAD_CHUNK_BYTES", "1023", "origin.download_chunk_bytes"),
        ("IMGPROXY_HTTP_STREAM_CHUNK_BYTES", "1023", "http.stream_chunk_bytes"),
        ("IMGPROXY_SERVER_PORT", "-1", "server.port"),
        ("IMGPROXY_REDIS_TIMEOUT_S", "0", "redis.timeout_s"),
        ("IMGPROXY_REDIS_LOG_MAX_LEN", "0", "redis.log_max_len"),
        ("IMGPROXY_REDIS_BREAKER_FAILURES", "0", "redis.breaker_failures"),
    ],
)
def test_env_values_below_minimum_are_refused(env_name: str, value: str, key: str) -> None:
    """An override below a key's minimum raises ConfigError naming the key."""
    expect_error(None, {**CONN, env_name: value}, key, "at least")


def test_zero_max_items_in_file_is_refused(tmp_path: Path) -> None:
    """`cache.max_items = 0` in the file is below the minimum of 1."""
    expect_error(write_config(tmp_path, "[cache]\nmax_items = 0\n"), CONN, "cache.max_items", "at least 1")


def test_values_at_minimum_are_accepted(tmp_path: Path) -> None:
    """Values equal to their minimum are valid."""
    path = write_config(
        tmp_path,
        "[cache]\nmax_items = 1\nmax_bytes = 1\nmax_item_bytes = 0\nttl_s = 0\n"
        "[origin]\nretries = 0\ntimeout_s = 0.01\ndownload_chunk_bytes = 1024\n",
    )
    config = load_config(path, CONN)
    assert config.cache.max_items == 1
    assert config.cache.max_bytes == 1
    assert config.origin.timeout_s == 0.01


@pytest.mark.parametrize(("port", "accepted"), [(0, True), (65535, True), (65536, False), (70000, False)])
def test_port_range(tmp_path: Path, port: int, accepted: bool) -> None:
    """Ports 0..65535 are accepted; anything above is refused naming server.port."""
    path = write_config(tmp_path, f"[server]\nport = {port}\n")
    if accepted:
        assert load_config(path, CONN).server.port == port
    else:
        expect_error(path, CONN, "server.port", "65535")


def test_max_item_bytes_above_max_bytes_is_refused(tmp_path: Path) -> None:
    """A single item may not be allowed to exceed the whole cache's byte budget."""
    path = write_config(tmp_path, "[cache]\nmax_bytes = 1000\nmax_item_bytes = 1001\n")
    expect_error(path, CONN, "cache.max_item_bytes")


def test_max_item_bytes_equal_to_max_bytes_is_accepted(tmp_path: Path) -> None:
    """`max_item_bytes == max_bytes` is the largest consistent value."""
    path = write_config(tmp_path, "[cache]\nmax_bytes = 1000\nmax_item_bytes = 1000\n")
    assert load_config(path, CONN).cache.max_item_bytes == 1000


def test_neither_connection_string_nor_account_url_is_refused() -> None:
    """Without a connection string or an account URL the origin is unusable."""
    expect_error(None, {}, "origin.connection_string", "origin.account_url")


def test_empty_connection_string_env_counts_as_unset() -> None:
    """An empty AZURE_STORAGE_CONNECTION_STRING does not satisfy the origin requirement."""
    expect_error(None, {CONNECTION_STRING_ENV: ""}, "origin.connection_string")


def test_both_connection_string_and_account_url_are_refused(tmp_path: Path) -> None:
    """Setting both origin credentials is ambiguous and refused."""
    path = write_config(
        tmp_path,
        '[origin]\nconnection_string = "cs"\naccount_url = "https://acct.blob.core.windows.net"\n',
    )
    expect_error(path, {}, "origin.connection_string", "origin.account_url")


def test_account_url_alone_is_accepted(tmp_path: Path) -> None:
    """An account URL without a connection string is a valid origin."""
    path = write_config(tmp_path, '[origin]\naccount_url = "https://acct.blob.core.windows.net"\n')
    config = load_config(path, {})
    assert config.origin.account_url == "https://acct.blob.core.windows.net"
    assert config.origin.connection_string == ""


def test_connection_string_env_fills_empty_file_value() -> None:
    """AZURE_STORAGE_CONNECTION_STRING supplies the connection string the file leaves empty."""
    config = load_config(REPO_CONFIG, {CONNECTION_STRING_ENV: "UseDevelopmentStorage=true"})
    assert config.origin.connection_string == "UseDevelopmentStorage=true"


def test_connection_string_in_file_beats_azure_env(tmp_path: Path) -> None:
    """A connection string set in the file is not replaced by AZURE_STORAGE_CONNECTION_STRING."""
    path = write_config(tmp_path, '[origin]\nconnection_string = "from-file"\n')
    assert load_config(path, {CONNECTION_STRING_ENV: "from-env"}).origin.connection_string == "from-file"


def test_imgproxy_override_beats_azure_env() -> None:
    """IMGPROXY_ORIGIN_CONNECTION_STRING takes precedence over AZURE_STORAGE_CONNECTION_STRING."""
    config = load_config(
        None, {CONNECTION_STRING_ENV: "azure", "IMGPROXY_ORIGIN_CONNECTION_STRING": "imgproxy"}
    )
    assert config.origin.connection_string == "imgproxy"


def test_empty_container_is_refused() -> None:
    """An empty container name is refused naming origin.container."""
    expect_error(None, {**CONN, "IMGPROXY_ORIGIN_CONTAINER": ""}, "origin.container")


@pytest.mark.parametrize("value", [" public", "public ", "public,\nmax-age=1", "a\tb"])
def test_cache_control_must_be_a_single_header_value(value: str) -> None:
    """A Cache-Control value with surrounding space or control characters is refused."""
    expect_error(None, {**CONN, "IMGPROXY_HTTP_CACHE_CONTROL": value}, "http.cache_control")


def test_active_content_defaults_to_attachment() -> None:
    """Without a setting, http.active_content is "attachment"."""
    assert load_config(None, CONN).http.active_content == "attachment"


@pytest.mark.parametrize("mode", ["attachment", "sandbox", "refuse"])
def test_active_content_modes_are_accepted(tmp_path: Path, mode: str) -> None:
    """Each of the three modes loads, from the file and from the environment."""
    path = write_config(tmp_path, f'[http]\nactive_content = "{mode}"\n')
    assert load_config(path, CONN).http.active_content == mode
    assert load_config(None, {**CONN, "IMGPROXY_HTTP_ACTIVE_CONTENT": mode}).http.active_content == mode


@pytest.mark.parametrize("value", ["", "inline", "Attachment", "refuse ", "sandbox allow-scripts"])
def test_unknown_active_content_is_refused_naming_the_key(value: str) -> None:
    """Any other value (case and spaces count) is a ConfigError naming the key and the choices."""
    expect_error(
        None,
        {**CONN, "IMGPROXY_HTTP_ACTIVE_CONTENT": value},
        "http.active_content",
        "attachment, sandbox, refuse",
        repr(value),
    )


def test_active_content_of_another_type_is_refused(tmp_path: Path) -> None:
    """A TOML value that is not a string is refused naming the key."""
    expect_error(write_config(tmp_path, "[http]\nactive_content = true\n"), CONN, "http.active_content")


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist raises ConfigError naming the file."""
    missing = tmp_path / "nope.toml"
    expect_error(missing, CONN, "not found", str(missing))


def test_malformed_toml_is_refused(tmp_path: Path) -> None:
    """A file that is not valid TOML raises ConfigError naming the file."""
    path = write_config(tmp_path, "[server\nport = \n")
    expect_error(path, CONN, "cannot read config file", str(path))


def test_unreadable_path_is_refused(tmp_path: Path) -> None:
    """A directory given as the config path raises ConfigError rather than an OSError."""
    expect_error(tmp_path, CONN, "cannot read config file")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    """A config file that is not UTF-8 raises ConfigError, not UnicodeDecodeError."""
    path = tmp_path / "config.toml"
    path.write_bytes(b'[admin]\ntoken = "\xff"\n')
    expect_error(path, CONN, "cannot read config file")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    """An empty TOML file is valid and leaves every default in place."""
    config = load_config(write_config(tmp_path, ""), CONN)
    assert config.server == Config().server
    assert config.cache == Config().cache


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"IMGPROXY_ORIGIN_TIMEOUT_S": "nan"}, id="env"),
        pytest.param({"IMGPROXY_CACHE_TTL_S": "NaN"}, id="env-ttl"),
    ],
)
def test_nan_float_is_refused(environ: dict[str, str]) -> None:
    """NaN is not a usable timeout or duration and is refused like any out-of-range value."""
    expect_error(None, {**CONN, **environ})


def test_nan_float_in_file_is_refused(tmp_path: Path) -> None:
    """A TOML `nan` for a timeout is refused naming the key."""
    expect_error(write_config(tmp_path, "[origin]\ntimeout_s = nan\n"), CONN, "origin.timeout_s")


def test_account_url_in_file_wins_over_connection_string_env(tmp_path: Path) -> None:
    """A managed-identity config is not broken by a stray AZURE_STORAGE_CONNECTION_STRING."""
    path = write_config(tmp_path, '[origin]\naccount_url = "https://acct.blob.core.windows.net"\n')
    config = load_config(path, {"AZURE_STORAGE_CONNECTION_STRING": "x"})
    assert (config.origin.account_url, config.origin.connection_string) == (
        "https://acct.blob.core.windows.net",
        "",
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://app:8443",
        "http://app:8000/prefix",
        "http://app:8000?x=1",
        "http://user@app:8000",
        "http://:8000",
        "http://app:99999",
        "app:8000",
    ],
)
def test_upstream_url_must_be_plain_http_host_and_port(url: str) -> None:
    """upstream.url is http://host[:port]: no TLS, path, query or user (the message names the key)."""
    expect_error(None, {**CONN, "IMGPROXY_UPSTREAM_URL": url}, "upstream.url")


@pytest.mark.parametrize(
    ("url", "address"),
    [("http://127.0.0.1:8000", ("127.0.0.1", 8000)), ("http://app/", ("app", 80)), ("", None)],
)
def test_upstream_url_is_accepted(url: str, address: tuple[str, int] | None) -> None:
    """A plain http URL (port 80 by default) is accepted; empty leaves the pass-through off."""
    config = load_config(None, {**CONN, "IMGPROXY_UPSTREAM_URL": url})
    assert config.upstream.url == url
    if address is not None:
        assert upstream_address(url) == address


@pytest.mark.parametrize(
    ("env_name", "value"),
    [
        ("IMGPROXY_UPSTREAM_TIMEOUT_S", "0"),
        ("IMGPROXY_UPSTREAM_IDLE_TIMEOUT_S", "0"),
        ("IMGPROXY_UPSTREAM_CONNECT_TIMEOUT_S", "-1"),
        ("IMGPROXY_UPSTREAM_MAX_CONNECTIONS", "0"),
        ("IMGPROXY_UPSTREAM_MAX_BODY_BYTES", "-1"),
    ],
)
def test_upstream_bounds_are_enforced(env_name: str, value: str) -> None:
    """Timeouts must be positive, the pool at least one connection, the body limit not negative."""
    key = "upstream." + env_name.removeprefix("IMGPROXY_UPSTREAM_").lower()
    expect_error(None, {**CONN, env_name: value}, key, "at least")


@pytest.mark.parametrize("prefix", ["ops", "/ops/", "/a//b", "/ops?x", "/o ps", "/images", "/images/ops"])
def test_ops_prefix_must_be_a_plain_path(prefix: str) -> None:
    """server.ops_prefix is empty or /like/this (no trailing slash, query, space, or /images)."""
    expect_error(None, {**CONN, "IMGPROXY_SERVER_OPS_PREFIX": prefix}, "server.ops_prefix")


@pytest.mark.parametrize("prefix", ["", "/_imgproxy", "/ops/v1"])
def test_ops_prefix_is_accepted(prefix: str) -> None:
    """A plain path prefix (or none) is accepted."""
    assert load_config(None, {**CONN, "IMGPROXY_SERVER_OPS_PREFIX": prefix}).server.ops_prefix == prefix


# --- [transform] ---------------------------------------------------------------------------------


def test_transform_defaults() -> None:
    """Transforms are off, unsigned parameters refused, and every bound has its documented default."""
    transform = load_config(None, CONN).transform
    assert transform == TransformConfig()
    assert (transform.enabled, transform.allow_unsigned, transform.auto_format, transform.auto_avif) == (
        False,
        False,
        False,
        False,
    )
    assert (transform.max_width, transform.max_height) == (8192, 8192)
    assert (transform.max_src_pixels, transform.max_src_bytes) == (50_000_000, 64 * 1024 * 1024)
    assert (transform.max_concurrency, transform.max_queue, transform.timeout_s) == (0, 64, 10.0)
    assert dict(transform.presets) == {}


def test_presets_table_is_read_from_the_file(tmp_path: Path) -> None:
    """`[transform.presets]` is a table of name = "parameters"."""
    path = write_config(
        tmp_path,
        "[transform]\nenabled = true\n"
        '[transform.presets]\nthumb = "w=200&h=200&fit=cover"\nhero = "w=1600"\n',
    )
    transform = load_config(path, CONN).transform
    assert transform.enabled
    assert dict(transform.presets) == {"thumb": "w=200&h=200&fit=cover", "hero": "w=1600"}


def test_presets_are_read_only() -> None:
    """The loaded presets cannot be changed by the code that reads them."""
    presets = load_config(None, {**CONN, "IMGPROXY_TRANSFORM_PRESETS": '{"a": "w=1"}'}).transform.presets
    with pytest.raises(TypeError):
        presets["b"] = "w=2"  # type: ignore[index]


def test_presets_env_override_is_a_json_object(tmp_path: Path) -> None:
    """IMGPROXY_TRANSFORM_PRESETS replaces the file's presets with a JSON object of strings."""
    path = write_config(tmp_path, '[transform.presets]\nthumb = "w=200"\n')
    config = load_config(path, {**CONN, "IMGPROXY_TRANSFORM_PRESETS": '{"small": "w=64&fm=webp"}'})
    assert dict(config.transform.presets) == {"small": "w=64&fm=webp"}


@pytest.mark.parametrize("value", ['["w=1"]', '{"a": 1}', "thumb=w=200", '{"a": "w=1"', '"w=1"'], ids=str)
def test_presets_env_override_must_be_an_object_of_strings(value: str) -> None:
    """A presets variable that is not a JSON object of strings is refused naming the key."""
    expect_error(None, {**CONN, "IMGPROXY_TRANSFORM_PRESETS": value}, "transform.presets")


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        pytest.param('thumb = "w=0"', ("transform.presets.thumb", "w:"), id="bad-value"),
        pytest.param('thumb = "w=100&x=1"', ("transform.presets.thumb", "x"), id="unknown-parameter"),
        pytest.param('thumb = "preset=other"', ("transform.presets.thumb", "preset"), id="nested-preset"),
        pytest.param('thumb = ""', ("transform.presets.thumb", "no parameter"), id="empty"),
        pytest.param("thumb = 3", ("transform.presets.thumb", "str"), id="not-a-string"),
        pytest.param('"a b" = "w=1"', ("transform.presets.a b", "name"), id="bad-name"),
    ],
)
def test_a_bad_preset_is_refused_at_load_naming_it(
    tmp_path: Path, toml: str, fragments: tuple[str, ...]
) -> None:
    """Every preset is validated at load; the error names the preset and what is wrong."""
    path = write_config(tmp_path, f'[transform.presets]\nok = "w=10"\n{toml}\n')
    expect_error(path, CONN, *fragments)


def test_a_preset_beyond_the_configured_maximum_is_refused(tmp_path: Path) -> None:
    """Presets are checked against this configuration's max_width."""
    path = write_config(tmp_path, '[transform]\nmax_width = 100\n[transform.presets]\nbig = "w=200"\n')
    expect_error(path, CONN, "transform.presets.big", "max_width")


@pytest.mark.parametrize(
    ("env_name", "value", "key"),
    [
        ("IMGPROXY_TRANSFORM_MAX_WIDTH", "0", "transform.max_width"),
        ("IMGPROXY_TRANSFORM_MAX_SRC_PIXELS", "0", "transform.max_src_pixels"),
        ("IMGPROXY_TRANSFORM_MAX_FRAMES", "0", "transform.max_frames"),
        ("IMGPROXY_TRANSFORM_MAX_CONCURRENCY", "-1", "transform.max_concurrency"),
        ("IMGPROXY_TRANSFORM_MAX_QUEUE", "-1", "transform.max_queue"),
        ("IMGPROXY_TRANSFORM_TIMEOUT_S", "0", "transform.timeout_s"),
    ],
)
def test_transform_bounds_below_minimum_are_refused(env_name: str, value: str, key: str) -> None:
    """Each transform bound has a minimum, refused naming the key."""
    expect_error(None, {**CONN, env_name: value}, key, "at least")


def test_signing_key_stays_out_of_the_repr() -> None:
    """The signing key is a secret: it does not appear when the config is printed."""
    config = load_config(None, {**CONN, "IMGPROXY_TRANSFORM_SIGNING_KEY": "sekrit-value"})
    assert config.transform.signing_key == "sekrit-value"
    assert "sekrit-value" not in repr(config)


def test_load_transform_config_needs_no_origin(tmp_path: Path) -> None:
    """The [transform] section alone loads without any origin setting (for `imgproxy sign`)."""
    path = write_config(tmp_path, '[transform]\nsigning_key = "from-file"\n')
    assert load_transform_config(path, {}).signing_key == "from-file"
    assert load_transform_config(path, {"IMGPROXY_TRANSFORM_SIGNING_KEY": "env"}).signing_key == "env"
    with pytest.raises(ConfigError, match=r"transform\.presets\.x"):
        check_presets(load_transform_config(write_config(tmp_path, '[transform.presets]\nx = "w=0"\n'), {}))


def test_redis_is_off_by_default_with_the_documented_bounds() -> None:
    """No [redis] section: url empty (off), 0.1 s per call, 1 MiB items."""
    redis = load_config(None, CONN).redis
    assert (redis.url, redis.cluster, redis.prefix) == ("", False, "imgproxy:")
    assert (redis.timeout_s, redis.max_item_bytes) == (0.1, 1024 * 1024)
    assert redis.signing_key == ""  # nothing signed


def test_the_redis_signing_key_comes_from_the_environment_and_stays_out_of_the_repr() -> None:
    """IMGPROXY_REDIS_SIGNING_KEY sets it; printing the config does not show it."""
    config = load_config(None, {**CONN, "IMGPROXY_REDIS_SIGNING_KEY": "sixteen-or-more-chars"})
    assert config.redis.signing_key == "sixteen-or-more-chars"
    assert "sixteen-or-more-chars" not in repr(config)


def test_a_short_redis_signing_key_is_refused_without_echoing_it() -> None:
    """Under 16 characters is refused naming redis.signing_key, and the key is not repeated."""
    message = expect_error(None, {**CONN, "IMGPROXY_REDIS_SIGNING_KEY": "short-secret"}, "redis.signing_key")
    assert "short-secret" not in message


def test_redis_settings_come_from_the_environment() -> None:
    config = load_config(
        None, {**CONN, "IMGPROXY_REDIS_URL": "rediss://u:p@r:6380/0", "IMGPROXY_REDIS_CLUSTER": "true"}
    )
    assert config.redis.url == "rediss://u:p@r:6380/0" and config.redis.cluster


def test_a_redis_url_of_another_scheme_is_refused_without_echoing_it() -> None:
    """http://... is refused naming redis.url, and the message does not repeat a possible password."""
    message = expect_error(None, {**CONN, "IMGPROXY_REDIS_URL": "http://user:secret@r"}, "redis.url")
    assert "secret" not in message


def test_a_redis_cluster_over_a_unix_socket_is_refused() -> None:
    expect_error(
        None,
        {**CONN, "IMGPROXY_REDIS_URL": "unix:///tmp/r.sock", "IMGPROXY_REDIS_CLUSTER": "1"},
        "redis.cluster",
    )


@pytest.mark.parametrize("prefix", ["img{x}:", "a}b", "with space:", "tab\t"])
def test_a_redis_prefix_with_braces_or_blanks_is_refused(tmp_path: Path, prefix: str) -> None:
    """Braces would become the cluster hash tag; blanks break the notification messages."""
    expect_error(write_config(tmp_path, f'[redis]\nprefix = "{prefix}"\n'), CONN, "redis.prefix")
