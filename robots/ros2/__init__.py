"""ROS 2 backends of ``robots`` (the only place that imports rclpy).

Names, per robot namespace ``/<robot>`` (standard message types throughout, so any ROS 2 tool
on the network sees and can use them):

========================  =========================================  ============================
name                      type                                       who
========================  =========================================  ============================
``joint_states``          sensor_msgs/JointState (>= 250 Hz)         driver publishes
``joint_command``         trajectory_msgs/JointTrajectory (1 pt)     runtime -> driver
``gripper_command``       std_msgs/Float64 (0 open .. 1 closed)      runtime -> driver
``driver/events``         diagnostic_msgs/DiagnosticArray (latched)  driver (its watchdog)
``skill/goal``            std_msgs/String (JSON goal)                agent -> runtime
``skill/feedback``        std_msgs/String (JSON)                     runtime
``skill/result``          std_msgs/String (JSON, latched 50)         runtime
``skill/status``          action_msgs/GoalStatusArray (latched)      runtime
``skill/cancel``          action_msgs/srv/CancelGoal                 agent -> runtime
``stream_command``        trajectory_msgs/JointTrajectory            teleop/policy -> runtime
``safety/events``         diagnostic_msgs/DiagnosticArray (latched)  runtime (every intervention)
``estop``                 std_srvs/srv/Trigger                       anyone: trip the e-stop
``operator/estop_reset``  std_srvs/srv/Trigger                       the operator only
========================  =========================================  ============================

Cell-wide: ``/cell/people`` (geometry_msgs/PoseArray, frame ``cell``) with
``/cell/people_speeds`` (std_msgs/Float64MultiArray, m/s, same order), and
``/cell/parts/<part_type>`` (geometry_msgs/PoseArray), published by the twin (or a tracker and
a vision system in a real cell). The 250 Hz topics are served on the fast lane of
:class:`~robots.ros2._host.RosHost`, not by the executor. Custom .msg/.action generation is not
available in the PyPI wheels, so a skill goal is an action built from standard messages: goal,
feedback and result as JSON strings, status and cancel with the action_msgs types of real ROS 2
actions.
"""
