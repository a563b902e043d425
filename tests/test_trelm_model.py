"""TreLM's model pieces: Stage D, the forward pass, the quirks switch, freezing of Stages E/F and the
Stage-G combination (docs/methods/trelm.md; the numbered properties of its "Tests" section)."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from xbench.errors import XbenchError
from xbench.models.freezing import assert_unchanged
from xbench.models.trelm import (
    CONFIG_FILE,
    EN,
    XX,
    TrelmBertModel,
    combine_halves,
    create_trelm,
    freeze_stage_e,
    freeze_stage_f,
    load_trelm,
    save_trelm,
)

V, H, L, P = 60, 32, 4, 64
T = L // 2


def source_bert(num_layers: int = L, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=num_layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=P)
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def source() -> BertForMaskedLM:
    return source_bert()


def new_embeddings(rows: int = 80, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, H, generator=torch.Generator().manual_seed(seed))


def extended_mask(mask: torch.Tensor) -> torch.Tensor:
    """BERT's additive attention mask, built by hand so the reference composition shares nothing
    with the model's own mask construction."""
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def batch_with_padding() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 80, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


# ------------------------------------------------------------------ property 1 and bad input

def test_property_1_l_plus_one_layers_and_tri_layer_equals_layer_t_bitwise(source):
    model = create_trelm(source, new_embeddings(), pad_token_id=0)
    assert model.num_transformer_layers == L + 1
    assert len(model.encoder.layer) == L
    tri = model.tri_layer.state_dict()
    layer_t = source.bert.encoder.layer[T].state_dict()
    assert tri.keys() == layer_t.keys()
    for key in tri:
        assert torch.equal(tri[key], layer_t[key]), key
    for i in range(L):  # the original layers are copied unchanged
        for key, value in model.encoder.layer[i].state_dict().items():
            assert torch.equal(value, source.bert.encoder.layer[i].state_dict()[key])
    # The TRILayer is a copy, not a shared module: training one must not move the other.
    assert model.tri_layer.attention.self.query.weight.data_ptr() != \
        model.encoder.layer[T].attention.self.query.weight.data_ptr()


def test_create_trelm_replaces_vocabulary_and_ties_a_fresh_head(source):
    before = {k: v.clone() for k, v in source.state_dict().items()}
    rng_before = torch.get_rng_state()
    emb = new_embeddings()
    model = create_trelm(source, emb, pad_token_id=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert_unchanged(before, source.state_dict(), "*")  # the source model is not modified
    assert model.config.vocab_size == 80 and model.config.pad_token_id == 3
    assert model.embeddings.word_embeddings.padding_idx == 3
    assert torch.equal(model.embeddings.word_embeddings.weight, emb)
    lang = model.embeddings.lang_embeddings.weight
    assert lang.shape == (2, H) and 0.01 < float(lang.detach().std()) < 0.03
    assert torch.equal(model.mlm_head.bias, torch.zeros(80))
    assert not torch.equal(model.mlm_head.transform.dense.weight, source.cls.predictions.transform.dense.weight)
    # Same seed, same model; the head decodes with the word embeddings themselves.
    again = create_trelm(source, emb, pad_token_id=3)
    assert_unchanged(model.state_dict(), again.state_dict(), "*")
    model.eval()
    ids = torch.randint(5, 80, (2, 6))
    out = model(ids)
    manual = model.mlm_head.transform(out.last_hidden_state) @ model.embeddings.word_embeddings.weight.T
    torch.testing.assert_close(out.logits, manual + model.mlm_head.bias, rtol=0, atol=1e-5)
    assert out.logits.shape == (2, 6, 80)


def test_create_trelm_refuses_odd_layer_count():
    with pytest.raises(XbenchError, match="even number of encoder layers.*has 3"):
        create_trelm(source_bert(num_layers=3))


def test_create_trelm_refuses_a_non_bert_source():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=H, n_layer=2, n_head=2, n_positions=P))
    with pytest.raises(XbenchError, match="BERT masked LM.*GPT2LMHeadModel"):
        create_trelm(gpt2)


