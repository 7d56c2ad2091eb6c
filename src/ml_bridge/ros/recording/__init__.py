"""Recording bags around rule events, in ROS: the rules' actions on results (events, the start
of a recording), the recorder and its memory of the last seconds, the bag files, the clocks.

The rules themselves and their schedule are ROS-free: :mod:`ml_bridge.pipelines.rules` and
:mod:`ml_bridge.pipelines.schedule`.
"""
