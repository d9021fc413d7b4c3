"""ROS 2 backends of ``robots`` (the only place that imports rclpy).

Names, per robot namespace ``/<robot>`` (standard message types throughout, so any ROS 2 tool
on the network sees and can use them):

========================  =========================================  ============================
name                      type                                       who
========================  =========================================  ============================
``joint_states``          sensor_msgs/JointState (>= 250 Hz)         driver publishes
``joint_command``         trajectory_msgs/JointTrajectory (signed)   runtime -> driver
``gripper_command``       JointTrajectory (1 joint, 0 open..1 shut)  runtime -> driver (signed)
``driver/events``         diagnostic_msgs/DiagnosticArray (latched)  driver (its watchdog)
``skill/goal``            std_msgs/String (signed goal or cancel)    agent -> runtime
``skill/feedback``        std_msgs/String (JSON)                     runtime
``skill/result``          std_msgs/String (signed, latched 50)       runtime
``skill/status``          action_msgs/GoalStatusArray (latched)      runtime
``skill/cancel``          action_msgs/srv/CancelGoal                 refused (unsigned); recorded
``stream_command``        trajectory_msgs/JointTrajectory (signed)   teleop/policy -> runtime
``safety/events``         diagnostic_msgs/DiagnosticArray (latched)  runtime (every intervention)
``estop``                 std_srvs/srv/Trigger                       anyone: trip the e-stop
``operator/              std_msgs/String (signed reset request)     the operator's command
estop_reset_request``
``operator/              std_msgs/String (signed, latched 10)       runtime: answer to a request
estop_reset_reply``
``operator/estop_reset``  std_srvs/srv/Trigger                       refused (unsigned); recorded
========================  =========================================  ============================

Cell-wide: ``/cell/people`` (geometry_msgs/PoseArray, frame ``cell``) with
``/cell/people_speeds`` (std_msgs/Float64MultiArray, m/s, same order), and
``/cell/parts/<part_type>`` (geometry_msgs/PoseArray), published by the twin (or a tracker and
a vision system in a real cell). The 250 Hz topics are served on the fast lane of
:class:`~robots.ros2._host.RosHost`, not by the executor. Custom .msg/.action generation is not
available in the PyPI wheels, so a skill goal is an action built from standard messages: goal,
feedback and result as JSON strings, status and cancel with the action_msgs types of real ROS 2
actions.

Authenticated commands
----------------------

The DDS of the PyPI wheels has no DDS-Security, so anyone on the domain can publish on any
topic and call any service. Commands are therefore signed at the application layer, with
HMAC-SHA256 keys of :mod:`plant.trust` (two per robot, files of mode 0600 in
``<state dir>/trust``, made by ``atelier robot keys``; never in the repository):

- ``robot.<robot>.key``, the command key, held by the coordinator and the robot's runtime.
  A goal message is ``{goal_id, robot, skill, args, plan_hash, step_id, kind: "goal", stamp_s,
  nonce, mac}``: the MAC covers the canonical JSON of every other field. A cancel is ``{robot,
  goal_id, kind: "cancel", ...}`` on the same topic. A result is ``{robot, goal_id, goal_nonce,
  outcome, reason, duration_s, kind: "result", ...}``, ``goal_nonce`` being the nonce of the goal
  message that started the goal.
- ``estop-reset.<robot>.key``, the reset key, held by the operators' command
  (``atelier robot estop-reset``, which first checks the operator's password against the site's
  users) and the runtime. A reset request is ``{robot, operator, kind: "estop_reset", ...}``;
  the answer ``{robot, request_nonce, success, message, kind: "estop_reset_reply", ...}``. A
  Trigger service carries no payload and std_srvs has none that does, so the request is a
  std_msgs/String topic and the answer another (latched, so a requester that matched late still
  gets it), correlated by the request's nonce. The coordinator needs no reset key, so no plan
  and no model can reset an e-stop even where the coordinator's key is read.

The runtime admits a command (:class:`plant.trust.ReplayGuard`) only if its MAC is right under
the robot's key, its kind is the one expected on that topic, it is addressed to this robot, its
``stamp_s`` (the sender's wall clock) lies within 30 s of the runtime's (the clocks are kept in
step by NTP or PTP), it was not signed before the runtime started (its nonces are kept in memory;
this is what keeps a message captured before a restart from being replayed after it), and its
nonce was never admitted. A refused command is recorded as a ``refuse`` safety event (on
``safety/events``, at most 5 a second one by one, then counted) and a log line, and otherwise
ignored: it gets no result, so a forged copy of a real goal cannot fail that goal. A goal the
agent sends again is signed afresh (new time, new nonce); the runtime answers a goal id it knows
with its status and does not run it twice. The agent takes a result only if it is signed with
the robot's key and names a goal this channel sent and the nonce of one of its messages: a
result latched from before a restart, from another coordinator, or forged, is ignored.
Tripping the e-stop (``estop``) stays open to anyone: stopping never needs a key.

Not signed, informational or only able to stop: ``skill/status`` (a forged status can only
stop the agent re-sending a goal: the step then times out), ``skill/feedback``,
``safety/events``, ``driver/events``. The commands that move an arm at the control rate are
signed too, with a short token (:class:`plant.trust.StreamSigner` in the header's ``frame_id``:
a session, a rising number and a MAC over the values, fresh within a second): the runtime's
``joint_command`` and ``gripper_command`` to its driver (the driver follows no other, even with
no runtime running) and a teleoperation or policy stream on ``stream_command`` (refused and
recorded otherwise; a stream cut off is never taken up again). A vendor's driver on a real robot
takes its joint commands from whoever reaches it: there, a network only the cell's hosts reach,
or SROS2 (below), closes that path. In-process runtimes (rehearsal,
:class:`robots.agent.RuntimeChannel`) take goals by a function call and need no MAC.

The transport beneath: SROS2
----------------------------

On a full ROS 2 installation (Fast DDS or Cyclone DDS built with DDS-Security, as in the
``ros-<distro>-`` Debian packages), add SROS2 beneath this so that the DDS participants
authenticate each other and encrypt the traffic, and the driver's joint topics, which carry no
MAC, are closed to foreign nodes too::

    ros2 security create_keystore ~/atelier_keystore
    ros2 security create_enclave ~/atelier_keystore /atelier/ROBOT/runtime
    ros2 security create_enclave ~/atelier_keystore /atelier/coordinator
    ros2 security create_enclave ~/atelier_keystore /atelier/operator
    # per enclave, a policy granting only its topics and services (ros2 security
    # create_permission with a policy XML: e.g. only the coordinator may publish
    # /ROBOT/skill/goal, only the runtime /ROBOT/skill/result)
    export ROS_SECURITY_KEYSTORE=~/atelier_keystore
    export ROS_SECURITY_ENABLE=true ROS_SECURITY_STRATEGY=Enforce
    ROS_SECURITY_ENCLAVE_OVERRIDE=/atelier/ROBOT/runtime atelier robot runtime ROBOT

Keep the signed commands on top of it: SROS2 says which participant may publish on a topic,
not which approved plan and step a goal carries out or whether it was sent before; and the keys
of this layer stay with the coordinator and the operators, not with every node of an enclave.
"""
