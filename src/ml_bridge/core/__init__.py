"""Framework-neutral core: no rospy, no tensorflow, no torch."""
