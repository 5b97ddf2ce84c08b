"""The accuracy's applicability domain knows the tasks of its training zoo: the accuracy of a network of a
task the head never saw (other input features or classes) is flagged, not silently predicted."""

from __future__ import annotations

import torch

from zooprobe.heads.domain import ArchitectureRange, architecture


def _mlp(n_in: int, n_out: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(n_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out))
    return net.state_dict()


def _cnn(channels: int, n_out: int) -> dict[str, torch.Tensor]:
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, n_out))
    return net.state_dict()


def test_a_network_of_an_unseen_task_is_outside_only_where_tasks_are_checked() -> None:
    train = [architecture(_mlp(64, 10)), architecture(_cnn(1, 10)), architecture(_mlp(40, 10))]
    assert architecture(_cnn(1, 10)).task == (2, 1, 10) and architecture(_mlp(64, 10)).task == (0, 64, 10)
    with_tasks = ArchitectureRange.fit(train, tasks=True)
    without = ArchitectureRange.fit(train)
    seen, unseen = architecture(_mlp(40, 10)), architecture(_mlp(48, 10))  # within the size ranges
    assert with_tasks.problems(seen) == [] and without.problems(unseen) == []
    (reason,) = with_tasks.problems(unseen)
    assert "linear input of 48 features -> 10 outputs matches no task of the training zoo" in reason
    assert "conv2d input of 1 channels -> 10 outputs" in reason  # what the zoo has
    # saved with the head and read back; heads saved before tasks were recorded check none
    again = ArchitectureRange.from_record(with_tasks.to_record())
    assert again.tasks == with_tasks.tasks and again.problems(unseen) == [reason]
    old = with_tasks.to_record()
    del old["tasks"]
    assert ArchitectureRange.from_record(old).problems(unseen) == []
