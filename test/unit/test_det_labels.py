"""``~labels`` given to the built-in detector rename its classes; it stays a detector."""
import backends
import pytest

from ml_bridge.core import registry
from ml_bridge.core.model import ModelOptions


@pytest.mark.parametrize("backend", backends.ALL)
def test_labels_on_shapes_det_rename_classes_and_leave_it_a_detector(backend: str) -> None:
    labels = ("disc", "box", "wedge")
    model = registry.load(backend).load_model("shapes_det", ModelOptions(labels=labels))
    assert model.labels == list(labels)
    # A classifier would get an arg-max per row added to every ~predict answer and class-id
    # targets checked against its output; a detector's output is boxes.
    assert not model.is_classifier
    assert model.box_grid is not None
