"""Start the lmeec node on a ROS 2 install.

    ros2 launch lmeec_ros lmeec.launch.py ego_topic:=/head/image_raw exo_topic:=/room/image_raw \
        checkpoint:=/path/to/lmeec.pt device:=cuda

Parameters come from `config` (default: the installed config/lmeec.yaml); each argument below that
is given overrides the parameter of the same name, and an empty one keeps the file's value. The
node configures and activates itself (its `autostart` parameter); stop it with Ctrl-C (SIGINT).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# Launch argument -> (type of the node parameter it sets, description).
PARAMETER_ARGUMENTS = {
    "ego_topic": (str, "Ego (head) camera image topic"),
    "exo_topic": (str, "Exo (external) camera image topic"),
    "compressed": (bool, "true: subscribe to <topic>/compressed (sensor_msgs/CompressedImage)"),
    "checkpoint": (str, "Model checkpoint file"),
    "preset": (str, "Model size: nano, t, s, b+, or auto (from the checkpoint)"),
    "device": (str, "Torch device: auto, cpu, cuda or cuda:N"),
    "publish_overlay": (bool, "true: also publish ~/overlay for viewing"),
}


def _parse(text: str, kind: type):
    return text.strip().lower() in ("true", "1", "yes") if kind is bool else kind(text)


def _lmeec_node(context):
    overrides = {}
    for name, (kind, _) in PARAMETER_ARGUMENTS.items():
        text = LaunchConfiguration(name).perform(context)
        if text != "":
            overrides[name] = ParameterValue(_parse(text, kind), value_type=kind)
    overrides["use_sim_time"] = _parse(LaunchConfiguration("use_sim_time").perform(context), bool)
    return [LifecycleNode(
        package="lmeec_ros",
        executable="lmeec_node",
        name="lmeec",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config"), overrides],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    default_config = PathJoinSubstitution([FindPackageShare("lmeec_ros"), "config", "lmeec.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="Parameter file of the node"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node (topics and services move with it)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="true: use /clock, e.g. when replaying a bag with --clock"),
        *(DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: from config)")
          for name, (_, text) in PARAMETER_ARGUMENTS.items()),
        OpaqueFunction(function=_lmeec_node),
    ])
