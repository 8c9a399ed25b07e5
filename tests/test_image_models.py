"""Image models, parametrised over the registry (shape, finite, backward, parameter counts), and a
smoke run of every (dataset, model) pair on a few batches of small data in the real formats."""
from __future__ import annotations

import pytest
import torch
from tests.test_image_data import write_cifar_bin, write_mnist, write_tiny
from typer.testing import CliRunner

import sweeplab.tasks  # noqa: F401  (fills the registries)
from sweeplab.cli import app
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.errors import UserError
from sweeplab.models.vision import ImageSpec, create_image_model
from sweeplab.registry import DATASETS, MODELS
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks import resolve

runner = CliRunner()
SPECS = {"cifar": ImageSpec(3, 32, 32, 10), "mnist": ImageSpec(1, 28, 28, 10), "digits": ImageSpec(1, 8, 8, 10),
         "tiny": ImageSpec(3, 64, 64, 200)}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, spec: ImageSpec, **cfg) -> torch.nn.Module:
    entry = MODELS.get(name, group="image")
    return create_image_model(name, spec, entry.config(**cfg))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("shape", list(SPECS))
@pytest.mark.parametrize("name", MODELS.names("image"))
def test_model_output_shape_finite_and_backward(name, shape):
    spec = SPECS[shape]
    torch.manual_seed(0)
    model = build(name, spec)
    x = torch.randn(2, spec.channels, spec.height, spec.width)
    logits = model(x)
    assert logits.shape == (2, spec.num_classes) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_resnet_parameter_counts_equal_torchvision():
    imagenet = ImageSpec(3, 224, 224, 1000)
    assert count(build("resnet18", imagenet)) == 11_689_512  # torchvision.models.resnet18()
    assert count(build("resnet34", imagenet)) == 21_797_672  # torchvision.models.resnet34()
    # the CIFAR ResNet-18 (3x3 stem, no max-pool), as kuangliu/pytorch-cifar's ResNet18()
    assert count(build("resnet18", SPECS["cifar"])) == 11_173_962
    # classes only change the last layer: 512 weights and a bias per class
    assert count(build("resnet18", SPECS["tiny"])) == 11_689_512 - 800 * 513


def test_resnet_module_names_are_torchvision_names():
    model = build("resnet18", ImageSpec(3, 64, 64, 1000))
    keys = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert key in keys
    # torchvision resnet18's: 62 parameter tensors, plus 3 buffers for each of the 20 BatchNorms
    assert (len(list(model.parameters())), len(keys)) == (62, 122)


@pytest.mark.parametrize("size, kernel", [(64, 7), (32, 3), (28, 3), (224, 7)])
def test_resnet_stem_follows_the_image_size(size, kernel):
    model = build("resnet18", ImageSpec(3, size, size, 10))
    assert model.conv1.kernel_size == (kernel, kernel)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d) == (kernel == 7)
    assert build("resnet18", ImageSpec(3, 32, 32, 10), stem="imagenet").conv1.kernel_size == (7, 7)


def test_vgg8_is_the_vgg11_layout():
    model = build("vgg8", SPECS["cifar"])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert (len(pools), len(linears)) == (5, 1)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 8
    assert count(model) == 9_231_114  # kuangliu/pytorch-cifar's VGG('VGG11')


def test_mlp_counts_its_layers():
    model = build("mlp", SPECS["mnist"], hidden=100, layers=2)
    assert count(model) == (784 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    model = build("resnet18", SPECS["cifar"]).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, fast, atol=1e-4)


def test_num_classes_must_match_the_data():
    assert build("vgg8", SPECS["cifar"], num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(UserError, match="model.num_classes=5 does not match the data, which has 10 classes"):
        build("vgg8", SPECS["cifar"], num_classes=5)


@pytest.mark.parametrize("args, needle", [(["model=resnet50"], "unknown model 'resnet50'"),
                                          (["data=imagenet"], "unknown dataset 'imagenet'"),
                                          (["model.num_classes=7"], "model.num_classes=7"),
                                          (["model=resnet18", "model.stem=big"], "model.stem")])
def test_bad_model_input_is_one_line_exit_2_and_no_run(store_url, args, needle):
    data = [] if any(a.startswith("data=") for a in args) else ["data=digits"]
    result = runner.invoke(app, ["run", "image", *data, *args, "--store", store_url])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert open_store(store_url).list_runs() == []


# ----------------------------------------------------------------------------------- smoke runs
@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> dict[str, list[str]]:
    """Overrides that point each dataset at a few images in its real format (digits is bundled)."""
    root = tmp_path_factory.mktemp("image-data")
    write_cifar_bin(root / "cifar", per_batch=4, test=6, xz=True)
    write_mnist(root / "mnist", train=20, test=6)
    write_tiny(root / "tiny", per_class=6, val_per_class=2)
    return {"cifar10": [f"data.path={root / 'cifar'}", "data.valid_size=4"],
            "mnist": [f"data.path={root / 'mnist'}", "data.valid_size=4"],
            "tinyimagenet": [f"data.path={root / 'tiny'}"],
            "digits": ["data.train_limit=16"]}


@pytest.mark.parametrize("model", MODELS.names("image"))
@pytest.mark.parametrize("dataset", DATASETS.names("image"))
def test_every_dataset_model_pair_trains_a_few_batches(small_data, store_url, dataset, model):
    layer = dict(a.split("=", 1) for a in small_data[dataset])
    layer = {k: int(v) if v.isdigit() else v for k, v in layer.items()}
    cfg = resolve("image", {"data": dataset, "model": model, "train.batch_size": 4, "train.max_steps": 2,
                            "data.test_limit": 4,
                            "optim.momentum": 0.0, "train.keep_checkpoints": "last", **layer})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and result.metrics["steps"] == 2
    for split in ("train", "test"):
        assert 0 <= result.metrics[f"{split}/acc1"] <= result.metrics[f"{split}/acc5"] <= 1
        assert result.metrics[f"{split}/loss"] > 0
    assert "valid/acc1" in result.metrics  # every dataset has a `valid` split, carved from train if need be
    run_dir = open_store(store_url).run_dir(result.run_id)
    assert checkpoint.list_epochs(run_dir) == [1] and (run_dir / "classes.txt").is_file()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Batches and augmentation are drawn from (seed, epoch): resuming after epoch 1 changes nothing."""
    from sweeplab.tasks.image import ImageTask

    cfg = resolve("image", {"data": "digits", "model": "vgg8", "data.train_limit": 32, "data.test_limit": 8,
                            "data.crop_padding": 1, "data.flip": True, "train.batch_size": 8, "train.epochs": 2})
    straight = open_store(f"sqlite:///{tmp_path / 'a' / 'runs.sqlite'}")
    reference = execute(cfg, straight, RunOptions(quiet=True))

    batches = ImageTask.train_batches

    def interrupt_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return batches(self, epoch)

    resumed = open_store(f"sqlite:///{tmp_path / 'b' / 'runs.sqlite'}")
    monkeypatch.setattr(ImageTask, "train_batches", interrupt_epoch_2)
    assert execute(cfg, resumed, RunOptions(quiet=True)).status == "interrupted"
    monkeypatch.setattr(ImageTask, "train_batches", batches)
    result = execute(cfg, resumed, RunOptions(quiet=True))
    assert result.status == "finished" and result.metrics["test/loss"] == reference.metrics["test/loss"]
    weights = [checkpoint.load(checkpoint.epoch_path(s.run_dir(r.run_id), 2))["model"]
               for s, r in ((straight, reference), (resumed, result))]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
