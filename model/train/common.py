"""Pieces both training scripts share: the dataset reader, the convolution block and the int8
export. Keeping one copy keeps the two networks' int8 files in the form tract runs."""

import json
import os

import torch.nn as nn


def read_labels(dirs):
    """Yields (directory, record) for every complete line of each `vcfd dataset` folder."""
    for d in dirs:
        with open(os.path.join(d, "labels.jsonl")) as f:
            for line in f:
                if not line.endswith("\n"):
                    # A dataset still being written: its last line may be cut short.
                    continue
                yield d, json.loads(line)


def conv(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def quantize_convs(f32_path, int8_path, batches, fixed_batch=False):
    """Static int8 quantisation in QOperator form (QLinearConv), per-tensor scales, calibrated
    on `batches` (input dicts): what tract runs natively. Only the convolutions, where the time
    goes, are quantised (tract has no QLinearConcat, QLinearResize or quantised Gemm).

    `fixed_batch`: Rust runs the model with one concrete batch size; the quantiser annotates
    intermediate tensors with the symbolic one, which tract then refuses, so those annotations
    are dropped (the shapes follow from the input)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = list(batches)

        def get_next(self):
            return self.items.pop() if self.items else None

    quantize_static(
        f32_path,
        int8_path,
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=False,
        op_types_to_quantize=["Conv"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    if fixed_batch:
        m = onnx.load(int8_path)
        del m.graph.value_info[:]
        onnx.save(m, int8_path)
