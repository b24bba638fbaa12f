"""Classification (MNIST-1D, MNIST, CIFAR-10): D -> H -> C, cross-entropy, accuracy.

The hand-written inner gradient of the mean cross-entropy with respect to the logits is
(softmax - one_hot) / B; back through the hidden layer it uses f' only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dnn_search import data
from dnn_search.inner_step import inner_step
from dnn_search.metrics import Metric
from dnn_search.tasks.base import Task
from dnn_search.tasks.registry import register_dataset, register_task


class Classification(Task):
    name = "classification"
    primary_metric = "accuracy"
    metrics = (Metric("accuracy", "max", "accuracy (fraction correct)", scale=100.0, digits=2, unit="%"),
               Metric("loss", "min", "loss (cross-entropy, nats)", detail=True))
    loss_label = "cross-entropy, nats"
    inner_gradient_order = 1
    # the cross-entropy inner step as one autograd node (dnn_search.inner_step): ~2x the fast path
    fused_inner_step = staticmethod(inner_step)

    def output_size(self, dataset) -> int:
        return dataset.num_classes

    def loss(self, prediction, y):
        return F.cross_entropy(prediction, y)

    def output_loss_and_grad(self, out, y):
        log_p = torch.log_softmax(out, dim=1)
        loss = -log_p.gather(1, y[:, None]).mean()
        d_out = (log_p.exp() - F.one_hot(y, out.shape[1]).to(out.dtype)) / out.shape[0]
        return loss, d_out

    def metric_sums(self, prediction, y):
        return {"accuracy": int((prediction.argmax(1) == y).sum()),
                "loss": float(F.cross_entropy(prediction, y, reduction="sum"))}


register_task(Classification.name, Classification)
register_dataset("MNIST1D", data.load_mnist1d, Classification.name,
                 description="MNIST-1D, generated offline (4000 train / 1000 test, 40 features)")
register_dataset("MNIST", data.load_mnist, Classification.name, description="MNIST IDX files in --data_path",
                 needs_data_path=True)
register_dataset("CIFAR", data.load_cifar10, Classification.name, aliases=("CIFAR10",),
                 description="CIFAR-10 binary version in --data_path", needs_data_path=True)
