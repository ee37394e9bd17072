"""Model, learning-rate schedules, evaluation and exact resume of gvaempirics.lm."""

import math

import numpy as np
import pytest
import torch

from gvaempirics.lm.config import LMConfig, preset
from gvaempirics.lm.generations import first_divergence
from gvaempirics.lm.model import GPT, GPTConfig
from gvaempirics.lm.results import load_result
from gvaempirics.lm.train import EvalSet, LMTrainer, evaluate, generate, load_model, make_corpus, train
from gvaempirics.rundir import RunDir
from gvatheory.config import build_config, to_dict


def test_model_shapes_and_causality():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    x = torch.randint(11, (3, 8))
    logits, loss = m(x, x)
    assert logits.shape == (3, 8, 11) and loss.ndim == 0
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 11  # changing the future leaves earlier logits unchanged
    assert torch.allclose(m(y)[0][:, :5], logits[:, :5], atol=1e-6)
    with pytest.raises(ValueError, match="exceeds block_size=8"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_greedy_is_argmax_under_teacher_forcing():
    torch.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=1, n_embd=8)).eval()
    prompts = torch.randint(7, (4, 3))
    gen = m.greedy(prompts, 2)  # stays within the window: one forward pass checks every step
    logits, _ = m(torch.cat([prompts, gen], 1))
    assert torch.equal(logits[:, 2:4].argmax(-1), gen)
    long = m.greedy(prompts, 10)  # beyond block_size the context is cropped
    assert long.shape == (4, 10) and torch.equal(long[:, :2], gen)


def test_lr_schedules_by_hand():
    lr = LMConfig(eta=1.0, warmup=4, steps=20, schedule="constant").lr_schedule()
    assert [lr(t) for t in (0, 3, 4, 19)] == [pytest.approx(0.2), pytest.approx(0.8), 1.0, 1.0]
    lr = LMConfig(eta=1.0, warmup=4, steps=20, schedule="cosine").lr_schedule()
    assert lr(4) == 1.0 and lr(12) == pytest.approx(0.5) and lr(20) == pytest.approx(0.0)
    lr = LMConfig(eta=1.0, warmup=0, steps=20, schedule="wsd", decay_fraction=0.25).lr_schedule()
    assert lr(14) == 1.0 and lr(15) == 1.0 and lr(18) == pytest.approx(0.4)
    assert lr(20) == 0.0
    # the warmup's float arithmetic of the LM's former lr_at: eta * (t + 1) / (warmup + 1)
    lr = LMConfig(eta=3e-3, warmup=50).lr_schedule()
    assert [lr(t) for t in range(50)] == [3e-3 * (t + 1) / 51 for t in range(50)]


def test_config_defaults_and_checks():
    c = LMConfig()
    assert (
        c.optimizer,
        c.eta,
        c.warmup,
        c.weight_decay,
        c.beta2,
        c.grad_clip,
        c.batch_size,
        c.steps,
        c.eval_every,
        c.zoom_length,
        c.checkpoint_every,
        c.gamma_min,
    ) == ("adamw", 1e-3, 100, 0.1, 0.99, 1.0, 32, 3000, 100, 20, 500, 0.01)
    assert c.eval_steps()[:3] == [0, 100, 200] and c.eval_steps()[-1] == 3000
    for kwargs, message in [
        (dict(schedule="linear"), "schedule='linear' is not valid: choose one of"),
        (dict(prompt_len=200, block_size=128), r"prompt_len=200 is out of range: must be in \[1, block_size=128\]"),
        (dict(n_embd=30, n_head=4), "n_embd=30 is not valid: must be a multiple of n_head=4"),
        (dict(device="gpu"), "device='gpu' is out of range"),
        (dict(val_fraction=1.0), r"val_fraction=1.0 is out of range: must be in \(0, 1\)"),
        (dict(corpus="teacher", tokenizer="bpe"), "tokenizer='bpe' applies to the text corpora"),
        (dict(corpus="tinystories"), "data_path='' is not valid with corpus='tinystories'"),
        (dict(zoom_windows=(5000,)), "zoom_windows=5000 is out of range"),
        (dict(eta=float("nan")), "eta=nan is not valid: must be finite"),
        (dict(steps=10.0), "steps=10.0 is not valid: must be an integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            LMConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown config key.*lr, lr_schedule"):
        build_config(LMConfig, {"lr": 1e-3, "lr_schedule": "cosine"})
    with pytest.raises(ValueError, match="preset='huge' is not valid"):
        preset("huge")


def test_device_resolution():
    from gvaempirics.lm.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:1' is not available here"):
            resolve_device("cuda:1")


def test_evaluate_scores_against_teacher():
    cfg = LMConfig(**preset("tiny"))
    corpus = make_corpus(cfg)
    ev = EvalSet.build(corpus, cfg)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=cfg.block_size, n_layer=1, n_head=2, n_embd=16))
    out = evaluate(model, ev, cfg.H)
    gen = np.array(out["gen"])
    assert gen.shape == (cfg.n_prompts, cfg.H)
    assert out["exact"] == first_divergence(gen, ev.expert.numpy()).tolist()
    assert out["task"] == pytest.approx(np.mean(gen == ev.expert.numpy()))
    # the teacher scores itself perfectly
    assert torch.equal(corpus.teacher.greedy(ev.prompts, cfg.H), ev.expert)


