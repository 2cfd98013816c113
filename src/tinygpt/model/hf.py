"""Hugging Face interop: our GPT <-> `transformers.GPT2LMHeadModel`, pretrained loading, HF export.

Our modules carry GPT-2's checkpoint names, so a conversion is a walk over the state dict with two
differences to handle:
- GPT-2's `Conv1D` layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) store their weight as
  (in, out), the transpose of `nn.Linear`'s (out, in). The fused c_attn splits its 3 * n_embd outputs
  into q, k, v in that order in both implementations, so transposing the fused matrix is enough.
- The LM head is tied to the token embedding on both sides; only `wte` is copied.

Biases: HF's GPT-2 always has them. A `bias: false` model exports with zero biases, which computes the
same function (a Linear or LayerNorm with a zero bias is the same map as one without); importing it back
with `gpt_from_hf(hf, bias=False)` checks that every bias is indeed zero.
"""
from __future__ import annotations

import os
import shutil
import socket
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from tinygpt.core import hub_integrity, io
from tinygpt.core.errors import TinyGptError
from tinygpt.data.tokenizer import EOT_ID, N_VOCAB, bpe_files
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT, TIED_HEAD

# Layers that are Conv1D in Hugging Face's GPT-2 (weight stored as (in, out)).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Activations that are GELU with the tanh approximation, the one our MLP uses.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, and GPT-2's
# Weights load from safetensors only: a pickle checkpoint (pytorch_model.bin) can run code when unpickled.
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")  # one file, or the index of shards
SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_ONLY = ("only safetensors weights (model.safetensors) are accepted, never a pickle checkpoint such as "
                    "pytorch_model.bin, which can run code when it is loaded; on a machine where you trust the "
                    "checkpoint, convert it with `GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR, "
                    "safe_serialization=True)` and give DIR again")


class ConversionError(TinyGptError, ValueError):
    """The two models' shapes or options cannot be mapped onto each other."""


class PretrainedUnavailable(TinyGptError):
    """A pretrained model could not be loaded (offline, not cached, missing directory); `reason` says why."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(
            f"pretrained model '{name}' is unavailable: {reason}. Provide it offline with "
            f"`hf download {name} config.json model.safetensors --local-dir DIR` on a connected machine, "
            "copy DIR here and run `dvc exp run -S compare.pretrained=DIR` (or fill the Hugging Face cache, HF_HOME)"
        )


# ---------------------------------------------------------------- configuration


def config_to_hf(config: GPTConfig) -> GPT2Config:
    """The GPT2Config of the same architecture. One dropout rate stands for GPT-2's three."""
    # The end-of-text id only exists when the vocabulary reaches it (tiny test vocabularies don't).
    eot = EOT_ID if config.vocab_size > EOT_ID else None
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=None,  # 4 * n_embd, as ours
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=LAYER_NORM_EPS,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )


def config_from_hf(hf_config: GPT2Config, bias: bool = True, dropout: float | None = None) -> GPTConfig:
    """Our GPTConfig for a GPT-2 checkpoint's config; refuses options our model does not implement."""
    check_hf_config(hf_config)
    rates = {hf_config.resid_pdrop, hf_config.embd_pdrop, hf_config.attn_pdrop}
    if dropout is None:
        if len(rates) != 1:
            raise ConversionError(
                f"the checkpoint uses different dropout rates {sorted(rates)} (resid, embd, attn); "
                "ours has one: pass dropout= explicitly"
            )
        dropout = rates.pop()
    config = GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=float(dropout),
        bias=bias,
    )
    config.validate()
    return config


def check_hf_config(hf_config: GPT2Config) -> None:
    problems = []
    if getattr(hf_config, "model_type", None) != "gpt2":
        problems.append(f"model_type is {getattr(hf_config, 'model_type', None)!r}, not 'gpt2'")
    if hf_config.activation_function not in TANH_GELUS:
        problems.append(f"activation_function {hf_config.activation_function!r} is not a tanh GELU {TANH_GELUS}")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        problems.append(f"n_inner {hf_config.n_inner} is not 4 * n_embd")
    if abs(hf_config.layer_norm_epsilon - LAYER_NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf_config.layer_norm_epsilon} is not {LAYER_NORM_EPS}")
    if not hf_config.scale_attn_weights or hf_config.scale_attn_by_inverse_layer_idx:
        problems.append("attention scaling is not GPT-2's 1/sqrt(head_dim)")
    if hf_config.add_cross_attention:
        problems.append("cross-attention layers have no counterpart")
    if not hf_config.tie_word_embeddings:
        problems.append("the LM head is not tied to the token embedding")
    if problems:
        raise ConversionError("cannot convert this GPT-2 config: " + "; ".join(problems))


