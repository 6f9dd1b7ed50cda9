"""The package around the node agrees with the node: parameters, config, launch file, docs, build files."""
import ast
import py_compile
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from ros_helpers import REPO, require_ros

require_ros()

from lmeec_ros import params  # noqa: E402

LAUNCH = REPO / "launch" / "lmeec.launch.py"
BUILTIN_PARAMETERS = {"use_sim_time"}   # declared by rclpy itself


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def launch_parameter_arguments() -> dict[str, str]:
    """PARAMETER_ARGUMENTS of the launch file: argument name -> type name."""
    for node in launch_tree().body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "PARAMETER_ARGUMENTS":
            return {k.value: v.elts[0].id for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError("launch file has no PARAMETER_ARGUMENTS")


def test_config_file_is_the_generated_one_and_holds_every_default():
    text = (REPO / "config" / "lmeec.yaml").read_text()
    assert text == params.config_yaml(), "regenerate: python -m lmeec_ros.params yaml > config/lmeec.yaml"
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert values == {name: default for name, (default, _) in params.specs().items()}


@pytest.mark.parametrize("doc", ["docs/ros.md", "README.md"])
def test_docs_embed_the_generated_parameter_table(doc):
    assert params.markdown_table() in (REPO / doc).read_text(), "regenerate: python -m lmeec_ros.params markdown"


def test_every_parameter_has_a_description_and_a_default_that_passes_its_own_checks():
    for name, (default, spec) in params.specs().items():
        assert len(spec.description) > 15, name
        assert params.check_value(name, default) == "", name


@pytest.mark.parametrize("name, value, words", [
    ("slop", "0.1", "must be of type double, got '0.1' (string)"),
    ("capacity", True, "must be of type integer, got True (bool)"),
    ("capacity", 2.0, "must be of type integer"),
    ("preset", "large", "one of: 'auto', 'nano'"),
    ("slop", -0.1, ">= 0"),
    ("visibility_threshold", 1.5, "<= 1"),
    ("compression", "average", "one of"),
    ("device", "gpu", "must match"),
])
def test_bad_values_are_refused_with_the_reason(name, value, words):
    assert words in params.check_value(name, value)


def test_integers_are_accepted_where_floats_are_expected_and_become_floats():
    assert params.check_value("slop", 1) == ""
    assert type(params.setting("slop", 1)) is float and type(params.setting("capacity", 1)) is int


def test_an_empty_preset_is_read_as_auto():
    assert params.check_value("preset", "") == "" and params.setting("preset", "") == "auto"


def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH), doraise=True)


def test_launch_arguments_map_onto_declared_parameters_of_the_same_type():
    declared = params.specs()
    arguments = launch_parameter_arguments()
    for name, kind in arguments.items():
        assert name in declared, f"launch argument {name} sets no node parameter"
        assert type(declared[name][0]).__name__ == kind, name
    declared_arguments = {c.args[0].value for c in calls(launch_tree(), "DeclareLaunchArgument")
                          if isinstance(c.args[0], ast.Constant)}
    generated = any(isinstance(n, ast.Starred) for c in calls(launch_tree(), "LaunchDescription")
                    for n in ast.walk(c))
    assert generated, "parameter arguments should be declared from PARAMETER_ARGUMENTS"
    assert declared_arguments == {"config", "namespace"} | BUILTIN_PARAMETERS


def test_launch_file_starts_the_installed_lifecycle_node():
    (node,) = calls(launch_tree(), "LifecycleNode")
    keywords = {k.arg: k.value for k in node.keywords}
    assert {k: keywords[k].value for k in ("package", "executable", "name")} == {
        "package": "lmeec_ros", "executable": "lmeec_node", "name": "lmeec"}
    cmake = (REPO / "CMakeLists.txt").read_text()
    # every console tool, lmeec_node first, gets a wrapper in lib/<package>/ for ros2 run and launch
    tools = re.search(r"foreach\(tool_and_module ([^)]*)\)", cmake)
    assert tools and "lmeec_node:node" in tools.group(1).split()
    ros_scripts = re.findall(r'"(\w+) = lmeec_ros\.(\w+):main"', (REPO / "setup.py").read_text())
    assert sorted(tools.group(1).split()) == sorted(f"{tool}:{module}" for tool, module in ros_scripts)
    assert 'install(PROGRAMS "${CMAKE_CURRENT_BINARY_DIR}/${tool}" DESTINATION lib/${PROJECT_NAME})' in cmake
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake


def test_interface_dependencies_are_declared_for_rosidl_and_rosdep():
    used = set()
    for path in [*REPO.glob("msg/*.msg"), *REPO.glob("srv/*.srv")]:
        used |= set(re.findall(r"^\s*(\w+)/\w+", path.read_text(), re.MULTILINE))
    assert used == {"builtin_interfaces", "geometry_msgs", "sensor_msgs", "std_msgs"}
    manifest = ET.parse(REPO / "package.xml").getroot()
    assert manifest.findtext("name") == "lmeec_ros"
    assert used <= {d.text for d in manifest.findall("depend")}
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "project(lmeec_ros)" in cmake
    assert "DEPENDENCIES " + " ".join(sorted(used)) in cmake


def test_console_script_runs_the_node_main():
    assert "lmeec_node = lmeec_ros.node:main" in (REPO / "setup.py").read_text()