def test_flipflop_task_accuracy_counts_reads():
    cfg = LMConfig(**preset("tiny", corpus="flipflop", corpus_size=3000))
    corpus = make_corpus(cfg)
    ev = EvalSet.build(corpus, cfg)
    w = ev.windows.numpy()
    r = corpus.tokenizer.chars.index("r")
    # a determined target follows an 'r' in an instruction slot
    assert ev.read_mask.sum() > 0 and np.all(w[:, :-1][ev.read_mask.numpy()] == r)
    out = evaluate(GPT(GPTConfig(vocab_size=5, block_size=cfg.block_size, n_layer=1, n_head=2, n_embd=16)), ev, cfg.H)
    assert 0.0 <= out["task"] <= 1.0


@pytest.mark.parametrize("stabilizer", ["ema", "bema", "posthoc"])
def test_tiny_run_resumes_to_the_same_log(tmp_path, stabilizer):
    cfg = LMConfig(**preset("tiny", checkpoint_every=5, stabilizer=stabilizer, posthoc_every=4))
    full = train(cfg, tmp_path / "full", quiet=True)
    train(cfg, tmp_path / "cut", quiet=True, stop_at=13)  # dies after step 13; last checkpoint at 10
    run = RunDir(tmp_path / "cut")
    run.log({"kind": "train", "step": 99, "loss": 0.0, "lr": 0.0})  # a record the kill left behind
    resumed = train(cfg, tmp_path / "cut", quiet=True)
    assert (tmp_path / "full" / "metrics.jsonl").read_bytes() == run.metrics_path.read_bytes()
    for summary in (full, resumed):
        summary.pop("train_seconds_last_session"), summary.pop("profile_seconds_last_session")
    assert full == resumed
    res = load_result(run.path)
    assert res.weights == ("raw", stabilizer)
    assert res.eval_steps.tolist() == cfg.eval_steps()
    assert res.gen[stabilizer].shape == (len(res.eval_steps), cfg.n_prompts, cfg.H)
    assert math.isfinite(full["raw"]["final_val_loss"]) and 0 <= full[stabilizer]["zoom_changed"] <= 1


def test_generate_from_run(tmp_path):
    cfg = LMConfig(**preset("tiny"))
    train(cfg, tmp_path / "r", quiet=True)
    ((p, cont),) = generate(tmp_path / "r", ["abcab"], H=6, weights="raw")
    assert p == "abcab" and len(cont) == 6 and set(cont) <= set("abcdefghijklmnop")
    with pytest.raises(ValueError, match=r"outside the vocabulary: '!', 'z'"):
        generate(tmp_path / "r", ["ab!z"])


