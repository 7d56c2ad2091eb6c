"""One subpackage per framework; each may import its framework, never rospy."""
