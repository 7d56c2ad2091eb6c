"""``rosrun ml_bridge predict``: numbers, a .npy file or an image file -> class, score, label per row.

Examples::

    rosrun ml_bridge predict 0 0 5 13 9 1 ...        # one row of numbers
    rosrun ml_bridge predict --npy batch.npy          # [N, ...] array
    rosrun ml_bridge predict --image digit.png        # through the model's image preprocessing
"""
import argparse
import sys
from typing import List, Optional

import numpy as np
import rospy

from ml_bridge.core.vision import to_rgb
from ml_bridge.ros.conversions import array_to_tensor, tensor_to_array
from ml_bridge.srv import GetInfo, Predict, PredictResponse


def parse_args(argv: List[str]) -> argparse.Namespace:
    """Command-line arguments (ROS remappings already stripped)."""
    p = argparse.ArgumentParser(prog="rosrun ml_bridge predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("numbers", nargs="*", type=float, help="one input row")
    p.add_argument("--npy", help=".npy file holding a batch [N, ...]")
    p.add_argument("--image", help="PNG/JPEG file, run through the model's image preprocessing")
    p.add_argument("--node", default="/ml_bridge", help="namespace of the ml_bridge node")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the service")
    return p.parse_args(argv)


def load_input(args: argparse.Namespace) -> np.ndarray:
    """The batch to send: from the numbers, the .npy file, or the image."""
    given = sum(bool(x) for x in (args.numbers, args.npy, args.image))
    if given != 1:
        raise ValueError("give exactly one of: numbers, --npy FILE, --image FILE")
    if args.npy:
        return np.load(args.npy, allow_pickle=False)
    if args.image:
        import cv2

        from ml_bridge.core.vision import digits_input

        img = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read image {args.image}")
        return digits_input(to_rgb(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))[0]
    return np.asarray([args.numbers], dtype=np.float32)


def print_response(resp: PredictResponse) -> None:
    """One line per row: class, score and label, or the raw outputs of other models."""
    if not resp.success:
        print(f"error: {resp.message}")
        return
    if resp.class_ids:
        for row, (cid, score, label) in enumerate(zip(resp.class_ids, resp.scores, resp.labels)):
            print(f"row {row}: class {cid}  score {score:.4f}  label '{label}'")
    else:
        for t in resp.outputs:
            print(f"{t.name or 'output'}: {tensor_to_array(t).tolist()}")
    print(f"(model version {resp.model_version})")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns 0 on success, 1 on a refused request, 2 on bad arguments."""
    args = parse_args(rospy.myargv(sys.argv)[1:] if argv is None else argv)
    try:
        batch = load_input(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.node.rstrip("/") + "/predict"
    try:
        rospy.wait_for_service(name, timeout=args.timeout)
    except rospy.ROSException:
        print(f"error: no service {name} (is the node running?)", file=sys.stderr)
        return 3
    info = rospy.ServiceProxy(args.node.rstrip("/") + "/info", GetInfo)()
    if args.image and info.inputs and list(info.inputs[0].shape) != [-1, 64]:
        print("note: --image uses the digits preprocessing (gray, 8x8, /255)", file=sys.stderr)
    resp = rospy.ServiceProxy(name, Predict)(inputs=[array_to_tensor(batch.astype(np.float32))])
    print_response(resp)
    return 0 if resp.success else 1