# ---------------------------------------------------------------- weights


def is_conv1d(key: str) -> bool:
    return key.endswith(CONV1D_SUFFIXES)


def gpt_from_hf(hf_model: GPT2LMHeadModel, bias: bool = True, dropout: float | None = None) -> GPT:
    """Load a GPT2LMHeadModel's weights into our GPT ("loading pretrained weights"), in eval mode.

    bias=False builds a bias-free GPT and requires every bias in the checkpoint to be zero.
    """
    model = GPT(config_from_hf(hf_model.config, bias=bias, dropout=dropout))
    source = hf_model.state_dict()
    state = {}
    for key, target in model.state_dict().items():
        if key == TIED_HEAD:
            continue
        if key not in source:
            raise ConversionError(f"the Hugging Face model has no '{key}'; is it a GPT2LMHeadModel?")
        state[key] = checked_copy(key, source[key].t() if is_conv1d(key) else source[key], target.shape)
    if not bias:
        nonzero = [k for k, v in source.items() if k.endswith(".bias") and k not in state and v.any()]
        if nonzero:
            raise ConversionError(f"bias=False but the checkpoint has non-zero biases: {nonzero[:3]} ...")
    model.load_state_dict(state, strict=False)  # lm_head.weight is wte's tensor already
    return model.eval()


def hf_from_gpt(model: GPT) -> GPT2LMHeadModel:
    """Export our GPT as a GPT2LMHeadModel (eval mode, fp32). A bias-free GPT gets zero biases."""
    if model.config.logit_bias:
        raise ConversionError("this GPT has a per-token logit bias (a policy finetuned with dpo.logit_bias_lr) and "
                              "GPT2LMHeadModel's LM head has none: exporting it would change its outputs; export "
                              "the pretrained model, or finetune with dpo.logit_bias_lr: 0")
    hf_model = GPT2LMHeadModel(config_to_hf(model.config))
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    state = {}
    for key, target in hf_model.state_dict().items():
        if key == TIED_HEAD:
            continue
        if key in ours:
            state[key] = checked_copy(key, ours[key].t() if is_conv1d(key) else ours[key], target.shape)
        elif key.endswith(".bias") and not model.config.bias:
            state[key] = torch.zeros(target.shape)
        else:
            raise ConversionError(f"our GPT has no tensor for Hugging Face's '{key}'")
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {TIED_HEAD}:
        raise ConversionError(f"export mismatch: missing {missing}, unexpected {unexpected}")
    hf_model.tie_weights()
    return hf_model.eval()