def test_create_trelm_refuses_mismatched_embeddings_or_missing_pad(source):
    with pytest.raises(XbenchError, match="hidden size"):
        create_trelm(source, torch.zeros(80, H + 1), pad_token_id=0)
    with pytest.raises(XbenchError, match="pad_token_id"):
        create_trelm(source, new_embeddings())


# ------------------------------------------------------------------ property 2

@pytest.mark.parametrize("lang_shape", ["B1", "BT"])
def test_property_2_identity_forward_equals_manual_bert_layer_composition(source, lang_shape):
    model = create_trelm(source, new_embeddings(), pad_token_id=0).eval()
    ids, mask = batch_with_padding()
    b, t = ids.shape
    langs = torch.tensor([[EN], [XX], [EN]])
    lang_ids = langs if lang_shape == "B1" else langs.expand(b, t).clone()
    tri_langs = torch.tensor([[XX], [XX], [EN]])
    identity = torch.arange(t).expand(b, t)
    out = model(ids, mask, lang_ids, tri_langs, ordering_alignment=identity, ordering_attention_mask=mask,
                output_hidden_states=True)

    emb = model.embeddings
    with torch.no_grad():
        positions = emb.position_embeddings.weight[:t]
        h = emb.word_embeddings(ids) + positions + emb.token_type_embeddings.weight[0] + emb.lang_embeddings(langs)
        h = emb.LayerNorm(h)
        ext = extended_mask(mask)
        for i in range(T):  # the source's own layers: the model's are copies of them
            h = source.bert.encoder.layer[i](h, ext)
        # The position embeddings are added a second time at the TRILayer's input.
        h = h + positions + emb.lang_embeddings(tri_langs)
        h = source.bert.encoder.layer[T](h, ext)  # the TRILayer is a copy of layer t
        for i in range(T, L):
            h = source.bert.encoder.layer[i](h, ext)
        logits = model.mlm_head(h, emb.word_embeddings.weight)
    torch.testing.assert_close(out.last_hidden_state, h, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-5)
    assert len(out.hidden_states) == L + 2  # embeddings, L + 1 layers
    # Without an alignment the TRILayer runs in place: the same result.
    plain = model(ids, mask, lang_ids, tri_langs)
    torch.testing.assert_close(plain.logits, out.logits, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ property 3

def capture_tri_input(model: TrelmBertModel) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.encoder.layer[T - 1].register_forward_hook(lambda m, a, out: seen.__setitem__("lower", out)),
        model.tri_layer.register_forward_pre_hook(lambda m, args: seen.__setitem__("tri_in", args[0])),
    ]
    return seen, handles


def test_property_3_tri_layer_input_is_gathered_lower_half_plus_position_and_language(source):
    model = create_trelm(source, new_embeddings(), pad_token_id=0).eval()
    seen, handles = capture_tri_input(model)
    gen = torch.Generator().manual_seed(5)
    b, t_in, t_out = 3, 8, 6
    ids = torch.randint(5, 80, (b, t_in), generator=gen)
    # A random permutation of the input positions per row, cut to the output length.
    align = torch.stack([torch.randperm(t_in, generator=gen)[:t_out] for _ in range(b)])
    tri_langs = torch.tensor([[XX], [EN], [XX]])
    with torch.no_grad():
        model(ids, None, torch.tensor([[EN], [XX], [EN]]), tri_langs, ordering_alignment=align,
              ordering_attention_mask=torch.ones(b, t_out, dtype=torch.long))
    for h in handles:
        h.remove()
    lower, tri_in = seen["lower"], seen["tri_in"]
    emb = model.embeddings
    for r in range(b):
        for j in range(t_out):
            expected = lower[r, align[r, j]] + emb.position_embeddings.weight[j] \
                + emb.lang_embeddings.weight[tri_langs[r, 0]]
            assert tri_in.dtype == expected.dtype
            assert torch.equal(tri_in[r, j], expected), (r, j)