def test_trainer_ema_is_the_textbook_recursion_over_iterates(tmp_path):
    from gvatheory.schedules import PowerEMA

    cfg = LMConfig(**preset("tiny", alpha=0.7, gamma_min=0.2))
    run = RunDir(tmp_path / "r")
    run.start(to_dict(cfg))
    tr = LMTrainer(cfg, run, make_corpus(cfg), quiet=True)
    tr.stabilizer.update()  # theta_0, as fit() does
    iterates = [{k: v.detach().clone() for k, v in tr.model.named_parameters()}]
    for _ in range(5):
        tr.train_step()
        iterates.append({k: v.detach().clone() for k, v in tr.model.named_parameters()})
    gamma = PowerEMA(0.7, 0.2)
    ref = {k: v.clone() for k, v in iterates[0].items()}  # gamma_0 = 1
    for t in range(1, 6):
        g = float(gamma(t))
        ref = {k: (1 - g) * ref[k] + g * iterates[t][k] for k in ref}
    got = tr.stabilizer.averaged_parameters()
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-6)


def test_posthoc_sweep_reproduces_the_tracked_ema_and_rejects_other_runs(tmp_path):
    from gvaempirics.lm.posthoc import posthoc_sweep

    cfg = LMConfig(**preset("tiny", stabilizer="posthoc", posthoc_sigma_rels=(0.05, 0.2), posthoc_every=6))
    summary = train(cfg, tmp_path / "r", quiet=True)
    rows = posthoc_sweep(tmp_path / "r", [0.05, 0.1, 0.2])
    assert [r["weights"] for r in rows] == ["raw"] + ["posthoc"] * 3
    assert all(r["step"] == cfg.steps for r in rows)  # the end of training is snapshotted
    res = load_result(tmp_path / "r")
    assert rows[0]["val"] == pytest.approx(res.val["raw"][-1], abs=1e-6)
    # synthesizing a tracked width from the snapshots gives back that tracked EMA
    assert rows[1]["val"] == pytest.approx(res.val["posthoc"][-1], abs=1e-4)
    assert rows[1]["val"] == pytest.approx(summary["posthoc"]["final_val_loss"], abs=1e-4)
    every = posthoc_sweep(tmp_path / "r", [0.1], all_snapshots=True)
    assert [r["step"] for r in every] == [20, 5, 11, 17, 20]
    with pytest.raises(ValueError, match="sigma_rel"):
        posthoc_sweep(tmp_path / "r", [0.5])
    train(LMConfig(**preset("tiny")), tmp_path / "e", quiet=True)
    with pytest.raises(ValueError, match="stabilizer='ema'; post-hoc synthesis needs"):
        posthoc_sweep(tmp_path / "e", [0.1])


def test_generate_from_averaged_weights_matches_the_logged_generation(tmp_path):
    cfg = LMConfig(**preset("tiny", stabilizer="bema"))
    train(cfg, tmp_path / "r", quiet=True)
    res = load_result(tmp_path / "r")
    for weights, key in (("raw", "raw"), ("avg", "bema")):
        model, _ = load_model(tmp_path / "r", weights=weights)
        gen = model.greedy(torch.as_tensor(res.prompts), cfg.H)
        assert gen.tolist() == res.gen[key][-1].tolist()


def test_bpe_run_trains_generates_and_decodes(tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text("One day a small dog found a big red ball in the park. The dog was happy.\n<|endoftext|>\n" * 60)
    cfg = LMConfig(**preset("tiny", corpus="tinystories", data_path=str(f), tokenizer="bpe", bpe_vocab=280))
    train(cfg, tmp_path / "r", quiet=True)
    res = load_result(tmp_path / "r")
    assert res.tokenizer.vocab_size == 280 and res.decode(res.prompts[0])  # prompts decode to text
    ((prompt, cont),) = generate(tmp_path / "r", ["The dog"], H=5)
    model, tok = load_model(tmp_path / "r")
    assert model.config.vocab_size == 280 and cont == tok.decode(
        model.greedy(torch.as_tensor(tok.encode("The dog"))[None], 5)[0]
    )
