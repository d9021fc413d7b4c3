"""Everything that runs on or for a robot: hardware interface, skills, IK, the on-robot
runtime, the safety supervisor, and the robot agent the coordinator uses."""
