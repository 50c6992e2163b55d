"""The lean MS-D's kept buffers are reused across training steps and let go when fitting ends."""

import lightning as L
import torch

from mixscale.losses import create_loss
from mixscale.nets import create_net
from mixscale.train import MixscaleModule

OPTIM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
SCHEDULE = {"name": "none", "step_size": 1, "gamma": 0.1, "patience": 1, "min_lr": 0.0}


class _Watch(L.Callback):
    def __init__(self):
        self.idle = []

    def on_train_batch_end(self, trainer, module, *args):
        self.idle.append(module.net._scratch.idle_bytes)


def test_buffers_are_kept_between_steps_and_released_at_the_end_of_fit():
    torch.manual_seed(0)
    net = create_net("msd", depth=4, dilations=[1, 2], out_channels=2)
    module = MixscaleModule(net, create_loss("ce"), task="segmentation", num_classes=2, optim=OPTIM,
                            schedule=SCHEDULE)
    x, y = torch.randn(6, 1, 24, 24), torch.randint(0, 2, (6, 24, 24))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    watch = _Watch()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[watch])
    trainer.fit(module, loader)
    assert len(watch.idle) == 3 and all(b > 0 for b in watch.idle)  # kept for the next step
    assert net._scratch.idle_bytes == 0
