"""Core classes named for what they are; their former names (message classes' names too)
still work as deprecated aliases."""
from typing import Any

import numpy as np
from test_core_server import LinearModel

from ml_bridge.core import prediction, server, spec, training
from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Pipeline, Request, Result


def test_the_former_names_are_the_renamed_classes() -> None:
    assert prediction.Prediction is prediction.ModelOutput is server.Prediction
    assert spec.TensorSpec is spec.ArraySpec
    assert training.TrainResult is training.TrainingOutcome
    output = server.Prediction([np.zeros(1)], ModelStamp(3), 1.0)
    assert isinstance(output, server.ModelOutput) and output.model_version == 3


class _Base(Pipeline[None]):
    def new_state(self) -> None:
        return None

    def accept(self, frame: Frame, state: None) -> bool:
        raise InputError("not used")

    def request(self, state: None) -> Request:
        raise InputError("not used")

    def postprocess(self, request: Request, prediction: Any, wanted: Any) -> Result:
        raise InputError("not used")


class _FormerName(_Base):
    inputs = ("image", "detections")  # a pipeline written before the rename


class _NewName(_Base):
    event_kinds = ("image", "detections")


class _Model:
    @staticmethod
    def describe() -> str:
        return "a model"


def test_a_pipeline_declares_its_event_kinds_by_either_name() -> None:
    assert tuple(_FormerName.event_kinds) == ("image", "detections")  # what the node reads
    assert tuple(Pipeline.event_kinds) == ("image",)
    new = _NewName(_Model())  # type: ignore[arg-type]
    assert tuple(new.inputs) == ("image", "detections")  # the former name, read


def test_a_model_s_specs_answer_to_their_former_names_too() -> None:
    class Declared(LinearModel):  # specs as class attributes, by their former names
        inputs = [spec.ArraySpec("pixels", "float32", (-1, 64))]
        outputs = [spec.ArraySpec("logits", "float32", (-1, 10))]

        def __init__(self) -> None:
            pass

    model = LinearModel()  # sets self.inputs / self.outputs in __init__
    assert [s.name for s in model.input_specs] == ["x"] and model.inputs == model.input_specs
    assert [s.name for s in model.output_specs] == ["scores"] and model.outputs == model.output_specs
    declared = Declared()
    assert [s.name for s in declared.input_specs] == [s.name for s in declared.inputs] == ["pixels"]
    assert [s.name for s in declared.output_specs] == ["logits"]