def checked_copy(key: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if tensor.shape != shape:
        raise ConversionError(f"'{key}' has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    return tensor.detach().float().contiguous().clone()


# ---------------------------------------------------------------- pretrained checkpoints


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    import huggingface_hub.constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def hub_reachable(timeout_s: float = 3.0) -> str | None:
    """None if the Hub's host answers on its port, else why not. A quick probe instead of the ~30 s of
    retries from_pretrained spends when there is no network."""
    import huggingface_hub.constants

    url = urllib.parse.urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
        return None
    except OSError as err:
        return f"cannot reach {url.hostname}:{port} ({err})"


@contextmanager
def offline_unless_reachable() -> Iterator[str | None]:
    """Inside, Hugging Face Hub requests fail at once (huggingface_hub's offline mode) when the Hub cannot
    be reached, instead of each retrying for about 30 s; with a network nothing changes. Yields why the Hub
    is unreachable, or None."""
    import huggingface_hub.constants

    unreachable = None if hub_offline() else hub_reachable()
    saved = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = saved or unreachable is not None
    try:
        yield unreachable
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = saved


def looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else is meant as a directory."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def load_pretrained(name_or_dir: str, allow_download: bool = True) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel (fp32, eval) from a local directory or a hub id, or PretrainedUnavailable.

    A hub id is looked up in the local cache first; the network is tried only when the cache misses,
    downloads are allowed, HF_HUB_OFFLINE is not set and the Hub answers. Either way the cached files
    are then re-hashed (HubCacheCorrupt if one fails).
    """
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return from_pretrained(name_or_dir, path, local_files_only=True)
    if looks_like_path(name_or_dir):
        raise PretrainedUnavailable(name_or_dir, f"directory {path} does not exist")
    try:
        model = from_pretrained(name_or_dir, name_or_dir, local_files_only=True)
    except PretrainedUnavailable as cached_miss:
        if hub_offline():
            raise PretrainedUnavailable(name_or_dir, f"not in the cache and HF_HUB_OFFLINE is set ({cached_miss.reason})")
        if not allow_download:
            raise PretrainedUnavailable(name_or_dir, f"not in the cache and downloads are off ({cached_miss.reason})")
        unreachable = hub_reachable()
        if unreachable:
            raise PretrainedUnavailable(name_or_dir, f"not in the cache and {unreachable}")
        model = from_pretrained(name_or_dir, name_or_dir, local_files_only=False)
    # The load read only safetensors, so nothing ran; a blob that fails its hash is refused here.
    hub_integrity.verify_cached_repo(name_or_dir, "model")
    return model


def from_pretrained(name: str, source: str | Path, local_files_only: bool) -> GPT2LMHeadModel:
    """GPT2LMHeadModel.from_pretrained from safetensors weights only; its failures as PretrainedUnavailable."""
    try:
        config = GPT2Config.from_pretrained(str(source), local_files_only=local_files_only)
        check_weights_file(name, config)
        # Without use_safetensors=True, transformers falls back to pytorch_model.bin and unpickles it.
        model = GPT2LMHeadModel.from_pretrained(str(source), config=config, local_files_only=local_files_only,
                                                dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError) as err:  # a missing file, an unreadable config or an invalid repo id
        raise PretrainedUnavailable(name, unavailable_reason(name, source, err)) from err
    return model.eval()


def check_weights_file(name: str, config: GPT2Config) -> None:
    """Refuse a config.json that names its weights file: transformers then loads that file even when it
    is a pickle (it lets `transformers_weights: adapter_model.bin` through despite use_safetensors=True)."""
    named = getattr(config, "transformers_weights", None)
    if named is not None and not str(named).endswith(SAFETENSORS_SUFFIXES):
        raise PretrainedUnavailable(name, f"its config.json names the weights file {named!r}, not a safetensors "
                                          f"file; {SAFETENSORS_ONLY}")


def unavailable_reason(name: str, source: str | Path, err: Exception) -> str:
    """Why from_pretrained failed, in one line; a checkpoint without safetensors weights says how to convert."""
    path = Path(source)
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
    if pickles and not any((path / f).exists() for f in SAFETENSORS_FILES):
        return f"directory {path} has no {SAFETENSORS_FILES[0]} (it holds {', '.join(pickles)}); {SAFETENSORS_ONLY}"
    # transformers' message for a hub repo without safetensors advises unsetting use_safetensors: not ours.
    if "use_safetensors" in str(err):
        return f"no {SAFETENSORS_FILES[0]} for {name} in the Hugging Face cache or on the Hub; {SAFETENSORS_ONLY}"
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {first_line}"


# ---------------------------------------------------------------- export as a Hugging Face directory


def write_tokenizer(out_dir: Path, model_max_length: int) -> GPT2TokenizerFast:
    """GPT-2's tokenizer files in `out_dir`, built from the offline BPE files.

    vocab.json is GPT-2's encoder.json and merges.txt its vocab.bpe; loading them with from_pretrained
    (not the vocab_file= constructor, which builds an empty tokenizer in transformers 5) and saving
    again adds tokenizer.json and tokenizer_config.json.
    """
    files = bpe_files()
    shutil.copyfile(files.encoder_json, out_dir / "vocab.json")
    shutil.copyfile(files.vocab_bpe, out_dir / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(str(out_dir), model_max_length=model_max_length)
    if len(tokenizer) != N_VOCAB:
        raise ConversionError(f"the tokenizer built from {files} has {len(tokenizer)} tokens, not {N_VOCAB}")
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def export_hf_dir(model: GPT, out_dir: Path) -> Path:
    """Write `model` as a Hugging Face model directory (config.json, model.safetensors, tokenizer files)
    that `transformers.pipeline("text-generation", model=out_dir)` loads offline.

    Built in a temp directory beside `out_dir` and renamed into place, so a failure leaves either the
    old export or none, never half of one.
    """
    if model.config.vocab_size < N_VOCAB:
        raise ConversionError(
            f"model.vocab_size = {model.config.vocab_size} is smaller than the GPT-2 tokenizer's {N_VOCAB} ids; "
            "the exported tokenizer would emit ids the model has no embedding for"
        )
    out_dir = Path(out_dir)
    with io.atomic_dir(out_dir) as tmp:
        hf_model = hf_from_gpt(model)
        hf_model.generation_config.pad_token_id = EOT_ID  # silences generate()'s "no pad token" warning
        hf_model.save_pretrained(str(tmp))  # safetensors by default
        write_tokenizer(tmp, model_max_length=model.config.block_size)
        readable_by_all(tmp)
    return out_dir


def readable_by_all(folder: Path) -> None:
    """The modes an ordinary mkdir and open would give under the current umask (mkdtemp's are 0700 and
    some writers make 0600 files), so the export can be shared like any other output."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)

