"""ml_bridge: serve and train TensorFlow/Keras and PyTorch models inside rospy nodes.

The Python API works without ROS::

    from ml_bridge.core.server import ModelServer
    server = ModelServer.load("torch", "digits_mlp")
    prediction = server.predict([x])          # from any thread
    server.fit("digits", epochs=15)           # trains a copy, then swaps it in
"""

__version__ = "0.1.0"
