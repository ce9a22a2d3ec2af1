"""Configuration: where values come from, in which order, and what a bad configuration looks like.

Precedence, highest first: overrides > -D arguments (argv, then system properties set by the CLI) >
environment variables > application.properties > application.yml > the default of get().
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit.config import (
    AppConfig,
    ConfigError,
    is_secret_key,
    masked,
    parse_define_arguments,
    set_system_properties,
    system_properties,
)


@pytest.fixture(autouse=True)
def no_system_properties() -> Iterator[None]:
    set_system_properties({})
    yield
    set_system_properties({})


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load(
    directory: Path | None = None,
    *,
    argv: list[str] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, str] | None = None,
) -> AppConfig:
    """AppConfig.load with nothing from the real process unless a test asks for it."""
    return AppConfig.load(
        search_paths=[directory] if directory else [],
        argv=argv or [],
        environ=environ or {},
        overrides=overrides,
    )


# --- precedence: each level overrides the next one -------------------------------------------------------


def test_a_properties_file_value_is_read(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "application.name=rest-example\nserver.port=8083\n")
    config = load(tmp_path)
    assert config.get("application.name") == "rest-example"
    assert config.get_int("server.port", 8080) == 8083


def test_the_default_is_used_only_when_no_source_has_the_key(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "cloud.connector=none\n")
    config = load(tmp_path)
    assert config.get("cloud.connector", "kafka") == "none"
    assert config.get("presence.url", "ws://127.0.0.1:8080") == "ws://127.0.0.1:8080"
    assert config.get("presence.url") is None
    assert config.source_of("presence.url") == "default"


def test_properties_win_over_yml_and_yml_only_keys_remain(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "server.port=8083\n")
    write(tmp_path, "application.yml", "server:\n  port: 9000\n  host: 0.0.0.0\n")
    config = load(tmp_path)
    assert config.get("server.port") == "8083"
    assert config.get("server.host") == "0.0.0.0"


def test_an_environment_variable_overrides_the_files(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "cloud.connector=none\n")
    config = load(tmp_path, environ={"CLOUD_CONNECTOR": "kafka"})
    assert config.get("cloud.connector") == "kafka"
    assert config.source_of("cloud.connector") == "environment CLOUD_CONNECTOR"


def test_environment_names_are_upper_case_with_dots_and_dashes_as_underscores() -> None:
    config = load(environ={"MAX_VIRTUAL_TOPICS": "100", "cloud.connector": "ignored"})
    assert config.get("max-virtual.topics") == "100"
    assert config.get("cloud.connector") is None


def test_environment_variables_are_looked_up_on_every_get() -> None:
    environ: dict[str, str] = {}
    config = AppConfig.load(argv=[], environ=environ)
    assert config.get("cloud.connector") is None
    environ["CLOUD_CONNECTOR"] = "hazelcast"
    assert config.get("cloud.connector") == "hazelcast"


def test_a_d_argument_overrides_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "cloud.connector=none\n")
    config = load(tmp_path, argv=["-Dcloud.connector=kafka"], environ={"CLOUD_CONNECTOR": "hazelcast"})
    assert config.get("cloud.connector") == "kafka"
    assert config.source_of("cloud.connector") == "-D argument"


def test_system_properties_set_by_the_cli_count_as_d_arguments() -> None:
    set_system_properties({"cloud.connector": "kafka", "closed.user.group": "2"})
    config = load(environ={"CLOUD_CONNECTOR": "hazelcast"})
    assert config.get("cloud.connector") == "kafka"
    assert config.source_of("cloud.connector") == "-D argument"
    assert config.get_int("closed.user.group", 1) == 2


def test_a_d_argument_in_argv_wins_over_a_system_property_of_the_same_key() -> None:
    set_system_properties({"cloud.connector": "kafka"})
    assert load(argv=["-Dcloud.connector=none"]).get("cloud.connector") == "none"


def test_set_system_properties_replaces_them_all_and_system_properties_returns_a_copy() -> None:
    set_system_properties({"a.b": "1"})
    set_system_properties({"c.d": "2"})
    copy = system_properties()
    assert copy == {"c.d": "2"}
    copy["e.f"] = "3"
    assert system_properties() == {"c.d": "2"}


def test_argv_defaults_to_sys_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["app.py", "--port", "8083", "-Dinfo.app.version=2.0"])
    assert AppConfig.load(environ={}).get("info.app.version") == "2.0"


def test_an_override_beats_every_other_source(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "cloud.connector=none\n")
    config = load(
        tmp_path,
        argv=["-Dcloud.connector=kafka"],
        environ={"CLOUD_CONNECTOR": "kafka"},
        overrides={"cloud.connector": "hazelcast"},
    )
    assert config.get("cloud.connector") == "hazelcast"
    assert config.source_of("cloud.connector") == "override"


def test_with_overrides_returns_a_new_config_and_leaves_the_original_alone(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "application.name=a\nserver.port=1\n")
    original = load(tmp_path, argv=["-Dserver.port=2"], overrides={"application.name": "b"})
    changed = original.with_overrides({"server.port": "3"})
    assert (changed.get("application.name"), changed.get("server.port")) == ("b", "3")
    assert (original.get("application.name"), original.get("server.port")) == ("b", "2")


# --- which files are read ---------------------------------------------------------------------------------


def test_the_first_search_path_with_a_properties_file_is_the_only_one_read(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(first, "application.properties", "application.name=first\n")
    write(second, "application.properties", "application.name=second\nonly.in.second=yes\n")
    config = AppConfig.load(search_paths=[tmp_path / "missing", first, second], argv=[], environ={})
    assert config.get("application.name") == "first"
    assert config.get("only.in.second") is None


def test_properties_and_yml_are_each_taken_from_the_first_path_that_has_one(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(first, "application.properties", "server.port=8083\n")
    write(second, "application.yaml", "server:\n  port: 9000\ninfo:\n  app:\n    version: 1.2.3\n")
    config = AppConfig.load(search_paths=[str(first), str(second)], argv=[], environ={})
    assert config.get("server.port") == "8083"
    assert config.get("info.app.version") == "1.2.3"


def test_application_yml_is_preferred_over_application_yaml_in_one_directory(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "name: from-yml\n")
    write(tmp_path, "application.yaml", "name: from-yaml\n")
    assert load(tmp_path).get("name") == "from-yml"


def test_a_search_path_may_name_a_file_directly(tmp_path: Path) -> None:
    path = write(tmp_path, "application.properties", "presence.url=ws://127.0.0.1:8080/ws/presence\n")
    config = AppConfig.load(search_paths=[path], argv=[], environ={})
    assert config.get("presence.url") == "ws://127.0.0.1:8080/ws/presence"


def test_no_search_paths_means_no_files() -> None:
    assert load().keys() == []


# --- the properties format ---------------------------------------------------------------------------------


def test_properties_separators_whitespace_comments_and_blank_lines(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.properties",
        "# a comment\n"
        "   ! another comment, indented\n"
        "\n"
        "application.name = rest-example   \n"
        "  server.port:8083\n"
        "presence.url=ws://127.0.0.1:8080/ws/presence?a=b\n"
        "empty.value=\n",
    )
    config = load(tmp_path)
    assert config.keys() == ["application.name", "empty.value", "presence.url", "server.port"]
    assert config.get("application.name") == "rest-example"
    assert config.get("server.port") == "8083"
    assert config.get("presence.url") == "ws://127.0.0.1:8080/ws/presence?a=b"
    assert config.get("empty.value") == ""


def test_a_backslash_at_the_end_of_a_line_continues_the_value(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.properties",
        "mandatory.health.dependencies=cloud.connector.health, \\\n"
        "      demo.health, \\\n"
        "      other.health\n"
        "after=1\n",
    )
    config = load(tmp_path)
    assert config.get_list("mandatory.health.dependencies") == [
        "cloud.connector.health",
        "demo.health",
        "other.health",
    ]
    assert config.source_of("mandatory.health.dependencies").endswith("application.properties line 1")
    assert config.source_of("after").endswith("application.properties line 4")


def test_an_escaped_backslash_at_the_end_does_not_continue(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "dir=C:\\\\\nnext=2\n")
    config = load(tmp_path)
    assert config.get("dir") == "C:\\"
    assert config.get("next") == "2"


def test_java_escapes_in_keys_and_values(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "key\\=with\\:colon=tab\\there\ngreeting=caf\\u00e9\n")
    config = load(tmp_path)
    assert config.get("key=with:colon") == "tab\there"
    assert config.get("greeting") == "café"


def test_the_last_duplicate_wins_and_crlf_utf8_and_bom_are_fine(tmp_path: Path) -> None:
    (tmp_path / "application.properties").write_bytes(
        "\ufeffinfo.app.description=première\r\nname=a\r\nname=b\r\n".encode()
    )
    config = load(tmp_path)
    assert config.get("info.app.description") == "première"
    assert config.get("name") == "b"
    assert config.source_of("name").endswith("application.properties line 3")


# --- YAML ---------------------------------------------------------------------------------------------------


def test_yml_maps_are_flattened_to_dotted_keys_with_scalars_as_written(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yml",
        "application:\n"
        "  name: lambda-example\n"
        "server:\n"
        "  port: 8085\n"
        "feature:\n"
        "  enabled: True\n"
        "  ratio: 0.50\n"
        "  nothing:\n"
        "  quoted: 'a: b'\n",
    )
    config = load(tmp_path)
    assert config.get("application.name") == "lambda-example"
    assert config.get_int("server.port", 0) == 8085
    assert config.get("feature.enabled") == "True"
    assert config.get_bool("feature.enabled", False) is True
    assert config.get("feature.ratio") == "0.50"
    assert config.get("feature.nothing") == ""
    assert config.get("feature.quoted") == "a: b"
    assert config.source_of("server.port").endswith("application.yml line 4")


def test_a_yml_list_of_scalars_is_comma_joined_and_indexed_like_spring(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "presence:\n  url:\n    - ws://a:8080\n    - ws://b:8081\nempty: []\n")
    config = load(tmp_path)
    assert config.get("presence.url") == "ws://a:8080,ws://b:8081"
    assert config.get_list("presence.url") == ["ws://a:8080", "ws://b:8081"]
    assert config.get("presence.url[0]") == "ws://a:8080"
    assert config.get("presence.url[1]") == "ws://b:8081"
    assert config.get("empty") == ""
    assert config.get_list("empty") == []


def test_a_yml_list_of_maps_gives_indexed_dotted_keys(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "routes:\n  - name: a.b\n    instances: 2\n  - name: c.d\n")
    config = load(tmp_path)
    assert config.get("routes[0].name") == "a.b"
    assert config.get("routes[0].instances") == "2"
    assert config.get("routes[1].name") == "c.d"
    assert config.get("routes") is None


def test_yml_anchors_merge_keys_and_multiple_documents(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yml",
        "defaults: &defaults\n  port: 8080\n  host: 127.0.0.1\n"
        "server:\n  <<: *defaults\n  port: 8083\n"
        "---\n"
        "defaults:\n  host: 0.0.0.0\n",
    )
    config = load(tmp_path)
    assert config.get("server.port") == "8083"
    assert config.get("server.host") == "127.0.0.1"
    assert config.get("defaults.host") == "0.0.0.0"
    assert config.get("defaults.port") == "8080"


def test_an_empty_yml_file_has_no_keys(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "# nothing here\n")
    assert load(tmp_path).keys() == []


# --- ${...} substitution -----------------------------------------------------------------------------------


def test_a_reference_is_resolved_from_another_key_then_the_environment_then_its_default(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "application.properties",
        "kafka.host=broker\n"
        "bootstrap.servers=${kafka.host}:9092\n"
        "home.dir=${APP_HOME}/app\n"
        "presence.url=${PRESENCE_URL:ws://127.0.0.1:8080/ws/presence}\n"
        "unknown=${NO_SUCH_THING}\n",
    )
    config = load(tmp_path, environ={"APP_HOME": "/home/me"})
    assert config.get("bootstrap.servers") == "broker:9092"
    assert config.get("home.dir") == "/home/me/app"
    assert config.get("presence.url") == "ws://127.0.0.1:8080/ws/presence"
    assert config.get("unknown") == "${NO_SUCH_THING}"


def test_a_referenced_key_follows_the_precedence_order(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "kafka.host=broker\nbootstrap.servers=${kafka.host}:9092\n")
    config = load(tmp_path, environ={"KAFKA_HOST": "env-broker"})
    assert config.get("bootstrap.servers") == "env-broker:9092"
    assert config.with_overrides({"kafka.host": "test"}).get("bootstrap.servers") == "test:9092"


def test_references_work_in_d_arguments_and_environment_values_and_nest_in_defaults() -> None:
    config = load(
        argv=["-Dpresence.url=ws://${monitor.host:localhost}:8080"],
        environ={"BOOTSTRAP_SERVERS": "${KAFKA:${FALLBACK:127.0.0.1}}:9092", "FALLBACK": "10.0.0.1"},
        overrides={"server.port": "${PORT:8083}"},
    )
    assert config.get("presence.url") == "ws://localhost:8080"
    assert config.get("bootstrap.servers") == "10.0.0.1:9092"
    assert config.get_int("server.port", 0) == 8083


def test_a_reference_cycle_is_an_error_naming_the_key(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "a.key=${b.key}\nb.key=x-${a.key}\nself=${self}\n")
    config = load(tmp_path)
    with pytest.raises(ConfigError, match=r"a\.key: reference cycle a\.key -> b\.key -> a\.key"):
        config.get("a.key")
    with pytest.raises(ConfigError, match="self"):
        config.get("self")


# --- bad input ---------------------------------------------------------------------------------------------


def test_a_line_without_separator_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "application.properties", "# header\n\nserver.port=8083\nfoo\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == f"{path} line 4: expected key=value, got 'foo'"


def test_an_empty_key_or_a_malformed_unicode_escape_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "=value\n")
    with pytest.raises(ConfigError, match=r"application\.properties line 1: empty key"):
        load(tmp_path)
    write(tmp_path, "application.properties", "a=1\nb=\\u12\n")
    with pytest.raises(ConfigError, match=r"application\.properties line 2: malformed \\uXXXX"):
        load(tmp_path)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "server:\n  port: 8083\n  host: [a, b\nname: x\n")
    with pytest.raises(ConfigError, match=r"application\.yml line 4: "):
        load(tmp_path)


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("just text\n", "the value 'just text'")],
)
def test_a_yml_whose_top_level_is_not_a_map_is_an_error(tmp_path: Path, text: str, got: str) -> None:
    write(tmp_path, "application.yml", text)
    with pytest.raises(ConfigError, match=rf"application\.yml line 1: top level must be a map, got {got}"):
        load(tmp_path)


def test_a_yml_key_that_is_not_a_plain_value_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "application.yml", "a: 1\n? [x, y]\n: z\n")
    with pytest.raises(ConfigError, match=r"application\.yml line 2: a key must be a plain value"):
        load(tmp_path)


@pytest.mark.parametrize("name", ["application.properties", "application.yml"])
def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"a=1\nb: caf\xe9\n" if name.endswith("properties") else b"b: caf\xe9\n")
    line = 2 if name.endswith("properties") else 1
    with pytest.raises(ConfigError, match=rf"{name} line {line}: not valid UTF-8 \(byte 0xe9\)"):
        load(tmp_path)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "application.properties", "a=1\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == f"{path}: cannot read: Permission denied"


def test_garbage_numbers_name_the_key_the_value_and_where_it_came_from(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "server.port=80a\n")
    config = load(tmp_path, environ={"MAX_VIRTUAL_TOPICS": "many"})
    with pytest.raises(ConfigError, match=r"server\.port: expected an integer, got '80a' \(from .*line 1\)"):
        config.get_int("server.port", 8080)
    with pytest.raises(ConfigError, match=r"max\.virtual\.topics: .*'many' \(from environment MAX_VIRTUAL"):
        config.get_float("max.virtual.topics", 1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("true", True), ("YES", True), ("1", True), ("On", True)],
        *[("false", False), (" no ", False), ("0", False), ("OFF", False)],
    ],
)
def test_booleans_accept_the_usual_words_in_any_case(value: str, expected: bool) -> None:
    assert load(overrides={"flag": value}).get_bool("flag", not expected) is expected


def test_a_garbage_boolean_names_the_key_and_the_value() -> None:
    config = load(overrides={"show.env.variables": "maybe"})
    with pytest.raises(ConfigError, match=r"show\.env\.variables: expected true/false.*got 'maybe'"):
        config.get_bool("show.env.variables", False)
    assert config.get_bool("absent.flag", True) is True


def test_numbers_and_lists() -> None:
    config = load(overrides={"ratio": "0.25", "port": " 8083 ", "list": " a, ,b ,,"})
    assert config.get_float("ratio", 1.0) == 0.25
    assert config.get_float("absent", 1.5) == 1.5
    assert config.get_int("port", 0) == 8083
    assert config.get_int("absent", 7) == 7
    assert config.get_list("list") == ["a", "b"]
    assert config.get_list("absent") == []


def test_d_arguments_are_parsed_from_anywhere_in_argv() -> None:
    argv = ["run", "-Dcloud.connector=kafka", "--port", "8083", "-Dquery=a=b", "-Dflag", "-Dempty="]
    assert parse_define_arguments(argv) == {
        "cloud.connector": "kafka",
        "query": "a=b",
        "flag": "true",
        "empty": "",
    }


@pytest.mark.parametrize("bad", ["-D", "-D=x", "-D =x", "-Da b=c"])
def test_a_d_argument_without_a_key_is_an_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"bad -D argument .*expected -Dkey=value with a non-empty key"):
        load(argv=[bad])


# --- keys, source_of, secrets -----------------------------------------------------------------------------


def test_keys_lists_files_d_arguments_and_overrides_but_not_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "application.properties", "b.key=1\n")
    write(tmp_path, "application.yml", "c:\n  - x\n")
    set_system_properties({"d.key": "1"})
    config = load(tmp_path, argv=["-De.key=1"], environ={"F_KEY": "1"}, overrides={"a.key": "1"})
    assert config.keys() == ["a.key", "b.key", "c", "c[0]", "d.key", "e.key"]
    assert config.get("f.key") == "1"


def test_source_of_names_every_kind_of_source(tmp_path: Path) -> None:
    props = write(tmp_path, "application.properties", "\nfrom.props=1\n")
    yml = write(tmp_path, "application.yml", "x: 1\nfrom:\n  yml: 1\n")
    config = load(tmp_path, argv=["-Dfrom.d=1"], environ={"FROM_ENV": "1"}, overrides={"from.o": "1"})
    assert config.source_of("from.props") == f"{props} line 2"
    assert config.source_of("from.yml") == f"{yml} line 3"
    assert config.source_of("from.env") == "environment FROM_ENV"
    assert config.source_of("from.d") == "-D argument"
    assert config.source_of("from.o") == "override"
    assert config.source_of("nowhere") == "default"


@pytest.mark.parametrize(
    "key",
    [
        *["kafka.password", "SASL_JAAS_CONFIG", "client.Secret", "auth.token", "api.key", "API_KEY"],
        *["my-api-key", "ssl.key.credentials", "ssl.private.key"],
    ],
)
def test_secret_keys_are_masked(key: str) -> None:
    assert is_secret_key(key)
    assert masked(key, "hunter2") == "*****"


@pytest.mark.parametrize("key", ["cloud.connector", "server.port", "bootstrap.servers", "api.url"])
def test_ordinary_keys_are_shown(key: str) -> None:
    assert not is_secret_key(key)
    assert masked(key, "value") == "value"
