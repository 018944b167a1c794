"""carry.pack / unpack: a run's checkpoint carried across machines in a few MB, resumed by checkpoint.load."""
import pytest
import torch

from ragcomp_lab import carry, checkpoint


def _run(tmp_path, steps=5):
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"student": torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32),
                                                              torch.nn.LayerNorm(32))})
    net["student"][0].weight.requires_grad_(False)  # frozen, as the student's embedding is
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.3)
    for _ in range(steps):
        net["student"](torch.randint(0, 50, (4, 3))).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    checkpoint.save(tmp_path / "run", net, opt, steps, {"config": {"lr": 1e-2}, "losses": [{"step": steps}]})
    return net, opt


def _fresh():
    torch.manual_seed(1)
    net = torch.nn.ModuleDict({"student": torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32),
                                                              torch.nn.LayerNorm(32))})
    net["student"][0].weight.requires_grad_(False)
    return net, torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)


def test_a_packed_run_resumes_with_its_weights_step_and_second_moments(tmp_path):
    net, opt = _run(tmp_path)
    carry.pack(tmp_path / "run", tmp_path / "pack", net)
    size = lambda d: sum(f.stat().st_size for f in d.iterdir())  # noqa: E731
    assert size(tmp_path / "pack") < size(tmp_path / "run" / "latest")  # no frozen weights, no first moments
    other, _ = _fresh()
    other["student"][0].weight.data.copy_(net["student"][0].weight)  # the frozen rows come from the model as it is
    carry.unpack(tmp_path / "pack", tmp_path / "new", other)
    again, opt2 = _fresh()
    info = checkpoint.load(tmp_path / "new", again, opt2)
    assert info["step"] == 5 and info["losses"] == [{"step": 5}] and info["config"] == {"lr": 1e-2}
    for (name, a), b in zip(net.named_parameters(), again.parameters()):
        tol = 0 if name.endswith("0.weight") else 1e-3  # the trained weights travel in FP16
        assert torch.allclose(a, b, atol=tol, rtol=tol), name
    assert opt2.param_groups[0]["weight_decay"] == 0.3  # the run's, not AdamW's default
    w = net["student"][1].weight
    kept, got = opt.state[w]["exp_avg_sq"], opt2.state[opt2.param_groups[0]["params"][0]]["exp_avg_sq"]
    assert got.shape == kept.shape and torch.allclose(got.mean(1), kept.mean(1), rtol=1e-4)  # rows' means kept
    assert all(float(s["step"]) == 5 and not s["exp_avg"].any() for s in opt2.state.values())


def test_the_first_step_after_unpack_is_gentler_than_a_fresh_adams(tmp_path):
    net, _ = _run(tmp_path, steps=20)
    carry.pack(tmp_path / "run", tmp_path / "pack", net)
    carry.unpack(tmp_path / "pack", tmp_path / "new", net)
    moved = {}
    for name in ("carried", "fresh"):
        model, opt = _fresh()
        model.load_state_dict(net.state_dict())
        if name == "carried":
            checkpoint.load(tmp_path / "new", model, opt)
        before = model["student"][1].weight.detach().clone()
        torch.manual_seed(2)
        model["student"](torch.randint(0, 50, (4, 3))).pow(2).mean().backward()
        opt.step()
        moved[name] = (model["student"][1].weight - before).abs().mean().item()
    assert moved["carried"] < 0.5 * moved["fresh"]


def test_unpack_refuses_a_pack_of_other_weights(tmp_path):
    net, _ = _run(tmp_path)
    carry.pack(tmp_path / "run", tmp_path / "pack", net)
    net["student"][2].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="other trainable weights"):
        carry.unpack(tmp_path / "pack", tmp_path / "new", net)
