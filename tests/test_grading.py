"""What every grader shares."""

import torch

from metaadv_edu import attacks
from metaadv_edu.chapters import fgsm as chapter


def test_graders_use_the_inputs_device():
    seen = []

    def spy(model, x, y, eps):
        seen.append(x.device.type)
        return attacks.fgsm(model, x, y, eps)

    chapter.check_fgsm(spy)
    assert "cpu" in seen
    assert ("cuda" in seen) == torch.cuda.is_available()
