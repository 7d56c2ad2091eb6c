"""A bare rospy echo service: ml_bridge/Predict answering a canned response (the floor).

``python -m bench.echo RESPONSE_FILE`` serves ``/bench_echo/predict``; the response is the
serialized PredictResponse the node gave, so request and response sizes match the node's.
"""
import sys

import rospy
from ml_bridge.srv import Predict, PredictRequest, PredictResponse


def main() -> None:
    """Serves until shut down."""
    with open(sys.argv[1], "rb") as f:
        canned = PredictResponse().deserialize(f.read())

    def handle(_req: PredictRequest) -> PredictResponse:
        return canned

    rospy.init_node("bench_echo")
    rospy.Service("/bench_echo/predict", Predict, handle)
    rospy.spin()


if __name__ == "__main__":
    main()