# ------------------------------------------------------------------ property 4

def one_step(model: TrelmBertModel, *, aligned: bool) -> None:
    model.train()  # frozen layers still run with dropout (docs/methods/trelm.md, "Freezing")
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 80, (4, 8), generator=gen)
    kwargs = {}
    if aligned:
        kwargs = {"ordering_alignment": torch.randint(0, 8, (4, 7), generator=gen),
                  "ordering_attention_mask": torch.ones(4, 7, dtype=torch.long)}
    out = model(ids, None, torch.tensor([[EN], [XX], [EN], [XX]]), XX, **kwargs)
    labels = torch.randint(5, 80, out.logits.shape[:2], generator=gen)
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 80), labels.reshape(-1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("stage", ["E", "F_above_half", "F_below_half"])
def test_property_4_freezing_keeps_frozen_tensors_bitwise_and_trains_the_rest(source, stage):
    model = create_trelm(source, new_embeddings(), pad_token_id=0)
    if stage == "E":
        frozen = freeze_stage_e(model)
        patterns = ["encoder.layer.*"]
    elif stage == "F_above_half":
        frozen = freeze_stage_f(model, "above_half")
        patterns = [f"encoder.layer.{i}.*" for i in range(T)]
    else:
        frozen = freeze_stage_f(model, "below_half")
        patterns = [f"encoder.layer.{i}.*" for i in range(T, L)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, aligned=stage != "E")
    after = model.state_dict()
    assert_unchanged(before, after, patterns)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable.isdisjoint(frozen)
    changed = [n for n in trainable if not torch.equal(before[n], after[n])]
    assert changed, "no trainable tensor moved"
    for group in ("embeddings.", "tri_layer.", "mlm_head."):  # always trainable in E and F
        assert any(n.startswith(group) for n in changed), group
    if stage == "F_above_half":
        assert any(n.startswith(f"encoder.layer.{T}.") for n in changed)
    if stage == "F_below_half":
        assert any(n.startswith("encoder.layer.0.") for n in changed)


def test_freeze_stage_f_refuses_an_unknown_run(source):
    with pytest.raises(XbenchError, match="above_half"):
        freeze_stage_f(create_trelm(source), "upper")


# ------------------------------------------------------------------ property 5

def perturbed(model: TrelmBertModel, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=gen).to(v.dtype) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_property_5_combine_halves_lower_from_below_upper_from_above_shared_mean(source, dtype):
    model = create_trelm(source, new_embeddings(), pad_token_id=0).to(dtype)
    above, below = perturbed(model, 1), perturbed(model, 2)
    combined = combine_halves(above, below)
    assert combined.keys() == above.keys()
    for key, value in combined.items():
        if key.startswith("encoder.layer."):
            index = int(key.split(".")[2])
            assert torch.equal(value, below[key] if index < T else above[key]), key
        else:
            expected = (above[key] + below[key]) / 2
            assert value.dtype == dtype and torch.equal(value, expected), key
    # The combined weights load into the model as they are.
    model.load_state_dict(combined, strict=True)


def test_combine_halves_refuses_an_unknown_key(source):
    sd = create_trelm(source).state_dict()
    extra = dict(sd, **{"adapter.weight": torch.zeros(2)})
    with pytest.raises(XbenchError, match="adapter.weight"):
        combine_halves(extra, dict(extra))


# ------------------------------------------------------------------ property 10 and the other quirks

def test_property_10_reference_quirks_bottom_language_is_always_xx(source):
    quirky = create_trelm(source, new_embeddings(), pad_token_id=0, reference_quirks=True).eval()
    plain = create_trelm(source, new_embeddings(), pad_token_id=0).eval()
    looked_up: list[torch.Tensor] = []
    handle = quirky.embeddings.lang_embeddings.register_forward_hook(lambda m, a, out: looked_up.append(a[0]))
    ids = torch.randint(5, 80, (2, 7))
    with torch.no_grad():
        en = quirky(ids, None, torch.tensor([[EN], [EN]]), XX)
        xx = quirky(ids, None, torch.tensor([[XX], [XX]]), XX)
        plain_en = plain(ids, None, torch.tensor([[EN], [EN]]), XX)
        plain_xx = plain(ids, None, torch.tensor([[XX], [XX]]), XX)
    handle.remove()
    # The first lookup of each forward pass is the bottom one: id 1 whatever lang_ids said.
    assert torch.equal(looked_up[0], torch.full((2, 7), XX)) and torch.equal(looked_up[2], torch.full((2, 7), XX))
    assert torch.equal(en.logits, xx.logits)
    torch.testing.assert_close(en.logits, plain_xx.logits, rtol=0, atol=1e-6)
    assert not torch.allclose(plain_en.logits, plain_xx.logits)


def test_quirk_3_upper_layers_keep_the_input_mask_and_need_one_length(source):
    quirky = create_trelm(source, new_embeddings(), pad_token_id=0, reference_quirks=True).eval()
    plain = create_trelm(source, new_embeddings(), pad_token_id=0).eval()
    ids, mask = batch_with_padding()
    b, t = ids.shape
    align = torch.arange(t).flip(0).expand(b, t)
    out_mask = torch.ones(b, t, dtype=torch.long)
    out_mask[0, 5:] = 0
    with torch.no_grad():
        # With the output mask equal to the input mask the two modes agree (lang 1 at the bottom) ...
        same_q = quirky(ids, mask, XX, XX, ordering_alignment=align, ordering_attention_mask=mask)
        same_p = plain(ids, mask, XX, XX, ordering_alignment=align, ordering_attention_mask=mask)
        torch.testing.assert_close(same_q.logits, same_p.logits, rtol=0, atol=1e-6)
        # ... and differ above the TRILayer once they differ.
        diff_q = quirky(ids, mask, XX, XX, ordering_alignment=align, ordering_attention_mask=out_mask)
        diff_p = plain(ids, mask, XX, XX, ordering_alignment=align, ordering_attention_mask=out_mask)
    assert not torch.allclose(diff_q.logits, diff_p.logits)
    with pytest.raises(ValueError, match="one length"):
        quirky(ids, mask, XX, XX, ordering_alignment=align[:, :5], ordering_attention_mask=out_mask[:, :5])


def test_forward_refuses_alignment_without_mask_or_out_of_range(source):
    model = create_trelm(source).eval()
    ids = torch.randint(5, V, (1, 5))
    with pytest.raises(ValueError, match="ordering_attention_mask"):
        model(ids, ordering_alignment=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model(ids, ordering_alignment=torch.full((1, 5), 5), ordering_attention_mask=torch.ones(1, 5))


# ------------------------------------------------------------------ saving and loading

def test_save_and_load_round_trip_through_safetensors(source, tmp_path):
    model = create_trelm(source, new_embeddings(), pad_token_id=0, reference_quirks=True).eval()
    folder = save_trelm(model, tmp_path / "trelm")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        sorted([CONFIG_FILE, "model.safetensors"])
    loaded = load_trelm(folder).eval()
    assert loaded.reference_quirks is True and loaded.config.vocab_size == 80
    assert_unchanged(model.state_dict(), loaded.state_dict(), "*")
    ids = torch.randint(5, 80, (2, 6))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_load_refuses_a_folder_that_is_not_a_trelm_model(tmp_path):
    with pytest.raises(XbenchError, match="missing trelm_config.json, model.safetensors"):
        load_trelm(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"format": "something-else"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(XbenchError, match="expected format"):
        load_trelm(tmp_path)


def test_create_trelm_copies_a_pooler_when_the_source_has_one():
    src = source_bert()
    with_pooler = copy.deepcopy(src)
    from transformers.models.bert.modeling_bert import BertPooler

    with_pooler.bert.pooler = BertPooler(src.config)
    model = create_trelm(with_pooler)
    assert torch.equal(model.pooler.dense.weight, with_pooler.bert.pooler.dense.weight)
