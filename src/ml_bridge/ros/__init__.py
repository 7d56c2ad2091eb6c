"""The ROS layer: rospy, actionlib, cv_bridge. Never imports a framework directly."""
